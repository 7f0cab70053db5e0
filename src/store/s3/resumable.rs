//! Resumable uploads on S3: a multipart upload under the upload's key, whose parts (all of one
//! size, so that 10,000 hold the largest file) the service lists itself, never by `ListParts`;
//! the bytes after the last full part wait in a tail object named by the offset it ends at, so
//! that a tail a sync wrote but the index never recorded cannot replace the one it did.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};

use super::stage::S3Stage;
use super::{NAME, S3BlobStore, failed, sse};
use crate::keys::ObjectKey;
use crate::model::{Staged, StagedPart};
use crate::store::{BlobStore, MIN_PART_SIZE, StageWriter, StoreError};

/// S3's bound on the parts of one multipart upload.
pub(crate) const MAX_PARTS: u64 = 10_000;

const MIB: u64 = 1024 * 1024;

pub(super) fn durable(staged: &Staged) -> u64 {
    staged.parts.iter().map(|p| p.size).sum::<u64>() + staged.tail
}

pub(super) fn corrupt(message: &str) -> StoreError {
    StoreError::Backend {
        backend: NAME,
        message: message.to_owned(),
        source: message.to_owned().into(),
    }
}

impl S3BlobStore {
    /// The tail's name: the offset it ends at and, since fencing, its writer's fence.
    pub(super) fn tail_key(&self, staged: &Staged, end: u64) -> String {
        match staged.fence {
            0 => format!("{}.tail-{end}", self.key(&staged.key)),
            fence => format!("{}.tail-{end}.{fence}", self.key(&staged.key)),
        }
    }

    pub(super) async fn begin_staged(
        &self,
        key: &ObjectKey,
        max_length: u64,
    ) -> Result<Staged, StoreError> {
        let part_size = (self.settings.part_size as u64)
            .max(max_length.div_ceil(MAX_PARTS))
            .max(MIN_PART_SIZE)
            .div_ceil(MIB)
            * MIB;
        let (sse, kms_key) = sse(&self.settings.encryption);
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| failed("CreateMultipartUpload failed", e))?;
        let id = out
            .upload_id()
            .ok_or_else(|| corrupt("CreateMultipartUpload gave no upload ID"))?;
        Ok(Staged {
            multipart: Some(id.to_owned()),
            part_size,
            ..Staged::bare(key)
        })
    }

    async fn get_tail(&self, staged: &Staged) -> Result<Bytes, StoreError> {
        if staged.tail == 0 {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.tail_key(staged, durable(staged)))
            .send()
            .await
            .map_err(|e| failed("GetObject of a tail failed", e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| failed("reading a tail failed", e))?
            .into_bytes();
        if bytes.len() as u64 != staged.tail {
            return Err(corrupt(
                "a tail holds another number of bytes than recorded",
            ));
        }
        Ok(bytes)
    }

    pub(super) async fn open_staged(
        &self,
        staged: &Staged,
        fence: u64,
    ) -> Result<Box<dyn StageWriter>, StoreError> {
        let size = usize::try_from(staged.part_size).map_err(|_| corrupt("part size"))?;
        let memory = self.budget.reserve_large(size).await?;
        let mut buffer = BytesMut::with_capacity(size);
        buffer.extend_from_slice(&self.get_tail(staged).await?);
        Ok(Box::new(S3Stage::new(
            self.clone(),
            Staged {
                fence,
                ..staged.clone()
            },
            buffer,
            memory,
        )))
    }

    pub(super) async fn upload_part(
        &self,
        staged: &Staged,
        number: u32,
        body: Bytes,
    ) -> Result<StagedPart, StoreError> {
        let upload = staged
            .multipart
            .as_deref()
            .ok_or_else(|| corrupt("staged bytes without a multipart upload"))?;
        let size = body.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.settings.bucket)
            .key(self.key(&staged.key))
            .upload_id(upload)
            .part_number(i32::try_from(number).map_err(|_| corrupt("part number"))?)
            .body(ByteStream::from(body))
            // The service hashes every byte itself (the upload's SHA-256); signing the payload
            // would hash each part again, and TLS guards the bytes on their way to S3.
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| failed("UploadPart failed", e))?;
        let etag = out
            .e_tag()
            .ok_or_else(|| corrupt("UploadPart gave no ETag"))?;
        Ok(StagedPart {
            number,
            etag: etag.to_owned(),
            size,
        })
    }

    /// Completes the multipart upload, the tail as its last part, then deletes the tails. A
    /// completion that already happened (its answer lost) is found by the object's size.
    pub(super) async fn finish_staged_object(&self, staged: &Staged) -> Result<(), StoreError> {
        let total = durable(staged);
        if self.size(&staged.key).await? == Some(total) {
            return self.delete_tails(staged).await;
        }
        let mut parts = staged.parts.clone();
        if staged.tail > 0 {
            let number = u32::try_from(parts.len() + 1).map_err(|_| corrupt("part number"))?;
            parts.push(
                self.upload_part(staged, number, self.get_tail(staged).await?)
                    .await?,
            );
        }
        if parts.is_empty() {
            // S3 completes no multipart upload without parts: an empty file is one PUT.
            self.client
                .put_object()
                .bucket(&self.settings.bucket)
                .key(self.key(&staged.key))
                .body(ByteStream::from(Bytes::new()))
                .send()
                .await
                .map_err(|e| failed("PutObject failed", e))?;
        } else {
            let completed = parts
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                        .e_tag(&p.etag)
                        .build()
                })
                .collect();
            self.client
                .complete_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(self.key(&staged.key))
                .upload_id(staged.multipart.as_deref().unwrap_or_default())
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| failed("CompleteMultipartUpload failed", e))?;
        }
        self.delete_tails(staged).await
    }

    /// Aborts the multipart upload, unless it was completed (that object belongs to its
    /// claim), and deletes every tail.
    pub(super) async fn drop_staged_objects(&self, staged: &Staged) -> Result<(), StoreError> {
        // Aborting a completed upload would be an error, whose code differs between S3 servers.
        let completed = self.size(&staged.key).await?.is_some();
        if let Some(upload) = staged.multipart.as_ref().filter(|_| !completed) {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.settings.bucket)
                .key(self.key(&staged.key))
                .upload_id(upload)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
                Err(e) => return Err(failed("AbortMultipartUpload failed", e)),
            }
        }
        self.delete_tails(staged).await
    }

    async fn delete_tails(&self, staged: &Staged) -> Result<(), StoreError> {
        let prefix = format!("{}.tail-", self.key(&staged.key));
        // A tail written again under its name (a request retried) is a version of its own.
        if self.keeps_versions() {
            return self.remove_versions_under(&prefix).await;
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
            for key in page.contents().iter().filter_map(|o| o.key()) {
                self.remove(key).await?;
            }
        }
        // The first delete may have found the bucket keeping versions: the tails deleted
        // before it learnt so left theirs.
        if self.keeps_versions() {
            self.remove_versions_under(&prefix).await?;
        }
        Ok(())
    }
}
