//! Resumable uploads, whatever the protocol that carries them: an upload is created, fed by any
//! number of requests at any instance (its state is a row of the index), completed through the
//! same pipeline and switch as every upload, or terminated. The tus handlers are one adapter.

mod append;
mod complete;
mod hashing;
mod live;
mod turns;

use std::time::Duration;

use chrono::Utc;

use super::{FileService, FilesError};
use crate::auth::Role;
use crate::index::{LimitReached, OpenLimits, UploadIndex};
use crate::keys::{ObjectKey, UploadId};
use crate::model::{
    FileId, Issuer, Owner, Refusal, ResumableUpload, UploadOutcome, UserId, Versioned,
};
use crate::sniff;

pub use append::{Append, Appended, Checksum, ChecksumAlgorithm, Progress};
pub use live::LiveScans;
pub use turns::Turns;

/// How resumable uploads are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ResumableSettings {
    /// How long an upload may take from its creation.
    pub ttl: Duration,
    /// Uploads one participant may have open at once.
    pub max_open: u64,
    /// Uploads one app may have open at once, all its participants together.
    pub max_open_per_app: u64,
    /// Scan sessions this instance keeps open between the requests of its uploads.
    pub scan_sessions: usize,
}

/// What a client declares when it creates an upload.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub file_id: FileId,
    pub mime_type: Option<String>,
    /// The name the client sent ([`crate::model::FileName`]).
    pub file_name: Option<String>,
    /// Standard base64 of the whole file's SHA-256.
    pub sha256: Option<String>,
    /// `None`: deferred to a later request.
    pub length: Option<u64>,
}

/// How a refused completion is answered, from the error that refused it.
pub type Describe = fn(FilesError) -> Refusal;

/// Who sends a request to an upload, for the audit line of the commit it may bring about
/// (written by the completion itself, which outlives a client that leaves).
#[derive(Debug, Clone)]
pub struct Requester {
    pub request_id: String,
    pub actor: UserId,
    pub role: Role,
}

/// The bound on an upload's bytes, and which limit sets it.
#[derive(Debug, Clone, Copy)]
enum Room {
    Size(u64),
    Quota(u64),
}

impl Room {
    fn limit(self) -> u64 {
        match self {
            Self::Size(n) | Self::Quota(n) => n,
        }
    }

    fn error(self) -> FilesError {
        match self {
            Self::Size(limit) => FilesError::TooLarge { limit },
            Self::Quota(_) => FilesError::Quota("storage"),
        }
    }
}

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
        // Staged parts would sit in the store unencrypted (issue #25): refused, never stored.
        if self.keys.is_some() {
            return Err(FilesError::NotWithEncryption("Resumable uploads"));
        }
        let index = self.upload_index();
        if let Some(length) = new.length {
            self.check_length(owner, &new.file_id, length).await?;
        }
        if let Some(declared) = &new.mime_type {
            sniff::decide(Some(declared), None, &self.rules.allowed)?;
        }
        let now = Utc::now();
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
            .begin_resumable(&key, new.length.unwrap_or(self.rules.max_size))
            .await?;
        let upload = ResumableUpload {
            owner: owner.clone(),
            id,
            file_id: new.file_id,
            issuer: issuer.encode(),
            mime_type: new.mime_type,
            file_name: new.file_name,
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
        let limits = OpenLimits {
            per_participant: self.resumable.max_open,
            per_app: self.resumable.max_open_per_app,
        };
        // The open-upload limits are checked in the write that creates the upload, never
        // counted first: creations that race cannot pass them together.
        let refused = match index.create_upload(&upload, limits, now).await {
            Ok(Ok(version)) => {
                return Ok(Versioned {
                    value: upload,
                    version,
                });
            }
            Ok(Err(LimitReached::Participant)) => FilesError::TooManyUploads,
            Ok(Err(LimitReached::App)) => FilesError::TooManyAppUploads,
            Err(e) => e.into(),
        };
        let _ = self.store.drop_staged(&upload.staged).await;
        Err(refused)
    }

    /// The file size limit and the byte quota, for a declared length.
    async fn check_length(
        &self,
        owner: &Owner,
        file_id: &FileId,
        length: u64,
    ) -> Result<(), FilesError> {
        let room = self.room(owner, file_id).await?;
        if length > room.limit() {
            return Err(room.error());
        }
        Ok(())
    }

    /// The most bytes an upload of `file_id` may hold: the file size limit, or less when the
    /// byte quota leaves less (the file's committed bytes do not count: they are replaced).
    async fn room(&self, owner: &Owner, file_id: &FileId) -> Result<Room, FilesError> {
        let size = Room::Size(self.rules.max_size);
        let Some(max) = self.limits.settings.max_bytes_per_participant else {
            return Ok(size);
        };
        let (usage, this) = self.usage_beside(owner, file_id).await?;
        let left = max.saturating_sub(usage.bytes.saturating_sub(this.unwrap_or(0)));
        Ok(if left < self.rules.max_size {
            Room::Quota(left)
        } else {
            size
        })
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

    /// How long an upload may take from its creation (`PF_RESUMABLE_TTL`).
    #[must_use]
    pub fn upload_ttl(&self) -> Duration {
        self.resumable.ttl
    }

    /// How many uploads requests on this instance are working on now.
    #[must_use]
    pub fn uploads_in_hand(&self) -> usize {
        self.turns.len()
    }

    /// The upload as it stands, once any request still appending to it on this instance has
    /// stopped and made its bytes durable. 404 for an unknown one (or another owner's: that is
    /// checked before anything else), 410 once expired, 423 while its completion runs.
    pub async fn upload_state(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        self.read_idle(owner, id).await?;
        drop(self.turns.take(id.as_str()).await);
        self.read_idle(owner, id).await
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

    /// The upload, unless its completion is running (423: its outcome comes later).
    async fn read_idle(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        let row = self.read_upload(owner, id).await?;
        if row.value.completing(Utc::now()) {
            return Err(FilesError::UploadCompleting);
        }
        Ok(row)
    }

    /// Removes the upload and every byte of it; a request appending to it here stops first.
    /// An upload whose file was committed is not terminated (its file stays), and one being
    /// completed is not either (423, until its outcome is known).
    pub async fn terminate_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<FileId, FilesError> {
        self.read_idle(owner, id).await?;
        let _turn = self.turns.take(id.as_str()).await;
        let mut row = self.read_idle(owner, id).await?;
        if row.value.outcome == Some(UploadOutcome::Committed) {
            return Err(FilesError::UploadCompleted);
        }
        // The lease first: no instance starts a completion of what is being removed.
        self.take_lease(&mut row, false).await?;
        self.remove_upload(owner, id).await?;
        Ok(row.value.file_id)
    }

    /// Removes an upload whose creation request was refused after it was made (its first
    /// bytes, or its completion): that client has no URL for it, so nothing of it stays and it
    /// holds no slot. An upload whose file was committed is kept (its outcome is the file's).
    pub async fn abandon_upload(&self, owner: &Owner, id: &UploadId) -> Result<(), FilesError> {
        let _turn = self.turns.take(id.as_str()).await;
        match self.upload_index().get_upload(owner, id).await? {
            Some(row) if row.value.outcome != Some(UploadOutcome::Committed) => {
                self.remove_upload(owner, id).await.map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Takes the upload's lease for a request of this instance (`completing`: for the
    /// completion) with a fence one above the last, in a write conditional on the version
    /// read; returns the fence. Every later write of the request names the version this one
    /// made, so a request whose lease is taken over changes nothing more. Another instance's
    /// live lease: 423 (on this instance, the older request was stopped by taking its turn).
    async fn take_lease(
        &self,
        row: &mut Versioned<ResumableUpload>,
        completing: bool,
    ) -> Result<u64, FilesError> {
        let lease = crate::lease::Lease::take(
            row.value.writer.as_ref(),
            &self.instance,
            append::LEASE,
            crate::model::Writing { completing },
            false,
        )
        .map_err(|_| FilesError::UploadLocked)?;
        let fence = lease.epoch;
        row.value.writer = Some(lease);
        row.version = match self
            .upload_index()
            .put_upload(&row.value, Some(row.version))
            .await
        {
            Ok(version) => version,
            Err(e) if e.is_retryable() => return Err(FilesError::UploadLocked),
            Err(e) => return Err(e.into()),
        };
        Ok(fence)
    }

    /// Terminates every upload of `owner` (only those that would become `file_id`, when
    /// given), whatever state each is in and whoever holds its lease: erase, and the DELETE of
    /// a file. A completion running elsewhere loses its claim to the erase that follows.
    /// Returns how many were open.
    pub(super) async fn end_uploads(
        &self,
        owner: &Owner,
        file_id: Option<&FileId>,
    ) -> Result<u64, FilesError> {
        const PAGE: usize = 100;
        let index = self.upload_index();
        let (mut count, mut after) = (0, None);
        loop {
            let rows = index.uploads_of(owner, after.as_ref(), PAGE).await?;
            let last = rows.len() < PAGE;
            after = rows.last().map(|r| r.value.id.clone());
            for row in rows {
                if file_id.is_some_and(|f| *f != row.value.file_id) {
                    continue;
                }
                let _turn = self.turns.take(row.value.id.as_str()).await;
                if self.remove_upload(owner, &row.value.id).await? {
                    count += 1;
                }
            }
            if last {
                return Ok(count);
            }
        }
    }

    /// A completion that failed for a backend leaves the upload's key claimed, and its object
    /// maybe finished, for its retry: neither outlives the upload, unless the switch made that
    /// object the file (its outcome was then not recorded).
    async fn release_claim(&self, upload: &ResumableUpload) -> Result<(), FilesError> {
        let key = &upload.staged.key;
        let (row, _) = self.read_row(&upload.owner, &upload.file_id).await?;
        if !row.claimed(key) || row.current.as_ref().is_some_and(|c| &c.key == key) {
            return Ok(());
        }
        self.store.delete(key).await?;
        self.unclaim(&upload.owner, &upload.file_id, key).await
    }

    /// Drops the upload's staged bytes, then its row, as the row reads now; true when it was
    /// open (neither complete nor expired).
    async fn remove_upload(&self, owner: &Owner, id: &UploadId) -> Result<bool, FilesError> {
        let index = self.upload_index();
        let mut tries = crate::files::Backoff::new();
        while tries.next().await {
            let Some(row) = index.get_upload(owner, id).await? else {
                return Ok(false);
            };
            let open = row.value.outcome.is_none() && row.value.expires_on > Utc::now();
            // The bytes go first: a row without its bytes would tell a client to resume them.
            self.store.drop_staged(&row.value.staged).await?;
            if row.value.outcome != Some(UploadOutcome::Committed) {
                self.release_claim(&row.value).await?;
            }
            match index.delete_upload(owner, id, row.version).await {
                Ok(()) => {
                    self.live.close(id.as_str());
                    return Ok(open);
                }
                Err(e) if !e.is_retryable() => return Err(e.into()),
                // A request recorded bytes meanwhile (it stops at its next write): again.
                Err(_) => {}
            }
        }
        Err(FilesError::Contended)
    }
}
