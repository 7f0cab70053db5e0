//! Resumable uploads in SQLite: a table of their own, the state as JSON beside the columns
//! that queries select by.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteFileIndex, backend, corrupt, millis, usage};
use crate::index::usage::{FileCount, LimitReached, OpenLimits};
use crate::index::{IndexError, UploadIndex};
use crate::keys::UploadId;
use crate::model::{Owner, ResumableUpload, Versioned};

/// Created at every open, so that an index file of an older version gains it.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    app TEXT NOT NULL,
    participant TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_on INTEGER NOT NULL,
    open INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (app, participant, upload_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_by_expiry ON uploads (expires_on);
";

fn decode(version: i64, state: &str) -> Result<Versioned<ResumableUpload>, IndexError> {
    Ok(Versioned {
        value: serde_json::from_str(state).map_err(|_| corrupt("upload state"))?,
        version: u64::try_from(version).map_err(|_| corrupt("version"))?,
    })
}

/// The version of the upload's row and whether it is open, if there is one.
fn upload_before(
    tx: &Connection,
    owner: &Owner,
    id: &UploadId,
) -> Result<Option<(u64, bool)>, IndexError> {
    let found: Option<(i64, bool)> = tx
        .prepare_cached(
            "SELECT version, open FROM uploads \
             WHERE app = ?1 AND participant = ?2 AND upload_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![owner.app.as_str(), owner.participant.as_str(), id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(|e| backend("reading an upload failed", e))?;
    found
        .map(|(v, open)| Ok((u64::try_from(v).map_err(|_| corrupt("version"))?, open)))
        .transpose()
}

/// Writes the upload's row over `expected` and changes the open-upload counters by whether
/// it opened or ended.
fn write(
    tx: &Connection,
    upload: &ResumableUpload,
    expected: Option<u64>,
    was_open: bool,
) -> Result<u64, IndexError> {
    let state = serde_json::to_string(upload).expect("upload state serializes");
    let version = expected.map_or(1, |v| v + 1);
    let stored = i64::try_from(version).map_err(|_| corrupt("version"))?;
    let open = upload.outcome.is_none();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO uploads \
         (app, participant, upload_id, version, expires_on, open, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            upload.owner.app.as_str(),
            upload.owner.participant.as_str(),
            upload.id.as_str(),
            stored,
            millis(upload.expires_on),
            open,
            state,
        ])
    })
    .map_err(|e| backend("writing an upload failed", e))?;
    usage::change(
        tx,
        &upload.owner,
        FileCount::default(),
        i64::from(open) - i64::from(was_open),
    )?;
    Ok(version)
}

#[async_trait]
impl UploadIndex for SqliteFileIndex {
    async fn get_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Option<Versioned<ResumableUpload>>, IndexError> {
        let key = (
            owner.app.to_string(),
            owner.participant.to_string(),
            id.as_str().to_owned(),
        );
        self.read(move |conn| {
            let found: Option<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, state FROM uploads \
                     WHERE app = ?1 AND participant = ?2 AND upload_id = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![key.0, key.1, key.2], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(|e| backend("reading an upload failed", e))?;
            found.map(|(v, s)| decode(v, &s)).transpose()
        })
    }

    async fn put_upload(
        &self,
        upload: &ResumableUpload,
        expected: Option<u64>,
    ) -> Result<u64, IndexError> {
        let upload = upload.clone();
        self.with(move |tx| {
            let before = upload_before(tx, &upload.owner, &upload.id)?;
            if before.map(|(v, _)| v) != expected {
                return Err(IndexError::Conflict);
            }
            write(tx, &upload, expected, before.is_some_and(|(_, open)| open))
        })
        .await
    }

    async fn create_upload(
        &self,
        upload: &ResumableUpload,
        limits: OpenLimits,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, LimitReached>, IndexError> {
        let upload = upload.clone();
        self.with(move |tx| {
            // The check and the insert in one savepoint of the writer's transaction: racing
            // creations are taken one after the other, and the last ones see the limit reached.
            if upload_before(tx, &upload.owner, &upload.id)?.is_some() {
                return Err(IndexError::Conflict);
            }
            if let Err(reached) = usage::room_for_upload(tx, &upload.owner, limits, now)? {
                return Ok(Err(reached));
            }
            write(tx, &upload, None, false).map(Ok)
        })
        .await
    }

    async fn delete_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
        expected: u64,
    ) -> Result<(), IndexError> {
        let (owner, id) = (owner.clone(), id.clone());
        self.with(move |tx| {
            let Some((version, open)) = upload_before(tx, &owner, &id)? else {
                return Err(IndexError::Conflict);
            };
            if version != expected {
                return Err(IndexError::Conflict);
            }
            tx.prepare_cached(
                "DELETE FROM uploads WHERE app = ?1 AND participant = ?2 AND upload_id = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    owner.app.as_str(),
                    owner.participant.as_str(),
                    id.as_str()
                ])
            })
            .map_err(|e| backend("deleting an upload failed", e))?;
            usage::change(tx, &owner, FileCount::default(), if open { -1 } else { 0 })
        })
        .await
    }

    async fn uploads_of(
        &self,
        owner: &Owner,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError> {
        let (app, participant) = (owner.app.to_string(), owner.participant.to_string());
        let after = after.map_or_else(String::new, |a| a.as_str().to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows: Vec<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, state FROM uploads WHERE app = ?1 AND participant = ?2 \
                     AND upload_id > ?3 ORDER BY upload_id LIMIT ?4",
                )
                .and_then(|mut s| {
                    s.query_map(params![app, participant, after, limit], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(|e| backend("listing uploads failed", e))?;
            rows.iter().map(|(v, s)| decode(*v, s)).collect()
        })
    }

    async fn open_uploads(&self, owner: &Owner, now: DateTime<Utc>) -> Result<u64, IndexError> {
        let (app, participant) = (owner.app.to_string(), owner.participant.to_string());
        let now = millis(now);
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM uploads WHERE app = ?1 AND participant = ?2 \
                     AND open AND expires_on > ?3",
                )
                .and_then(|mut s| s.query_row(params![app, participant, now], |r| r.get(0)))
                .map_err(|e| backend("counting uploads failed", e))?;
            u64::try_from(n).map_err(|_| corrupt("count"))
        })
    }

    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError> {
        let now = millis(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows: Vec<(i64, String)> = conn
                .prepare_cached(
                    "SELECT version, state FROM uploads WHERE expires_on <= ?1 \
                     ORDER BY expires_on LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![now, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect()
                })
                .map_err(|e| backend("listing expired uploads failed", e))?;
            rows.iter().map(|(v, s)| decode(*v, s)).collect()
        })
    }
}
