//! The intake's entry points: upload URLs (presigned arrivals) and uploads through the service
//! (a streaming PUT, a capability URL); each ends in the one commit of `commit.rs`.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;

use super::arrival::Consumes;
use super::{Actor, Backoff, Committed, FileService, FilesError, IssuedUrl};
use crate::capability::{Grant, Purpose};
use crate::config::Mode;
use crate::keys::{ObjectKey, UploadId};
use crate::model::{FileId, Issuer, Owner, PendingUpload};
use crate::pipeline::{BoxError, Declared};
use crate::sniff;

impl FileService {
    /// Records a pending upload (replacing an earlier unused one) and issues its upload URL.
    /// The current file, if any, is untouched until the upload arrives.
    pub async fn upload_url(
        &self,
        owner: &Owner,
        file_id: &FileId,
        declared: &Declared,
        actor: &Actor,
    ) -> Result<(PendingUpload, IssuedUrl), FilesError> {
        let mime_type = declared.mime_type.as_deref().unwrap_or_default();
        sniff::decide(Some(mime_type), None, &self.rules.allowed)?;
        if declared.size.is_some_and(|s| s > self.rules.max_size) {
            return Err(FilesError::TooLarge {
                limit: self.rules.max_size,
            });
        }
        let now = Utc::now();
        let upload_id = UploadId::generate();
        let pending = PendingUpload {
            key: ObjectKey::new(owner, &upload_id),
            upload_id,
            mime_type: mime_type.to_owned(),
            size: declared.size,
            sha256: declared.sha256.clone(),
            created_on: now,
            expires_on: self.expiry(),
            issuer: Some(Issuer {
                actor: actor.id.clone(),
                role: actor.role,
            }),
            lease: None,
            file_name: declared.file_name.clone(),
        };
        let mut tries = Backoff::new();
        while tries.next().await {
            // An earlier upload that arrived becomes the file before its slot is reused.
            let (mut row, version) = match self.current_row(owner, file_id).await? {
                Some(r) => (r.value, Some(r.version)),
                None => self.read_row(owner, file_id).await?,
            };
            if row
                .pending
                .as_ref()
                .is_some_and(|p| p.upload_id == pending.upload_id)
            {
                // A try whose answer was lost did land.
                return self.issue_upload_url(owner, file_id, pending, actor).await;
            }
            if let Some(version) = version
                && self.settle_first(&row, version).await?
            {
                // The row changed: read it again.
                continue;
            }
            self.check_new_upload_url(&row, declared.size).await?;
            row.pending = Some(pending.clone());
            match self.index.put(&row, version).await {
                Ok(_) => return self.issue_upload_url(owner, file_id, pending, actor).await,
                Err(e) if !e.is_retryable() => return Err(e.into()),
                // A conflict, or an answer that got lost: the next try reads the row again.
                Err(_) => {}
            }
        }
        Err(FilesError::Contended)
    }

    /// With a scanner, requests leave arrivals to the settler; but an arrival whose slot a new
    /// upload URL is about to take is settled first (scanned, then committed or refused, and
    /// audited), never dropped unseen. True when it was: the row changed. An arrival that
    /// another instance is checking, or that cannot be checked now, is 503 (try again).
    async fn settle_first(
        &self,
        row: &crate::model::FileRow,
        version: u64,
    ) -> Result<bool, FilesError> {
        let Some(p) = row.pending.as_ref().filter(|_| self.settler_only()) else {
            return Ok(false);
        };
        if self.store.size(&p.key).await?.is_none() {
            return Ok(false);
        }
        let row = crate::model::Versioned {
            value: row.clone(),
            version,
        };
        let Some(leased) = self.lease_arrival(row, &self.instance).await? else {
            return Err(FilesError::Contended);
        };
        match self.settle_leased(leased, &self.cancel).await {
            // Settled here, or by the instance that took it over: the row changed either way.
            super::settler::ArrivalOutcome::Settled | super::settler::ArrivalOutcome::Lost => {
                Ok(true)
            }
            super::settler::ArrivalOutcome::Deferred => Err(FilesError::Contended),
        }
    }

    /// Quotas and the bound on open upload URLs, for a new upload URL of `row`'s file.
    async fn check_new_upload_url(
        &self,
        row: &crate::model::FileRow,
        size: Option<u64>,
    ) -> Result<(), FilesError> {
        let now = Utc::now();
        let usage = self.index.usage(&row.owner, now).await?;
        let live_pending = row.pending.as_ref().is_some_and(|p| p.expires_on > now);
        let settings = self.limits.settings;
        if !live_pending && usage.pending >= settings.max_pending_per_participant {
            return Err(FilesError::TooManyPending);
        }
        let new_file = row.current.is_none() && !live_pending;
        if new_file
            && settings
                .max_files_per_participant
                .is_some_and(|max| usage.files + usage.pending_new >= max)
        {
            return Err(FilesError::Quota("files"));
        }
        if let (Some(max), Some(size)) = (settings.max_bytes_per_participant, size) {
            let others = usage
                .bytes
                .saturating_sub(row.current.as_ref().map_or(0, |c| c.size));
            if others + size > max {
                return Err(FilesError::Quota("storage"));
            }
        }
        Ok(())
    }

    async fn issue_upload_url(
        &self,
        owner: &Owner,
        file_id: &FileId,
        pending: PendingUpload,
        actor: &Actor,
    ) -> Result<(PendingUpload, IssuedUrl), FilesError> {
        let expires_on = pending.expires_on;
        let url = if self.upload_mode == Mode::Presigned {
            self.presigner()
                .presign_put(
                    &pending.key,
                    &pending.mime_type,
                    pending.size,
                    pending.sha256.as_deref(),
                    self.url_ttl,
                )
                .await?
        } else {
            let token = self.signer.sign(&Grant {
                purpose: Purpose::Upload,
                owner: owner.clone(),
                file_id: file_id.clone(),
                key: pending.key.clone(),
                mime_type: Some(pending.mime_type.clone()),
                size: pending.size,
                sha256: pending.sha256.clone(),
                actor: actor.id.clone(),
                role: actor.role,
                expires_on,
            });
            format!("{}/v3/uploads/{token}", self.public_url)
        };
        Ok((pending, IssuedUrl { url, expires_on }))
    }

    /// Streams `body` into a new version of the file (create or replace).
    pub async fn upload<S, E>(
        &self,
        owner: &Owner,
        file_id: &FileId,
        body: S,
        declared: &Declared,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        self.ingest_and_commit(owner, file_id, body, declared, None)
            .await
    }

    /// Verifies an upload capability token's signature, purpose and expiry.
    pub fn verify_upload_grant(&self, token: &str) -> Result<Grant, FilesError> {
        Ok(self.signer.verify(token, Purpose::Upload, Utc::now())?)
    }

    /// Checks, before any byte of the body is read, that the grant's upload is still the
    /// pending one and that the Content-Type is the signed one.
    pub async fn check_upload_grant(
        &self,
        grant: &Grant,
        content_type: Option<&str>,
    ) -> Result<(), FilesError> {
        let signed = grant.mime_type.as_deref().and_then(sniff::essence);
        if signed.is_some() && content_type.and_then(sniff::essence) != signed {
            return Err(FilesError::ContentTypeMismatch);
        }
        let pending = self
            .index
            .get(&grant.owner, &grant.file_id)
            .await?
            .and_then(|r| r.value.pending);
        if pending.is_none_or(|p| p.upload_id != grant.key.upload_id()) {
            return Err(FilesError::UploadConsumed);
        }
        Ok(())
    }

    /// Streams `body` (of `length` bytes, when known ahead) through the pipeline for a checked
    /// upload grant, consuming the grant.
    pub async fn upload_granted<S, E>(
        &self,
        grant: &Grant,
        body: S,
        length: Option<u64>,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        let declared = Declared {
            mime_type: grant.mime_type.clone(),
            size: grant.size,
            length,
            sha256: grant.sha256.clone(),
            // The pending upload's name: the switch that consumes it gives it to the file.
            file_name: None,
        };
        let consumes = Consumes {
            upload: grant.key.upload_id(),
            fence: None,
        };
        self.ingest_and_commit(
            &grant.owner,
            &grant.file_id,
            body,
            &declared,
            Some(&consumes),
        )
        .await
    }
}
