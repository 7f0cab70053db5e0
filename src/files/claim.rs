//! Claims: an upload through the service records the object it is writing in the file's row
//! before storing a byte, so that `reconcile` never deletes an object that is about to become a
//! file, and a revoked claim stops the upload from committing.

use std::time::Duration;

use chrono::Utc;

use super::{Backoff, FileService, FilesError};
use crate::index::IndexError;
use crate::keys::ObjectKey;
use crate::model::{Claim, FileId, Owner};

/// Deletes of a claimed object tried before the answer; after them it is retried in the
/// background, at these pauses, its claim kept until it is gone.
const DELETES_NOW: u32 = 3;
const LATER_PAUSES: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_mins(1),
];

/// Takes an upload's claim away again, in the background, unless the upload committed (the
/// switch takes it away in the same write that makes the object current).
pub(super) struct ClaimGuard {
    service: FileService,
    owner: Owner,
    file_id: FileId,
    key: ObjectKey,
    armed: bool,
}

impl ClaimGuard {
    /// The claim was taken away by the write that committed the upload.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// The claimed object is not to become the file: it is deleted now, and its claim taken
    /// away after. When the store refuses, the claim stays as its record and the delete is
    /// retried in the background; a claim still left after that is `reconcile`'s.
    pub(super) async fn discard_object(mut self) {
        let mut tries = Backoff::at_most(DELETES_NOW);
        while tries.next().await {
            if self.service.store.delete(&self.key).await.is_ok() {
                // Dropped armed: the claim goes in the background.
                return;
            }
        }
        self.armed = false;
        let (service, owner, file_id, key) = (
            self.service.clone(),
            self.owner.clone(),
            self.file_id.clone(),
            self.key.clone(),
        );
        self.service.tasks.spawn(async move {
            for pause in LATER_PAUSES {
                tokio::time::sleep(pause).await;
                if service.store.delete(&key).await.is_ok() {
                    if let Err(e) = service.unclaim(&owner, &file_id, &key).await {
                        tracing::warn!(error = %e, "could not take back the claim of a deleted object");
                    }
                    return;
                }
            }
            tracing::warn!("could not delete an object that lost its switch; its claim stays for reconcile");
        });
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (service, owner, file_id, key) = (
            self.service.clone(),
            self.owner.clone(),
            self.file_id.clone(),
            self.key.clone(),
        );
        self.service.tasks.spawn(async move {
            if let Err(e) = service.unclaim(&owner, &file_id, &key).await {
                // A claim left behind is revoked by `reconcile` once it is older than its
                // --min-age.
                tracing::warn!(error = %e, "could not take back the claim of an upload that did not commit");
            }
        });
    }
}

impl FileService {
    /// Records that an upload is about to write `key` as a new version of `file_id`.
    pub(super) async fn claim(
        &self,
        owner: &Owner,
        file_id: &FileId,
        key: &ObjectKey,
    ) -> Result<ClaimGuard, FilesError> {
        let guard = || ClaimGuard {
            service: self.clone(),
            owner: owner.clone(),
            file_id: file_id.clone(),
            key: key.clone(),
            armed: true,
        };
        let mut tries = Backoff::new();
        while tries.next().await {
            let (mut row, version) = self.read_row(owner, file_id).await?;
            if row.claimed(key) {
                // An earlier try landed although its answer said otherwise.
                return Ok(guard());
            }
            row.claims.push(Claim {
                key: key.clone(),
                since: Utc::now(),
            });
            match self.index.put(&row, version).await {
                Ok(_) => return Ok(guard()),
                Err(IndexError::Conflict) => tries.lost_race(),
                Err(e) if !e.is_retryable() => return Err(e.into()),
                // The next try reads the row and sees whether this write landed.
                Err(_) => {}
            }
        }
        Err(FilesError::Contended)
    }

    /// Takes the claim on `key` away; a row that then holds nothing is deleted.
    pub(super) async fn unclaim(
        &self,
        owner: &Owner,
        file_id: &FileId,
        key: &ObjectKey,
    ) -> Result<(), FilesError> {
        let mut tries = Backoff::new();
        while tries.next().await {
            let Some(mut row) = self.index.get(owner, file_id).await? else {
                return Ok(());
            };
            if !row.value.claimed(key) {
                return Ok(());
            }
            row.value.claims.retain(|c| &c.key != key);
            match self.index.rewrite(&row.value, row.version).await {
                Ok(()) => return Ok(()),
                Err(IndexError::Conflict) => tries.lost_race(),
                Err(e) if !e.is_retryable() => return Err(e.into()),
                // A conflict, or an answer that got lost: read the row again.
                Err(_) => {}
            }
        }
        Err(FilesError::Contended)
    }
}
