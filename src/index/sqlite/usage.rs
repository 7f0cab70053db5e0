//! The embedded index's usage counters: a row per participant, and one per app (participant
//! `''`, which no participant ID is) for its open uploads, written in the writer's transaction
//! with the rows they count.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{backend, corrupt, millis};
use crate::index::usage::{
    Counters, FileCount, FileQuota, LimitReached, OpenLimits, QuotaReached, Recount,
};
use crate::index::{IndexError, Usage};
use crate::model::{AppId, Owner, UserId};

/// Created at every open, after the uploads table: an index file of an older version gains
/// them, and its participants are counted once at their next write (or by `reconcile`).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    app TEXT NOT NULL,
    participant TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    uploads INTEGER NOT NULL,
    PRIMARY KEY (app, participant)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_open ON uploads (app, participant, expires_on) WHERE open;
";

/// The participant that stands for the whole app in the usage table.
const APP: &str = "";

fn count(v: i64) -> Result<u64, IndexError> {
    u64::try_from(v).map_err(|_| corrupt("usage counter"))
}

/// The counters as stored, if the participant has them.
fn stored(conn: &Connection, app: &str, participant: &str) -> Result<Option<Counters>, IndexError> {
    let found: Option<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT files, bytes, uploads FROM usage WHERE app = ?1 AND participant = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![app, participant], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(|e| backend("reading usage failed", e))?;
    found
        .map(|(f, b, u)| {
            Ok(Counters {
                files: count(f)?,
                bytes: count(b)?,
                uploads: count(u)?,
            })
        })
        .transpose()
}

/// The counters as the rows say: every row of the participant (or every open upload of the
/// app). Run once per participant without counters, and by `reconcile`.
fn counted(conn: &Connection, app: &str, participant: &str) -> Result<Counters, IndexError> {
    let failed = |e| backend("counting usage failed", e);
    let uploads: i64 = if participant == APP {
        conn.prepare_cached("SELECT COUNT(*) FROM uploads WHERE app = ?1 AND open")
            .and_then(|mut s| s.query_row(params![app], |r| r.get(0)))
            .map_err(failed)?
    } else {
        conn.prepare_cached(
            "SELECT COUNT(*) FROM uploads WHERE app = ?1 AND participant = ?2 AND open",
        )
        .and_then(|mut s| s.query_row(params![app, participant], |r| r.get(0)))
        .map_err(failed)?
    };
    let (files, bytes): (i64, i64) = if participant == APP {
        (0, 0)
    } else {
        conn.prepare_cached(
            "SELECT COUNT(object_key), COALESCE(SUM(size), 0) FROM files \
             WHERE app = ?1 AND participant = ?2",
        )
        .and_then(|mut s| s.query_row(params![app, participant], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(failed)?
    };
    Ok(Counters {
        files: count(files)?,
        bytes: count(bytes)?,
        uploads: count(uploads)?,
    })
}

fn store(conn: &Connection, app: &str, participant: &str, c: Counters) -> Result<(), IndexError> {
    let n = |v: u64| i64::try_from(v).map_err(|_| corrupt("usage counter"));
    let (files, bytes, uploads) = (n(c.files)?, n(c.bytes)?, n(c.uploads)?);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO usage (app, participant, files, bytes, uploads) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![app, participant, files, bytes, uploads]))
    .map(|_| ())
    .map_err(|e| backend("writing usage failed", e))
}

/// Changes one counters row by a write's change; called after the write, in its savepoint.
/// A row without counters is counted from the rows instead, which already hold the write.
fn change_one(
    conn: &Connection,
    app: &str,
    participant: &str,
    files: FileCount,
    uploads: i64,
) -> Result<(), IndexError> {
    let changed = conn
        .prepare_cached(
            "UPDATE usage SET files = MAX(files + ?3, 0), bytes = MAX(bytes + ?4, 0), \
             uploads = MAX(uploads + ?5, 0) WHERE app = ?1 AND participant = ?2",
        )
        .and_then(|mut s| s.execute(params![app, participant, files.files, files.bytes, uploads]))
        .map_err(|e| backend("writing usage failed", e))?;
    if changed == 0 {
        let now = counted(conn, app, participant)?;
        store(conn, app, participant, now)?;
    }
    Ok(())
}

/// Changes the owner's counters (and the app's, for open uploads) by a write's change.
pub(super) fn change(
    conn: &Connection,
    owner: &Owner,
    files: FileCount,
    uploads: i64,
) -> Result<(), IndexError> {
    let app = owner.app.as_str();
    if files.is_zero() && uploads == 0 {
        // A write that changes no counter still counts a participant that has none (an
        // index file from before counters): from then on its reads cost the same at any size.
        if stored(conn, app, owner.participant.as_str())?.is_none() {
            let now = counted(conn, app, owner.participant.as_str())?;
            store(conn, app, owner.participant.as_str(), now)?;
        }
        return Ok(());
    }
    change_one(conn, app, owner.participant.as_str(), files, uploads)?;
    if uploads != 0 {
        change_one(conn, app, APP, FileCount::default(), uploads)?;
    }
    Ok(())
}

/// Which quota the owner's counters would pass with `change`; in the writer's transaction,
/// so that the check and the write that follows it are one.
pub(super) fn over_quota(
    conn: &Connection,
    owner: &Owner,
    change: FileCount,
    quota: FileQuota,
) -> Result<Option<QuotaReached>, IndexError> {
    match quota.ceilings(change) {
        // No quota applies to this change: nothing to read.
        Ok((None, None)) => return Ok(None),
        Err(reached) => return Ok(Some(reached)),
        Ok(_) => {}
    }
    let (app, participant) = (owner.app.as_str(), owner.participant.as_str());
    let held = match stored(conn, app, participant)? {
        Some(c) => c,
        None => counted(conn, app, participant)?,
    };
    Ok(quota.refuses(held, change))
}

/// The version and the count of the file row at the key, if there is one.
pub(super) fn file_before(
    conn: &Connection,
    owner: &Owner,
    file: &str,
) -> Result<Option<(u64, FileCount)>, IndexError> {
    let found: Option<(i64, bool, Option<i64>)> = conn
        .prepare_cached(
            "SELECT version, object_key IS NOT NULL, size FROM files \
             WHERE app = ?1 AND participant = ?2 AND file_id = ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![owner.app.as_str(), owner.participant.as_str(), file],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })
        .map_err(|e| backend("reading a row failed", e))?;
    found
        .map(|(v, file, size)| {
            let version = u64::try_from(v).map_err(|_| corrupt("version"))?;
            let count = if file {
                FileCount {
                    files: 1,
                    bytes: size.ok_or_else(|| corrupt("size"))?,
                }
            } else {
                FileCount::default()
            };
            Ok((version, count))
        })
        .transpose()
}

/// Open uploads of the participant that expired by `now` and are not swept yet: its counter
/// holds them until `reconcile` removes them. Read from the partial index of open uploads, so
/// it costs what is open, not what was ever uploaded.
fn expired_open(
    conn: &Connection,
    app: &str,
    participant: &str,
    now: i64,
) -> Result<u64, IndexError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM uploads INDEXED BY uploads_open \
             WHERE app = ?1 AND participant = ?2 AND open AND expires_on <= ?3",
        )
        .and_then(|mut s| s.query_row(params![app, participant, now], |r| r.get(0)))
        .map_err(|e| backend("counting uploads failed", e))?;
    count(n)
}

/// Whether one more open upload of `owner` stays within `limits` at `now`; in the writer's
/// transaction, so that the check and the insert that follows it are one write. The
/// participant's expired uploads hold no slot; the app's bound counts every upload until it is
/// swept (as on DynamoDB, where the app's expired ones cannot be counted cheaply).
pub(super) fn room_for_upload(
    conn: &Connection,
    owner: &Owner,
    limits: OpenLimits,
    now: DateTime<Utc>,
) -> Result<Result<(), LimitReached>, IndexError> {
    let (app, participant) = (owner.app.as_str(), owner.participant.as_str());
    let held = |who: &str| -> Result<u64, IndexError> {
        Ok(match stored(conn, app, who)? {
            Some(c) => c.uploads,
            None => counted(conn, app, who)?.uploads,
        })
    };
    let live =
        held(participant)?.saturating_sub(expired_open(conn, app, participant, millis(now))?);
    if live >= limits.per_participant {
        return Ok(Err(LimitReached::Participant));
    }
    if held(APP)? >= limits.per_app {
        return Ok(Err(LimitReached::App));
    }
    Ok(Ok(()))
}

/// What the owner holds: the counters (or, for a participant not counted yet, its rows) and
/// its unexpired upload URLs, read from the partial index of rows holding one. That index
/// holds at most `PF_MAX_PENDING_PER_PARTICIPANT` live entries of the owner plus the expired
/// ones that `reconcile` (or the settler) has not cleared yet.
pub(super) fn usage(
    conn: &Connection,
    owner: &Owner,
    now: DateTime<Utc>,
) -> Result<Usage, IndexError> {
    let (app, participant) = (owner.app.as_str(), owner.participant.as_str());
    let c = match stored(conn, app, participant)? {
        Some(c) => c,
        None => counted(conn, app, participant)?,
    };
    let (pending, pending_new): (i64, i64) = conn
        .prepare_cached(super::queries::PENDING_USAGE)
        .and_then(|mut s| {
            s.query_row(params![app, participant, millis(now)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(|e| backend("usage failed", e))?;
    Ok(Usage {
        files: c.files,
        bytes: c.bytes,
        pending: count(pending)?,
        pending_new: count(pending_new)?,
    })
}

/// The stored counters of `owner`, or `None` when it has none yet.
pub(super) fn counters(conn: &Connection, owner: &Owner) -> Result<Option<Counters>, IndexError> {
    stored(conn, owner.app.as_str(), owner.participant.as_str())
}

/// Counts the owner's rows and the app's open uploads again, and writes the counters that
/// differ from the count; in the writer's transaction, so no write comes in between.
pub(super) fn recount(conn: &Connection, owner: &Owner) -> Result<Vec<Recount>, IndexError> {
    let app = owner.app.as_str();
    let mut repaired = Vec::new();
    for who in [owner.participant.as_str(), APP] {
        let (was, now) = (stored(conn, app, who)?, counted(conn, app, who)?);
        if was != Some(now) {
            store(conn, app, who, now)?;
            if who != APP {
                repaired.push(Recount {
                    owner: owner.clone(),
                    stored: was,
                    counted: now,
                });
            }
        }
    }
    Ok(repaired)
}

/// Every participant whose counters are not all zero (the app rows are not participants).
pub(super) fn owners_with_usage(conn: &mut Connection) -> Result<Vec<Owner>, IndexError> {
    let mut stmt = conn
        .prepare(
            "SELECT app, participant FROM usage \
             WHERE participant != '' AND (files != 0 OR bytes != 0 OR uploads != 0)",
        )
        .map_err(|e| backend("reading usage failed", e))?;
    let pairs = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| backend("reading usage failed", e))?;
    pairs
        .into_iter()
        .map(|(app, participant)| {
            Ok(Owner {
                app: AppId::parse(&app).map_err(|_| corrupt("usage app"))?,
                participant: UserId::parse(&participant)
                    .map_err(|_| corrupt("usage participant"))?,
            })
        })
        .collect()
}
