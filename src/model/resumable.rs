//! A resumable upload's saved state: everything any instance needs to take its next request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{FileId, Issuer, Owner};
use crate::keys::{ObjectKey, UploadId};

/// One resumable (tus) upload, as the index keeps it between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumableUpload {
    pub owner: Owner,
    pub id: UploadId,
    /// The file the upload becomes once complete.
    pub file_id: FileId,
    /// Who created it (`actor:role`), for the audit lines of later requests.
    pub issuer: String,
    pub mime_type: Option<String>,
    /// The name the client sent ([`super::FileName`]), which the file takes once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Standard base64 of the whole file's SHA-256, when the client declared it.
    pub sha256: Option<String>,
    /// `None` while the length is deferred.
    pub length: Option<u64>,
    /// Bytes that the store holds durably and that this row records.
    pub offset: u64,
    /// The SHA-256 state over those bytes (digest's serialized state, base64), so that any
    /// instance goes on hashing where the last request stopped. `None`: unknown, and the
    /// completion hashes the stored bytes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub created_on: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
    /// Where the bytes are, and what the store needs to append to them.
    pub staged: Staged,
    /// The request appending now, if any.
    pub writer: Option<WriterLease>,
    /// Set once the upload completed: committed, or refused (its bytes gone).
    pub outcome: Option<UploadOutcome>,
}

impl ResumableUpload {
    /// The creator, as an [`Issuer`].
    #[must_use]
    pub fn issuer(&self) -> Option<Issuer> {
        Issuer::decode(&self.issuer)
    }

    /// Whether every declared byte is in.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// Whether a completion of the upload is running now (its lease is live).
    #[must_use]
    pub fn completing(&self, now: DateTime<Utc>) -> bool {
        self.outcome.is_none()
            && self
                .writer
                .as_ref()
                .is_some_and(|w| w.work.completing && w.live(now))
    }
}

/// The staged bytes of an upload. The local store appends to one file named by the upload's
/// ID; S3 holds a multipart upload under `key` with the parts listed here (the service keeps
/// its own list and never relies on `ListParts`), and the bytes after the last full part in
/// a small object of their own (the tail), since S3 refuses parts under 5 MiB but the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    pub key: ObjectKey,
    /// The store's multipart upload, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// Every part but the last is this long, so that 10,000 parts hold the largest file.
    #[serde(default)]
    pub part_size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<StagedPart>,
    /// Bytes after the parts, kept in the tail object.
    #[serde(default)]
    pub tail: u64,
    /// The lease fence of the writer that wrote the tail, part of the tail's name: a writer
    /// whose lease was taken over writes under another name, which no row ever records.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fence: u64,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if takes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Staged {
    /// Nothing staged under `key` that the index knows of: dropping it removes whatever the
    /// store still keeps there (tails), and aborts no multipart upload.
    #[must_use]
    pub fn bare(key: &ObjectKey) -> Self {
        Self {
            key: key.clone(),
            multipart: None,
            part_size: 0,
            parts: Vec::new(),
            tail: 0,
            fence: 0,
        }
    }

    /// What is left once the store dropped the staged bytes: nothing.
    #[must_use]
    pub fn dropped(&self) -> Self {
        Self {
            part_size: self.part_size,
            fence: self.fence,
            ..Self::bare(&self.key)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedPart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// The request that may append: a lease whose epoch grows with every new writer, so that a
/// writer that lost the lease cannot move the offset (every write is conditional on the row's
/// version, which the next writer's lease changes) nor name the tail it writes.
pub type WriterLease = crate::lease::Lease<Writing>;

/// What a resumable upload's writer is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Writing {
    /// The holder is completing the upload (every byte is in): until the lease ends, every
    /// other request for the upload is told to come back later (423), whatever instance it
    /// reaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completing: bool,
}

/// What the completion came to, kept until the upload expires for a client whose answer got
/// lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum UploadOutcome {
    Committed,
    Refused(Refusal),
}

/// A refused completion, as its request was answered: status, Bridge error type and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub status: u16,
    pub kind: String,
    pub message: String,
    /// The signature, when clamd found the file infected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}
