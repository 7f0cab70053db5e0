//! `S3BlobStore`: objects in an S3 bucket (or an S3-compatible server), written with one
//! `PutObject` or a multipart upload, read with ranged `GetObject` (`reads`), and presigned
//! URLs (`presign`).
//!
//! IAM actions it needs on `arn:aws:s3:::BUCKET` and `arn:aws:s3:::BUCKET/PREFIX*`:
//! `s3:PutObject`, `s3:GetObject`, `s3:DeleteObject`, `s3:AbortMultipartUpload`,
//! `s3:ListBucket` (ready check and `reconcile`), `s3:ListBucketVersions` and
//! `s3:DeleteObjectVersion` (deletes on a versioned bucket, `reconcile`), and for `setup` also
//! `s3:CreateBucket`, `s3:PutEncryptionConfiguration`, `s3:PutBucketPublicAccessBlock`,
//! `s3:PutLifecycleConfiguration`, `s3:GetBucketVersioning`. With SSE-KMS, `kms:GenerateDataKey` and `kms:Decrypt` on the key.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::ServerSideEncryption;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_util::task::TaskTracker;

use super::{BlobRead, BlobStore, BlobWriter, ListedObject, Presigner, StageWriter, StoreError};
use crate::budget::{BufferPool, MemoryBudget};
use crate::keys::ObjectKey;
use crate::model::Staged;

mod part_stream;
mod parts;
mod presign;
mod reads;
mod resumable;
mod stage;
mod streaming;
mod versions;

/// Ranged GETs in flight at once when a whole object is read to be checked.
const READS_IN_FLIGHT: usize = 2;

/// What `x-amz-copy-source` must have encoded: everything but the unreserved characters and
/// the `/` between bucket and key segments.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

use parts::PartsWriter;
use streaming::StreamingPut;
use versions::VersionedKey;

const NAME: &str = "s3";

/// The smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The largest object one `PutObject` may write.
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend {
        backend: NAME,
        message: what.to_owned(),
        source: Box::new(e),
    }
}

/// How objects are encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS, with this key (ID or ARN), or the account's default KMS key when `None`.
    Kms(Option<String>),
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every object key; empty, or ending without `/` (one is added).
    pub prefix: String,
    pub part_size: usize,
    pub parts_in_flight: usize,
    /// Bodies of known length from one part up to this size are one streaming `PutObject`.
    pub single_put_max: u64,
    pub encryption: Encryption,
}

#[derive(Clone)]
pub struct S3BlobStore {
    client: Client,
    settings: Arc<S3Settings>,
    budget: MemoryBudget,
    pool: BufferPool,
    cleanup: TaskTracker,
    versioning: Arc<versions::Versioning>,
}

impl S3BlobStore {
    /// Part buffers of every upload are reserved from `budget`.
    #[must_use]
    /// Aborts of dropped multipart uploads run on `cleanup`, so a shutdown can wait for them.
    pub fn new(
        client: Client,
        settings: S3Settings,
        budget: MemoryBudget,
        cleanup: TaskTracker,
    ) -> Self {
        let pool = BufferPool::new(budget.clone(), settings.part_size);
        Self {
            client,
            settings: Arc::new(settings),
            budget,
            pool,
            cleanup,
            versioning: Arc::default(),
        }
    }

    fn key(&self, key: &ObjectKey) -> String {
        s3_key(&self.settings.prefix, key)
    }

    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    #[must_use]
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }
}

fn s3_key(prefix: &str, key: &ObjectKey) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

/// The object `name` of a listing under `prefix`, when it is one this service wrote.
fn listed(
    prefix: &str,
    name: &str,
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> Option<ListedObject> {
    let name = name.strip_prefix(prefix)?;
    // A resumable upload's tail is named after the upload's key.
    let (name, tail) = match name.split_once(".tail-") {
        Some((key, _)) => (key, true),
        None => (name, false),
    };
    // Objects this service did not write are not its to remove.
    let key = ObjectKey::parse(name)?;
    let modified = modified
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now);
    Some(ListedObject {
        key,
        modified,
        tail,
    })
}

fn sse(encryption: &Encryption) -> (ServerSideEncryption, Option<String>) {
    match encryption {
        Encryption::S3Managed => (ServerSideEncryption::Aes256, None),
        Encryption::Kms(key) => (ServerSideEncryption::AwsKms, key.clone()),
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create(
        &self,
        key: &ObjectKey,
        length: Option<u64>,
    ) -> Result<Box<dyn BlobWriter>, StoreError> {
        // A body of known length larger than one part may stream through one request: S3
        // writes it once, where a multipart upload is written as parts and then joined.
        let single = self.settings.part_size as u64..=self.settings.single_put_max;
        if let Some(length) = length.filter(|n| single.contains(n)) {
            return Ok(Box::new(StreamingPut::start(
                &self.client,
                &self.settings,
                self.key(key),
                length,
                self.budget.clone(),
            )));
        }
        Ok(Box::new(PartsWriter::new(
            self.client.clone(),
            Arc::clone(&self.settings),
            self.key(key),
            self.pool.clone(),
            self.cleanup.clone(),
        )))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError> {
        self.get_object(key, range).await
    }

    async fn read_whole(&self, key: &ObjectKey) -> Result<BlobRead, StoreError> {
        self.get_object_in_parts(key).await
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or_default(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(failed("HeadObject failed", e)),
        }
    }

    async fn copy_checked(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
        etag: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        let source = format!("{}/{}", self.settings.bucket, self.key(from));
        let (sse, kms_key) = sse(&self.settings.encryption);
        let out = self
            .client
            .copy_object()
            .bucket(&self.settings.bucket)
            .key(self.key(to))
            .copy_source(utf8_percent_encode(&source, COPY_SOURCE).to_string())
            .copy_source_if_match(etag)
            // S3 computes the copy's SHA-256 and answers it, so that the copy is known to hold
            // exactly the bytes that were checked, not merely bytes with the same ETag (an MD5).
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Err(StoreError::Changed);
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Err(StoreError::NotFound);
            }
            Err(e) => return Err(failed("CopyObject failed", e)),
        };
        let copied = out
            .copy_object_result()
            .and_then(|r| r.checksum_sha256())
            // A composite checksum (`...-N`) is not of the whole object: it proves nothing here.
            .filter(|c| !c.contains('-'));
        if copied.is_some_and(|c| c != sha256) {
            self.delete(to).await?;
            return Err(StoreError::Changed);
        }
        Ok(())
    }

    async fn begin_resumable(
        &self,
        key: &ObjectKey,
        max_length: u64,
    ) -> Result<Staged, StoreError> {
        self.begin_staged(key, max_length).await
    }

    async fn stage(&self, staged: &Staged, fence: u64) -> Result<Box<dyn StageWriter>, StoreError> {
        self.open_staged(staged, fence).await
    }

    async fn finish_staged(&self, staged: &Staged) -> Result<(), StoreError> {
        self.finish_staged_object(staged).await
    }

    async fn drop_staged(&self, staged: &Staged) -> Result<(), StoreError> {
        self.drop_staged_objects(staged).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.remove(&self.key(key)).await
    }

    async fn list(&self) -> Result<Vec<ListedObject>, StoreError> {
        let prefix = if self.settings.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.settings.prefix)
        };
        let mut out = Vec::new();
        if let Some(keys) = self.list_versioned(&prefix).await? {
            for VersionedKey { key, modified } in keys {
                if let Some(object) = listed(&prefix, &key, modified.as_ref()) {
                    out.push(object);
                }
            }
            return Ok(out);
        }
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("ListObjectsV2 failed", e))?;
            for object in page.contents() {
                let key = object.key().unwrap_or_default();
                if let Some(object) = listed(&prefix, key, object.last_modified()) {
                    out.push(object);
                }
            }
        }
        Ok(out)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("HeadBucket failed", e))
    }

    fn presigner(&self) -> Option<&dyn Presigner> {
        Some(self)
    }
}
