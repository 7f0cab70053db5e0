//! Settling a pending upload: a presigned upload that arrived becomes the file, one over the
//! limits or past its expiry is dropped.

use base64::Engine;
use chrono::Utc;
use futures::StreamExt;
use sha2::Digest;

use super::{FileService, FilesError, MAX_RACE_RETRIES};
use crate::config::Mode;
use crate::index::IndexError;
use crate::model::{FileRow, PendingUpload, ScanStatus, StoredFile, Versioned};
use crate::store::StoreError;

impl FileService {
    /// Settles a row's pending upload. In presigned mode the object may have arrived in the
    /// store: within the limits it becomes the file (the replaced object is deleted), over
    /// them it is deleted. An expired upload that has not arrived is dropped, and with it a row
    /// that held nothing else. Returns the row as it now stands.
    pub(super) async fn settle(
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
}
