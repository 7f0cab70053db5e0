//! The participant-file operations, over an index, a store and a scanner: what every route does
//! once the caller and the target participant are known. The service and its errors live here;
//! reads (`read`), uploads, arrived presigned uploads (`arrival`), the settler that polls for
//! them, and deletes have modules of their own.

mod arrival;
mod claim;
mod commit;
mod delete;
mod read;

pub use delete::Erased;
pub mod resumable;
pub mod settler;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::auth::Role;
use crate::budget::MemoryBudget;
use crate::capability::{CapabilityError, UrlSigner};
use crate::config::Mode;
use crate::index::{AppPosition, FileIndex, IndexError};
use crate::keys::ObjectKey;
use crate::limits::{LimitSettings, Limits};
use crate::model::{FileId, FileRow, Owner, StoredFile, UserId, Versioned};
use crate::pipeline::{PipelineError, Rules, Sinks};
use crate::scan::Scanner;
use crate::sniff::TypeError;
use crate::store::{BlobStore, StoreError};

use crate::retry::Backoff;

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
    /// Work done under a lease that another holder took over meanwhile: it changed nothing,
    /// and the new holder does it.
    #[error("the lease was taken over")]
    LeaseLost,
    #[error("every upload slot is taken")]
    Busy,
    #[error("the upload was stopped: the file was erased, or the upload was left too long")]
    ClaimRevoked,
    #[error("the participant's {0} quota would be exceeded")]
    Quota(&'static str),
    #[error("the participant holds too many unused upload URLs")]
    TooManyPending,
    #[error("the participant's download budget is spent for now")]
    DownloadBudget(Duration),
    /// A rescan found the stored file infected: it is never served again.
    #[error("the file was found infected ({0})")]
    Infected(String),
    #[error("the participant has too many open resumable uploads")]
    TooManyUploads,
    #[error("the app has too many open resumable uploads")]
    TooManyAppUploads,
    #[error("the resumable upload expired")]
    UploadExpired,
    #[error("the upload's offset is {0}")]
    OffsetMismatch(u64),
    #[error("the upload's length is set and cannot change")]
    LengthFixed,
    #[error("the request declares another SHA-256 than the upload's")]
    DigestFixed,
    #[error("the request carries bytes past the upload's length")]
    PastLength,
    #[error("the request body does not match its checksum")]
    UploadChecksum,
    #[error("another request is appending to the upload")]
    UploadLocked,
    /// Every byte is in and the completion is running: come back for its outcome.
    #[error("the upload is being completed")]
    UploadCompleting,
    /// A termination of an upload whose file was committed: the file stays.
    #[error("the upload is complete and its file is kept")]
    UploadCompleted,
    #[error("a newer request for the upload stopped this one")]
    UploadStopped,
    #[error("the request body was cut off")]
    UploadCut,
    /// The completion was refused (now, or earlier for a client that asks again).
    #[error("the upload was refused ({})", .0.message)]
    UploadRefused(crate::model::Refusal),
    /// An intake that does not encrypt yet, on a deployment that encrypts (`PF_ENCRYPTION`).
    #[error("{0} are not available with encryption on")]
    NotWithEncryption(&'static str),
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

/// A page of the app-wide listing, newest first.
#[derive(Debug, Clone)]
pub struct AppPage {
    pub items: Vec<(Owner, FileId, StoredFile)>,
    /// The position of the last item of a full page.
    pub next: Option<AppPosition>,
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
    pub resumable: resumable::ResumableSettings,
}

/// What the file service is built on, besides its settings.
pub struct Parts {
    pub index: Arc<dyn FileIndex>,
    pub store: Arc<dyn BlobStore>,
    pub scanner: Option<Arc<dyn Scanner>>,
    pub signer: UrlSigner,
    pub budget: MemoryBudget,
    /// Work that must outlive the request that started it (commits, clean-ups); a shutdown
    /// waits for it.
    pub tasks: TaskTracker,
    pub audit: Arc<AuditLog>,
    /// The participants' keys when the store encrypts (`PF_ENCRYPTION`): erase destroys them.
    pub keys: Option<crate::encryption::KeyStore>,
}

/// Cheap to clone: a commit that runs on after its client has gone takes a clone along.
#[derive(Clone)]
pub struct FileService {
    index: Arc<dyn FileIndex>,
    store: Arc<dyn BlobStore>,
    scanner: Option<Arc<dyn Scanner>>,
    signer: Arc<UrlSigner>,
    public_url: String,
    url_ttl: Duration,
    rules: Rules,
    upload_mode: Mode,
    download_mode: Mode,
    /// Cancelled when a shutdown's deadline has passed: uploads still receiving stop.
    cancel: tokio_util::sync::CancellationToken,
    limits: Arc<Limits>,
    budget: MemoryBudget,
    tasks: TaskTracker,
    audit: Arc<AuditLog>,
    keys: Option<crate::encryption::KeyStore>,
    resumable: resumable::ResumableSettings,
    /// The resumable uploads this instance appends to now: one request's turn each (the
    /// lease in the row is what keeps other instances out).
    turns: Arc<resumable::Turns>,
    /// Scan sessions kept between the requests of resumable uploads.
    live: Arc<resumable::LiveScans>,
    /// This instance, as the holder of a resumable upload's lease.
    instance: String,
}

impl FileService {
    /// # Panics
    /// When a presigned mode is asked of a store that cannot presign (configuration checks this).
    #[must_use]
    pub fn new(parts: Parts, settings: Settings) -> Self {
        let Parts {
            index,
            store,
            scanner,
            signer,
            budget,
            tasks,
            audit,
            keys,
        } = parts;
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
            signer: Arc::new(signer),
            public_url: settings.public_url,
            url_ttl: settings.url_ttl,
            rules: settings.rules,
            upload_mode: settings.upload_mode,
            download_mode: settings.download_mode,
            cancel: tokio_util::sync::CancellationToken::new(),
            limits: Arc::new(Limits::new(settings.limits)),
            budget,
            tasks,
            audit,
            keys,
            resumable: settings.resumable,
            turns: Arc::default(),
            live: Arc::new(resumable::LiveScans::new(settings.resumable.scan_sessions)),
            instance: crate::keys::UploadId::generate().as_str().to_owned(),
        }
    }

    fn sinks(&self) -> Sinks<'_> {
        Sinks {
            scanner: self.scanner.as_ref(),
            store: self.store.as_ref(),
            budget: &self.budget,
            cancel: &self.cancel,
        }
    }

    /// Stops every upload that is still receiving its body (see [`crate::pipeline::receive`]).
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

    /// The base of the URLs this service hands out.
    #[must_use]
    pub fn public_url(&self) -> &str {
        &self.public_url
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

    async fn read_row(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<(FileRow, Option<u64>), FilesError> {
        Ok(match self.index.get(owner, file_id).await? {
            Some(Versioned { value, version }) => (value, Some(version)),
            None => (FileRow::empty(owner, file_id), None),
        })
    }

    /// Deletes an object that no row needs; a failure is logged and left to `reconcile`.
    /// A store under load can refuse a request now and then; an object nobody names is tried a
    /// few times before it is left to `reconcile`.
    async fn discard(&self, key: &ObjectKey) {
        let mut tries = Backoff::at_most(4);
        let mut last = None;
        while tries.next().await {
            match self.store.delete(key).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "could not delete an unreferenced object; reconcile will");
        }
    }
}
