//! The settler: each instance polls the index's pending uploads, takes the presigned ones that
//! arrived (one instance per arrival, by a lease in the row) and drops expired ones.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{FileService, FilesError};
use crate::model::{FileId, FileRow, Lease, Owner, Versioned};

/// How long a lease holds without renewal: an instance that stops mid-scan delays the arrival
/// by at most this much. The holder renews it every third of it.
const LEASE: Duration = Duration::from_mins(1);

/// Rows read from the pending index at a time.
const PAGE: usize = 100;

/// What became of one arrival the settler took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrivalOutcome {
    /// Scanned (when there is a scanner) and committed, or refused and deleted.
    Settled,
    /// A backend or the scanner failed: the upload stays pending for a later pass.
    Deferred,
}

/// Runs the settler until `stop`: a pass every `interval`, at most `concurrency` arrivals
/// streamed at once. `observe` hears of each arrival taken (for the metrics).
pub async fn run(
    files: FileService,
    interval: Duration,
    concurrency: usize,
    stop: CancellationToken,
    observe: Arc<dyn Fn(ArrivalOutcome) + Send + Sync>,
) {
    // Without a scanner, the requests that touch a file settle its arrival themselves.
    if !files.settler_only() {
        return;
    }
    let holder = crate::keys::UploadId::generate().as_str().to_owned();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = files.settle_pass(&holder, &slots, &stop, &observe).await {
            tracing::warn!(error = %e, "the settler's pass failed; the next one tries again");
        }
    }
}

impl FileService {
    /// One pass over every pending upload. An arrival whose lease this instance takes is
    /// streamed on a task of its own, while a slot is free; the others wait for a later pass.
    async fn settle_pass(
        &self,
        holder: &str,
        slots: &Arc<Semaphore>,
        stop: &CancellationToken,
        observe: &Arc<dyn Fn(ArrivalOutcome) + Send + Sync>,
    ) -> Result<(), FilesError> {
        let mut after: Option<(Owner, FileId)> = None;
        loop {
            let rows = self
                .index
                .pending(after.as_ref().map(|(o, f)| (o, f)), PAGE)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = Some((last.value.owner.clone(), last.value.file_id.clone()));
            let full = rows.len() == PAGE;
            for row in rows {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
                    // Every slot is busy: the rest waits for a later pass.
                    return Ok(());
                };
                let Some(leased) = self.lease_arrival(row, holder).await? else {
                    continue;
                };
                let (files, stop, observe) = (self.clone(), stop.clone(), Arc::clone(observe));
                let holder = holder.to_owned();
                self.tasks.spawn(async move {
                    let outcome = files.settle_leased(leased, &holder, &stop).await;
                    observe(outcome);
                    drop(slot);
                });
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Takes the lease on the row's upload if it arrived and nobody holds it; drops an expired
    /// upload that never arrived. Returns the leased row.
    pub(super) async fn lease_arrival(
        &self,
        row: Versioned<FileRow>,
        holder: &str,
    ) -> Result<Option<Versioned<FileRow>>, FilesError> {
        let Some(pending) = row.value.pending.clone() else {
            return Ok(None);
        };
        let now = Utc::now();
        if pending.lease.as_ref().is_some_and(|l| l.until > now) {
            return Ok(None);
        }
        if self.store.size(&pending.key).await?.is_none() {
            if pending.expires_on <= now {
                self.drop_pending(&row.value.owner, &row.value.file_id, &pending)
                    .await?;
            }
            return Ok(None);
        }
        let mut next = row.value;
        if let Some(p) = next.pending.as_mut() {
            p.lease = Some(Lease {
                holder: holder.to_owned(),
                until: now + LEASE,
            });
        }
        match self.index.put(&next, Some(row.version)).await {
            Ok(version) => Ok(Some(Versioned {
                value: next,
                version,
            })),
            // Another instance took it, or the row changed: a later pass looks again.
            Err(e) if e.is_retryable() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams a leased arrival through the pipeline, renewing the lease meanwhile. A failure
    /// that is not the upload's fault gives the lease back, so that the next pass tries again.
    pub(super) async fn settle_leased(
        &self,
        row: Versioned<FileRow>,
        holder: &str,
        stop: &CancellationToken,
    ) -> ArrivalOutcome {
        let FileRow {
            owner,
            file_id,
            pending,
            ..
        } = row.value;
        let Some(pending) = pending else {
            return ArrivalOutcome::Settled;
        };
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                self.set_lease(&owner, &file_id, &pending.upload_id, holder, true)
                    .await;
            }
        };
        let result = tokio::select! {
            r = self.take_arrival(&owner, &file_id, &pending) => Some(r),
            () = renew => None,
            () = stop.cancelled() => None,
        };
        match result {
            Some(Ok(())) => ArrivalOutcome::Settled,
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "an arrived upload could not be settled; it stays pending");
                }
                self.set_lease(&owner, &file_id, &pending.upload_id, holder, false)
                    .await;
                ArrivalOutcome::Deferred
            }
        }
    }

    /// Renews (`hold`) or gives back this instance's lease on the upload, if it still holds it.
    /// Best effort: a lease that is not renewed runs out by itself.
    async fn set_lease(
        &self,
        owner: &Owner,
        file_id: &FileId,
        upload: &crate::keys::UploadId,
        holder: &str,
        hold: bool,
    ) {
        for _ in 0..5 {
            let Ok(Some(mut row)) = self.index.get(owner, file_id).await else {
                return;
            };
            let Some(p) = row.value.pending.as_mut() else {
                return;
            };
            if &p.upload_id != upload || p.lease.as_ref().is_none_or(|l| l.holder != holder) {
                return;
            }
            p.lease = hold.then(|| Lease {
                holder: holder.to_owned(),
                until: Utc::now() + LEASE,
            });
            match self.index.put(&row.value, Some(row.version)).await {
                Err(e) if e.is_retryable() => {}
                _ => return,
            }
        }
    }
}
