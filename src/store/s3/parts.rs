//! Uploads of unknown length: one part buffered at a time, sent as a single `PutObject` when the
//! body fits one part, else as a multipart upload with `parts_in_flight` parts travelling.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::{S3Settings, failed, sse};
use crate::budget::{BufferPool, PooledBuffer};
use crate::store::{BlobWriter, StoreError};

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
pub(super) struct PartsWriter {
    client: Client,
    settings: Arc<S3Settings>,
    key: String,
    /// The part being filled, from the pool, with the budget it holds.
    buffer: Option<PooledBuffer>,
    pool: BufferPool,
    cleanup: TaskTracker,
    multipart: Option<Multipart>,
}

impl PartsWriter {
    pub(super) fn new(
        client: Client,
        settings: Arc<S3Settings>,
        key: String,
        pool: BufferPool,
        cleanup: TaskTracker,
    ) -> Self {
        Self {
            client,
            settings,
            key,
            buffer: None,
            pool,
            cleanup,
            multipart: None,
        }
    }

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
            .body(ByteStream::from(bytes.clone()))
            // The service hashes every byte itself; over TLS, S3 needs no second hash.
            .customize()
            .disable_payload_signing();
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
impl BlobWriter for PartsWriter {
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
                .customize()
                .disable_payload_signing()
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

impl Drop for PartsWriter {
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
