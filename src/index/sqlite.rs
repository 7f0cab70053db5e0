//! `SqliteFileIndex`: the embedded index, one SQLite file in WAL mode.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{AppQuery, FileIndex, IndexError, Usage};
use crate::keys::ObjectKey;
use crate::model::{
    AppId, Claim, FileId, FileRow, Issuer, Lease, Owner, PendingUpload, ScanEvidence, ScanStatus,
    StoredFile, UserId, Versioned,
};

mod uploads;
mod writer;

const NAME: &str = "sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    app TEXT NOT NULL,
    participant TEXT NOT NULL,
    file_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    object_key TEXT,
    mime_type TEXT,
    size INTEGER,
    sha256 TEXT,
    scan_status TEXT,
    created_on INTEGER,
    pending_key TEXT,
    pending_mime_type TEXT,
    pending_size INTEGER,
    pending_sha256 TEXT,
    pending_created_on INTEGER,
    pending_expires_on INTEGER,
    pending_issuer TEXT,
    claims TEXT,
    scanned_on INTEGER,
    scan_engine TEXT,
    scan_signature TEXT,
    pending_lease TEXT,
    file_name TEXT,
    pending_file_name TEXT,
    PRIMARY KEY (app, participant, file_id)
) WITHOUT ROWID;
";

/// The app-wide listing's indexes (`list_app`): by time, and by file ID then time. Partial:
/// only rows with committed bytes are in them, so rows holding only an upload URL or claims
/// cost nothing and are never listed. `IF NOT EXISTS` adds them to an index file written by an
/// older version at its next open.
const APP_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS files_by_app_time
    ON files (app, created_on, participant, file_id) WHERE object_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_by_app_file_time
    ON files (app, file_id, created_on, participant) WHERE object_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_pending
    ON files (app, participant, file_id) WHERE pending_key IS NOT NULL;
";

/// The settler's query: rows holding an upload URL, from the partial index that holds only
/// them, so that a poll costs what is pending, not what is stored.
const PENDING: &str = "FROM files INDEXED BY files_pending \
    WHERE pending_key IS NOT NULL AND (app, participant, file_id) > (?1, ?2, ?3) \
    ORDER BY app, participant, file_id LIMIT ?4";

/// The app-wide listing, by time. `INDEXED BY` makes SQLite fail the statement rather than
/// fall back to a table scan should the index ever not serve it. The upper bound is one row
/// value (the earlier of the offset and the end), so that a deep page starts where it should
/// instead of filtering its way down from the end.
const LIST_APP_BY_TIME: &str = "FROM files INDEXED BY files_by_app_time \
    WHERE app = ?1 AND object_key IS NOT NULL AND created_on >= ?2 \
    AND (created_on, participant, file_id) < (?3, ?4, ?5) \
    ORDER BY created_on DESC, participant DESC, file_id DESC LIMIT ?6";

/// The app-wide listing of one file ID.
const LIST_APP_BY_FILE: &str = "FROM files INDEXED BY files_by_app_file_time \
    WHERE app = ?1 AND object_key IS NOT NULL AND created_on >= ?2 \
    AND (created_on, participant, file_id) < (?3, ?4, ?5) AND file_id = ?7 \
    ORDER BY created_on DESC, participant DESC, file_id DESC LIMIT ?6";

/// The SQL of an app-wide listing and whether it filters by file ID, for tests that check the
/// query plan.
#[must_use]
pub fn list_app_sql(by_file: bool) -> String {
    format!(
        "SELECT {COLUMNS} {}",
        if by_file {
            LIST_APP_BY_FILE
        } else {
            LIST_APP_BY_TIME
        }
    )
}

/// The SQL of the settler's query, for tests that check the query plan.
#[must_use]
pub fn pending_sql() -> String {
    format!("SELECT {COLUMNS} {PENDING}")
}

/// Columns added after the first schema, with their types: an index file written by an older
/// version gains them at open.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("pending_issuer", "TEXT"),
    ("claims", "TEXT"),
    ("scanned_on", "INTEGER"),
    ("scan_engine", "TEXT"),
    ("scan_signature", "TEXT"),
    ("pending_lease", "TEXT"),
    ("file_name", "TEXT"),
    ("pending_file_name", "TEXT"),
];

const COLUMNS: &str = "app, participant, file_id, version, object_key, mime_type, size, sha256, \
    scan_status, created_on, pending_key, pending_mime_type, pending_size, pending_sha256, \
    pending_created_on, pending_expires_on, pending_issuer, claims, scanned_on, scan_engine, \
    scan_signature, pending_lease, file_name, pending_file_name";

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

/// Keeps a cached statement's plan when new values are bound. Without this, SQLite prepares a
/// statement again whenever a bound value might change its plan (`LIMIT ?`, ranges), which was a
/// fifth of the CPU time of a list request.
fn stable_plans(conn: &Connection) -> Result<(), IndexError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(|e| backend("cannot keep query plans stable", e))
}

/// Every statement this index runs, the listing's shapes included, stays prepared: rusqlite
/// keeps 16 by default, and a statement pushed out is parsed again on its next use (parsing `get`
/// on every call cost about a quarter of a POST's CPU).
fn keep_statements(conn: &Connection) {
    conn.set_prepared_statement_cache_capacity(64);
}

fn open_reader(path: &Path) -> Result<Connection, IndexError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| backend("cannot open a reader", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| backend("cannot set busy timeout", e))?;
    stable_plans(&conn)?;
    keep_statements(&conn);
    Ok(conn)
}

fn add_missing_columns(conn: &Connection) -> Result<(), IndexError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('files')")
        .map_err(|e| backend("cannot read the schema", e))?;
    let have = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| backend("cannot read the schema", e))?;
    for (name, kind) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE files ADD COLUMN {name} {kind}"))
                .map_err(|e| backend("cannot add a column", e))?;
        }
    }
    Ok(())
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

    /// Deletes the row that `sql` names (parameters: its three key columns, then the version)
    /// if it is still at `expected`; else a conflict.
    async fn delete_at(
        &self,
        sql: &'static str,
        [a, b, c]: [String; 3],
        expected: u64,
        failed: &'static str,
    ) -> Result<(), IndexError> {
        let expected = i64::try_from(expected).map_err(|_| IndexError::Conflict)?;
        self.with(move |conn| {
            let deleted = conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(params![a, b, c, expected]))
                .map_err(|e| backend(failed, e))?;
            if deleted == 1 {
                Ok(())
            } else {
                Err(IndexError::Conflict)
            }
        })
        .await
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

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Result<DateTime<Utc>, IndexError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp"))
}

fn size_from(v: Option<i64>) -> Result<Option<u64>, IndexError> {
    v.map(|n| u64::try_from(n).map_err(|_| corrupt("size")))
        .transpose()
}

fn size_to(v: Option<u64>) -> Result<Option<i64>, IndexError> {
    v.map(|n| i64::try_from(n).map_err(|_| corrupt("size")))
        .transpose()
}

/// The columns of one row as SQLite returns them, before they are checked.
struct RawRow {
    app: String,
    participant: String,
    file_id: String,
    version: i64,
    object_key: Option<String>,
    mime_type: Option<String>,
    size: Option<i64>,
    sha256: Option<String>,
    scan_status: Option<String>,
    created_on: Option<i64>,
    pending_key: Option<String>,
    pending_mime_type: Option<String>,
    pending_size: Option<i64>,
    pending_sha256: Option<String>,
    pending_created_on: Option<i64>,
    pending_expires_on: Option<i64>,
    pending_issuer: Option<String>,
    claims: Option<String>,
    scanned_on: Option<i64>,
    scan_engine: Option<String>,
    scan_signature: Option<String>,
    pending_lease: Option<String>,
    file_name: Option<String>,
    pending_file_name: Option<String>,
}

impl RawRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            app: r.get(0)?,
            participant: r.get(1)?,
            file_id: r.get(2)?,
            version: r.get(3)?,
            object_key: r.get(4)?,
            mime_type: r.get(5)?,
            size: r.get(6)?,
            sha256: r.get(7)?,
            scan_status: r.get(8)?,
            created_on: r.get(9)?,
            pending_key: r.get(10)?,
            pending_mime_type: r.get(11)?,
            pending_size: r.get(12)?,
            pending_sha256: r.get(13)?,
            pending_created_on: r.get(14)?,
            pending_expires_on: r.get(15)?,
            pending_issuer: r.get(16)?,
            claims: r.get(17)?,
            scanned_on: r.get(18)?,
            scan_engine: r.get(19)?,
            scan_signature: r.get(20)?,
            pending_lease: r.get(21)?,
            file_name: r.get(22)?,
            pending_file_name: r.get(23)?,
        })
    }

    fn into_row(self) -> Result<Versioned<FileRow>, IndexError> {
        let owner = Owner {
            app: AppId::parse(&self.app).map_err(|_| corrupt("app"))?,
            participant: UserId::parse(&self.participant).map_err(|_| corrupt("participant"))?,
        };
        let file_id = FileId::parse(&self.file_id).map_err(|_| corrupt("file ID"))?;
        let current = match self.object_key {
            None => None,
            Some(key) => Some(StoredFile {
                key: ObjectKey::parse(&key).ok_or_else(|| corrupt("object key"))?,
                mime_type: self.mime_type.ok_or_else(|| corrupt("mime type"))?,
                size: size_from(self.size)?.ok_or_else(|| corrupt("size"))?,
                sha256: self.sha256,
                scan_status: self
                    .scan_status
                    .as_deref()
                    .and_then(ScanStatus::parse)
                    .ok_or_else(|| corrupt("scan status"))?,
                created_on: from_millis(self.created_on.ok_or_else(|| corrupt("created on"))?)?,
                scan: match (self.scanned_on, self.scan_engine) {
                    (Some(on), Some(engine)) => Some(ScanEvidence {
                        scanned_on: from_millis(on)?,
                        engine,
                        signature: self.scan_signature,
                    }),
                    _ => None,
                },
                file_name: self.file_name,
            }),
        };
        let pending = match self.pending_key {
            None => None,
            Some(key) => {
                let key = ObjectKey::parse(&key).ok_or_else(|| corrupt("pending key"))?;
                Some(PendingUpload {
                    upload_id: key.upload_id(),
                    key,
                    mime_type: self
                        .pending_mime_type
                        .ok_or_else(|| corrupt("pending type"))?,
                    size: size_from(self.pending_size)?,
                    sha256: self.pending_sha256,
                    created_on: from_millis(
                        self.pending_created_on
                            .ok_or_else(|| corrupt("pending created on"))?,
                    )?,
                    expires_on: from_millis(
                        self.pending_expires_on
                            .ok_or_else(|| corrupt("pending expiry"))?,
                    )?,
                    issuer: self.pending_issuer.as_deref().and_then(Issuer::decode),
                    lease: self.pending_lease.as_deref().and_then(Lease::decode),
                    file_name: self.pending_file_name,
                })
            }
        };
        let claims = match self.claims.as_deref() {
            None => Vec::new(),
            Some(c) => Claim::decode_all(c).ok_or_else(|| corrupt("claims"))?,
        };
        Ok(Versioned {
            value: FileRow {
                owner,
                file_id,
                current,
                pending,
                claims,
            },
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
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

    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError> {
        let row = row.clone();
        self.with(move |tx| {
            // The version read and the row written in one savepoint of the writer's
            // transaction, which holds the write lock: nothing comes in between.
            let current: Option<i64> = tx
                .prepare_cached(
                    "SELECT version FROM files WHERE app = ?1 AND participant = ?2 AND file_id = ?3",
                )
                .and_then(|mut s| s.query_row(
                    params![
                        row.owner.app.as_str(),
                        row.owner.participant.as_str(),
                        row.file_id.as_str()
                    ],
                    |r| r.get(0),
                ).optional())
                .map_err(|e| backend("put failed", e))?;
            let current = current
                .map(|v| u64::try_from(v).map_err(|_| corrupt("version")))
                .transpose()?;
            if current != expected {
                return Err(IndexError::Conflict);
            }
            let version = expected.map_or(1, |v| v + 1);
            let c = row.current.as_ref();
            let p = row.pending.as_ref();
            let (stored_version, size, pending_size) = (
                i64::try_from(version).map_err(|_| corrupt("version"))?,
                size_to(c.map(|c| c.size))?,
                size_to(p.and_then(|p| p.size))?,
            );
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO files ({COLUMNS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
            ))
            .and_then(|mut s| s.execute(params![
                    row.owner.app.as_str(),
                    row.owner.participant.as_str(),
                    row.file_id.as_str(),
                    stored_version,
                    c.map(|c| c.key.as_str()),
                    c.map(|c| c.mime_type.as_str()),
                    size,
                    c.and_then(|c| c.sha256.as_deref()),
                    c.map(|c| c.scan_status.as_str()),
                    c.map(|c| millis(c.created_on)),
                    p.map(|p| p.key.as_str()),
                    p.map(|p| p.mime_type.as_str()),
                    pending_size,
                    p.and_then(|p| p.sha256.as_deref()),
                    p.map(|p| millis(p.created_on)),
                    p.map(|p| millis(p.expires_on)),
                    p.and_then(|p| p.issuer.as_ref()).map(Issuer::encode),
                    Claim::encode_all(&row.claims),
                    c.and_then(|c| c.scan.as_ref()).map(|s| millis(s.scanned_on)),
                    c.and_then(|c| c.scan.as_ref()).map(|s| s.engine.as_str()),
                    c.and_then(|c| c.scan.as_ref())
                        .and_then(|s| s.signature.as_deref()),
                    p.and_then(|p| p.lease.as_ref()).map(Lease::encode),
                    c.and_then(|c| c.file_name.as_deref()),
                    p.and_then(|p| p.file_name.as_deref()),
                ]))
            .map_err(|e| backend("put failed", e))?;
            Ok(version)
        })
        .await
    }

    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        self.delete_at(
            "DELETE FROM files WHERE app = ?1 AND participant = ?2 AND file_id = ?3 \
             AND version = ?4",
            [
                owner.app.to_string(),
                owner.participant.to_string(),
                file.to_string(),
            ],
            expected,
            "delete failed",
        )
        .await
    }

    async fn usage(&self, owner: &Owner, now: DateTime<Utc>) -> Result<Usage, IndexError> {
        let (app, participant) = (owner.app.to_string(), owner.participant.to_string());
        let now = millis(now);
        self.read(move |conn| {
            let (files, bytes, pending, pending_new): (i64, i64, i64, i64) = conn
                .prepare_cached(
                    "SELECT COUNT(object_key), COALESCE(SUM(size), 0), \
                     COUNT(CASE WHEN pending_expires_on > ?3 THEN 1 END), \
                     COUNT(CASE WHEN pending_expires_on > ?3 AND object_key IS NULL THEN 1 END) \
                     FROM files WHERE app = ?1 AND participant = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![app, participant, now], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                })
                .map_err(|e| backend("usage failed", e))?;
            let n = |v: i64| u64::try_from(v).map_err(|_| corrupt("size"));
            Ok(Usage {
                files: n(files)?,
                bytes: n(bytes)?,
                pending: n(pending)?,
                pending_new: n(pending_new)?,
            })
        })
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
