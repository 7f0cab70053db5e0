//! Deleting one file (bytes first, then the row) and erasing a participant.

use chrono::Utc;

use super::{Backoff, FileService, FilesError};
use crate::config::Mode;
use crate::model::{FileId, Owner, StoredFile};
use crate::store::StoreError;

/// What a removal found in the row.
struct Removed {
    file: Option<StoredFile>,
    /// An upload URL that had not expired.
    live: bool,
    /// Bytes that had arrived for an upload URL and were not settled yet.
    arrived: bool,
}

impl Removed {
    /// Whether a client could have known the file: its bytes, or an upload in progress.
    fn visible(&self) -> bool {
        self.file.is_some() || self.live || self.arrived
    }
}

impl FileService {
    /// Deletes the file's bytes and whatever was sent to its upload URL (arrived or not, expired
    /// or not), then its row if the row still names them. A file with only an upload URL
    /// counts as deleted: the URL stops working. Returns the deleted file, or `None` for a
    /// cancelled upload; [`FilesError::NotFound`] when there was nothing a client could know of.
    /// Uploads through the service that are still receiving keep their claim: they finish as
    /// a new file.
    pub async fn delete(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<Option<StoredFile>, FilesError> {
        // Resumable uploads aimed at the file end first, so none of them commits after.
        let stopped = self.end_uploads(owner, Some(file_id)).await?;
        match self.remove(owner, file_id, false).await? {
            Some(removed) if removed.visible() => Ok(removed.file),
            _ if stopped > 0 => Ok(None),
            _ => Err(FilesError::NotFound),
        }
    }

    async fn remove(
        &self,
        owner: &Owner,
        file_id: &FileId,
        revoke_claims: bool,
    ) -> Result<Option<Removed>, FilesError> {
        let mut removed: Option<Removed> = None;
        let mut tries = Backoff::new();
        while tries.next().await {
            let Some(row) = self.index.get(owner, file_id).await? else {
                return Ok(removed);
            };
            if let Some(gone) = &removed
                && row.value.current.as_ref().map(|c| &c.key) != gone.file.as_ref().map(|f| &f.key)
            {
                // A newer upload committed after the bytes were deleted: the newer file stays.
                return Ok(removed);
            }
            let version = row.version;
            let mut row = row.value;
            if let Some(cur) = &row.current {
                self.store.delete(&cur.key).await?;
            }
            let (mut live, mut arrived) = (false, false);
            if let Some(p) = &row.pending {
                live = p.expires_on > Utc::now();
                arrived =
                    self.upload_mode == Mode::Presigned && self.store.size(&p.key).await?.is_some();
                self.store.delete(&p.key).await?;
            }
            let removal = removed.get_or_insert(Removed {
                file: row.current.take(),
                live: false,
                arrived: false,
            });
            removal.live |= live;
            removal.arrived |= arrived;
            row.current = None;
            row.pending = None;
            if revoke_claims {
                row.claims.clear();
            }
            match self.index.rewrite(&row, version).await {
                Ok(()) => return Ok(removed),
                Err(e) if !e.is_retryable() => return Err(e.into()),
                // A conflict, or an answer that got lost: read the row again.
                Err(_) => {}
            }
        }
        Err(FilesError::Contended)
    }

    /// Deletes every file, upload URL (and what arrived for it) and upload in progress of
    /// `owner`; an upload still receiving is stopped before it commits. Then, when files are
    /// encrypted, destroys the participant's key: every copy of their ciphertext, wherever it
    /// is (backups, replicas), becomes unreadable. Counts the files deleted, counting uploads
    /// that had arrived but were not settled yet and resumable uploads that were open.
    pub async fn erase(&self, owner: &Owner) -> Result<Erased, FilesError> {
        // Resumable uploads first: a completion that claimed its file before their rows went
        // loses that claim to the pass over the files below; one that had not claimed yet
        // finds its row gone and stops.
        let mut files = self.end_uploads(owner, None).await?;
        let mut after: Option<FileId> = None;
        loop {
            let rows = self.index.list(owner, after.as_ref(), 100).await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(last.value.file_id.clone());
            for row in rows {
                if self
                    .remove(owner, &row.value.file_id, true)
                    .await?
                    .is_some_and(|r| r.file.is_some() || r.arrived)
                {
                    files += 1;
                }
            }
        }
        // Last: while a file is left, its key is what reads it. A key that fails to go fails
        // the erase, which the caller repeats.
        let key_destroyed = match &self.keys {
            None => None,
            Some(keys) => Some(keys.destroy(owner).await.map_err(|e| {
                FilesError::Store(StoreError::Backend {
                    backend: "key store",
                    message: "destroying the participant's key failed".to_owned(),
                    source: Box::new(e),
                })
            })?),
        };
        Ok(Erased {
            files,
            key_destroyed,
        })
    }
}

/// What an erase did.
#[derive(Debug, Clone, Copy)]
pub struct Erased {
    pub files: u64,
    /// With encryption: whether the participant had a key, now destroyed. `None` without.
    pub key_destroyed: Option<bool>,
}
