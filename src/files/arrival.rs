//! An arrived presigned upload, settled: checked, then committed or refused.
//!
//! It is streamed from its object through the upload pipeline's checks and copied, as the very
//! version that was checked, into a fresh object (while clamd decides), which becomes the file
//! once the verdict is clean; one that fails a check, or expired without arriving, is dropped.
//! The URL's own object never becomes the file, so nothing sent to the URL later changes what
//! is served.

use chrono::Utc;

use super::settler::ArrivalOutcome;
use super::{Backoff, Committed, FileService, FilesError};
use crate::audit::{Action, AuditEvent};
use crate::auth::Role;
use crate::config::Mode;
use crate::keys::UploadId;
use crate::lease::Fence;
use crate::model::{FileId, FileRow, Owner, PendingUpload, Versioned};
use crate::pipeline::{Declared, PipelineError};
use crate::store::StoreError;

/// The upload URL a commit consumes, and the settler's lease its arrival is checked under, if
/// any: the switch lands only while the row's pending upload is that one, under that lease.
#[derive(Debug, Clone)]
pub(super) struct Consumes {
    pub upload: UploadId,
    pub fence: Option<Fence>,
}

impl Consumes {
    /// Whether `pending` is still under this commit's lease (always, without one).
    pub(super) fn holds(&self, pending: &PendingUpload) -> bool {
        under(pending, self.fence.as_ref())
    }
}

/// Whether `pending` is still under `fence` (always, without one).
fn under(pending: &PendingUpload, fence: Option<&Fence>) -> bool {
    fence.is_none_or(|f| pending.lease.as_ref().is_some_and(|l| l.is(f)))
}

/// The status an arrival's refusal has in the audit log, or `None` when the failure is not the
/// upload's fault (a backend was down) and it stays pending.
pub(super) fn refusal_status(e: &FilesError) -> Option<u16> {
    match e {
        FilesError::TooLarge { .. } | FilesError::Quota(_) => Some(413),
        FilesError::Type(_) => Some(415),
        FilesError::Pipeline(p) => match p {
            PipelineError::TooLarge { .. } => Some(413),
            PipelineError::Type(_) => Some(415),
            PipelineError::SizeMismatch { .. } | PipelineError::ChecksumMismatch => Some(400),
            PipelineError::Infected(_) => Some(422),
            PipelineError::Body(_)
            | PipelineError::ClientTooSlow
            | PipelineError::ShuttingDown
            | PipelineError::Scan(_)
            | PipelineError::Store(_)
            | PipelineError::Busy(_) => None,
        },
        _ => None,
    }
}

impl FileService {
    /// Whether requests leave arrivals to the settler: with a scanner, a request never waits
    /// for the scan of an upload that arrived (it answers with the previous version).
    pub(super) fn settler_only(&self) -> bool {
        self.scanner.is_some() && self.upload_mode == Mode::Presigned
    }

    /// Settles a row's pending upload, and returns the row as it then stands. In presigned mode
    /// the upload's object may have arrived: it goes through the pipeline and becomes the file,
    /// or is deleted when it fails a check. An expired upload that has not arrived is dropped.
    /// With a scanner this is the settler's work alone, and the row is returned as it is.
    pub(super) async fn settle(
        &self,
        row: Versioned<FileRow>,
    ) -> Result<Option<Versioned<FileRow>>, FilesError> {
        if self.settler_only() {
            return Ok(Some(row));
        }
        let Some(pending) = row.value.pending.clone() else {
            return Ok(Some(row));
        };
        let (owner, file_id) = (&row.value.owner, &row.value.file_id);
        let arrived = if self.upload_mode == Mode::Presigned {
            self.store.size(&pending.key).await?.is_some()
        } else {
            false
        };
        if arrived {
            self.take_arrival(owner, file_id, &pending, None).await?;
        } else if pending.expires_on <= Utc::now() {
            self.drop_pending(owner, file_id, &pending, None).await?;
        } else {
            return Ok(Some(row));
        }
        Ok(self.index.get(owner, file_id).await?)
    }

    /// Streams an arrived upload into a fresh object through the pipeline, then deletes the
    /// object the URL wrote. Under the settler's lease (`fence`), only while nobody took the
    /// lease over: an arrival this call did not settle is [`ArrivalOutcome::Lost`].
    pub(super) async fn take_arrival(
        &self,
        owner: &Owner,
        file_id: &FileId,
        pending: &PendingUpload,
        fence: Option<&Fence>,
    ) -> Result<ArrivalOutcome, FilesError> {
        let consumes = Consumes {
            upload: pending.upload_id.clone(),
            fence: fence.cloned(),
        };
        let mut tries = Backoff::new();
        let result = loop {
            let read = match self.store.read_whole(&pending.key).await {
                Ok(r) => r,
                // Settled, or dropped, by another request or instance meanwhile.
                Err(StoreError::NotFound) => return Ok(ArrivalOutcome::Lost),
                Err(e) => return Err(e.into()),
            };
            let etag = read.etag.ok_or_else(|| StoreError::Backend {
                backend: self.store.name(),
                message: "the store named no version (ETag) of an arrived upload".to_owned(),
                source: "GetObject without an ETag".into(),
            })?;
            let declared = Declared {
                mime_type: Some(pending.mime_type.clone()),
                size: pending.size,
                length: Some(read.object_size),
                sha256: pending.sha256.clone(),
                // The switch that consumes the pending upload gives the file its name.
                file_name: None,
            };
            // With encryption the pipeline writes the checked bytes, encrypted, in the pass that
            // reads and scans them: a copy of the arrival would keep the plaintext.
            let copy = self.keys.is_none().then(|| (pending.key.clone(), etag));
            let result = self
                .check_and_commit(owner, file_id, read.body, &declared, Some(&consumes), copy)
                .await;
            // Sent to the URL again while it was checked: the new bytes are checked instead.
            if matches!(result, Err(FilesError::Store(StoreError::Changed))) && tries.next().await {
                continue;
            }
            break result;
        };
        match &result {
            Ok(committed) => {
                self.audit_arrival(owner, file_id, pending, Ok(committed));
                self.discard(&pending.key).await;
                Ok(ArrivalOutcome::Settled)
            }
            // Settled by another request meanwhile, replaced by a newer upload URL, or erased:
            // the URL's object is nobody's now.
            Err(FilesError::UploadConsumed | FilesError::ClaimRevoked) => {
                self.discard(&pending.key).await;
                Ok(ArrivalOutcome::Lost)
            }
            // Another instance took the lease over, and reads the URL's object now.
            Err(FilesError::LeaseLost) => Ok(ArrivalOutcome::Lost),
            Err(e) => match refusal_status(e) {
                Some(status) => {
                    // Dropped first, so that only the holder of the lease audits the refusal.
                    if !self.drop_pending(owner, file_id, pending, fence).await? {
                        return Ok(ArrivalOutcome::Lost);
                    }
                    let signature = match e {
                        FilesError::Pipeline(PipelineError::Infected(s)) => Some(s.as_str()),
                        _ => None,
                    };
                    self.audit_arrival(owner, file_id, pending, Err((status, signature)));
                    Ok(ArrivalOutcome::Settled)
                }
                None => result.map(|_| ArrivalOutcome::Deferred),
            },
        }
    }

    fn audit_arrival(
        &self,
        owner: &Owner,
        file_id: &FileId,
        pending: &PendingUpload,
        outcome: Result<&Committed, (u16, Option<&str>)>,
    ) {
        let (actor, role) = pending.issuer.as_ref().map_or_else(
            || (owner.participant.clone(), Role::Participant),
            |i| (i.actor.clone(), i.role),
        );
        let (action, status, bytes, signature) = match outcome {
            Ok(c) if c.replaced => (Action::Replace, 201, c.file.size, None),
            Ok(c) => (Action::Upload, 201, c.file.size, None),
            Err((status, signature)) => (Action::Upload, status, 0, signature),
        };
        // No request carries an arrival; the upload's own ID ties the line to its object.
        let request_id = format!("arrival-{}", pending.upload_id.as_str());
        self.audit.record(
            &AuditEvent::new(
                &request_id,
                owner,
                &actor,
                role,
                Some(file_id),
                action,
                status,
                bytes,
            )
            .with_signature(signature),
        );
    }

    /// Takes `pending` out of its row, if it is still there (a row that then holds nothing goes),
    /// and deletes whatever arrived for it. `true` when this call took it out; `false` when it
    /// was gone already, or is there under a lease other than `fence` (when given), whose
    /// holder settles it: then nothing is touched.
    pub(super) async fn drop_pending(
        &self,
        owner: &Owner,
        file_id: &FileId,
        pending: &PendingUpload,
        fence: Option<&Fence>,
    ) -> Result<bool, FilesError> {
        let mut tries = Backoff::new();
        let mut dropped = false;
        while tries.next().await {
            let Some(mut row) = self.index.get(owner, file_id).await? else {
                break;
            };
            let Some(p) = row
                .value
                .pending
                .as_ref()
                .filter(|p| p.upload_id == pending.upload_id)
            else {
                break;
            };
            if !under(p, fence) {
                return Ok(false);
            }
            row.value.pending = None;
            match self.index.rewrite(&row.value, row.version).await {
                Ok(()) => {
                    dropped = true;
                    break;
                }
                Err(e) if !e.is_retryable() => return Err(e.into()),
                Err(_) => {}
            }
        }
        self.store.delete(&pending.key).await?;
        Ok(dropped)
    }
}
