//! One part of a resumable upload sent to S3 while its bytes arrive, so that receiving a part
//! and sending it overlap: a part sent only once it is whole makes its request wait for both.

use std::convert::Infallible;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::{S3BlobStore, failed};
use crate::model::Staged;
use crate::store::StoreError;

/// Pieces queued for the part's body. They are views of the stage's part buffer, whose memory
/// the stage already holds from the budget: the queue holds none of its own.
const QUEUED: usize = 16;

pub(super) struct PartStream {
    body: Option<mpsc::Sender<Bytes>>,
    /// The part's `UploadPart`; its `ETag`.
    request: JoinHandle<Result<Option<String>, StoreError>>,
}

impl PartStream {
    /// Starts the `UploadPart` of part `number`, `size` bytes, of the staged upload `upload`;
    /// its body waits for the pieces.
    pub(super) fn start(
        store: &S3BlobStore,
        staged: &Staged,
        upload: &str,
        number: i32,
        size: u64,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUED);
        let body = StreamBody::new(
            ReceiverStream::new(rx).map(|piece| Ok::<_, Infallible>(Frame::data(piece))),
        );
        let req = store
            .client
            .upload_part()
            .bucket(&store.settings.bucket)
            .key(store.key(&staged.key))
            .upload_id(upload)
            .part_number(number)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(ByteStream::from_body_1_x(body))
            // As for every part: the service hashes each byte itself, and TLS guards them to S3.
            .customize()
            .disable_payload_signing()
            // The body pauses while the client does; the request's own timeout bounds that.
            .config_override(
                aws_sdk_s3::config::Builder::default().stalled_stream_protection(
                    aws_sdk_s3::config::StalledStreamProtectionConfig::disabled(),
                ),
            );
        let request = tokio::spawn(async move {
            let out = req
                .send()
                .await
                .map_err(|e| failed("UploadPart failed", e))?;
            Ok(out.e_tag().map(str::to_owned))
        });
        Self {
            body: Some(tx),
            request,
        }
    }

    /// Queues the next piece; false once the request has ended before its body did (it failed,
    /// and [`Self::finish`] says why).
    pub(super) async fn send(&mut self, piece: Bytes) -> bool {
        match &self.body {
            Some(tx) => tx.send(piece).await.is_ok(),
            None => false,
        }
    }

    /// The part's `ETag`, once S3 has taken every byte of it.
    pub(super) async fn finish(mut self) -> Result<Option<String>, StoreError> {
        self.body = None;
        (&mut self.request).await.map_err(|e| {
            failed(
                "the UploadPart task failed",
                std::io::Error::other(e.to_string()),
            )
        })?
    }
}

impl Drop for PartStream {
    fn drop(&mut self) {
        // Not finished: ending the request closes its connection before the body's end, and
        // S3 keeps nothing of the part.
        self.request.abort();
    }
}
