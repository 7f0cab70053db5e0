//! Completing a resumable upload in place: its staged bytes become the file's object as they
//! are (S3 completes the multipart upload, the local store renames the file), checked by the
//! same pipeline and committed by the same switch as every upload. When the requests carried
//! the hash and a scan session saw every byte, only the verdict is waited for; otherwise the
//! stored bytes are streamed through the pipeline once.

use bytes::Bytes;
use futures::TryStreamExt;

use super::append::{LEASE, lease};
use super::live::LiveScan;
use super::{Appended, Describe, Requester, hashing};
use crate::audit::{Action, AuditEvent};
use crate::budget::Reservation;
use crate::files::{Committed, FileService, FilesError};
use crate::keys::{ObjectKey, UploadId};
use crate::model::{Owner, ResumableUpload, Staged, UploadOutcome, Versioned};
use crate::pipeline::{self, Declared, Dest, Ingested, PipelineError, Resumed, Rules};
use crate::sniff::SNIFF_LEN;
use crate::store::StoreError;

impl FileService {
    /// Runs the completion of the upload on a task of its own, which outlives the request (a
    /// client that leaves after its last byte does not stop it), and waits for its result.
    pub(super) async fn complete_detached(
        &self,
        row: Versioned<ResumableUpload>,
        live: Option<LiveScan>,
        describe: Describe,
        requester: &Requester,
    ) -> Result<Appended, FilesError> {
        let (this, requester) = (self.clone(), requester.clone());
        let running = async move {
            let (offset, file_id) = (row.value.offset, row.value.file_id.clone());
            let committed = this
                .complete_leased(row, live, describe, &requester)
                .await?;
            Ok(Appended {
                offset,
                file_id,
                committed: Some(committed),
            })
        };
        crate::detached::run(&self.tasks, running).await?
    }

    /// Completes the upload while renewing its lease: the scan of a large file takes longer
    /// than the lease, and no other request may complete it beside this one.
    async fn complete_leased(
        &self,
        row: Versioned<ResumableUpload>,
        live: Option<LiveScan>,
        describe: Describe,
        requester: &Requester,
    ) -> Result<Committed, FilesError> {
        let (owner, id) = (row.value.owner.clone(), row.value.id.clone());
        let fence = row.value.writer.as_ref().map_or(0, |w| w.epoch);
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                self.renew_lease(&owner, &id, fence).await;
            }
        };
        tokio::select! {
            r = self.complete_upload(row, live, describe, requester) => r,
            () = renew => unreachable!("the renewal never ends"),
        }
    }

    /// Extends the completion's lease, if it still holds it. Best effort: a lease that is not
    /// renewed runs out by itself.
    async fn renew_lease(&self, owner: &Owner, id: &UploadId, fence: u64) {
        let index = self.upload_index();
        let Ok(Some(mut row)) = index.get_upload(owner, id).await else {
            return;
        };
        if self.holds(&row.value, fence) {
            row.value.writer = Some(lease(&self.instance, fence, true));
            let _ = index.put_upload(&row.value, Some(row.version)).await;
        }
    }

    /// Whether `upload` is still in this instance's completion under `fence`.
    fn holds(&self, upload: &ResumableUpload, fence: u64) -> bool {
        upload.outcome.is_none()
            && upload
                .writer
                .as_ref()
                .is_some_and(|w| w.holder == self.instance && w.epoch == fence && w.work.completing)
    }

    /// Whether the upload's row still names this completion: a completion whose lease was
    /// taken over, or whose upload was terminated or erased, must not commit.
    async fn still_holds(&self, upload: &ResumableUpload, fence: u64) -> Result<(), FilesError> {
        match self
            .upload_index()
            .get_upload(&upload.owner, &upload.id)
            .await?
        {
            Some(row) if self.holds(&row.value, fence) => Ok(()),
            Some(_) => Err(FilesError::UploadLocked),
            None => Err(FilesError::NotFound),
        }
    }

    /// Commits the complete upload, records what came of it for a client that lost the
    /// answer, audits it, and drops what is left of the staged bytes. A failure that is not
    /// the upload's fault (a backend down) leaves it complete and uncommitted, for a retry.
    async fn complete_upload(
        &self,
        row: Versioned<ResumableUpload>,
        live: Option<LiveScan>,
        describe: Describe,
        requester: &Requester,
    ) -> Result<Committed, FilesError> {
        let upload = &row.value;
        let fence = upload.writer.as_ref().map_or(0, |w| w.epoch);
        let result = self.commit_staged(upload, fence, live).await;
        let (outcome, result) = match result {
            Ok(c) => (UploadOutcome::Committed, Ok(c)),
            Err(e) if crate::files::arrival::refusal_status(&e).is_some() => {
                let refusal = describe(e);
                (
                    UploadOutcome::Refused(refusal.clone()),
                    Err(FilesError::UploadRefused(refusal)),
                )
            }
            Err(e) => {
                // Not the upload's fault: the next request tries again, at once.
                let _ = self.record_outcome(upload, fence, None).await;
                return Err(e);
            }
        };
        self.audit_completion(upload, requester, &result);
        // Committed: the staged bytes are the file now. Refused: what is left of them goes
        // first, and the row then says so; a failure leaves them to `reconcile`.
        let staged = match &outcome {
            UploadOutcome::Committed => upload.staged.dropped(),
            UploadOutcome::Refused(_) => match self.store.drop_staged(&upload.staged).await {
                Ok(()) => upload.staged.dropped(),
                Err(e) => {
                    tracing::warn!(error = %e, "the staged bytes of a refused upload were not removed; reconcile will");
                    upload.staged.clone()
                }
            },
        };
        self.record_outcome(upload, fence, Some((outcome, staged)))
            .await?;
        result
    }

    /// Writes what the completion came to (`None`: nothing yet, the lease is given back) on
    /// the row, if it still names this completion. The file is committed (or refused) whatever
    /// this write does; the row is read again, as the lease's renewals have written it.
    async fn record_outcome(
        &self,
        upload: &ResumableUpload,
        fence: u64,
        ended: Option<(UploadOutcome, Staged)>,
    ) -> Result<(), FilesError> {
        let index = self.upload_index();
        let mut tries = crate::retry::Backoff::at_most(5);
        while tries.next().await {
            let Some(mut now) = index.get_upload(&upload.owner, &upload.id).await? else {
                break;
            };
            if !self.holds(&now.value, fence) {
                break;
            }
            now.value.writer = None;
            if let Some((outcome, staged)) = &ended {
                now.value.outcome = Some(outcome.clone());
                now.value.staged = staged.clone();
            }
            match index.put_upload(&now.value, Some(now.version)).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the outcome of a resumable upload was not recorded");
                    break;
                }
            }
        }
        Ok(())
    }

    /// The commit's audit line (`upload` or `replace`, with the signature of a refusal).
    fn audit_completion(
        &self,
        upload: &ResumableUpload,
        requester: &Requester,
        result: &Result<Committed, FilesError>,
    ) {
        let (action, status, bytes, signature) = match result {
            Ok(c) if c.replaced => (Action::Replace, 201, c.file.size, None),
            Ok(c) => (Action::Upload, 201, c.file.size, None),
            Err(FilesError::UploadRefused(r)) => {
                (Action::Upload, r.status, 0, r.signature.as_deref())
            }
            Err(_) => return,
        };
        self.audit.record(
            &AuditEvent::new(
                &requester.request_id,
                &upload.owner,
                &requester.actor,
                requester.role,
                Some(&upload.file_id),
                action,
                status,
                bytes,
            )
            .with_signature(signature),
        );
    }

    /// Claims the staged key, finishes the staged bytes into its object, checks them and
    /// switches the file to them. Once the last step began it runs to its end on its own task.
    async fn commit_staged(
        &self,
        upload: &ResumableUpload,
        fence: u64,
        live: Option<LiveScan>,
    ) -> Result<Committed, FilesError> {
        let (owner, file_id) = (&upload.owner, &upload.file_id);
        let slot = self.limits.upload_slot().ok_or(FilesError::Busy)?;
        let (rules, quota_error) = self.rules_within_quota(owner, file_id).await?;
        let key = upload.staged.key.clone();
        let mut claim = self.claim(owner, file_id, &key).await?;
        // Claimed, then checked: an erase or termination that removed the upload before the
        // claim is seen here; one after it revokes the claim.
        self.still_holds(upload, fence).await?;
        self.store.finish_staged(&upload.staged).await?;
        let declared = Declared {
            mime_type: upload.mime_type.clone(),
            size: upload.length,
            length: Some(upload.offset),
            sha256: upload.sha256.clone(),
            file_name: upload.file_name.clone(),
        };
        let hashed =
            hashing::resume(upload.hash.as_deref(), upload.offset).map(|h| hashing::digest(&h));
        let (this, upload) = (self.clone(), upload.clone());
        let finishing = async move {
            let _slot = slot;
            let ingested = match this
                .check_staged(&key, &declared, &rules, hashed, live)
                .await
            {
                Ok(ingested) => ingested,
                Err(e) => {
                    let e = quota_error(e);
                    if crate::files::arrival::refusal_status(&e).is_some() {
                        this.discard(&key).await;
                    } else {
                        // The object stays claimed for the retry, which finds it finished.
                        claim.disarm();
                    }
                    return Err(e);
                }
            };
            this.still_holds(&upload, fence).await?;
            this.commit_ingested(&upload.owner, &upload.file_id, key, ingested, None, claim)
                .await
        };
        crate::detached::run(&self.tasks, finishing).await?
    }

    /// The pipeline's checks and verdict on the finished object under `key`: from what the
    /// requests counted when they carried the hash and, with a scanner, a session saw every
    /// byte; else by streaming the object through the pipeline.
    async fn check_staged(
        &self,
        key: &ObjectKey,
        declared: &Declared,
        rules: &Rules,
        hashed: Option<String>,
        live: Option<LiveScan>,
    ) -> Result<Ingested, PipelineError> {
        let size = declared.length.unwrap_or_default();
        let counted = match (&hashed, &self.scanner, live) {
            (Some(sha256), None, _) => Some((sha256.clone(), None, Reservation::none())),
            (Some(sha256), Some(_), Some(live)) => {
                Some((sha256.clone(), Some(live.session), live.memory))
            }
            _ => None,
        };
        if let Some((sha256, scan, memory)) = counted {
            let live = scan.is_some();
            let resumed = Resumed {
                head: self.head(key, size).await?,
                size,
                sha256,
                scan,
                memory,
            };
            match pipeline::resume(resumed, declared, rules)?.finish().await {
                // The session was lost between requests (clamd closed it): the stored bytes
                // are scanned instead.
                Err(PipelineError::Scan(e)) if live => {
                    tracing::info!(error = %e, "a resumable upload's scan session was lost; scanning the stored bytes");
                }
                other => return other,
            }
        }
        let read = self.store.read(key, None).await?;
        let received =
            pipeline::receive(read.body, declared, rules, self.sinks(), Dest::Checked).await?;
        if hashed.is_some_and(|h| h != received.sha256()) {
            return Err(StoreError::Backend {
                backend: self.store.name(),
                message: "the stored bytes are not those the requests sent".to_owned(),
                source: "SHA-256 of the finished object differs from the requests'".into(),
            }
            .into());
        }
        received.finish().await
    }

    /// The first bytes of the object, for the type.
    async fn head(&self, key: &ObjectKey, size: u64) -> Result<Bytes, StoreError> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let end = size.min(SNIFF_LEN as u64);
        let read = self.store.read(key, Some(0..end)).await?;
        let chunks: Vec<Bytes> = read.body.try_collect().await?;
        Ok(chunks.concat().into())
    }
}
