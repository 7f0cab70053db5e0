//! `S3BlobStore`: objects in an S3 bucket (or an S3-compatible server), written with one
//! `PutObject` or a multipart upload, read with ranged `GetObject`, and presigned URLs.
//!
//! IAM actions it needs on `arn:aws:s3:::BUCKET` and `arn:aws:s3:::BUCKET/PREFIX*`:
//! `s3:PutObject`, `s3:GetObject`, `s3:DeleteObject`, `s3:AbortMultipartUpload`,
//! `s3:ListBucket` (ready check and `reconcile`), and for `setup` also `s3:CreateBucket`,
//! `s3:PutEncryptionConfiguration`, `s3:PutBucketPublicAccessBlock`,
//! `s3:PutLifecycleConfiguration`. With SSE-KMS, `kms:GenerateDataKey` and `kms:Decrypt` on the key.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::{BlobRead, BlobStore, BlobWriter, ListedObject, Presigner, StoreError};
use crate::budget::{BufferPool, MemoryBudget, PooledBuffer};
use crate::keys::ObjectKey;

const NAME: &str = "s3";

/// The smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

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
    pub encryption: Encryption,
}

pub struct S3BlobStore {
    client: Client,
    settings: Arc<S3Settings>,
    pool: BufferPool,
    cleanup: TaskTracker,
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
        let pool = BufferPool::new(budget, settings.part_size);
        Self {
            client,
            settings: Arc::new(settings),
            pool,
            cleanup,
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

    async fn create(&self, key: &ObjectKey) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(S3Writer {
            client: self.client.clone(),
            settings: Arc::clone(&self.settings),
            key: self.key(key),
            buffer: None,
            pool: self.pool.clone(),
            cleanup: self.cleanup.clone(),
            multipart: None,
        }))
    }

    async fn read(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<BlobRead, StoreError> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key));
        if let Some(r) = &range {
            if r.is_empty() {
                return Err(StoreError::RangeNotSatisfiable);
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(o) => o,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Err(StoreError::NotFound);
                }
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) {
                    return Err(StoreError::RangeNotSatisfiable);
                }
                return Err(failed("GetObject failed", e));
            }
        };
        let object_size = match (out.content_range(), out.content_length()) {
            (Some(cr), _) => cr
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    failed(
                        "GetObject answered a bad Content-Range",
                        std::io::Error::other(cr.to_owned()),
                    )
                })?,
            (None, Some(n)) => u64::try_from(n).unwrap_or_default(),
            (None, None) => 0,
        };
        let body = futures::stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|chunk| {
                (
                    chunk.map_err(|e| failed("reading an object failed", e)),
                    body,
                )
            })
        })
        .boxed();
        Ok(BlobRead { object_size, body })
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

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("DeleteObject failed", e))
    }

    async fn list(&self) -> Result<Vec<ListedObject>, StoreError> {
        let prefix = if self.settings.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.settings.prefix)
        };
        let mut out = Vec::new();
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
                let Some(name) = object.key() else { continue };
                // Objects this service did not write are not its to remove.
                let Some(key) = name.strip_prefix(&prefix).and_then(ObjectKey::parse) else {
                    continue;
                };
                let modified = object
                    .last_modified()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_else(Utc::now);
                out.push(ListedObject { key, modified });
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

#[async_trait]
impl Presigner for S3BlobStore {
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: Option<u64>,
        sha256: Option<&str>,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| failed("bad URL lifetime", e))?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .content_type(content_type);
        if let Some(n) = size {
            req = req.content_length(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(sha) = sha256 {
            req = req.checksum_sha256(sha);
        }
        let presigned = req
            .presigned(config)
            .await
            .map_err(|e| failed("presigning PutObject failed", e))?;
        Ok(presigned.uri().to_owned())
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        content_type: &str,
        filename: &str,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let config =
            PresigningConfig::expires_in(ttl).map_err(|e| failed("bad URL lifetime", e))?;
        let presigned = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .response_content_type(content_type)
            .response_content_disposition(format!("attachment; filename=\"{filename}\""))
            .response_cache_control("no-store")
            .presigned(config)
            .await
            .map_err(|e| failed("presigning GetObject failed", e))?;
        Ok(presigned.uri().to_owned())
    }
}

struct Multipart {
    upload_id: String,
    next_part: i32,
    done: Vec<CompletedPart>,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    /// Set once `CompleteMultipartUpload` succeeded; until then dropping the writer aborts.
    completed: bool,
}

/// Buffers one part at a time; a body that fits in one part becomes a single `PutObject` at
/// commit, a longer one a multipart upload with at most `parts_in_flight` parts travelling.
struct S3Writer {
    client: Client,
    settings: Arc<S3Settings>,
    key: String,
    /// The part being filled, from the pool, with the budget it holds.
    buffer: Option<PooledBuffer>,
    pool: BufferPool,
    cleanup: TaskTracker,
    multipart: Option<Multipart>,
}

impl S3Writer {
    async fn start_multipart(&mut self) -> Result<(), StoreError> {
        let (sse, kms_key) = sse(&self.settings.encryption);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&self.key)
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| failed("CreateMultipartUpload failed", e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| {
                failed(
                    "CreateMultipartUpload gave no upload ID",
                    std::io::Error::other("missing"),
                )
            })?
            .to_owned();
        self.multipart = Some(Multipart {
            upload_id,
            next_part: 1,
            done: Vec::new(),
            in_flight: JoinSet::new(),
            completed: false,
        });
        Ok(())
    }

    /// Sends one part, first waiting for a slot when `parts_in_flight` are travelling: this
    /// wait is what slows the client down when S3 is slower than the client.
    async fn send_part(&mut self, part: PooledBuffer) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            self.start_multipart().await?;
        }
        let limit = self.settings.parts_in_flight.max(1);
        let mp = self.multipart.as_mut().expect("started above");
        while mp.in_flight.len() >= limit {
            let done = mp.in_flight.join_next().await.expect("non-empty");
            mp.done.push(joined(done)?);
        }
        let number = mp.next_part;
        mp.next_part += 1;
        let PooledBuffer { buf, reservation } = part;
        let bytes = buf.freeze();
        let req = self
            .client
            .upload_part()
            .bucket(&self.settings.bucket)
            .key(&self.key)
            .upload_id(&mp.upload_id)
            .part_number(number)
            .content_length(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(bytes.clone()));
        let pool = self.pool.clone();
        mp.in_flight.spawn(async move {
            let out = req.send().await;
            // Once S3 has the part, its buffer (and its share of the budget) serve the next one.
            pool.give(bytes);
            drop(reservation);
            let out = out.map_err(|e| failed("UploadPart failed", e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        });
        Ok(())
    }
}

fn joined(
    r: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
) -> Result<CompletedPart, StoreError> {
    r.map_err(|e| {
        failed(
            "a part upload task failed",
            std::io::Error::other(e.to_string()),
        )
    })?
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let part_size = self.settings.part_size;
        let mut data = &chunk[..];
        while !data.is_empty() {
            // Waiting for a buffer when the budget is spent is what slows the client down.
            if self.buffer.is_none() {
                self.buffer = Some(self.pool.take().await);
            }
            let part = self.buffer.as_mut().expect("taken above");
            let n = (part_size - part.buf.len()).min(data.len());
            part.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if part.buf.len() == part_size {
                let full = self.buffer.take().expect("present");
                self.send_part(full).await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let rest = self.buffer.take();
        if self.multipart.is_none() {
            let (sse, kms_key) = sse(&self.settings.encryption);
            let (body, reservation) = match rest {
                Some(PooledBuffer { buf, reservation }) => (buf.freeze(), Some(reservation)),
                None => (Bytes::new(), None),
            };
            let result = self
                .client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(&self.key)
                .server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            self.pool.give(body);
            drop(reservation);
            result.map_err(|e| failed("PutObject failed", e))?;
            return Ok(());
        }
        if let Some(rest) = rest.filter(|r| !r.buf.is_empty()) {
            self.send_part(rest).await?;
        }
        let mp = self.multipart.as_mut().expect("multipart");
        while let Some(done) = mp.in_flight.join_next().await {
            mp.done.push(joined(done)?);
        }
        mp.done.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&self.key)
            .upload_id(&mp.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut mp.done)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("CompleteMultipartUpload failed", e))?;
        mp.completed = true;
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        let Some(mp) = self.multipart.as_mut() else {
            return;
        };
        if mp.completed {
            return;
        }
        // Dropped mid-upload (an error, a refused body, or the client went away): stop the
        // parts still travelling and abort the upload so S3 keeps none of them.
        mp.in_flight.abort_all();
        let req = self
            .client
            .abort_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&self.key)
            .upload_id(&mp.upload_id);
        if tokio::runtime::Handle::try_current().is_ok() {
            self.cleanup.spawn(async move {
                if let Err(e) = req.send().await {
                    tracing::warn!(error = %e, "AbortMultipartUpload failed; the bucket's lifecycle rule will remove the parts");
                }
            });
        }
    }
}
