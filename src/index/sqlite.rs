//! `SqliteFileIndex`: the embedded index, one SQLite file in WAL mode.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::usage::{Counters, FileCount, FileQuota, QuotaReached, Recount};
use super::{AppQuery, FileIndex, IndexError, Usage};
use crate::model::{FileId, FileRow, Owner, Versioned};

mod queries;
mod row;
mod schema;
mod uploads;
mod usage;
mod writer;

pub use queries::{PENDING_USAGE, list_app_sql, pending_sql};
use row::{COLUMNS, RawRow, millis};
use schema::{
    APP_INDEXES, SCHEMA, add_missing_columns, keep_statements, open_reader, stable_plans,
};

const NAME: &str = "sqlite";

fn backend(message: &str, source: impl std::error::Error + Send + Sync + 'static) -> IndexError {
    // A failed statement rolls its transaction back: nothing was written.
    IndexError::Backend {
        backend: NAME,
        message: message.to_owned(),
        definite: true,
        source: Some(Box::new(source)),
    }
}

fn corrupt(what: &str) -> IndexError {
    IndexError::Backend {
        backend: NAME,
        message: format!("stored row has an invalid {what}"),
        definite: true,
        source: None,
    }
}

/// Reader connections kept open between reads; more are opened when reads overlap.
const KEPT_READERS: usize = 4;

pub struct SqliteFileIndex {
    /// Every write goes through this one connection's thread (SQLite has one writer at a time
    /// anyway), which commits the writes that wait together.
    writer: writer::Writer,
    /// Reads run on their own connections, side by side: in WAL mode they see the last commit
    /// and do not wait for the writer.
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl SqliteFileIndex {
    /// Rows in primary key order after `after`, by `sql` (parameters: app, participant,
    /// file ID, limit).
    fn rows_after(
        &self,
        sql: String,
        failed: &'static str,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let (a, p, f) = after
            .map(|(o, f)| (o.app.to_string(), o.participant.to_string(), f.to_string()))
            .unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| backend(failed, e))?;
            let raws = stmt
                .query_map(params![a, p, f, limit], RawRow::read)
                .map_err(|e| backend(failed, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend(failed, e))?;
            raws.into_iter().map(RawRow::into_row).collect()
        })
    }

    /// Opens (creating when missing) the index file and its schema.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        let owned = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, IndexError> {
            let path = owned;
            let conn = Connection::open(&path).map_err(|e| backend("cannot open", e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| backend("cannot enable WAL", e))?;
            // With WAL, NORMAL keeps the database consistent after a crash; FULL also keeps
            // the last commits after a power cut, which a file index that points at durable
            // objects needs.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| backend("cannot set synchronous", e))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(|e| backend("cannot set busy timeout", e))?;
            stable_plans(&conn)?;
            keep_statements(&conn);
            conn.execute_batch(SCHEMA)
                .map_err(|e| backend("cannot create schema", e))?;
            add_missing_columns(&conn)?;
            conn.execute_batch(APP_INDEXES)
                .map_err(|e| backend("cannot create the listing indexes", e))?;
            conn.execute_batch(uploads::SCHEMA)
                .map_err(|e| backend("cannot create the uploads table", e))?;
            conn.execute_batch(usage::SCHEMA)
                .map_err(|e| backend("cannot create the usage table", e))?;
            Ok(conn)
        })
        .await
        .expect("sqlite open task panicked")?;
        Ok(Self {
            writer: writer::Writer::start(conn)
                .map_err(|e| backend("cannot start the index writer", e))?,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_owned(),
        })
    }

    /// Runs a read on a reader connection of its own, on the calling thread: the index's
    /// reads are lookups of a few rows in SQLite's page cache, shorter than the hop to the
    /// blocking pool and back that they took before (measured: that hop was the largest
    /// cost of a POST).
    fn read<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        F: FnOnce(&mut Connection) -> Result<T, IndexError>,
    {
        let kept = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut conn = match kept {
            Some(c) => c,
            None => open_reader(&self.path)?,
        };
        let out = f(&mut conn);
        let mut pool = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < KEPT_READERS {
            pool.push(conn);
        }
        out
    }

    /// Runs a write in the writer's next commit; answers once that commit is durable.
    async fn with<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, IndexError> + Send + 'static,
    {
        self.writer.write(f).await
    }
}

#[async_trait]
impl FileIndex for SqliteFileIndex {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(
        &self,
        owner: &Owner,
        file: &FileId,
    ) -> Result<Option<Versioned<FileRow>>, IndexError> {
        let (app, participant, file) = (
            owner.app.to_string(),
            owner.participant.to_string(),
            file.to_string(),
        );
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM files WHERE app = ?1 AND participant = ?2 AND file_id = ?3"
            );
            // Cached: this read comes with nearly every request, and parsing it showed in the
            // profile of POSTs.
            let raw = conn
                .prepare_cached(&sql)
                .and_then(|mut s| s.query_row(params![app, participant, file], RawRow::read))
                .optional()
                .map_err(|e| backend("get failed", e))?;
            raw.map(RawRow::into_row).transpose()
        })
    }

    async fn list(
        &self,
        owner: &Owner,
        after: Option<&FileId>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let (app, participant) = (owner.app.to_string(), owner.participant.to_string());
        let after = after.map(ToString::to_string).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // The empty string sorts before every valid file ID, so it stands for "from the start".
            let sql = format!(
                "SELECT {COLUMNS} FROM files WHERE app = ?1 AND participant = ?2 AND file_id > ?3 \
                 ORDER BY file_id ASC LIMIT ?4"
            );
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| backend("list failed", e))?;
            let raws = stmt
                .query_map(params![app, participant, after, limit], RawRow::read)
                .map_err(|e| backend("list failed", e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend("list failed", e))?;
            raws.into_iter().map(RawRow::into_row).collect()
        })
    }

    async fn list_app(
        &self,
        query: &AppQuery,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        // Every row after the end is before `(end, "", "")`: no participant ID is empty.
        let end = query.end.map(|e| (e, String::new(), String::new()));
        let after = query.after.as_ref().map(|a| {
            (
                a.created_on,
                a.participant.to_string(),
                a.file_id.to_string(),
            )
        });
        let upper = match (end, after) {
            (Some(e), Some(a)) => e.min(a),
            (e, a) => e.or(a).unwrap_or((i64::MAX, String::new(), String::new())),
        };
        let app = query.app.to_string();
        let start = query.start.unwrap_or(i64::MIN);
        let file = query.file_id.as_ref().map(ToString::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let sql = list_app_sql(file.is_some());
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| backend("app listing failed", e))?;
            let (t, p, f) = upper;
            let raws = match &file {
                None => stmt.query_map(params![app, start, t, p, f, limit], RawRow::read),
                Some(id) => stmt.query_map(params![app, start, t, p, f, limit, id], RawRow::read),
            }
            .map_err(|e| backend("app listing failed", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| backend("app listing failed", e))?;
            raws.into_iter().map(RawRow::into_row).collect()
        })
    }

    async fn scan(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE (app, participant, file_id) > (?1, ?2, ?3) \
             ORDER BY app, participant, file_id LIMIT ?4"
        );
        self.rows_after(sql, "scan failed", after, limit)
    }

    async fn pending(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        self.rows_after(pending_sql(), "pending failed", after, limit)
    }

    async fn put_within(
        &self,
        row: &FileRow,
        expected: Option<u64>,
        quota: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError> {
        let row = row.clone();
        self.with(move |tx| {
            // The row read, the quota checked, the row written and the counters changed in one
            // savepoint of the writer's transaction, which holds the write lock: nothing comes
            // in between. The index reads the row it replaces itself rather than trusting a
            // caller's copy.
            let before = usage::file_before(tx, &row.owner, row.file_id.as_str())?;
            if before.map(|(v, _)| v) != expected {
                return Err(IndexError::Conflict);
            }
            let old = before.map(|(_, c)| c).unwrap_or_default();
            let change = FileCount::of(Some(&row)).minus(old);
            if let Some(reached) = usage::over_quota(tx, &row.owner, change, quota)? {
                return Ok(Err(reached));
            }
            let version = expected.map_or(1, |v| v + 1);
            row::insert(tx, &row, version)?;
            usage::change(tx, &row.owner, change, 0)?;
            Ok(Ok(version))
        })
        .await
    }

    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        let (owner, file) = (owner.clone(), file.to_string());
        self.with(move |tx| {
            let Some((version, old)) = usage::file_before(tx, &owner, &file)? else {
                return Err(IndexError::Conflict);
            };
            if version != expected {
                return Err(IndexError::Conflict);
            }
            tx.prepare_cached(
                "DELETE FROM files WHERE app = ?1 AND participant = ?2 AND file_id = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    owner.app.as_str(),
                    owner.participant.as_str(),
                    file
                ])
            })
            .map_err(|e| backend("delete failed", e))?;
            usage::change(tx, &owner, FileCount::default().minus(old), 0)
        })
        .await
    }

    async fn usage(&self, owner: &Owner, now: DateTime<Utc>) -> Result<Usage, IndexError> {
        let owner = owner.clone();
        self.read(move |conn| usage::usage(conn, &owner, now))
    }

    async fn counters(&self, owner: &Owner) -> Result<Option<Counters>, IndexError> {
        let owner = owner.clone();
        self.read(move |conn| usage::counters(conn, &owner))
    }

    async fn recount(&self, owner: &Owner) -> Result<Vec<Recount>, IndexError> {
        let owner = owner.clone();
        self.with(move |tx| usage::recount(tx, &owner)).await
    }

    async fn owners_with_usage(&self) -> Result<Vec<Owner>, IndexError> {
        self.read(usage::owners_with_usage)
    }

    fn uploads(&self) -> &dyn super::UploadIndex {
        self
    }

    async fn check(&self) -> Result<(), IndexError> {
        self.read(|conn| {
            conn.query_row("SELECT 1 FROM files LIMIT 1", [], |_| Ok(()))
                .optional()
                .map(|_| ())
                .map_err(|e| backend("check failed", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppId, UserId};

    fn row(file: &str) -> FileRow {
        FileRow::empty(
            &Owner {
                app: AppId::parse("app").unwrap(),
                participant: UserId::parse("u").unwrap(),
            },
            &FileId::parse(file).unwrap(),
        )
    }

    /// `reconcile` is another process writing to the same file. A write that began with a
    /// plain (deferred) transaction reads, then finds the writer's commit newer than what it
    /// read and fails at once; one that begins IMMEDIATE waits its turn.
    #[tokio::test]
    async fn a_write_waits_for_another_process_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let index = SqliteFileIndex::open(&path).await.unwrap();
        index.put(&row("first"), None).await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        other
            .execute("UPDATE files SET version = version + 1", [])
            .unwrap();
        let writing = tokio::spawn(async move { index.put(&row("second"), None).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        other.execute_batch("COMMIT").unwrap();
        writing.await.unwrap().unwrap();
    }
}
