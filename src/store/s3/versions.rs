//! Deletes that reach every version: on a bucket with versioning on or suspended, a
//! `DeleteObject` only adds a delete marker and the bytes stay, so each key's versions and
//! markers are listed and deleted by version ID.
//!
//! Whether the bucket keeps versions is learnt from the deletes themselves, at no extra cost:
//! S3 answers a `DeleteObject` on such a bucket with `x-amz-delete-marker: true`. The first
//! delete that says so turns this store to version-aware deletes for good (versioning, once
//! on, can only be suspended, never turned off), and removes the marker and versions it left.
//! Listing versions before every delete would cost a LIST request per delete on every bucket,
//! and S3-compatible servers without versioning (s3s-fs) do not implement it.

use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::types::{BucketVersioningStatus, Delete, ObjectIdentifier};

use super::{S3BlobStore, failed};
use crate::store::StoreError;

/// What this store has learnt of its bucket, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Versioning {
    seen: AtomicBool,
}

/// Keys of a version listing: one key exactly, or every key under a prefix.
#[derive(Clone, Copy)]
enum Match<'a> {
    Exact(&'a str),
    Prefix(&'a str),
}

impl Match<'_> {
    fn prefix(&self) -> &str {
        match self {
            Self::Exact(p) | Self::Prefix(p) => p,
        }
    }

    fn accepts(&self, key: &str) -> bool {
        match self {
            Self::Exact(k) => key == *k,
            Self::Prefix(p) => key.starts_with(p),
        }
    }
}

/// An S3 object's versions and markers, as the service sees them.
pub(super) struct VersionedKey {
    pub(super) key: String,
    pub(super) modified: Option<aws_sdk_s3::primitives::DateTime>,
}

impl S3BlobStore {
    /// Whether deletes on this bucket have been seen to keep versions.
    pub(super) fn keeps_versions(&self) -> bool {
        self.versioning.seen.load(Ordering::Relaxed)
    }

    fn learn_versions(&self) {
        if !self.versioning.seen.swap(true, Ordering::Relaxed) {
            tracing::info!(
                bucket = %self.settings.bucket,
                "the bucket keeps versions: deletes now remove every version of an object"
            );
        }
    }

    /// Deletes the S3 object `key`, every version of it on a bucket that keeps them.
    pub(super) async fn remove(&self, key: &str) -> Result<(), StoreError> {
        if self.keeps_versions() {
            return self.purge(Match::Exact(key)).await;
        }
        let out = self
            .client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("DeleteObject failed", e))?;
        if out.delete_marker() == Some(true) || out.version_id().is_some() {
            self.learn_versions();
            return self.purge(Match::Exact(key)).await;
        }
        Ok(())
    }

    /// Deletes every version and marker of every key under `prefix`.
    pub(super) async fn remove_versions_under(&self, prefix: &str) -> Result<(), StoreError> {
        self.purge(Match::Prefix(prefix)).await
    }

    /// Lists the versions and markers of the keys `which` accepts, a page at a time, and
    /// deletes each page in one `DeleteObjects`.
    async fn purge(&self, which: Match<'_>) -> Result<(), StoreError> {
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.settings.bucket)
                .prefix(which.prefix())
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| failed("ListObjectVersions failed", e))?;
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id()));
            let objects = versions
                .chain(markers)
                .filter_map(|(key, id)| Some((key?, id?)))
                .filter(|(key, _)| which.accepts(key))
                .map(|(key, id)| ObjectIdentifier::builder().key(key).version_id(id).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed("a version to delete has no key", e))?;
            if !objects.is_empty() {
                self.delete_versions(objects).await?;
            }
            if page.is_truncated() != Some(true) {
                return Ok(());
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Err(failed(
                    "ListObjectVersions was truncated without a marker to go on from",
                    std::io::Error::other("no NextKeyMarker"),
                ));
            }
        }
    }

    async fn delete_versions(&self, objects: Vec<ObjectIdentifier>) -> Result<(), StoreError> {
        let delete = Delete::builder()
            .set_objects(Some(objects))
            // Only the failures come back.
            .quiet(true)
            .build()
            .map_err(|e| failed("a DeleteObjects request could not be built", e))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.settings.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| failed("DeleteObjects failed", e))?;
        match out.errors().first() {
            None => Ok(()),
            Some(e) => Err(failed(
                "DeleteObjects left a version behind",
                std::io::Error::other(format!(
                    "{}: {} ({} versions not deleted)",
                    e.code().unwrap_or("no code"),
                    e.message().unwrap_or("no message"),
                    out.errors().len()
                )),
            )),
        }
    }

    /// Every key under `prefix` that has a version or a delete marker, for `reconcile`, which
    /// then also finds the bytes that plain deletes left as noncurrent versions. `None` when the
    /// server does not implement version listings (it then keeps no versions either).
    pub(super) async fn list_versioned(
        &self,
        prefix: &str,
    ) -> Result<Option<Vec<VersionedKey>>, StoreError> {
        let mut out: Vec<VersionedKey> = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = match self
                .client
                .list_object_versions()
                .bucket(&self.settings.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                    return Ok(None);
                }
                Err(e) => return Err(failed("ListObjectVersions failed", e)),
            };
            let versions = page.versions().iter().map(|v| (v.key(), v.last_modified()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.last_modified()));
            out.extend(versions.chain(markers).filter_map(|(key, modified)| {
                Some(VersionedKey {
                    key: key?.to_owned(),
                    modified: modified.copied(),
                })
            }));
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Err(failed(
                    "ListObjectVersions was truncated without a marker to go on from",
                    std::io::Error::other("no NextKeyMarker"),
                ));
            }
        }
        // One entry per key, whatever its number of versions and markers.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(Some(out))
    }

    /// The bucket's versioning, as `setup` reports it.
    pub async fn versioning_report(&self) -> String {
        let bucket = &self.settings.bucket;
        match self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => describe(bucket, out.status()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                "this S3 server does not implement versioning: a delete removes the object"
                    .to_owned()
            }
            Err(e) => format!(
                "WARNING: cannot read the versioning of bucket {bucket} (s3:GetBucketVersioning): {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ),
        }
    }
}

fn describe(bucket: &str, status: Option<&BucketVersioningStatus>) -> String {
    let state = match status {
        Some(BucketVersioningStatus::Enabled) => "enabled",
        Some(BucketVersioningStatus::Suspended) => "suspended",
        _ => return format!("bucket {bucket} has versioning off: a delete removes the object"),
    };
    format!(
        "bucket {bucket} has versioning {state}: every delete removes all versions of the \
         object and its delete markers"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_says_what_a_delete_does_in_each_state() {
        let said = |s| describe("b", s);
        assert_eq!(
            said(Some(&BucketVersioningStatus::Enabled)),
            "bucket b has versioning enabled: every delete removes all versions of the object \
             and its delete markers"
        );
        assert!(
            said(Some(&BucketVersioningStatus::Suspended))
                .contains("suspended: every delete removes all versions")
        );
        assert_eq!(
            said(None),
            "bucket b has versioning off: a delete removes the object"
        );
    }
}
