//! Uploads of unknown length: one part buffered at a time, sent as a single `PutObject` when the
//! body fits one part, else as a multipart upload with `parts_in_flight` parts travelling. A
//! small body holds only the memory it fills; a part-sized buffer is taken once it grows.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use bytes::BytesMut;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::task::TaskTracker;

use super::{S3Settings, failed, sse};
use crate::budget::{BufferPool, PooledBuffer, Reservation};
use crate::store::{BlobWriter, StoreError};

/// Bodies up to this size are gathered in a buffer that grows with them, reserving from the
/// budget only what they fill; a larger one moves to a part-sized buffer from the pool.
pub(super) const SMALL_BODY: usize = 256 * 1024;

type Created =
    Result<aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput, StoreError>;

/// The part being filled.
enum Fill {
    Empty,
    /// The start of a body, in a buffer of its own size.
    Small(BytesMut, Reservation),
    Part(PooledBuffer),
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
pub(super) struct PartsWriter {
    client: Client,
    settings: Arc<S3Settings>,
    key: String,
    /// The part being filled, with the budget it holds.
    fill: Fill,
    pool: BufferPool,
    cleanup: TaskTracker,
    multipart: Option<Multipart>,
    /// A `CreateMultipartUpload` on its way: if the writer is dropped before it answers, the
    /// upload it creates is aborted once it does.
    creating: Option<JoinHandle<Created>>,
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
            fill: Fill::Empty,
            pool,
            cleanup,
            multipart: None,
            creating: None,
        }
    }

    async fn start_multipart(&mut self) -> Result<(), StoreError> {
        let (sse, kms_key) = sse(&self.settings.encryption);
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&self.key)
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key);
        // On the clean-up tracker, so that the request runs to its answer even when this
        // writer is dropped meanwhile (see Drop).
        let handle = self.cleanup.spawn(async move {
            req.send()
                .await
                .map_err(|e| failed("CreateMultipartUpload failed", e))
        });
        let creating = self.creating.insert(handle);
        let out = creating.await;
        self.creating = None;
        let out = out.map_err(|e| {
            failed(
                "the CreateMultipartUpload task failed",
                std::io::Error::other(e.to_string()),
            )
        })??;
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
            match &mut self.fill {
                Fill::Empty if self.multipart.is_none() => {
                    self.fill = Fill::Small(BytesMut::new(), Reservation::none());
                }
                Fill::Small(buf, reservation) if buf.len() + data.len() <= SMALL_BODY => {
                    // Waiting here holds at most SMALL_BODY, and the budget keeps a share that
                    // part buffers cannot take for exactly these reservations.
                    reservation.merge(self.pool.budget().reserve(data.len()).await?);
                    buf.extend_from_slice(data);
                    data = &[];
                }
                Fill::Small(..) => {
                    // Grown past a small body: move to a part-sized buffer from the pool.
                    let mut part = self.pool.take().await?;
                    if let Fill::Small(buf, _) = std::mem::replace(&mut self.fill, Fill::Empty) {
                        part.buf.extend_from_slice(&buf);
                    }
                    self.fill = Fill::Part(part);
                }
                Fill::Empty => {
                    // Waiting for a buffer when the budget is spent is what slows the client.
                    self.fill = Fill::Part(self.pool.take().await?);
                }
                Fill::Part(part) => {
                    let n = (part_size - part.buf.len()).min(data.len());
                    part.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if part.buf.len() == part_size {
                        let Fill::Part(full) = std::mem::replace(&mut self.fill, Fill::Empty)
                        else {
                            unreachable!("matched above")
                        };
                        self.send_part(full).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let rest = std::mem::replace(&mut self.fill, Fill::Empty);
        if self.multipart.is_none() {
            let (sse, kms_key) = sse(&self.settings.encryption);
            let (body, pooled, reservation) = match rest {
                Fill::Part(PooledBuffer { buf, reservation }) => (buf.freeze(), true, reservation),
                Fill::Small(buf, reservation) => (buf.freeze(), false, reservation),
                Fill::Empty => (Bytes::new(), false, Reservation::none()),
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
            if pooled {
                self.pool.give(body);
            }
            drop(reservation);
            result.map_err(|e| failed("PutObject failed", e))?;
            return Ok(());
        }
        if let Fill::Part(rest) = rest
            && !rest.buf.is_empty()
        {
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

fn abort(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> impl Future<Output = ()> + use<> {
    let req = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id);
    async move {
        if let Err(e) = req.send().await {
            tracing::warn!(error = %e, "AbortMultipartUpload failed; the bucket's lifecycle rule will remove the parts");
        }
    }
}

impl Drop for PartsWriter {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if let Some(creating) = self.creating.take() {
            // Dropped while CreateMultipartUpload was on its way: abort what it creates.
            let (client, bucket, key) = (
                self.client.clone(),
                self.settings.bucket.clone(),
                self.key.clone(),
            );
            self.cleanup.spawn(async move {
                if let Ok(Ok(out)) = creating.await
                    && let Some(id) = out.upload_id()
                {
                    abort(&client, &bucket, &key, id).await;
                }
            });
            return;
        }
        let Some(mp) = self.multipart.as_mut() else {
            return;
        };
        if mp.completed {
            return;
        }
        // Dropped mid-upload (an error, a refused body, or the client went away): stop the
        // parts still travelling and abort the upload so S3 keeps none of them.
        mp.in_flight.abort_all();
        self.cleanup.spawn(abort(
            &self.client,
            &self.settings.bucket,
            &self.key,
            &mp.upload_id,
        ));
    }
}
