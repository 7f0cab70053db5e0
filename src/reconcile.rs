//! `participant-files reconcile`: removes objects that no row names and pending uploads that
//! expired, so that no participant's bytes outlive their row.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;

use crate::backends::Backends;
use crate::keys::ObjectKey;
use crate::model::{FileId, Owner};

/// What reconcile removed, as lines an operator can read (identifiers only, no content).
pub async fn run(backends: &Backends, min_age: Duration) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut referenced: HashSet<ObjectKey> = HashSet::new();
    let now = Utc::now();
    let mut after: Option<(Owner, FileId)> = None;
    loop {
        let rows = backends
            .index
            .scan(after.as_ref().map(|(o, f)| (o, f)), 100)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.value.owner.clone(), last.value.file_id.clone()));
        let full = rows.len() == 100;
        for row in rows {
            if let Some(c) = &row.value.current {
                referenced.insert(c.key.clone());
            }
            let Some(p) = row.value.pending.clone() else {
                continue;
            };
            // Live, or arrived (in presigned mode the next access makes it the file): kept.
            if p.expires_on > now || backends.store.size(&p.key).await?.is_some() {
                referenced.insert(p.key.clone());
                continue;
            }
            // Expired: drop it from the row (or the row, when it held nothing else). A row that
            // changed meanwhile is left for the next run.
            let mut next = row.value.clone();
            next.pending = None;
            let written = if next.current.is_none() {
                backends
                    .index
                    .delete(&next.owner, &next.file_id, row.version)
                    .await
            } else {
                backends
                    .index
                    .put(&next, Some(row.version))
                    .await
                    .map(|_| ())
            };
            match written {
                Ok(()) => {
                    backends.store.delete(&p.key).await?;
                    removed.push(format!("expired pending upload {}", p.key));
                }
                Err(crate::index::IndexError::Conflict) => {
                    referenced.insert(p.key.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !full {
            break;
        }
    }
    let cutoff = now - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    // Rows are switched moments after their object is committed, so an object younger than
    // `min_age` may belong to an upload that is finishing; older ones that no row named during
    // the scan above are orphans.
    for object in backends.store.list().await? {
        if referenced.contains(&object.key) || object.modified > cutoff {
            continue;
        }
        backends.store.delete(&object.key).await?;
        removed.push(format!("object without a row {}", object.key));
    }
    Ok(removed)
}
