//! Blob stores: where a file's bytes live. One trait, one implementation per technology.

mod local;
mod s3;

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::keys::ObjectKey;
use crate::model::Staged;

pub use local::LocalBlobStore;
pub use s3::{Encryption, MAX_PUT_SIZE, MIN_PART_SIZE, S3BlobStore, S3Settings};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("the range starts past the end of the object")]
    RangeNotSatisfiable,
    /// A copy found its source changed since it was read.
    #[error("the object changed since it was read")]
    Changed,
    #[error("{backend} store I/O failed")]
    Io {
        backend: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Busy(#[from] crate::budget::BudgetExhausted),
    /// An encrypted object that cannot be read back: its ciphertext failed authentication, or
    /// its participant's key is gone.
    #[error("the stored object cannot be decrypted")]
    Unreadable,
    #[error("{backend} store: {message}")]
    Backend {
        backend: &'static str,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// The store that failed, for a 503 that names it.
    pub fn backend(&self) -> Option<&'static str> {
        match self {
            Self::Io { backend, .. } | Self::Backend { backend, .. } => Some(backend),
            Self::NotFound
            | Self::RangeNotSatisfiable
            | Self::Changed
            | Self::Busy(_)
            | Self::Unreadable => None,
        }
    }
}

/// An object found by [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: ObjectKey,
    pub modified: DateTime<Utc>,
    /// Not the object under `key` but a tail of the resumable upload staged under it: it goes
    /// with the upload ([`BlobStore::drop_staged`]), never as an object of its own.
    pub tail: bool,
}

/// Bytes read from a store: the whole object's size and the requested part of it.
pub struct BlobRead {
    pub object_size: u64,
    /// The version read, when the store names versions (S3's ETag): a copy made later can
    /// insist on the same one.
    pub etag: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A short name for logs and error messages (`local`, `s3`).
    fn name(&self) -> &'static str;

    /// Starts writing an object of `length` bytes, when that is known ahead (a Content-Length),
    /// else of any length. Nothing is visible under `key` until [`BlobWriter::commit`]; a writer
    /// dropped without commit leaves nothing behind.
    async fn create(
        &self,
        key: &ObjectKey,
        length: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Reads an object, or the byte range of it.
    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError>;

    /// Reads a whole object as fast as the store can serve it, for checking what a client
    /// stored directly (see [`BlobStore::copy_checked`]). The default is one [`BlobStore::read`].
    async fn read_whole(&self, key: &ObjectKey) -> Result<BlobRead, StoreError> {
        self.read(key, None).await
    }

    /// The object's size, or `None` when there is no such object.
    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError>;

    /// Removes an object; removing one that is not there is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// Copies the object under `from` to `to`, provided it is still the version `etag` (see
    /// [`BlobRead::etag`]) and its SHA-256 is `sha256` (standard base64) where the store can
    /// tell; else [`StoreError::Changed`] and nothing under `to`. For stores that presign: the
    /// object of an upload URL becomes a file as a copy of the bytes that were checked.
    async fn copy_checked(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        etag: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let _ = (from, to, etag, sha256);
        Err(StoreError::Backend {
            backend: self.name(),
            message: "this store has no upload URLs, so nothing to copy".to_owned(),
            source: "copy_checked is for stores that presign".into(),
        })
    }

    /// Starts the staged bytes of a resumable upload under `key`, of at most `max_length`
    /// bytes (S3 sizes its parts so that 10,000 of them hold that).
    async fn begin_resumable(&self, key: &ObjectKey, max_length: u64)
    -> Result<Staged, StoreError>;

    /// Opens `staged` for appending after the bytes it names (the durable ones, as the index
    /// recorded them); whatever an interrupted request wrote past them is overwritten. `fence`
    /// is the writer's lease fence: what a writer with an older fence writes afterwards never
    /// replaces what this one made durable (stores shared by instances name what they write
    /// by it; the local store has one process, whose requests take turns).
    async fn stage(&self, staged: &Staged, fence: u64) -> Result<Box<dyn StageWriter>, StoreError>;

    /// Makes the staged bytes, whole, the object under `staged.key`, in place: nothing is
    /// copied (S3 completes the multipart upload, the local store renames the file). A finish
    /// whose answer was lost is recognised by the object's size. The caller claims the key
    /// first: from here on the object is an upload's like any other.
    async fn finish_staged(&self, staged: &Staged) -> Result<(), StoreError>;

    /// Removes the staged bytes that were not finished into an object (an object that
    /// [`BlobStore::finish_staged`] made belongs to its claim and stays). Once it succeeded,
    /// the caller keeps [`Staged::dropped`] in its place: a multipart upload cannot be aborted
    /// twice everywhere.
    async fn drop_staged(&self, staged: &Staged) -> Result<(), StoreError>;

    /// Every object this service wrote (keys it can parse), for `reconcile`.
    async fn list(&self) -> Result<Vec<ListedObject>, StoreError>;

    /// Answers when the store can be reached.
    async fn check(&self) -> Result<(), StoreError>;

    /// Memory one writer holds in buffers of its own, outside what it reserves from the
    /// buffer budget; the pipeline reserves it for the writer.
    fn write_buffer(&self) -> usize {
        0
    }

    /// Presigned URLs, when the store can make them (S3).
    fn presigner(&self) -> Option<&dyn Presigner> {
        None
    }
}

/// URLs that let a client upload or download an object directly, without the service.
#[async_trait]
pub trait Presigner: Send + Sync {
    /// A PUT URL whose signature covers the Content-Type and, when given, the Content-Length
    /// and the `x-amz-checksum-sha256` (base64), so that the store refuses any other body.
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: Option<u64>,
        sha256: Option<&str>,
        ttl: Duration,
    ) -> Result<String, StoreError>;

    /// A GET URL that serves the object as an attachment named `filename`.
    async fn presign_get(
        &self,
        key: &ObjectKey,
        content_type: &str,
        filename: &str,
        ttl: Duration,
    ) -> Result<String, StoreError>;
}

/// Appends to a resumable upload's staged bytes. Nothing written counts until
/// [`StageWriter::sync`] has made it durable and the index has recorded what it returned.
#[async_trait]
pub trait StageWriter: Send {
    /// How many bytes the request has still to send, when it said so ahead: a store may then
    /// send what it knows will be whole while the bytes arrive.
    fn expect(&mut self, _bytes: u64) {}

    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Makes every byte written so far durable and returns the staged state that names them.
    async fn sync(&mut self) -> Result<Staged, StoreError>;
}

#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Makes the object visible under its key, whole, or not at all.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
