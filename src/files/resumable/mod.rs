//! Resumable uploads, whatever the protocol that carries them: an upload is created, fed by any
//! number of requests at any instance (its state is a row of the index), completed through the
//! same pipeline and switch as every upload, or terminated. The tus handlers are one adapter.

mod append;
mod complete;
mod hashing;
mod live;
mod writers;

use std::time::Duration;

use chrono::Utc;

use super::{FileService, FilesError};
use crate::index::UploadIndex;
use crate::keys::{ObjectKey, UploadId};
use crate::model::{FileId, Issuer, Owner, Refusal, ResumableUpload, Versioned};
use crate::sniff;

pub use append::{Append, Appended, Checksum, ChecksumAlgorithm};
pub use live::LiveScans;
pub use writers::Writers;

/// How resumable uploads are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ResumableSettings {
    /// How long an upload may take from its creation.
    pub ttl: Duration,
    /// Uploads one participant may have open at once.
    pub max_open: u64,
    /// Scan sessions this instance keeps open between the requests of its uploads.
    pub scan_sessions: usize,
}

/// What a client declares when it creates an upload.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub file_id: FileId,
    pub mime_type: Option<String>,
    /// Standard base64 of the whole file's SHA-256.
    pub sha256: Option<String>,
    /// `None`: deferred to a later request.
    pub length: Option<u64>,
}

/// How a refused completion is answered, from the error that refused it.
pub type Describe = dyn Fn(FilesError) -> Refusal + Send + Sync;

impl FileService {
    fn upload_index(&self) -> &dyn UploadIndex {
        self.index.uploads()
    }

    /// Creates an upload, held to the file size limit, the quotas, the allowed types and the
    /// number of open uploads.
    pub async fn create_upload(
        &self,
        owner: &Owner,
        issuer: &Issuer,
        new: NewUpload,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        let index = self.upload_index();
        if let Some(length) = new.length {
            self.check_length(owner, &new.file_id, length).await?;
        }
        if let Some(declared) = &new.mime_type {
            sniff::decide(Some(declared), None, &self.rules.allowed)?;
        }
        let now = Utc::now();
        if index.open_uploads(owner, now).await? >= self.resumable.max_open {
            return Err(FilesError::TooManyUploads);
        }
        if let Some(max) = self.limits.settings.max_files_per_participant {
            let (usage, this) = self.usage_beside(owner, &new.file_id).await?;
            if this.is_none() && usage.files + usage.pending_new >= max {
                return Err(FilesError::Quota("files"));
            }
        }
        let id = UploadId::generate();
        let key = ObjectKey::new(owner, &id);
        let staged = self
            .store
            .begin_staging(&key, new.length.unwrap_or(self.rules.max_size))
            .await?;
        let upload = ResumableUpload {
            owner: owner.clone(),
            id,
            file_id: new.file_id,
            issuer: issuer.encode(),
            mime_type: new.mime_type,
            sha256: new.sha256,
            length: new.length,
            offset: 0,
            hash: None,
            created_on: now,
            expires_on: now
                + chrono::Duration::from_std(self.resumable.ttl).unwrap_or(chrono::Duration::MAX),
            staged,
            writer: None,
            outcome: None,
        };
        match index.put_upload(&upload, None).await {
            Ok(version) => Ok(Versioned {
                value: upload,
                version,
            }),
            Err(e) => {
                let _ = self.store.drop_staged(&upload.staged).await;
                Err(e.into())
            }
        }
    }

    /// The file size limit and the byte quota, for a declared length.
    async fn check_length(
        &self,
        owner: &Owner,
        file_id: &FileId,
        length: u64,
    ) -> Result<(), FilesError> {
        if length > self.rules.max_size {
            return Err(FilesError::TooLarge {
                limit: self.rules.max_size,
            });
        }
        if let Some(max) = self.limits.settings.max_bytes_per_participant {
            let (usage, this) = self.usage_beside(owner, file_id).await?;
            if length > max.saturating_sub(usage.bytes - this.unwrap_or(0)) {
                return Err(FilesError::Quota("storage"));
            }
        }
        Ok(())
    }

    /// What the owner holds, and the size of `file_id`'s committed bytes if it has some.
    async fn usage_beside(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<(crate::index::Usage, Option<u64>), FilesError> {
        let usage = self.index.usage(owner, Utc::now()).await?;
        let (row, _) = self.read_row(owner, file_id).await?;
        Ok((usage, row.current.map(|c| c.size)))
    }

    /// The upload as it stands, once any request still appending to it on this instance has
    /// stopped and made its bytes durable. 404 for an unknown one, 410 once expired.
    pub async fn upload_state(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        drop(self.writers.take(id.as_str()).await);
        self.read_upload(owner, id).await
    }

    async fn read_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        let row = self
            .upload_index()
            .get_upload(owner, id)
            .await?
            .ok_or(FilesError::NotFound)?;
        if row.value.expires_on <= Utc::now() {
            return Err(FilesError::UploadExpired);
        }
        Ok(row)
    }

    /// Removes the upload and every byte of it; a request appending to it here stops first.
    pub async fn terminate_upload(&self, owner: &Owner, id: &UploadId) -> Result<(), FilesError> {
        let _turn = self.writers.take(id.as_str()).await;
        let index = self.upload_index();
        let row = self.read_upload(owner, id).await?;
        // The bytes go first: a row without its bytes would tell a client to resume them.
        self.store.drop_staged(&row.value.staged).await?;
        index.delete_upload(owner, id, row.version).await?;
        self.writers.forget(id.as_str());
        self.live.close(id.as_str());
        Ok(())
    }
}
