//! The queries that read many rows: the settler's and the app-wide listing's, each served by a
//! partial index named in the statement, so that none can become a table scan.

use super::row::COLUMNS;

/// The settler's query: rows holding an upload URL, from the partial index that holds only
/// them, so that a poll costs what is pending, not what is stored.
const PENDING: &str = "FROM files INDEXED BY files_pending \
    WHERE pending_key IS NOT NULL AND (app, participant, file_id) > (?1, ?2, ?3) \
    ORDER BY app, participant, file_id LIMIT ?4";

/// What `usage` reads of a participant's unexpired upload URLs: how many, and how many are of
/// new files. Answered from the covering partial index alone, however many files it has.
pub const PENDING_USAGE: &str = "SELECT COUNT(*), COUNT(CASE WHEN object_key IS NULL THEN 1 END) \
    FROM files INDEXED BY files_pending_usage WHERE app = ?1 AND participant = ?2 \
    AND pending_key IS NOT NULL AND pending_expires_on > ?3";

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
