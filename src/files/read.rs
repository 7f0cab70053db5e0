//! Reads: a participant's files page by page, the app-wide listing, one file, download URLs
//! and the grants they carry, and the bytes.

use std::ops::Range;

use chrono::Utc;

use super::{Actor, AppPage, FileService, FilesError, IssuedUrl, Page};
use crate::capability::{Grant, Purpose};
use crate::config::Mode;
use crate::index::{AppPosition, AppQuery};
use crate::model::{FileId, FileRow, Owner, StoredFile, Versioned};
use crate::store::{BlobRead, StoreError};

/// How many upload URLs one list request looks for in the store (a `HeadObject` each); the
/// others are settled by a later request. Keeps the work of one list bounded.
const SETTLES_PER_LIST: usize = 10;

impl FileService {
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
    pub(super) async fn current_row(
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
