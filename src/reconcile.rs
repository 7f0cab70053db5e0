//! `participant-files reconcile`: removes objects that no row names, pending uploads and
//! resumable uploads that expired, and claims of uploads that were left unfinished, so that no
//! participant's bytes outlive their row.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::backends::Backends;
use crate::index::IndexError;
use crate::keys::ObjectKey;
use crate::model::{FileId, Owner, Staged};

/// Where the last run's figures go in the data dir, in the Prometheus text format.
pub const METRICS_FILE: &str = "reconcile.prom";

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// What it removed and repaired, as lines an operator can read (identifiers and counts
    /// only, no content).
    pub lines: Vec<String>,
    /// Participants whose usage counters had drifted and were repaired.
    pub usage_repaired: u64,
}

impl Report {
    /// Writes the run's figures to `path` for a textfile collector, like `rescan.prom`.
    pub fn write_metrics(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use prometheus::{IntGauge, Registry};
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, value: u64| -> anyhow::Result<()> {
            let g = IntGauge::new(name, help)?;
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            registry.register(Box::new(g))?;
            Ok(())
        };
        gauge(
            "pf_reconcile_usage_repaired",
            "Participants whose usage counters the last reconcile run found drifted and repaired",
            self.usage_repaired,
        )?;
        gauge(
            "pf_reconcile_actions",
            "What the last reconcile run removed or repaired, one per line it printed",
            self.lines.len() as u64,
        )?;
        gauge(
            "pf_reconcile_last_run_timestamp_seconds",
            "When the last reconcile run finished",
            u64::try_from(Utc::now().timestamp()).unwrap_or_default(),
        )?;
        crate::metrics::write_textfile(path, &registry)?;
        Ok(())
    }
}

/// What reconcile removed and repaired. Claims of uploads through the service older than
/// `min_age` are revoked: such an upload can no longer commit, and its object goes.
pub async fn run(backends: &Backends, min_age: Duration) -> anyhow::Result<Report> {
    // The objects are listed before the rows are read. An upload writes its claim (or its
    // upload URL's pending row) before the object's first byte, so every object listed here is
    // named, in the rows read afterwards, by a claim, a pending upload or a file, unless it is
    // an orphan. Reading the rows first would miss an upload that began in between.
    let objects = backends.store.list().await?;
    let mut removed = Vec::new();
    let mut repaired = 0;
    // Participants whose counters were recounted, by meeting their rows.
    let mut recounted: HashSet<Owner> = HashSet::new();
    let mut referenced: HashSet<ObjectKey> = HashSet::new();
    let now = Utc::now();
    let stale = now - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let mut after: Option<(Owner, FileId)> = None;
    // The participant whose rows are being read: its usage counters are recounted once its
    // last row was read.
    let mut visited: Option<Owner> = None;
    loop {
        let rows = backends
            .index
            .scan(after.as_ref().map(|(o, f)| (o, f)), 100)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.value.owner.clone(), last.value.file_id.clone()));
        let full = rows.len() == 100;
        for row in rows {
            if visited.as_ref() != Some(&row.value.owner)
                && let Some(done) = visited.replace(row.value.owner.clone())
            {
                repaired += recount(backends, &done, &mut removed).await?;
                recounted.insert(done);
            }
            let mut next = row.value.clone();
            let mut lines = Vec::new();
            if let Some(c) = &next.current {
                referenced.insert(c.key.clone());
            }
            next.claims.retain(|c| {
                if c.since > stale {
                    referenced.insert(c.key.clone());
                    true
                } else {
                    lines.push(format!("abandoned upload {}", c.key));
                    false
                }
            });
            if let Some(p) = next.pending.clone() {
                // Live, or arrived (the next access or the settler makes it the file): kept.
                if p.expires_on > now || backends.store.size(&p.key).await?.is_some() {
                    referenced.insert(p.key.clone());
                } else {
                    next.pending = None;
                    lines.push(format!("expired pending upload {}", p.key));
                }
            }
            if lines.is_empty() {
                continue;
            }
            // A row that changed meanwhile is left for the next run, and all it names is kept.
            match backends.index.rewrite(&next, row.version).await {
                Ok(()) => removed.extend(lines),
                Err(IndexError::Conflict) => {
                    referenced.extend(row.value.claims.iter().map(|c| c.key.clone()));
                    referenced.extend(row.value.pending.iter().map(|p| p.key.clone()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !full {
            break;
        }
    }
    if let Some(done) = visited {
        repaired += recount(backends, &done, &mut removed).await?;
        recounted.insert(done);
    }
    // A counter whose participant has no row left (or only resumable uploads) is met by no
    // row above.
    for owner in backends.index.owners_with_usage().await? {
        if !recounted.contains(&owner) {
            repaired += recount(backends, &owner, &mut removed).await?;
        }
    }
    removed.extend(drop_expired_uploads(backends).await?);
    let (tails, objects): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o.tail);
    removed.extend(drop_stray_tails(backends, tails).await?);
    for object in objects {
        if referenced.contains(&object.key) {
            continue;
        }
        backends.store.delete(&object.key).await?;
        removed.push(format!("object without a row {}", object.key));
    }
    Ok(Report {
        lines: removed,
        usage_repaired: repaired,
    })
}

/// Removes the tails of resumable uploads that ended (their row is gone, or says how they
/// ended): a writer stopped mid-request, or an instance that died, may leave one behind. An
/// open upload's tails stay: it removes every one of them when it ends.
async fn drop_stray_tails(
    backends: &Backends,
    tails: Vec<crate::store::ListedObject>,
) -> anyhow::Result<Vec<String>> {
    let keys: HashSet<ObjectKey> = tails.into_iter().map(|t| t.key).collect();
    let mut removed = Vec::new();
    for key in keys {
        let row = backends
            .index
            .uploads()
            .get_upload(&key.owner(), &key.upload_id())
            .await?;
        if row.is_some_and(|r| r.value.outcome.is_none()) {
            continue;
        }
        backends.store.drop_staged(&Staged::bare(&key)).await?;
        removed.push(format!("tails of an ended resumable upload {key}"));
    }
    Ok(removed)
}

/// Removes resumable uploads past their expiry: the store's staged bytes (multipart aborted,
/// tails deleted), then the row.
async fn drop_expired_uploads(backends: &Backends) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let uploads = backends.index.uploads();
    loop {
        let expired = uploads.expired_uploads(Utc::now(), 100).await?;
        let mut progressed = false;
        for row in expired {
            backends.store.drop_staged(&row.value.staged).await?;
            match uploads
                .delete_upload(&row.value.owner, &row.value.id, row.version)
                .await
            {
                Ok(()) => {
                    removed.push(format!("expired resumable upload {}", row.value.staged.key));
                    progressed = true;
                }
                // Written meanwhile: the next run looks again.
                Err(IndexError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !progressed {
            return Ok(removed);
        }
    }
}

/// Counts the participant's rows again and repairs usage counters that drifted, with a line
/// of identifiers and counts only (not an audit event: no file changed) added to `lines`;
/// returns how many drifted. A participant that had no counters yet (written before they
/// existed) is counted quietly: that is the migration, not drift.
async fn recount(
    backends: &Backends,
    owner: &Owner,
    lines: &mut Vec<String>,
) -> anyhow::Result<u64> {
    let repaired = backends.index.recount(owner).await?;
    let before = lines.len();
    lines.extend(repaired.into_iter().filter_map(|r| {
        let was = r.stored?;
        let line = format!(
            "usage counter repaired {}/{}: {} files, {} bytes, {} uploads -> {} files, {} \
                 bytes, {} uploads",
            r.owner.app,
            r.owner.participant,
            was.files,
            was.bytes,
            was.uploads,
            r.counted.files,
            r.counted.bytes,
            r.counted.uploads
        );
        tracing::warn!(app = %r.owner.app, participant = %r.owner.participant, "{line}");
        Some(line)
    }));
    Ok((lines.len() - before) as u64)
}
