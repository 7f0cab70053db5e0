//! Uploads of known length: one `PutObject` whose body travels to S3 as it arrives, with its
//! last chunk held back until commit, so that S3 cannot complete the object before every check
//! of the pipeline has passed.

use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::{S3Settings, failed, sse};
use crate::budget::{MemoryBudget, Reservation};
use crate::store::{BlobWriter, StoreError};

/// Chunks queued for the request body; their bytes are also held in the memory budget.
const QUEUED_CHUNKS: usize = 16;

/// A chunk on its way to S3, with the share of the budget it holds until the HTTP client takes it.
type Queued = (Bytes, Reservation);

pub(super) struct StreamingPut {
    length: u64,
    received: u64,
    budget: MemoryBudget,
    /// The latest chunk: sent only when the next one arrives, or at commit.
    held: Option<Queued>,
    body: Option<mpsc::Sender<Queued>>,
    request: Option<JoinHandle<Result<(), StoreError>>>,
}

impl StreamingPut {
    /// Starts the `PutObject` at once; its body waits for the chunks.
    pub(super) fn start(
        client: &Client,
        settings: &Arc<S3Settings>,
        key: String,
        length: u64,
        budget: MemoryBudget,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Queued>(QUEUED_CHUNKS);
        let body = StreamBody::new(
            ReceiverStream::new(rx)
                .map(|(bytes, _released)| Ok::<_, Infallible>(Frame::data(bytes))),
        );
        let (sse, kms_key) = sse(&settings.encryption);
        let put = client
            .put_object()
            .bucket(&settings.bucket)
            .key(key)
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .body(ByteStream::from_body_1_x(body))
            // The service hashes every byte itself; signing the payload would hash it again.
            // The bytes travel over TLS to S3, which guards them on the way.
            .customize()
            .disable_payload_signing()
            // The body pauses while the client does and while the scanner decides; the
            // pipeline's own timeouts bound both, so the SDK's stall guard must not.
            .config_override(
                aws_sdk_s3::config::Builder::default().stalled_stream_protection(
                    aws_sdk_s3::config::StalledStreamProtectionConfig::disabled(),
                ),
            );
        let request = tokio::spawn(async move {
            put.send()
                .await
                .map(|_| ())
                .map_err(|e| failed("PutObject failed", e))
        });
        Self {
            length,
            received: 0,
            budget,
            held: None,
            body: Some(tx),
            request: Some(request),
        }
    }

    async fn send(&mut self, queued: Queued) -> Result<(), StoreError> {
        let body = self.body.as_ref().expect("open until commit");
        if body.send(queued).await.is_ok() {
            return Ok(());
        }
        // S3 answered before taking the whole body; its answer says why.
        Err(self.outcome().await.err().unwrap_or_else(|| {
            failed(
                "PutObject ended before the body did",
                std::io::Error::other("early answer"),
            )
        }))
    }

    async fn outcome(&mut self) -> Result<(), StoreError> {
        let request = self.request.take().expect("awaited once");
        request.await.map_err(|e| {
            failed(
                "the PutObject task failed",
                std::io::Error::other(e.to_string()),
            )
        })?
    }
}

#[async_trait]
impl BlobWriter for StreamingPut {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.received += chunk.len() as u64;
        if self.received > self.length {
            return Err(failed(
                "the body is longer than its Content-Length",
                std::io::Error::other(format!("more than {} bytes", self.length)),
            ));
        }
        // The chunk held back goes first, so that this upload holds no reservation while it
        // waits for the next: queued chunks free theirs as S3 takes them, whatever the budget,
        // so uploads that each wait with a chunk in hand cannot wait on each other for ever.
        if let Some(previous) = self.held.take() {
            self.send(previous).await?;
        }
        // Waiting for the budget, like waiting for the queue, is what slows the client down.
        let reservation = self.budget.reserve(chunk.len()).await?;
        self.held = Some((chunk, reservation));
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.received != self.length {
            return Err(failed(
                "the body is shorter than its Content-Length",
                std::io::Error::other(format!("{} of {} bytes", self.received, self.length)),
            ));
        }
        if let Some(last) = self.held.take() {
            self.send(last).await?;
        }
        self.body = None;
        self.outcome().await
    }
}

impl Drop for StreamingPut {
    fn drop(&mut self) {
        // Not committed: the last chunk never left, so S3 has an incomplete body; ending the
        // request closes its connection and S3 keeps nothing.
        if let Some(request) = self.request.take() {
            request.abort();
        }
    }
}
