//! The index's side of resumable uploads: one row per upload, every write conditional on the
//! version that was read, like the file rows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::IndexError;
use super::usage::{LimitReached, OpenLimits};
use crate::keys::UploadId;
use crate::model::{Owner, ResumableUpload, Versioned};

#[async_trait]
pub trait UploadIndex: Send + Sync {
    async fn get_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Option<Versioned<ResumableUpload>>, IndexError>;

    /// Writes the upload's row if the stored version is `expected` (`None`: no row yet) and
    /// returns the new version, else [`IndexError::Conflict`].
    async fn put_upload(
        &self,
        upload: &ResumableUpload,
        expected: Option<u64>,
    ) -> Result<u64, IndexError>;

    /// Writes a new upload's row if it stays within `limits` at `now` (uploads that are open
    /// and unexpired, of the participant and of its app), checked in the same atomic write as
    /// the insert: creations that race cannot pass a limit together.
    async fn create_upload(
        &self,
        upload: &ResumableUpload,
        limits: OpenLimits,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, LimitReached>, IndexError>;

    /// Deletes the row if its version is `expected`, else [`IndexError::Conflict`].
    async fn delete_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
        expected: u64,
    ) -> Result<(), IndexError>;

    /// Up to `limit` uploads of `owner` (open, complete or expired) after `after`, in upload ID
    /// order; for erase and for the DELETE of a file. Fewer than `limit`: there are no more.
    async fn uploads_of(
        &self,
        owner: &Owner,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError>;

    /// How many of the owner's uploads are neither complete nor expired at `now`.
    async fn open_uploads(&self, owner: &Owner, now: DateTime<Utc>) -> Result<u64, IndexError>;

    /// Up to `limit` uploads that expired before `now`, of any owner; for `reconcile`.
    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError>;
}
