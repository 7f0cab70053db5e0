//! The participant-file operations, over an index, a store and a scanner: what every route does
//! once the caller and the target participant are known.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use sha2::Digest;

use crate::auth::Role;
use crate::capability::{CapabilityError, Grant, Purpose, UrlSigner};
use crate::config::Mode;
use crate::index::{FileIndex, IndexError};
use crate::keys::{ObjectKey, UploadId};
use crate::limits::{LimitSettings, Limits};
use crate::model::{
    FileId, FileRow, Owner, PendingUpload, ScanStatus, StoredFile, UserId, Versioned,
};
use crate::pipeline::{self, BoxError, Declared, PipelineError, Rules};
use crate::scan::Scanner;
use crate::sniff::{self, TypeError};
use crate::store::{BlobRead, BlobStore, StoreError};

/// How often a conditional write is retried after losing a race before giving up.
const MAX_RACE_RETRIES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("no such file")]
    NotFound,
    #[error("capability refused: {0}")]
    Capability(#[from] CapabilityError),
    #[error("the upload URL was already used or replaced by a newer one")]
    UploadConsumed,
    #[error("the Content-Type is not the one the upload URL was issued for")]
    ContentTypeMismatch,
    #[error("the declared size is over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Type(#[from] TypeError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many concurrent writes to one file")]
    Contended,
    #[error("every upload slot is taken")]
    Busy,
    #[error("the participant's {0} quota would be exceeded")]
    Quota(&'static str),
    #[error("the participant's download budget is spent for now")]
    DownloadBudget(Duration),
}

/// Who is acting, for capability URLs and the audit trail.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: UserId,
    pub role: Role,
}

/// A page of committed files in ascending file ID order.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<(FileId, StoredFile)>,
    /// The last file ID of a full page.
    pub next: Option<FileId>,
}

/// A URL that grants one upload or one download, and when it stops working.
#[derive(Debug, Clone)]
pub struct IssuedUrl {
    pub url: String,
    pub expires_on: DateTime<Utc>,
}

/// The outcome of a committed upload.
#[derive(Debug, Clone)]
pub struct Committed {
    pub file: StoredFile,
    /// Whether an earlier version of the file was replaced.
    pub replaced: bool,
    /// How long the scanner took after the last byte, when there is one.
    pub scan_time: Option<Duration>,
}

/// How the service hands out URLs and which limits uploads are held to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of capability URLs.
    pub public_url: String,
    pub url_ttl: Duration,
    pub rules: Rules,
    pub upload_mode: Mode,
    pub download_mode: Mode,
    pub limits: LimitSettings,
}

pub struct FileService {
    index: Arc<dyn FileIndex>,
    store: Arc<dyn BlobStore>,
    scanner: Option<Arc<dyn Scanner>>,
    signer: UrlSigner,
    public_url: String,
    url_ttl: Duration,
    rules: Rules,
    upload_mode: Mode,
    download_mode: Mode,
    /// Cancelled when a shutdown's deadline has passed: uploads still receiving stop.
    cancel: tokio_util::sync::CancellationToken,
    limits: Limits,
}

impl FileService {
    /// # Panics
    /// When a presigned mode is asked of a store that cannot presign (configuration checks this).
    #[must_use]
    pub fn new(
        index: Arc<dyn FileIndex>,
        store: Arc<dyn BlobStore>,
        scanner: Option<Arc<dyn Scanner>>,
        signer: UrlSigner,
        settings: Settings,
    ) -> Self {
        assert!(
            store.presigner().is_some()
                || (settings.upload_mode == Mode::Streaming
                    && settings.download_mode == Mode::Streaming),
            "presigned modes need a store that presigns"
        );
        Self {
            index,
            store,
            scanner,
            signer,
            public_url: settings.public_url,
            url_ttl: settings.url_ttl,
            rules: settings.rules,
            upload_mode: settings.upload_mode,
            download_mode: settings.download_mode,
            cancel: tokio_util::sync::CancellationToken::new(),
            limits: Limits::new(settings.limits),
        }
    }

    /// Stops every upload that is still receiving its body (see [`pipeline::ingest`]).
    pub fn cancel_uploads(&self) {
        self.cancel.cancel();
    }

    fn presigner(&self) -> &dyn crate::store::Presigner {
        self.store
            .presigner()
            .expect("checked in new(): presigned modes have a presigner")
    }

    #[must_use]
    pub fn index(&self) -> &dyn FileIndex {
        self.index.as_ref()
    }

    #[must_use]
    pub fn store(&self) -> &dyn BlobStore {
        self.store.as_ref()
    }

    #[must_use]
    pub fn max_file_size(&self) -> u64 {
        self.rules.max_size
    }

    fn expiry(&self) -> DateTime<Utc> {
        // Whole seconds: capability tokens and S3 both count expiry in seconds.
        let at = Utc::now() + self.url_ttl;
        DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
    }

    /// The committed files of `owner`, `page_size` at a time after `after`. Rows that only hold
    /// a pending upload are skipped without making the page shorter.
    pub async fn list(
        &self,
        owner: &Owner,
        after: Option<&FileId>,
        page_size: usize,
    ) -> Result<Page, FilesError> {
        let mut items = Vec::with_capacity(page_size);
        let mut cursor = after.cloned();
        while items.len() < page_size {
            let rows = self
                .index
                .list(owner, cursor.as_ref(), page_size - items.len())
                .await?;
            let exhausted = rows.len() < page_size - items.len();
            cursor = rows.last().map(|r| r.value.file_id.clone());
            for row in rows {
                let row = if row.value.pending.is_some() {
                    self.settle(row).await?
                } else {
                    Some(row)
                };
                if let Some(Versioned { value, .. }) = row
                    && let Some(current) = value.current
                {
                    items.push((value.file_id, current));
                }
            }
            if exhausted {
                break;
            }
        }
        let next = (items.len() == page_size)
            .then(|| items.last().map(|(id, _)| id.clone()))
            .flatten();
        Ok(Page { items, next })
    }

    /// The file's row, with an arrived or expired pending upload settled first.
    async fn current_row(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<Option<Versioned<FileRow>>, FilesError> {
        match self.index.get(owner, file_id).await? {
            Some(row) if row.value.pending.is_some() => self.settle(row).await,
            other => Ok(other),
        }
    }

    /// The committed file, or [`FilesError::NotFound`].
    pub async fn get(&self, owner: &Owner, file_id: &FileId) -> Result<StoredFile, FilesError> {
        self.current_row(owner, file_id)
            .await?
            .and_then(|r| r.value.current)
            .ok_or(FilesError::NotFound)
    }

    /// Settles a row's pending upload. In presigned mode the object may have arrived in the
    /// store: within the limits it becomes the file (the replaced object is deleted), over
    /// them it is deleted. An expired upload that has not arrived is dropped, and with it a row
    /// that held nothing else. Returns the row as it now stands.
    async fn settle(
        &self,
        mut row: Versioned<FileRow>,
    ) -> Result<Option<Versioned<FileRow>>, FilesError> {
        for _ in 0..MAX_RACE_RETRIES {
            let Some(pending) = row.value.pending.clone() else {
                return Ok(Some(row));
            };
            let now = Utc::now();
            let arrived = if self.upload_mode == Mode::Presigned {
                self.store.size(&pending.key).await?
            } else {
                None
            };
            let mut next = row.value.clone();
            next.pending = None;
            let mut unreferenced = None;
            let acceptable = match arrived {
                Some(size)
                    if size <= self.rules.max_size && pending.size.is_none_or(|s| s == size) =>
                {
                    self.matches_declared_sha256(&pending).await?
                }
                _ => false,
            };
            match arrived {
                Some(size) if acceptable => {
                    let old = next.current.replace(StoredFile {
                        key: pending.key.clone(),
                        mime_type: pending.mime_type.clone(),
                        size,
                        sha256: pending.sha256.clone(),
                        scan_status: ScanStatus::Unscanned,
                        created_on: now,
                    });
                    unreferenced = old.map(|o| o.key);
                }
                Some(_) => unreferenced = Some(pending.key.clone()),
                None if pending.expires_on <= now => {}
                None => return Ok(Some(row)),
            }
            let (owner, file_id) = (&row.value.owner, &row.value.file_id);
            let written = if next.current.is_none() {
                self.index
                    .delete(owner, file_id, row.version)
                    .await
                    .map(|()| None)
            } else {
                self.index
                    .put(&next, Some(row.version))
                    .await
                    .map(|version| {
                        Some(Versioned {
                            value: next,
                            version,
                        })
                    })
            };
            match written {
                Ok(now_row) => {
                    if let Some(key) = unreferenced {
                        self.discard(&key).await;
                    }
                    return Ok(now_row);
                }
                Err(IndexError::Conflict) => match self.index.get(owner, file_id).await? {
                    Some(r) => row = r,
                    None => return Ok(None),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(FilesError::Contended)
    }

    /// Whether an arrived presigned upload has the SHA-256 its POST declared. S3 refuses such a
    /// PUT itself; this also holds S3-compatible servers to it that store the body anyway.
    async fn matches_declared_sha256(&self, pending: &PendingUpload) -> Result<bool, FilesError> {
        let Some(declared) = &pending.sha256 else {
            return Ok(true);
        };
        let mut read = match self.store.read(&pending.key, None).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let mut hash = sha2::Sha256::new();
        while let Some(chunk) = read.body.next().await {
            hash.update(&chunk?);
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(hash.finalize()) == *declared)
    }

    /// Issues a download URL for the file's current bytes.
    pub async fn download_url(
        &self,
        owner: &Owner,
        file_id: &FileId,
        actor: &Actor,
    ) -> Result<(StoredFile, IssuedUrl), FilesError> {
        let file = self.get(owner, file_id).await?;
        self.limits
            .charge_download(owner, file.size)
            .map_err(FilesError::DownloadBudget)?;
        let expires_on = self.expiry();
        if self.download_mode == Mode::Presigned {
            let url = self
                .presigner()
                .presign_get(&file.key, &file.mime_type, file_id.as_str(), self.url_ttl)
                .await?;
            return Ok((file, IssuedUrl { url, expires_on }));
        }
        let token = self.signer.sign(&Grant {
            purpose: Purpose::Download,
            owner: owner.clone(),
            file_id: file_id.clone(),
            key: file.key.clone(),
            mime_type: None,
            size: None,
            sha256: None,
            actor: actor.id.clone(),
            role: actor.role,
            expires_on,
        });
        let url = format!("{}/v3/downloads/{token}", self.public_url);
        Ok((file, IssuedUrl { url, expires_on }))
    }

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

    /// Streams `body` through the pipeline for a checked upload grant, consuming the grant.
    pub async fn upload_granted<S, E>(
        &self,
        grant: &Grant,
        body: S,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        let declared = Declared {
            mime_type: grant.mime_type.clone(),
            size: grant.size,
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
                Ok(_) => {
                    if let Some(old) = &old {
                        self.discard(&old.key).await;
                    }
                    return Ok(Committed {
                        file,
                        replaced: old.is_some(),
                        scan_time: None,
                    });
                }
                Err(IndexError::Conflict) => {}
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
                                .is_some_and(|c| c.key == file.key) =>
                        {
                            if let Some(old) = &old {
                                self.discard(&old.key).await;
                            }
                            return Ok(Committed {
                                file,
                                replaced: old.is_some(),
                                scan_time: None,
                            });
                        }
                        Ok(_) => self.discard(&file.key).await,
                        Err(_) => tracing::warn!(
                            "index unreachable after an uncertain write; the new object is left for reconcile"
                        ),
                    }
                    return Err(e.into());
                }
            }
        }
        self.discard(&file.key).await;
        Err(FilesError::Contended)
    }

    async fn read_row(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<(FileRow, Option<u64>), FilesError> {
        Ok(match self.index.get(owner, file_id).await? {
            Some(Versioned { value, version }) => (value, Some(version)),
            None => (
                FileRow {
                    owner: owner.clone(),
                    file_id: file_id.clone(),
                    current: None,
                    pending: None,
                },
                None,
            ),
        })
    }

    /// Deletes an object that no row needs; a failure is logged and left to `reconcile`.
    async fn discard(&self, key: &ObjectKey) {
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(error = %e, "could not delete an unreferenced object");
        }
    }

    /// Deletes the file's bytes, then its row if the row still names them. A row that only
    /// holds an unexpired pending upload is cancelled (the upload URL stops working) and counts
    /// as deleted. Returns the deleted file, or `None` for a cancelled upload.
    pub async fn delete(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<Option<StoredFile>, FilesError> {
        let mut deleted: Option<Option<StoredFile>> = None;
        for _ in 0..MAX_RACE_RETRIES {
            let Some(Versioned {
                value: row,
                version,
            }) = self.index.get(owner, file_id).await?
            else {
                return deleted.ok_or(FilesError::NotFound);
            };
            match (&deleted, &row.current) {
                // Replaced by a newer upload after we deleted the old bytes: the newer file stays.
                (Some(Some(gone)), Some(cur)) if cur.key != gone.key => {
                    return Ok(deleted.flatten());
                }
                (Some(None), Some(_)) => return Ok(None),
                _ => {}
            }
            let live_pending = row.pending.as_ref().filter(|p| p.expires_on > Utc::now());
            if deleted.is_none() && row.current.is_none() && live_pending.is_none() {
                // Only an expired pending upload: nothing a client could see. Drop the row.
                let _ = self.index.delete(owner, file_id, version).await;
                return Err(FilesError::NotFound);
            }
            if let Some(cur) = &row.current {
                self.store.delete(&cur.key).await?;
            }
            if let Some(p) = &row.pending {
                // In presigned mode the pending object may have arrived; it goes too.
                self.store.delete(&p.key).await?;
            }
            if deleted.is_none() {
                deleted = Some(row.current.clone());
            }
            match self.index.delete(owner, file_id, version).await {
                Ok(()) => return Ok(deleted.flatten()),
                Err(IndexError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(FilesError::Contended)
    }

    /// Deletes every file and pending upload of `owner`; returns how many files were deleted.
    pub async fn erase(&self, owner: &Owner) -> Result<u64, FilesError> {
        let mut count = 0;
        let mut after: Option<FileId> = None;
        loop {
            let rows = self.index.list(owner, after.as_ref(), 100).await?;
            let Some(last) = rows.last() else {
                return Ok(count);
            };
            after = Some(last.value.file_id.clone());
            for row in rows {
                match self.delete(owner, &row.value.file_id).await {
                    Ok(Some(_)) => count += 1,
                    Ok(None) | Err(FilesError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Verifies a download capability token's signature, purpose and expiry.
    pub fn verify_download_grant(&self, token: &str) -> Result<Grant, FilesError> {
        Ok(self.signer.verify(token, Purpose::Download, Utc::now())?)
    }

    /// The file a download grant serves: only the object it was issued for, so after a
    /// replace or a delete it is [`FilesError::NotFound`].
    pub async fn granted_file(&self, grant: &Grant) -> Result<StoredFile, FilesError> {
        let file = self.get(&grant.owner, &grant.file_id).await?;
        if file.key != grant.key {
            return Err(FilesError::NotFound);
        }
        Ok(file)
    }

    /// Reads the file's bytes, or a range of them.
    pub async fn read(
        &self,
        file: &StoredFile,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, FilesError> {
        match self.store.read(&file.key, range).await {
            Err(StoreError::NotFound) => Err(FilesError::NotFound),
            other => Ok(other?),
        }
    }
}
