//! Uploads: upload URLs, uploads through the service, and the conditional switch of a file to
//! its new bytes.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;

use super::{Actor, Committed, FileService, FilesError, IssuedUrl, MAX_RACE_RETRIES};
use crate::capability::{Grant, Purpose};
use crate::config::Mode;
use crate::index::IndexError;
use crate::keys::{ObjectKey, UploadId};
use crate::model::{FileId, Owner, PendingUpload, StoredFile, Versioned};
use crate::pipeline::{self, BoxError, Declared, PipelineError};
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
        };
        for _ in 0..MAX_RACE_RETRIES {
            // An earlier upload that arrived becomes the file before its slot is reused.
            let (mut row, version) = match self.current_row(owner, file_id).await? {
                Some(Versioned { value, version }) => (value, Some(version)),
                None => self.read_row(owner, file_id).await?,
            };
            row.pending = Some(pending.clone());
            match self.index.put(&row, version).await {
                Ok(_) if self.upload_mode == Mode::Presigned => {
                    let url = self
                        .presigner()
                        .presign_put(
                            &pending.key,
                            &pending.mime_type,
                            pending.size,
                            pending.sha256.as_deref(),
                            self.url_ttl,
                        )
                        .await?;
                    let expires_on = pending.expires_on;
                    return Ok((pending, IssuedUrl { url, expires_on }));
                }
                Ok(_) => {
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
                        expires_on: pending.expires_on,
                    });
                    let url = format!("{}/v3/uploads/{token}", self.public_url);
                    let expires_on = pending.expires_on;
                    return Ok((pending, IssuedUrl { url, expires_on }));
                }
                Err(IndexError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(FilesError::Contended)
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
        };
        let consumes = grant.key.upload_id();
        self.ingest_and_commit(
            &grant.owner,
            &grant.file_id,
            body,
            &declared,
            Some(&consumes),
        )
        .await
    }

    async fn ingest_and_commit<S, E>(
        &self,
        owner: &Owner,
        file_id: &FileId,
        body: S,
        declared: &Declared,
        consumes: Option<&UploadId>,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        let _slot = self.limits.upload_slot().ok_or(FilesError::Busy)?;
        let mut rules = self.rules.clone();
        let mut quota_bound = false;
        let quotas = self.limits.settings;
        if quotas.max_files_per_participant.is_some() || quotas.max_bytes_per_participant.is_some()
        {
            let (files, bytes, this) = self.usage(owner, file_id).await?;
            if this.is_none()
                && quotas
                    .max_files_per_participant
                    .is_some_and(|max| files >= max)
            {
                return Err(FilesError::Quota("files"));
            }
            if let Some(max) = quotas.max_bytes_per_participant {
                let remaining = max.saturating_sub(bytes - this.unwrap_or(0));
                if remaining < rules.max_size {
                    rules.max_size = remaining;
                    quota_bound = true;
                }
            }
        }
        // A fresh key for every attempt, so two uploads of one file never write one object.
        let key = ObjectKey::new(owner, &UploadId::generate());
        let ingested = pipeline::ingest(
            body,
            declared,
            &rules,
            self.scanner.as_deref(),
            self.store.as_ref(),
            &key,
            &self.cancel,
        )
        .await
        .map_err(|e| match e {
            PipelineError::TooLarge { .. } if quota_bound => FilesError::Quota("storage"),
            other => other.into(),
        })?;
        let file = StoredFile {
            key,
            mime_type: ingested.mime_type,
            size: ingested.size,
            sha256: Some(ingested.sha256),
            scan_status: ingested.scan_status,
            created_on: Utc::now(),
        };
        let mut committed = self.switch(owner, file_id, file, consumes).await?;
        committed.scan_time = ingested.scan_time;
        Ok(committed)
    }

    /// How many files and bytes `owner` has, and the size of `file_id` among them.
    async fn usage(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<(u64, u64, Option<u64>), FilesError> {
        let (mut files, mut bytes, mut this) = (0u64, 0u64, None);
        let mut after: Option<FileId> = None;
        loop {
            let rows = self.index.list(owner, after.as_ref(), 100).await?;
            let full = rows.len() == 100;
            after = rows.last().map(|r| r.value.file_id.clone());
            for row in rows {
                if let Some(c) = &row.value.current {
                    files += 1;
                    bytes += c.size;
                    if &row.value.file_id == file_id {
                        this = Some(c.size);
                    }
                }
            }
            if !full {
                return Ok((files, bytes, this));
            }
        }
    }

    /// Makes a committed object the file's current version with a conditional write, then
    /// deletes the object it replaced. The new object is deleted when it cannot become current.
    async fn switch(
        &self,
        owner: &Owner,
        file_id: &FileId,
        file: StoredFile,
        consumes: Option<&UploadId>,
    ) -> Result<Committed, FilesError> {
        for _ in 0..MAX_RACE_RETRIES {
            let (mut row, version) = match self.read_row(owner, file_id).await {
                Ok(r) => r,
                Err(e) => {
                    self.discard(&file.key).await;
                    return Err(e);
                }
            };
            if let Some(upload) = consumes {
                if row.pending.as_ref().is_none_or(|p| &p.upload_id != upload) {
                    self.discard(&file.key).await;
                    return Err(FilesError::UploadConsumed);
                }
                row.pending = None;
            }
            if row
                .pending
                .as_ref()
                .is_some_and(|p| p.expires_on <= Utc::now())
            {
                row.pending = None;
            }
            let old = row.current.replace(file.clone());
            match self.index.put(&row, version).await {
                Ok(_) => {}
                Err(IndexError::Conflict) => continue,
                Err(e) if e.is_definite() => {
                    self.discard(&file.key).await;
                    return Err(e.into());
                }
                Err(e) => {
                    // The write may have landed all the same (a timeout, say): keep the object
                    // when the row names it. When the row cannot be read either, the object is
                    // left to `reconcile` rather than risk a row without its object.
                    match self.index.get(owner, file_id).await {
                        Ok(Some(now))
                            if now
                                .value
                                .current
                                .as_ref()
                                .is_some_and(|c| c.key == file.key) => {}
                        Ok(_) => {
                            self.discard(&file.key).await;
                            return Err(e.into());
                        }
                        Err(_) => {
                            tracing::warn!(
                                "index unreachable after an uncertain write; the new object is left for reconcile"
                            );
                            return Err(e.into());
                        }
                    }
                }
            }
            if let Some(old) = &old {
                self.discard(&old.key).await;
            }
            return Ok(Committed {
                file,
                replaced: old.is_some(),
                scan_time: None,
            });
        }
        self.discard(&file.key).await;
        Err(FilesError::Contended)
    }
}
