//! Reading objects: one ranged `GetObject`, or a whole object as GETs of a part each, several
//! in flight and pinned to one `ETag`.

use std::ops::Range;

use futures::{StreamExt, TryStreamExt};

use super::{NAME, READS_IN_FLIGHT, S3BlobStore, failed};
use crate::keys::ObjectKey;
use crate::store::{BlobRead, StoreError};

impl S3BlobStore {
    pub(super) async fn get_object(
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
        let etag = out.e_tag().map(str::to_owned);
        let body = futures::stream::unfold(out.body, |mut body| async move {
            body.next().await.map(|chunk| {
                (
                    chunk.map_err(|e| failed("reading an object failed", e)),
                    body,
                )
            })
        })
        .boxed();
        Ok(BlobRead {
            object_size,
            etag,
            body,
        })
    }

    /// One stream of GETs of a part's length each, [`READS_IN_FLIGHT`] at a time and every one
    /// pinned to the `ETag` of the first answer (`If-Match`): an S3 server serves one GET on one
    /// core, and its ranges side by side use more. The parts in flight are held within the
    /// buffer budget.
    pub(super) async fn get_object_in_parts(
        &self,
        key: &ObjectKey,
    ) -> Result<BlobRead, StoreError> {
        let part = self.settings.part_size as u64;
        let first = match self.get_object(key, Some(0..part)).await {
            // An empty object has no range to read.
            Err(StoreError::RangeNotSatisfiable) => return self.get_object(key, None).await,
            other => other?,
        };
        let size = first.object_size;
        if size <= part {
            return Ok(first);
        }
        let etag = first.etag.clone().ok_or_else(|| StoreError::Backend {
            backend: NAME,
            message: "GetObject answered without an ETag".to_owned(),
            source: "no ETag".into(),
        })?;
        let memory = self
            .budget
            .reserve(self.settings.part_size * READS_IN_FLIGHT)
            .await?;
        let (client, bucket, s3key) = (
            self.client.clone(),
            self.settings.bucket.clone(),
            self.key(key),
        );
        let pinned = etag.clone();
        let rest = futures::stream::iter(
            (1..size.div_ceil(part)).map(move |i| i * part..((i + 1) * part).min(size)),
        )
        .map(move |range| {
            let req = client
                .get_object()
                .bucket(&bucket)
                .key(&s3key)
                .range(format!("bytes={}-{}", range.start, range.end - 1))
                .if_match(&pinned);
            async move {
                let out = match req.send().await {
                    Ok(o) => o,
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                        return Err(StoreError::Changed);
                    }
                    Err(e) => return Err(failed("GetObject failed", e)),
                };
                // Kept as the segments they arrived in: joining them would hold the part twice.
                let segments: Vec<bytes::Bytes> = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| failed("reading an object failed", e))?
                    .into_segments()
                    .collect();
                let got: u64 = segments.iter().map(|b| b.len() as u64).sum();
                if got != range.end - range.start {
                    return Err(StoreError::Changed);
                }
                Ok(futures::stream::iter(segments.into_iter().map(Ok)))
            }
        })
        .buffered(READS_IN_FLIGHT)
        .try_flatten()
        // The reservation lives as long as the stream.
        .map(move |r| {
            let _ = &memory;
            r
        });
        Ok(BlobRead {
            object_size: size,
            etag: Some(etag),
            body: first.body.chain(rest).boxed(),
        })
    }
}
