//! `LocalBlobStore`: objects as files under a folder, written to a temp file and renamed.

mod resumable;

use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::{BlobRead, BlobStore, BlobWriter, ListedObject, StageWriter, StoreError};
use crate::keys::ObjectKey;
use crate::model::Staged;

const NAME: &str = "local";

fn io(source: std::io::Error) -> StoreError {
    StoreError::Io {
        backend: NAME,
        source,
    }
}

pub struct LocalBlobStore {
    objects: PathBuf,
    /// Single-request uploads being written, renamed into `objects` at their commit.
    temp: PathBuf,
    /// Resumable uploads: kept across restarts, unlike `temp`.
    resumable: PathBuf,
}

impl LocalBlobStore {
    /// Opens the store under `root`, creating it. The service (`clear_temp`) also removes
    /// uploads a crash left half-written; a maintenance command running beside the service
    /// must not, as they may be uploads in progress.
    pub async fn open(root: &Path, clear_temp: bool) -> Result<Self, StoreError> {
        let objects = root.join("objects");
        let temp = root.join("temp");
        fs::create_dir_all(&objects).await.map_err(io)?;
        if clear_temp {
            // `staging` is where versions before #22's renames wrote the same files.
            for dir in [&temp, &root.join("staging")] {
                match fs::remove_dir_all(dir).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        fs::create_dir_all(&temp).await.map_err(io)?;
        let resumable = root.join("resumable");
        fs::create_dir_all(&resumable).await.map_err(io)?;
        Ok(Self {
            objects,
            temp,
            resumable,
        })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.objects.clone();
        path.extend(key.segments());
        path
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create(
        &self,
        key: &ObjectKey,
        _length: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>, StoreError> {
        let temp = self
            .temp
            .join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = File::create_new(&temp).await.map_err(io)?;
        Ok(Box::new(LocalWriter {
            // Request bodies arrive in small chunks; each write to a tokio File is a trip to the
            // blocking pool, so they are gathered first.
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            guard: TempGuard(Some(temp)),
            target: self.path(key),
        }))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError> {
        let mut file = match File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(io(e)),
        };
        let object_size = file.metadata().await.map_err(io)?.len();
        let range = range.unwrap_or(0..object_size);
        if range.start > object_size || (range.start == object_size && object_size > 0) {
            return Err(StoreError::RangeNotSatisfiable);
        }
        let end = range.end.min(object_size);
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(io)?;
        let body = ReaderStream::with_capacity(file.take(end - range.start), 64 * 1024)
            .map_err(io)
            .boxed();
        Ok(BlobRead {
            object_size,
            etag: None,
            body,
        })
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        match fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path(key);
        match fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        // Empty per-file and per-participant folders go too, so an erased participant leaves no
        // trace of its IDs on disk. A folder that is not empty is simply kept.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.objects || fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ListedObject>, StoreError> {
        let root = self.objects.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    let path = entry.path();
                    let meta = entry.metadata().map_err(io)?;
                    if meta.is_dir() {
                        dirs.push(path);
                        continue;
                    }
                    let Some(rel) = path.strip_prefix(&root).ok().and_then(|p| p.to_str()) else {
                        continue;
                    };
                    if let Some(key) = ObjectKey::parse(rel) {
                        let modified = meta.modified().map_or_else(
                            |_| chrono::Utc::now(),
                            chrono::DateTime::<chrono::Utc>::from,
                        );
                        out.push(ListedObject {
                            key,
                            modified,
                            tail: false,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
        .expect("listing task panicked")
    }

    fn write_buffer(&self) -> usize {
        WRITE_BUFFER
    }

    async fn begin_resumable(&self, key: &ObjectKey, _: u64) -> Result<Staged, StoreError> {
        Ok(resumable::begin(key))
    }

    async fn stage(
        &self,
        staged: &Staged,
        _fence: u64,
    ) -> Result<Box<dyn StageWriter>, StoreError> {
        resumable::open(&self.resumable, staged).await
    }

    async fn finish_staged(&self, staged: &Staged) -> Result<(), StoreError> {
        resumable::finish(&self.resumable, staged, &self.path(&staged.key)).await
    }

    async fn drop_staged(&self, staged: &Staged) -> Result<(), StoreError> {
        resumable::remove(&self.resumable, staged).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        let probe = self
            .temp
            .join(format!("ready-{}.probe", uuid::Uuid::new_v4().simple()));
        fs::write(&probe, b"").await.map_err(io)?;
        fs::remove_file(&probe).await.map_err(io)
    }
}

/// Removes the temp file unless the upload was committed, also when the writer is dropped
/// mid-upload because the client went away.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

const WRITE_BUFFER: usize = 256 * 1024;

struct LocalWriter {
    file: Option<BufWriter<File>>,
    guard: TempGuard,
    target: PathBuf,
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let file = self.file.as_mut().expect("writer used after commit");
        file.write_all(&chunk).await.map_err(io)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let mut file = self.file.take().expect("writer committed twice");
        file.flush().await.map_err(io)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(io)?;
        drop(file);
        let temp = self.guard.0.take().expect("temp file present until commit");
        if let Err(e) = place(&temp, &self.target).await {
            self.guard.0 = Some(temp);
            return Err(e);
        }
        Ok(())
    }
}

/// Renames a synced file to an object's path, durably.
async fn place(from: &Path, target: &Path) -> Result<(), StoreError> {
    let parent = target.parent().expect("object paths have a parent");
    // A delete of the file's last other object may remove the folder between the two calls;
    // making it again is enough.
    let mut attempts = 0;
    loop {
        fs::create_dir_all(parent).await.map_err(io)?;
        match fs::rename(from, target).await {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => attempts += 1,
            Err(e) => return Err(io(e)),
        }
    }
    // The rename is durable only once the folder that holds the new name is synced.
    File::open(parent)
        .await
        .map_err(io)?
        .sync_all()
        .await
        .map_err(io)
}
