//! The embedded index's one writer: a thread that commits the writes waiting for it together,
//! in one transaction with one fsync, each write in a savepoint of its own (a conflict undoes
//! only that write), and answers none of them before the commit is durable.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use rusqlite::Connection;

use super::backend;
use crate::index::IndexError;

/// Writes committed together at most; more wait for the next commit.
const MAX_BATCH: usize = 1024;

/// Why the writes of a transaction that SQLite rolled back by itself did not commit.
const ROLLED_BACK: &str = "SQLite rolled the transaction back after an error (disk full, I/O error, \
     out of memory or busy)";

/// Sends a write's answer once its transaction ended: `None` committed, else why not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// A write: run on the connection (inside the batch's transaction), it says whether to keep
/// what it did and how to answer; given an error instead, it answers with it at once.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Option<(bool, Deliver)> + Send>;

pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> IndexError {
    IndexError::Backend {
        backend: super::NAME,
        message: "the index writer stopped".to_owned(),
        definite: true,
        source: None,
    }
}

fn failed(message: &str) -> IndexError {
    backend(
        "the write's transaction did not commit",
        std::io::Error::other(message.to_owned()),
    )
}

impl Writer {
    /// Hands `conn` to the writer thread, which ends when the last sender is dropped.
    pub(super) fn start(conn: Connection) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(&conn, &queue))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next commit and answers once that commit is durable (or failed).
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    {
        let (job, answer) = job(f);
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Wraps `f` as a job, and gives the receiver of its answer.
fn job<T, F>(f: F) -> (Job, tokio::sync::oneshot::Receiver<Result<T, IndexError>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |conn| match conn {
        Err(why) => {
            let _ = tx.send(Err(failed(why)));
            None
        }
        Ok(conn) => {
            let out = f(conn);
            let keep = out.is_ok();
            let deliver: Deliver = Box::new(move |uncommitted| {
                let _ = tx.send(match uncommitted {
                    None => out,
                    Some(why) => Err(failed(why)),
                });
            });
            Some((keep, deliver))
        }
    });
    (job, rx)
}

fn run(conn: &Connection, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(conn, batch);
    }
}

fn commit(conn: &Connection, batch: Vec<Job>) {
    let mut jobs = batch.into_iter();
    while jobs.len() > 0 {
        transaction(conn, &mut jobs);
    }
}

/// Runs jobs from `jobs` in one transaction and commits them. On `SQLITE_FULL`, `SQLITE_IOERR`,
/// `SQLITE_NOMEM` or `SQLITE_BUSY`, SQLite may roll the whole transaction back by itself; the
/// connection is then in autocommit mode, where each later write would commit alone and the
/// final COMMIT would fail. So the transaction stops there: the writes it held and the one that
/// hit the error answer with an error, and the jobs left go on in a fresh transaction.
fn transaction(conn: &Connection, jobs: &mut std::vec::IntoIter<Job>) {
    // IMMEDIATE takes the write lock at BEGIN: another process (`reconcile`) writing makes it
    // wait for the busy timeout instead of failing a deferred transaction's upgrade.
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        let why = e.to_string();
        for job in jobs {
            job(Err(&why));
        }
        return;
    }
    let mut answers = Vec::new();
    for job in jobs.by_ref() {
        if let Err(e) = run_cached(conn, "SAVEPOINT write") {
            job(Err(&e.to_string()));
            if lost(conn, &mut answers) {
                return;
            }
            continue;
        }
        // A write that panics answers nobody (its caller sees the writer's error) and keeps
        // nothing; the others go on.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(conn))));
        let keep = matches!(ran, Ok(Some((true, _))));
        let ended = if keep {
            run_cached(conn, "RELEASE write")
        } else {
            run_cached(conn, "ROLLBACK TO write").and_then(|()| run_cached(conn, "RELEASE write"))
        };
        let deliver = match ran {
            Ok(Some((_, deliver))) => Some(deliver),
            _ => None,
        };
        if let Some(deliver) = deliver {
            match ended {
                Err(e) if !conn.is_autocommit() => deliver(Some(&e.to_string())),
                // After a rollback by SQLite the savepoint is gone too; `lost` answers why.
                _ => answers.push(deliver),
            }
        }
        if lost(conn, &mut answers) {
            return;
        }
    }
    match run_cached(conn, "COMMIT") {
        Ok(()) => {
            for deliver in answers {
                deliver(None);
            }
        }
        Err(e) => {
            let why = e.to_string();
            let _ = conn.execute_batch("ROLLBACK");
            for deliver in answers {
                deliver(Some(&why));
            }
        }
    }
}

/// Whether SQLite rolled the transaction back by itself; then the writes it held did not
/// happen, and they answer so.
fn lost(conn: &Connection, answers: &mut Vec<Deliver>) -> bool {
    if !conn.is_autocommit() {
        return false;
    }
    for deliver in answers.drain(..) {
        deliver(Some(ROLLED_BACK));
    }
    true
}

/// Runs a statement prepared once: these run for every write, and parsing them each time
/// showed in the profile.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes committed together keep only their own effects: one that fails is undone alone,
    /// and each one answered is visible to another connection at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_batch_is_undone_alone_and_answers_follow_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .unwrap();
        let writer = std::sync::Arc::new(Writer::start(conn).unwrap());
        let mut tasks = Vec::new();
        for k in 0..400i64 {
            let (writer, path) = (std::sync::Arc::clone(&writer), path.clone());
            tasks.push(tokio::spawn(async move {
                let out = writer
                    .write(move |c| {
                        c.execute("INSERT INTO t (k) VALUES (?1)", [k])
                            .map_err(|e| backend("insert", e))?;
                        if k % 2 == 1 {
                            return Err(IndexError::Conflict);
                        }
                        Ok(())
                    })
                    .await;
                if out.is_ok() {
                    let seen: i64 = Connection::open(&path)
                        .unwrap()
                        .query_row("SELECT COUNT(*) FROM t WHERE k = ?1", [k], |r| r.get(0))
                        .unwrap();
                    assert_eq!(seen, 1, "{k} answered before its commit");
                }
                out.is_ok()
            }));
        }
        for (k, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), k % 2 == 0);
        }
        let (count, odd): (i64, i64) = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT COUNT(*), COUNT(CASE WHEN k % 2 = 1 THEN 1 END) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((count, odd), (200, 0));
    }

    /// `SQLITE_FULL` (here from `max_page_count`) on a one-row insert makes SQLite roll the whole
    /// transaction back by itself. No write of that transaction answers success, and the
    /// writes after it neither run in autocommit mode (each committing alone) nor answer an
    /// error: they commit together in a fresh transaction.
    #[test]
    fn writes_of_a_transaction_sqlite_rolled_back_answer_errors_and_the_rest_commit_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)",
        )
        .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let limit = format!("PRAGMA max_page_count = {}", pages + 4);
        conn.query_row(&limit, [], |_| Ok(())).unwrap();
        // Keys another connection saw committed while each write ran: none may be committed
        // before the batch's commit.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, Vec<i64>)>::new()));
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for (k, size) in [(0, 1), (1, 1), (2, 100_000), (3, 1), (4, 1)] {
            let (seen, path) = (std::sync::Arc::clone(&seen), path.clone());
            let (job, answer) = job(move |c| {
                let outside = Connection::open(&path)
                    .unwrap()
                    .prepare("SELECT k FROM t ORDER BY k")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<Vec<i64>, _>>()
                    .unwrap();
                seen.lock().unwrap().push((k, outside));
                c.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(?2))", [k, size])
                    .map_err(|e| backend("insert", e))?;
                Ok(())
            });
            batch.push(job);
            answers.push((k, answer));
        }
        commit(&conn, batch);
        let kept: Vec<i64> = conn
            .prepare("SELECT k FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let answered: Vec<i64> = answers
            .into_iter()
            .filter_map(|(k, a)| a.blocking_recv().unwrap().is_ok().then_some(k))
            .collect();
        let early: Vec<_> = std::mem::take(&mut *seen.lock().unwrap())
            .into_iter()
            .filter(|(_, outside)| !outside.is_empty())
            .collect();
        assert!(
            early.is_empty(),
            "writes committed before the batch's commit (write, keys seen): {early:?}"
        );
        assert_eq!(
            answered, kept,
            "the writes answered success are not those kept"
        );
        assert_eq!(kept, [3, 4]);
    }
}
