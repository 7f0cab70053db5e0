//! Deleting one file (bytes first, then the row) and erasing a participant.

use chrono::Utc;

use super::{FileService, FilesError, MAX_RACE_RETRIES};
use crate::index::IndexError;
use crate::model::{FileId, Owner, StoredFile, Versioned};

impl FileService {
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
}
