//! The settler: each instance polls the index's pending uploads, takes the presigned ones that
//! arrived (one instance per arrival, by a lease in the row) and drops expired ones.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Backoff;
use super::{FileService, FilesError};
use crate::lease::{Fence, Lease};
use crate::model::{FileId, FileRow, Owner, PendingUpload, Versioned};

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
    /// Settled, replaced or erased by someone else, or taken over by another instance while
    /// this one stalled past its lease: nothing of this instance's work on it landed.
    Lost,
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
                self.tasks.spawn(async move {
                    let outcome = files.settle_leased(leased, &stop).await;
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
        // A live lease is another settle's, also one of this holder's own tasks.
        let Ok(lease) = Lease::take(pending.lease.as_ref(), holder, LEASE, (), true) else {
            return Ok(None);
        };
        if self.store.size(&pending.key).await?.is_none() {
            if pending.expires_on <= Utc::now() {
                self.drop_pending(&row.value.owner, &row.value.file_id, &pending, None)
                    .await?;
            }
            return Ok(None);
        }
        let mut next = row.value;
        if let Some(p) = next.pending.as_mut() {
            p.lease = Some(lease);
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
    /// Every write it makes is fenced by the lease: once another instance took it over (this
    /// one stalled past it), nothing of this settle lands, and it counts as lost.
    pub(super) async fn settle_leased(
        &self,
        row: Versioned<FileRow>,
        stop: &CancellationToken,
    ) -> ArrivalOutcome {
        let FileRow {
            owner,
            file_id,
            pending,
            ..
        } = row.value;
        let Some((pending, fence)) =
            pending.and_then(|p| p.lease.as_ref().map(Lease::fence).map(|f| (p, f)))
        else {
            return ArrivalOutcome::Lost;
        };
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                if !self
                    .set_lease(&owner, &file_id, &pending, &fence, true)
                    .await
                {
                    return;
                }
            }
        };
        let result = tokio::select! {
            r = self.take_arrival(&owner, &file_id, &pending, Some(&fence)) => Some(r),
            // Taken over: what this settle would still do is fenced out anyway.
            () = renew => return ArrivalOutcome::Lost,
            () = stop.cancelled() => None,
        };
        match result {
            Some(Ok(outcome @ (ArrivalOutcome::Settled | ArrivalOutcome::Lost))) => outcome,
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "an arrived upload could not be settled; it stays pending");
                }
                self.set_lease(&owner, &file_id, &pending, &fence, false)
                    .await;
                ArrivalOutcome::Deferred
            }
        }
    }

    /// Renews (`hold`) or gives back the lease `fence` names on the upload, if nobody took it
    /// over; `false` when somebody did (or the upload is gone). A renewal that fails for a
    /// backend is tried again at the next one: the lease runs out by itself if they all do.
    async fn set_lease(
        &self,
        owner: &Owner,
        file_id: &FileId,
        pending: &PendingUpload,
        fence: &Fence,
        hold: bool,
    ) -> bool {
        let mut tries = Backoff::new();
        while tries.next().await {
            let mut row = match self.index.get(owner, file_id).await {
                Ok(Some(row)) => row,
                Ok(None) => return false,
                Err(_) => continue,
            };
            let Some(p) = row
                .value
                .pending
                .as_mut()
                .filter(|p| p.upload_id == pending.upload_id)
            else {
                return false;
            };
            let Some(lease) = p.lease.as_ref().filter(|l| l.is(fence)) else {
                return false;
            };
            p.lease = Some(if hold {
                lease.renewed(LEASE, ())
            } else {
                lease.given_back()
            });
            match self.index.put(&row.value, Some(row.version)).await {
                Ok(_) => return true,
                Err(crate::index::IndexError::Conflict) => tries.lost_race(),
                Err(_) => {}
            }
        }
        true
    }
}
