//! The participant-file operations, over an index, a store and a scanner: what every route does
//! once the caller and the target participant are known. Reads live here; uploads, arrived
//! presigned uploads (`arrival`), the settler that polls for them, and deletes have modules of
//! their own.

mod arrival;
mod claim;
mod commit;
mod delete;

pub use delete::Erased;
pub mod resumable;
pub mod settler;
mod upload;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::auth::Role;
use crate::budget::MemoryBudget;
use crate::capability::{CapabilityError, Grant, Purpose, UrlSigner};
use crate::config::Mode;
use crate::index::{AppPosition, AppQuery, FileIndex, IndexError};
use crate::keys::ObjectKey;
use crate::limits::{LimitSettings, Limits};
use crate::model::{FileId, FileRow, Owner, StoredFile, UserId, Versioned};
use crate::pipeline::{PipelineError, Rules, Sinks};
use crate::scan::Scanner;
use crate::sniff::TypeError;
use crate::store::{BlobRead, BlobStore, StoreError};

use crate::retry::Backoff;

/// How many upload URLs one list request looks for in the store (a `HeadObject` each); the
/// others are settled by a later request. Keeps the work of one list bounded.
const SETTLES_PER_LIST: usize = 10;

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

/// The file, unless a rescan found it infected: such a file is listed, never served.
fn servable(file: StoredFile) -> Result<StoredFile, FilesError> {
    if file.scan_status == crate::model::ScanStatus::Infected {
        let signature = file
            .scan
            .and_then(|s| s.signature)
            .unwrap_or_else(|| "unknown signature".to_owned());
        return Err(FilesError::Infected(signature));
    }
    Ok(file)
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

    /// The committed files of `owner`, `page_size` at a time after `after`. Rows that only hold
    /// a pending upload are skipped without making the page shorter; at most
    /// [`SETTLES_PER_LIST`] upload URLs are looked for in the store.
    pub async fn list(
        &self,
        owner: &Owner,
        after: Option<&FileId>,
        page_size: usize,
    ) -> Result<Page, FilesError> {
        let mut items = Vec::with_capacity(page_size);
        let mut cursor = after.cloned();
        let mut settles = 0;
        while items.len() < page_size {
            let rows = self
                .index
                .list(owner, cursor.as_ref(), page_size - items.len())
                .await?;
            let exhausted = rows.len() < page_size - items.len();
            cursor = rows.last().map(|r| r.value.file_id.clone());
            for row in rows {
                let row = if row.value.pending.is_some() && settles < SETTLES_PER_LIST {
                    settles += 1;
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

    /// The committed files of every participant of the query's app, newest first. Upload URLs
    /// are not settled here (that is a `HeadObject` per row, and the settler and the
    /// participant's own routes do it): a file whose upload arrived but is not settled yet
    /// shows its previous version, or not at all when it has none.
    pub async fn list_app(
        &self,
        query: &AppQuery,
        page_size: usize,
    ) -> Result<AppPage, FilesError> {
        let rows = self.index.list_app(query, page_size).await?;
        let items: Vec<(Owner, FileId, StoredFile)> = rows
            .into_iter()
            .filter_map(|r| {
                let FileRow {
                    owner,
                    file_id,
                    current,
                    ..
                } = r.value;
                current.map(|c| (owner, file_id, c))
            })
            .collect();
        let next = (items.len() == page_size)
            .then(|| {
                items.last().map(|(owner, file_id, file)| AppPosition {
                    created_on: file.created_on.timestamp_millis(),
                    participant: owner.participant.clone(),
                    file_id: file_id.clone(),
                })
            })
            .flatten();
        Ok(AppPage { items, next })
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

    /// Issues a download URL for the file's current bytes.
    pub async fn download_url(
        &self,
        owner: &Owner,
        file_id: &FileId,
        actor: &Actor,
    ) -> Result<(StoredFile, IssuedUrl), FilesError> {
        let file = servable(self.get(owner, file_id).await?)?;
        let expires_on = self.expiry();
        if self.download_mode == Mode::Presigned {
            // S3 serves the bytes, out of the service's sight: the budget counts issued URLs.
            // Streaming downloads are charged what they serve (`charge_download`).
            self.charge_download(owner, file.size)?;
            let url = self
                .presigner()
                .presign_get(
                    &file.key,
                    &file.mime_type,
                    file.file_name.as_deref().unwrap_or(file_id.as_str()),
                    self.url_ttl,
                )
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

    /// Charges `bytes` to the participant's download budget (`PF_DOWNLOAD_BYTES_PER_HOUR`).
    pub fn charge_download(&self, owner: &Owner, bytes: u64) -> Result<(), FilesError> {
        self.limits
            .charge_download(owner, bytes)
            .map_err(FilesError::DownloadBudget)
    }

    /// Gives back what a download was charged and did not serve (the client left early).
    pub fn refund_download(&self, owner: &Owner, bytes: u64) {
        self.limits.refund_download(owner, bytes);
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

    /// Verifies a download capability token's signature, purpose and expiry.
    pub fn verify_download_grant(&self, token: &str) -> Result<Grant, FilesError> {
        Ok(self.signer.verify(token, Purpose::Download, Utc::now())?)
    }

    /// The file a download grant serves: only the object it was issued for, so after a
    /// replace or a delete it is [`FilesError::NotFound`].
    pub async fn granted_file(&self, grant: &Grant) -> Result<StoredFile, FilesError> {
        let file = self.get(&grant.owner, &grant.file_id).await?;
        // The same upload's bytes, also once a rescan moved them to quarantine (then 422).
        if file.key.upload_id() != grant.key.upload_id() {
            return Err(FilesError::NotFound);
        }
        servable(file)
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
