//! The embedded index's schema, and the settings of every connection to it.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::backend;
use crate::index::IndexError;

pub(super) const SCHEMA: &str = "
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

/// The app-wide listing's indexes (`list_app`): by time, and by file ID then time; the
/// settler's (`files_pending`); and the one `usage` counts a participant's unexpired upload
/// URLs from (`files_pending_usage`), which holds every column that count reads, so that it
/// reads no table row: with one per upload URL, a POST cost more with every file stored. Partial:
/// only rows with committed bytes are in them, so rows holding only an upload URL or claims
/// cost nothing and are never listed. `IF NOT EXISTS` adds them to an index file written by an
/// older version at its next open.
pub(super) const APP_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS files_by_app_time
    ON files (app, created_on, participant, file_id) WHERE object_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_by_app_file_time
    ON files (app, file_id, created_on, participant) WHERE object_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_pending
    ON files (app, participant, file_id) WHERE pending_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_pending_usage
    ON files (app, participant, pending_expires_on, object_key, pending_key)
    WHERE pending_key IS NOT NULL;
";

/// Columns added after the first schema, with their types: an index file written by an older
/// version gains them at open.
pub(super) const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("pending_issuer", "TEXT"),
    ("claims", "TEXT"),
    ("scanned_on", "INTEGER"),
    ("scan_engine", "TEXT"),
    ("scan_signature", "TEXT"),
    ("pending_lease", "TEXT"),
    ("file_name", "TEXT"),
    ("pending_file_name", "TEXT"),
];

/// Keeps a cached statement's plan when new values are bound. Without this, SQLite prepares a
/// statement again whenever a bound value might change its plan (`LIMIT ?`, ranges), which was a
/// fifth of the CPU time of a list request.
pub(super) fn stable_plans(conn: &Connection) -> Result<(), IndexError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(|e| backend("cannot keep query plans stable", e))
}

/// Every statement this index runs, the listing's shapes included, stays prepared: rusqlite
/// keeps 16 by default, and a statement pushed out is parsed again on its next use (parsing `get`
/// on every call cost about a quarter of a POST's CPU).
pub(super) fn keep_statements(conn: &Connection) {
    conn.set_prepared_statement_cache_capacity(64);
}

pub(super) fn open_reader(path: &Path) -> Result<Connection, IndexError> {
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

pub(super) fn add_missing_columns(conn: &Connection) -> Result<(), IndexError> {
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
