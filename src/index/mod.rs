//! File indexes: the rows that say which object is a file's current bytes.

mod dynamo;
mod sqlite;

use async_trait::async_trait;

use crate::model::{FileId, FileRow, Owner, Versioned};

pub use dynamo::{DynamoFileIndex, TableSetup};
pub use sqlite::SqliteFileIndex;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A conditional write found another version than the one it was told to expect.
    #[error("the row changed since it was read")]
    Conflict,
    #[error("{backend} index failed: {message}")]
    Backend {
        backend: &'static str,
        message: String,
        /// Whether the backend surely did not apply a write that failed (it refused it, or it
        /// was never sent), as opposed to a timeout after which it may have landed.
        definite: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl IndexError {
    /// Whether a failed write surely did not happen. A conflict never writes.
    pub fn is_definite(&self) -> bool {
        match self {
            Self::Conflict => true,
            Self::Backend { definite, .. } => *definite,
        }
    }
}

/// Rows are keyed by owner and file ID. Every write is a single-row conditional write on the
/// version that was read, so two writers racing on one file cannot both win.
#[async_trait]
pub trait FileIndex: Send + Sync {
    /// A short name for logs and error messages (`sqlite`, `dynamodb`).
    fn name(&self) -> &'static str;

    async fn get(
        &self,
        owner: &Owner,
        file: &FileId,
    ) -> Result<Option<Versioned<FileRow>>, IndexError>;

    /// Up to `limit` rows of `owner` in ascending file ID order, starting after `after`. Rows
    /// that only hold a pending upload are included: callers decide what to show.
    async fn list(
        &self,
        owner: &Owner,
        after: Option<&FileId>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError>;

    /// Every row of every owner, `limit` at a time, starting after the given row; for
    /// `reconcile`. Fewer than `limit` rows means there are no more.
    async fn scan(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError>;

    /// Writes `row` if the stored version is `expected` (`None`: no row yet) and returns the
    /// new version, else [`IndexError::Conflict`].
    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError>;

    /// Deletes the row if its version is `expected`, else [`IndexError::Conflict`].
    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError>;

    /// Answers when the index can be read.
    async fn check(&self) -> Result<(), IndexError>;
}
