//! Blob stores: where a file's bytes live. One trait, one implementation per technology.

mod local;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::keys::ObjectKey;

pub use local::LocalBlobStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("the range starts past the end of the object")]
    RangeNotSatisfiable,
    #[error("{backend} store I/O failed")]
    Io {
        backend: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes read from a store: the whole object's size and the requested part of it.
pub struct BlobRead {
    pub object_size: u64,
    pub body: BoxStream<'static, Result<Bytes, StoreError>>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A short name for logs and error messages (`local`, `s3`).
    fn name(&self) -> &'static str;

    /// Starts writing an object. Nothing is visible under `key` until [`BlobWriter::commit`];
    /// a writer dropped without commit leaves nothing behind.
    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Reads an object, or the byte range of it.
    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError>;

    /// The object's size, or `None` when there is no such object.
    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError>;

    /// Removes an object; removing one that is not there is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;

    /// Answers when the store can be reached and written to.
    async fn check(&self) -> Result<(), StoreError>;
}

#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError>;

    /// Makes the object visible under its key, whole, or not at all.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
