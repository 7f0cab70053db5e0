//! Resumable uploads on the local store: one file per upload under `resumable/`, appended to
//! and fsynced before an offset may move, then renamed to its object's path.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::task::JoinHandle;

use super::{WRITE_BUFFER, io};
use crate::keys::ObjectKey;
use crate::model::Staged;
use crate::store::{StageWriter, StoreError};

/// The file of an upload: named by its upload ID alone, which says nothing about whose it is.
pub(super) fn path(dir: &Path, key: &ObjectKey) -> PathBuf {
    dir.join(key.upload_id().as_str())
}

/// Bytes written between two syncs started while a request's bytes still arrive, so that the
/// sync its durable point waits for finds little left to write.
const EARLY_SYNC: u64 = 2 * 1024 * 1024;

pub(super) fn begin(key: &ObjectKey) -> Staged {
    Staged::bare(key)
}

pub(super) async fn open(dir: &Path, staged: &Staged) -> Result<Box<dyn StageWriter>, StoreError> {
    let path = path(dir, &staged.key);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .await
        .map_err(io)?;
    // Bytes past the durable ones are from a request that was cut off before its offset moved.
    file.set_len(staged.tail).await.map_err(io)?;
    let early = file.try_clone().await.map_err(io)?.into_std().await;
    let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
    file.seek(std::io::SeekFrom::End(0)).await.map_err(io)?;
    // The file's name must outlive a crash as much as its bytes. Once a durable point recorded
    // bytes of it, the request that made that point synced its folder already.
    if staged.tail == 0 {
        File::open(dir)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
    }
    Ok(Box::new(LocalStage {
        file,
        early: std::sync::Arc::new(early),
        syncing: None,
        since_sync: 0,
        staged: staged.clone(),
        written: 0,
    }))
}

/// Renames the upload's file to the object's path; the bytes were synced as they came.
pub(super) async fn finish(dir: &Path, staged: &Staged, target: &Path) -> Result<(), StoreError> {
    let from = path(dir, &staged.key);
    match fs::metadata(&from).await {
        Ok(m) if m.len() == staged.tail => super::place(&from, target).await,
        // Past the durable bytes: a request cut before its offset moved.
        Ok(m) if m.len() > staged.tail => {
            let file = OpenOptions::new()
                .write(true)
                .open(&from)
                .await
                .map_err(io)?;
            file.set_len(staged.tail).await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
            super::place(&from, target).await
        }
        Ok(_) => Err(io(std::io::Error::other(
            "a staged file is shorter than its recorded bytes",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match fs::metadata(target).await {
                // Finished before, and the answer lost.
                Ok(m) if m.len() == staged.tail => Ok(()),
                // Nothing was ever appended (a zero-length upload).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && staged.tail == 0 => {
                    let temp = dir.join(format!("{}.empty", staged.key.upload_id().as_str()));
                    File::create(&temp)
                        .await
                        .map_err(io)?
                        .sync_all()
                        .await
                        .map_err(io)?;
                    super::place(&temp, target).await
                }
                Ok(_) => Err(io(std::io::Error::other(
                    "a finished upload's object has another size than recorded",
                ))),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

pub(super) async fn remove(dir: &Path, staged: &Staged) -> Result<(), StoreError> {
    match fs::remove_file(path(dir, &staged.key)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

struct LocalStage {
    file: BufWriter<File>,
    /// The same file, for the syncs started while bytes arrive.
    early: std::sync::Arc<std::fs::File>,
    /// The sync started last, while it runs or until it is looked at.
    syncing: Option<JoinHandle<std::io::Result<()>>>,
    since_sync: u64,
    staged: Staged,
    written: u64,
}

impl LocalStage {
    /// The result of the sync started last, waiting for it when `wait`; a failed sync fails
    /// the request, as at its durable point.
    async fn reap(&mut self, wait: bool) -> Result<(), StoreError> {
        match self.syncing.take() {
            Some(task) if wait || task.is_finished() => task
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
                .map_err(io),
            running => {
                self.syncing = running;
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl StageWriter for LocalStage {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.file.write_all(&chunk).await.map_err(io)?;
        self.written += chunk.len() as u64;
        self.since_sync += chunk.len() as u64;
        // One fsync at the durable point would write all the request's bytes while the client
        // waits for its answer: the kernel starts on them as they come instead.
        self.reap(false).await?;
        if self.syncing.is_none() && self.since_sync >= EARLY_SYNC {
            self.since_sync = 0;
            let file = self.early.clone();
            self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Staged, StoreError> {
        self.file.flush().await.map_err(io)?;
        self.reap(true).await?;
        self.file.get_ref().sync_data().await.map_err(io)?;
        self.since_sync = 0;
        self.staged.tail += std::mem::take(&mut self.written);
        Ok(self.staged.clone())
    }
}
