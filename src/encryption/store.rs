//! `EncryptedBlobStore`: a [`BlobStore`] that keeps every object it writes as an age file
//! under its participant's key, and decrypts what it reads, ranges included. Everything above
//! it (pipeline, scan, sniff, hashes, sizes in rows, downloads, rescan) sees plaintext.
//!
//! The participant is the object key's owner: their key is made on the first write and only
//! read afterwards. A stored object's plaintext size follows from its stored size and its
//! header's, which a read parses first (each 64 KiB chunk adds a 16-byte tag:
//! `age_file::plain_len`), so no metadata is kept beside the object.
//!
//! A resumable upload's pieces would put plaintext in the store: refused here, and before that at the
//! route. Upload URLs are presigned as without encryption: what arrives is plaintext, read raw
//! (`read_whole`) by the settle pass, which writes it encrypted through the pipeline and then
//! deletes the arrival (every version of it).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prometheus::IntCounter;

use super::age_file::{self, Sealer};
use super::decrypt::{self, Failure};
use super::{KeyStore, KeyStoreError};
use crate::keys::ObjectKey;
use crate::model::Staged;
use crate::store::{
    BlobRead, BlobStore, BlobWriter, ListedObject, Presigner, StageWriter, StoreError,
};

const NAME: &str = "encrypted";

pub struct EncryptedBlobStore {
    inner: Arc<dyn BlobStore>,
    keys: KeyStore,
    failures: IntCounter,
}

impl EncryptedBlobStore {
    /// # Panics
    /// Never: the metric's name and help are constants.
    pub fn new(inner: Arc<dyn BlobStore>, keys: KeyStore) -> Self {
        Self {
            inner,
            keys,
            failures: IntCounter::new(
                "pf_decrypt_failures_total",
                "Reads of a stored file stopped because its ciphertext failed authentication \
                 (tampered, truncated) or had no key (erased)",
            )
            .expect("valid metric"),
        }
    }

    /// The count of reads stopped by a ciphertext that failed authentication, for `/metrics`.
    pub fn failures(&self) -> IntCounter {
        self.failures.clone()
    }

    /// The key's owner's data key: made on a write, never by a read.
    async fn key(&self, key: &ObjectKey, make: bool) -> Result<Option<super::DataKey>, StoreError> {
        let owner = key.owner();
        let found = if make {
            self.keys.key_for(&owner).await.map(Some)
        } else {
            self.keys.existing(&owner).await
        };
        found.map_err(|e| match e {
            KeyStoreError::Backend { .. } => StoreError::Backend {
                backend: "key store",
                message: "the key store failed".to_owned(),
                source: Box::new(e),
            },
            KeyStoreError::Unwrap { .. } => self.unreadable(key, &e),
        })
    }

    /// Logs and counts a stored object that cannot be read back (never its content).
    fn unreadable(&self, key: &ObjectKey, why: &dyn std::fmt::Display) -> StoreError {
        self.failures.inc();
        tracing::error!(object = %key, reason = %why, "a stored file failed decryption: read stopped");
        StoreError::Unreadable
    }

    fn failed(&self, key: &ObjectKey, f: Failure) -> StoreError {
        match f {
            Failure::Store(e) => e,
            Failure::Unreadable(why) => self.unreadable(key, &why),
        }
    }

    fn refused(what: &str) -> StoreError {
        StoreError::Backend {
            backend: NAME,
            message: format!("{what} would store plaintext: refused with encryption on"),
            source: "not supported with PF_ENCRYPTION yet".into(),
        }
    }
}

#[async_trait]
impl BlobStore for EncryptedBlobStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn create(
        &self,
        key: &ObjectKey,
        length: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>, StoreError> {
        let data_key = self.key(key, true).await?.expect("made on write");
        let sealer = Sealer::new(&data_key).map_err(|e| StoreError::Io {
            backend: NAME,
            source: e,
        })?;
        let stored_len = length.map(|l| age_file::sealed_len(sealer.header_len(), l));
        let inner = self.inner.create(key, stored_len).await?;
        Ok(Box::new(SealingWriter {
            sealer: Some(sealer),
            inner,
        }))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError> {
        let Some(data_key) = self.key(key, false).await? else {
            if self.inner.size(key).await?.is_none() {
                return Err(StoreError::NotFound);
            }
            return Err(self.unreadable(key, &"its participant has no key (erased)"));
        };
        let identity = age_file::identity(&data_key);
        let found = decrypt::open(Arc::clone(&self.inner), key, &identity, range)
            .await
            .map_err(|f| self.failed(key, f))?;
        let failures = self.failures.clone();
        let key = key.clone();
        let body = futures::stream::unfold(Some(found.opened), move |opened| {
            let (failures, key) = (failures.clone(), key.clone());
            async move {
                let mut opened = opened?;
                match opened.next_piece().await {
                    Ok(Some(piece)) => Some((Ok(piece), Some(opened))),
                    Ok(None) => None,
                    Err(Failure::Store(e)) => Some((Err(e), None)),
                    Err(Failure::Unreadable(why)) => {
                        failures.inc();
                        tracing::error!(object = %key, reason = %why,
                            "a stored file failed decryption: download stopped");
                        Some((Err(StoreError::Unreadable), None))
                    }
                }
            }
        })
        .boxed();
        Ok(BlobRead {
            object_size: found.plain_size,
            etag: found.etag,
            body,
        })
    }

    /// What a client stored directly through an upload URL: plaintext, read as it is, for the
    /// settle pass to check, scan and write encrypted (then the arrival is deleted).
    async fn read_whole(&self, key: &ObjectKey) -> Result<BlobRead, StoreError> {
        self.inner.read_whole(key).await
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        // Whether there is an object: callers ask nothing more of it.
        self.inner.size(key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn copy_checked(
        &self,
        _from: &ObjectKey,
        _to: &ObjectKey,
        _etag: &str,
        _sha256: &str,
    ) -> Result<(), StoreError> {
        Err(Self::refused(
            "a server-side copy of an upload URL's arrival",
        ))
    }

    async fn begin_resumable(&self, _key: &ObjectKey, _max: u64) -> Result<Staged, StoreError> {
        Err(Self::refused("a resumable upload"))
    }

    async fn stage(
        &self,
        _staged: &Staged,
        _fence: u64,
    ) -> Result<Box<dyn StageWriter>, StoreError> {
        Err(Self::refused("a resumable upload"))
    }

    async fn finish_staged(&self, _staged: &Staged) -> Result<(), StoreError> {
        Err(Self::refused("a resumable upload"))
    }

    async fn drop_staged(&self, staged: &Staged) -> Result<(), StoreError> {
        self.inner.drop_staged(staged).await
    }

    async fn list(&self) -> Result<Vec<ListedObject>, StoreError> {
        self.inner.list().await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }

    fn presigner(&self) -> Option<&dyn Presigner> {
        self.inner.presigner().map(|_| self as &dyn Presigner)
    }

    fn write_buffer(&self) -> usize {
        // age holds one chunk back, and hands out up to one sealed chunk at a time.
        self.inner.write_buffer() + 2 * usize::try_from(age_file::SEALED_CHUNK).expect("64 KiB")
    }
}

/// Upload URLs only: the settle pass encrypts what arrives. A download URL would hand out the
/// ciphertext (configuration refuses `PF_DOWNLOAD_MODE=presigned` with encryption).
#[async_trait]
impl Presigner for EncryptedBlobStore {
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: Option<u64>,
        sha256: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<String, StoreError> {
        let inner = self
            .inner
            .presigner()
            .ok_or_else(|| Self::refused("an upload URL"))?;
        inner
            .presign_put(key, content_type, size, sha256, ttl)
            .await
    }

    async fn presign_get(
        &self,
        _key: &ObjectKey,
        _content_type: &str,
        _filename: &str,
        _ttl: std::time::Duration,
    ) -> Result<String, StoreError> {
        Err(Self::refused("a download URL"))
    }
}

/// Seals what is written and passes the ciphertext on to the store's writer.
struct SealingWriter {
    sealer: Option<Sealer>,
    inner: Box<dyn BlobWriter>,
}

#[async_trait]
impl BlobWriter for SealingWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let ready = self
            .sealer
            .as_mut()
            .expect("present until commit")
            .push(&chunk)
            .map_err(|e| StoreError::Io {
                backend: NAME,
                source: e,
            })?;
        if ready.is_empty() {
            return Ok(());
        }
        self.inner.write(ready).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let sealer = self.sealer.take().expect("present until commit");
        let last = sealer.finish().map_err(|e| StoreError::Io {
            backend: NAME,
            source: e,
        })?;
        self.inner.write(last).await?;
        self.inner.commit().await
    }
}
