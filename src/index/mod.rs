//! File indexes: the rows that say which object is a file's current bytes.

mod dynamo;
mod sqlite;
mod uploads;
pub mod usage;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::model::{AppId, FileId, FileRow, Owner, UserId, Versioned};

pub use dynamo::{DynamoFileIndex, TableSetup};
pub use sqlite::{PENDING_USAGE, SqliteFileIndex, list_app_sql, pending_sql};
pub use uploads::UploadIndex;
pub use usage::{Counters, FileQuota, LimitReached, OpenLimits, QuotaReached, Recount};

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

    /// Whether reading the row again and trying again may help: the write lost a race, or its
    /// answer got lost (it may have landed; the row read next tells).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict) || !self.is_definite()
    }
}

/// What one owner holds, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files with committed bytes.
    pub files: u64,
    /// Their bytes together.
    pub bytes: u64,
    /// Unexpired upload URLs, of new files and of replacements.
    pub pending: u64,
    /// Unexpired upload URLs of files that have no committed bytes yet.
    pub pending_new: u64,
}

impl Usage {
    fn add(&mut self, row: &FileRow, now: DateTime<Utc>) {
        if let Some(c) = &row.current {
            self.files += 1;
            self.bytes += c.size;
        }
        if row.pending.as_ref().is_some_and(|p| p.expires_on > now) {
            self.pending += 1;
            if row.current.is_none() {
                self.pending_new += 1;
            }
        }
    }
}

/// A position in the app-wide order: newest `createdOn` first, then participant and file ID,
/// both descending (byte order), so that files committed in the same millisecond keep a fixed
/// order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppPosition {
    /// Milliseconds since the epoch, as both indexes store `createdOn`.
    pub created_on: i64,
    pub participant: UserId,
    pub file_id: FileId,
}

impl AppPosition {
    /// Where a row with committed bytes sits; `None` for a row without.
    #[must_use]
    pub fn of(row: &FileRow) -> Option<Self> {
        row.current.as_ref().map(|c| Self {
            created_on: c.created_on.timestamp_millis(),
            participant: row.owner.participant.clone(),
            file_id: row.file_id.clone(),
        })
    }
}

/// An app-wide listing: the committed files of every participant of `app`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppQuery {
    pub app: AppId,
    /// Only files with this ID (of every participant).
    pub file_id: Option<FileId>,
    /// `createdOn` at or after this (milliseconds).
    pub start: Option<i64>,
    /// `createdOn` before this (milliseconds).
    pub end: Option<i64>,
    /// Only files strictly after this position in the order (the last item of the previous
    /// page); it need not be a file that exists.
    pub after: Option<AppPosition>,
}

impl AppQuery {
    /// Whether a row belongs in the answer: it has committed bytes and matches every bound.
    /// Both indexes select by their keys; this states the same rule once, for checks.
    #[must_use]
    pub fn matches(&self, row: &FileRow) -> bool {
        let Some(pos) = AppPosition::of(row) else {
            return false;
        };
        row.owner.app == self.app
            && self.file_id.as_ref().is_none_or(|f| *f == row.file_id)
            && self.start.is_none_or(|s| pos.created_on >= s)
            && self.end.is_none_or(|e| pos.created_on < e)
            && self.after.as_ref().is_none_or(|a| pos < *a)
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

    /// Up to `limit` rows of the app that hold committed bytes and match `query`, in the
    /// app-wide order (see [`AppPosition`]). Rows holding only an upload URL or claims are never
    /// returned. Every returned row is as the row reads now, never an older copy of it.
    async fn list_app(
        &self,
        query: &AppQuery,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError>;

    /// Every row of every owner, `limit` at a time, starting after the given row; for
    /// `reconcile`. Fewer than `limit` rows means there are no more.
    async fn scan(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError>;

    /// Rows holding an upload URL, `limit` at a time, after the given row, in an order of the
    /// index's own; for the settler. Read from an index of pending rows only (never the whole
    /// table), and every row as it reads now. Fewer than `limit` rows means there are no more.
    async fn pending(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError>;

    /// Writes `row` if the stored version is `expected` (`None`: no row yet) and returns the
    /// new version, else [`IndexError::Conflict`]. A write that adds files or bytes lands only
    /// if the owner's counters stay within `quota`, checked in the same atomic write as the
    /// change: commits that race cannot pass a quota together.
    async fn put_within(
        &self,
        row: &FileRow,
        expected: Option<u64>,
        quota: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError>;

    /// [`Self::put_within`] without quotas.
    ///
    /// # Panics
    ///
    /// Never: a write without quotas is never refused by one.
    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError> {
        match self.put_within(row, expected, FileQuota::default()).await? {
            Ok(version) => Ok(version),
            Err(reached) => unreachable!("{reached:?} without a quota"),
        }
    }

    /// Deletes the row if its version is `expected`, else [`IndexError::Conflict`].
    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError>;

    /// Answers when the index can be read.
    async fn check(&self) -> Result<(), IndexError>;

    /// Where resumable uploads are kept: beside the files, in the same index.
    fn uploads(&self) -> &dyn UploadIndex;

    /// Writes `row` over `version`, or deletes the row when it holds nothing any more.
    async fn rewrite(&self, row: &FileRow, version: u64) -> Result<(), IndexError> {
        if row.is_empty() {
            self.delete(&row.owner, &row.file_id, version).await
        } else {
            self.put(row, Some(version)).await.map(|_| ())
        }
    }

    /// The usage counters stored for `owner`, `None` before it was counted; for checks. The
    /// default (an index without counters) has none.
    async fn counters(&self, _owner: &Owner) -> Result<Option<Counters>, IndexError> {
        Ok(None)
    }

    /// Counts `owner`'s rows (and its app's open uploads) again in one atomic step and stores
    /// the counts where the counters differ (or are missing); returns the participants'
    /// counters it repaired. For `reconcile`. The default keeps no counters.
    async fn recount(&self, _owner: &Owner) -> Result<Vec<Recount>, IndexError> {
        Ok(Vec::new())
    }

    /// Every participant whose usage counters are not all zero; for `reconcile`, which also
    /// recounts those it met no row of (a counter left after every row went). The default
    /// keeps no counters.
    async fn owners_with_usage(&self) -> Result<Vec<Owner>, IndexError> {
        Ok(Vec::new())
    }

    /// What `owner` holds; upload URLs count while they are unexpired at `now`. The indexes
    /// read their counters and the owner's pending rows; the default (for wrappers in tests)
    /// reads every row of the owner.
    async fn usage(&self, owner: &Owner, now: DateTime<Utc>) -> Result<Usage, IndexError> {
        let mut usage = Usage::default();
        let mut after: Option<FileId> = None;
        loop {
            let rows = self.list(owner, after.as_ref(), 100).await?;
            for row in &rows {
                usage.add(&row.value, now);
            }
            if rows.len() < 100 {
                return Ok(usage);
            }
            after = rows.last().map(|r| r.value.file_id.clone());
        }
    }
}
