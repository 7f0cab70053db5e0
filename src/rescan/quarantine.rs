//! What rescan does with an infected file's object, as `PF_QUARANTINE` says: delete it, or keep
//! it under `quarantine/` where no download reaches it.

use futures::StreamExt;

use super::file::update_current;
use crate::config::Quarantine;
use crate::index::{FileIndex, IndexError};
use crate::keys::ObjectKey;
use crate::model::{FileId, Owner, StoredFile};
use crate::store::{BlobStore, StoreError};

/// Deletes an infected file's object, or moves it under `quarantine/` (copy, point the row
/// at the copy, delete the original), as `PF_QUARANTINE` says. `file` is the row's file as the
/// run read it: another run may have moved it since, and this one then leaves its copy alone.
pub async fn quarantine(
    index: &dyn FileIndex,
    store: &dyn BlobStore,
    mode: Quarantine,
    owner: &Owner,
    file_id: &FileId,
    file: &StoredFile,
    signature: Option<&str>,
) -> anyhow::Result<()> {
    let q = file.key.quarantined();
    if mode == Quarantine::Keep {
        match copy(store, &file.key, &q).await {
            // Gone already (deleted by an earlier run with `delete`): nothing to keep.
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The row names the quarantined key from now on (with `delete`, a key that holds
    // nothing): a rerun sees the file handled, and deleting the file removes the copy.
    if !update_current(index, owner, file_id, &file.key, |f| f.key = q.clone()).await?
        && !names(index, owner, file_id, &q).await?
    {
        // Deleted or replaced meanwhile: the copy is nobody's. A row that names the copy was
        // moved by another run that read it when this one did; the copy is the file now. Once
        // the row names neither key it never comes back to them (keys are never reused), so
        // this read cannot be overtaken.
        store.delete(&q).await?;
    }
    store.delete(&file.key).await?;
    tracing::info!(
        signature = signature.unwrap_or("unknown"),
        kept = mode == Quarantine::Keep,
        "an infected file's object was quarantined"
    );
    Ok(())
}

/// Whether the row's current file is the object at `key`.
async fn names(
    index: &dyn FileIndex,
    owner: &Owner,
    file_id: &FileId,
    key: &ObjectKey,
) -> Result<bool, IndexError> {
    let row = index.get(owner, file_id).await?;
    Ok(row
        .and_then(|r| r.value.current)
        .is_some_and(|f| &f.key == key))
}

async fn copy(store: &dyn BlobStore, from: &ObjectKey, to: &ObjectKey) -> Result<(), StoreError> {
    let read = store.read(from, None).await?;
    let mut writer = store.create(to, Some(read.object_size)).await?;
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        writer.write(chunk?).await?;
    }
    writer.commit().await
}
