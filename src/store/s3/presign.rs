//! Presigned `PutObject` and `GetObject` URLs, for uploads and downloads that go straight to
//! S3.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;

use super::{S3BlobStore, failed};
use crate::keys::ObjectKey;
use crate::store::{Presigner, StoreError};

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
            .response_content_disposition(crate::model::disposition::attachment(filename))
            .response_cache_control("no-store")
            .presigned(config)
            .await
            .map_err(|e| failed("presigning GetObject failed", e))?;
        Ok(presigned.uri().to_owned())
    }
}
