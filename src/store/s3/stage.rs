//! The bytes of one request to a resumable upload on S3: whole parts, each sent while its bytes
//! arrive when the request brings all of it, and at each durable point the tail after them.

use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};

use super::part_stream::PartStream;
use super::resumable::{MAX_PARTS, corrupt, durable};
use super::{S3BlobStore, failed, sse};
use crate::budget::Reservation;
use crate::model::{Staged, StagedPart};
use crate::store::{StageWriter, StoreError};

pub(super) struct S3Stage {
    store: S3BlobStore,
    staged: Staged,
    /// The bytes after the last part not yet handed to a part stream: the recorded tail, then
    /// what this request sent.
    buffer: BytesMut,
    /// The bytes of the part being streamed, as sent (views of one allocation with `buffer`).
    pieces: Vec<Bytes>,
    stream: Option<PartStream>,
    /// The bytes this request has still to send, when it said so ahead.
    coming: Option<u64>,
    _memory: Reservation,
}

impl S3Stage {
    pub(super) fn new(
        store: S3BlobStore,
        staged: Staged,
        buffer: BytesMut,
        memory: Reservation,
    ) -> Self {
        Self {
            store,
            staged,
            buffer,
            pieces: Vec::new(),
            stream: None,
            coming: None,
            _memory: memory,
        }
    }

    fn part_size(&self) -> Result<usize, StoreError> {
        usize::try_from(self.staged.part_size).map_err(|_| corrupt("part size"))
    }

    /// The bytes after the last part.
    fn held(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum::<usize>() + self.buffer.len()
    }

    fn next_number(&self) -> Result<u32, StoreError> {
        let number = self.staged.parts.len() as u64 + 1;
        if number > MAX_PARTS {
            return Err(corrupt("the upload needs more than 10,000 parts"));
        }
        u32::try_from(number).map_err(|_| corrupt("part number"))
    }

    /// Starts sending the part being filled, beginning with the bytes already held.
    async fn start_stream(&mut self, size: usize) -> Result<(), StoreError> {
        let upload = self
            .staged
            .multipart
            .as_deref()
            .ok_or_else(|| corrupt("staged bytes without a multipart upload"))?;
        let number = i32::try_from(self.next_number()?).map_err(|_| corrupt("part number"))?;
        let mut stream = PartStream::start(&self.store, &self.staged, upload, number, size as u64);
        if !self.buffer.is_empty() {
            let first = self.buffer.split().freeze();
            self.pieces.push(first.clone());
            stream.send(first).await;
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// Every byte of the part is held: S3 gets (or has) it, and it counts as staged.
    async fn finish_part(&mut self, size: usize) -> Result<(), StoreError> {
        let number = self.next_number()?;
        // A stream that failed is not waited on again: the part is sent whole instead.
        let streamed = match self.stream.take() {
            Some(stream) => stream.finish().await.ok().flatten(),
            None => None,
        };
        let part = if let Some(etag) = streamed {
            StagedPart {
                number,
                etag,
                size: size as u64,
            }
        } else {
            // In one request the SDK may retry.
            let body = if self.pieces.is_empty() {
                self.buffer.split_to(size).freeze()
            } else {
                joined(&self.pieces, &[])
            };
            self.store.upload_part(&self.staged, number, body).await?
        };
        self.pieces.clear();
        // Not durable for the upload until the index records it; the parts it replaces (same
        // number) are those of a request whose offset never moved.
        self.staged.parts.push(part);
        self.staged.tail = 0;
        Ok(())
    }
}

/// One copy of `pieces` then `rest`, end to end.
fn joined(pieces: &[Bytes], rest: &[u8]) -> Bytes {
    let mut whole =
        BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum::<usize>() + rest.len());
    for p in pieces {
        whole.extend_from_slice(p);
    }
    whole.extend_from_slice(rest);
    whole.freeze()
}

#[async_trait::async_trait]
impl StageWriter for S3Stage {
    fn expect(&mut self, bytes: u64) {
        self.coming = Some(bytes);
    }

    async fn write(&mut self, mut chunk: Bytes) -> Result<(), StoreError> {
        let size = self.part_size()?;
        while !chunk.is_empty() {
            let held = self.held();
            // A part is streamed only when this request says it brings the part's last byte:
            // a part cut short would be sent for nothing.
            if self.stream.is_none()
                && self
                    .coming
                    .is_some_and(|c| (held as u64).saturating_add(c) >= size as u64)
            {
                self.start_stream(size).await?;
            }
            let n = (size - held).min(chunk.len());
            let piece = chunk.split_to(n);
            self.coming = self.coming.map(|c| c.saturating_sub(n as u64));
            self.buffer.extend_from_slice(&piece);
            if let Some(stream) = self.stream.as_mut() {
                // A view of the copy in the part buffer: the queue holds no memory of its own.
                let view = self.buffer.split().freeze();
                self.pieces.push(view.clone());
                // A stream that ended early is told apart at the part's end.
                stream.send(view).await;
            }
            if held + n == size {
                self.finish_part(size).await?;
                // The part's allocation serves the next part once its views are gone.
                self.buffer.reserve(size);
            }
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<Staged, StoreError> {
        let mut next = self.staged.clone();
        next.tail = self.held() as u64;
        if next.tail > 0 {
            let key = self.store.tail_key(&next, durable(&next));
            let (sse, kms_key) = sse(&self.store.settings.encryption);
            self.store
                .client
                .put_object()
                .bucket(&self.store.settings.bucket)
                .key(key)
                .body(ByteStream::from(joined(&self.pieces, &self.buffer)))
                .server_side_encryption(sse)
                .set_ssekms_key_id(kms_key)
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| failed("PutObject of a tail failed", e))?;
        }
        self.staged = next.clone();
        Ok(next)
    }
}
