//! Domain types: validated identifiers, file records and their versions, scan status.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::keys::{ObjectKey, UploadId};

pub mod disposition;
pub mod name;
mod resumable;

pub use name::{FileName, NameError};
pub use resumable::{
    Refusal, ResumableUpload, Staged, StagedPart, UploadOutcome, WriterLease, Writing,
};

/// Why a string is not an identifier; the message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 255 characters")]
    TooLong,
    #[error("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
    #[error("must not be '.', '..' or 'self'")]
    Reserved,
}

/// Checks the contract's identifier rule: 1 to 255 of `A-Z a-z 0-9 . _ -`, not `.`, `..`, `self`.
pub fn validate_ident(s: &str) -> Result<(), IdentError> {
    if s.is_empty() {
        return Err(IdentError::Empty);
    }
    if s.len() > 255 {
        return Err(IdentError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IdentError::BadCharacter);
    }
    if matches!(s, "." | ".." | "self") {
        return Err(IdentError::Reserved);
    }
    Ok(())
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdentError;

            fn try_from(s: String) -> Result<Self, IdentError> {
                validate_ident(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdentError> {
                validate_ident(s)?;
                Ok(Self(s.to_owned()))
            }

            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

ident_type!(
    /// A file's ID within its participant's files.
    FileId
);
ident_type!(
    /// A participant (Bridge's userId or health code).
    UserId
);
ident_type!(
    /// An app (study) ID.
    AppId
);

/// Whose files: a participant within an app. Every file belongs to exactly one owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub app: AppId,
    pub participant: UserId,
}

/// Whether the stored bytes went through a virus scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    Clean,
    Unscanned,
    /// Called clean once, found infected by a later rescan: never served again.
    Infected,
}

impl ScanStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Unscanned => "unscanned",
            Self::Infected => "infected",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clean" => Some(Self::Clean),
            "unscanned" => Some(Self::Unscanned),
            "infected" => Some(Self::Infected),
            _ => None,
        }
    }
}

/// The committed bytes of a file: the object and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub key: ObjectKey,
    pub mime_type: String,
    pub size: u64,
    /// Standard padded base64 of the SHA-256, as S3 checksums are written.
    pub sha256: Option<String>,
    pub scan_status: ScanStatus,
    pub created_on: DateTime<Utc>,
    /// When and by which engine and signature version the bytes were called clean.
    pub scan: Option<ScanEvidence>,
    /// The name the client sent with these bytes ([`FileName`]), if it sent one.
    pub file_name: Option<String>,
}

/// What the last verdict on the bytes rests on, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEvidence {
    pub scanned_on: DateTime<Utc>,
    /// The scanner's own version string, like clamd's `ClamAV 1.4.6/27480/Tue Dec  1 ...`.
    pub engine: String,
    /// The signature a rescan found; `None` for a clean verdict.
    pub signature: Option<String>,
}

impl ScanEvidence {
    /// The signature database version in a clamd `VERSION` answer (`ClamAV 1.4.6/27480/...`
    /// gives 27480), to tell whether a file was scanned with older signatures.
    #[must_use]
    pub fn signature_version(engine: &str) -> Option<u64> {
        engine.split('/').nth(1)?.trim().parse().ok()
    }
}

/// The settler's hold on an arrived upload while it scans it (one instance per arrival); the
/// switch that commits the arrival, and the drop that refuses it, check its epoch.
pub use crate::lease::Lease;

/// An upload URL that was issued and not yet used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub upload_id: UploadId,
    pub key: ObjectKey,
    pub mime_type: String,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub created_on: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
    /// Who asked for the upload URL, for the audit line written when the upload arrives.
    pub issuer: Option<Issuer>,
    /// The instance settling the arrived upload, while it scans it.
    pub lease: Option<Lease>,
    /// The name the client sent with the request for the URL ([`FileName`]); the file takes it
    /// when the upload arrives.
    pub file_name: Option<String>,
}

/// Who an upload URL was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub actor: UserId,
    pub role: crate::auth::Role,
}

impl Issuer {
    /// `actor:role`, as the index stores it.
    #[must_use]
    pub fn encode(&self) -> String {
        format!("{}:{}", self.actor, self.role.as_str())
    }

    #[must_use]
    pub fn decode(s: &str) -> Option<Self> {
        let (actor, role) = s.split_once(':')?;
        Some(Self {
            actor: UserId::parse(actor).ok()?,
            role: crate::auth::Role::parse(role)?,
        })
    }
}

/// An upload through the service that is writing `key`: the object it stores is about to become
/// the file, so `reconcile` leaves it alone. Written before the first byte is stored and taken
/// away by the same conditional write that makes the object current; an upload whose claim was
/// revoked (by `reconcile` or an erase) must not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: ObjectKey,
    pub since: DateTime<Utc>,
}

impl Claim {
    /// `key@millis,key@millis`: neither `@` nor `,` can occur in an object key.
    #[must_use]
    pub fn encode_all(claims: &[Claim]) -> Option<String> {
        (!claims.is_empty()).then(|| {
            claims
                .iter()
                .map(|c| format!("{}@{}", c.key, c.since.timestamp_millis()))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The claims of an encoded list, or `None` when it is malformed.
    #[must_use]
    pub fn decode_all(s: &str) -> Option<Vec<Claim>> {
        s.split(',')
            .map(|one| {
                let (key, ms) = one.split_once('@')?;
                Some(Claim {
                    key: ObjectKey::parse(key)?,
                    since: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
                })
            })
            .collect()
    }
}

/// One index row: a file's current bytes (if any), its outstanding upload URL (if any) and the
/// uploads through the service that are writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub owner: Owner,
    pub file_id: FileId,
    pub current: Option<StoredFile>,
    pub pending: Option<PendingUpload>,
    pub claims: Vec<Claim>,
}

impl FileRow {
    /// A row for a file the index has nothing on yet.
    #[must_use]
    pub fn empty(owner: &Owner, file_id: &FileId) -> Self {
        Self {
            owner: owner.clone(),
            file_id: file_id.clone(),
            current: None,
            pending: None,
            claims: Vec::new(),
        }
    }

    /// Whether the row holds nothing at all and may be deleted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.pending.is_none() && self.claims.is_empty()
    }

    /// Whether an upload writing `key` still holds its claim.
    #[must_use]
    pub fn claimed(&self, key: &ObjectKey) -> bool {
        self.claims.iter().any(|c| &c.key == key)
    }
}

/// A row as read, with the version a conditional write must name to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip() {
        let owner = Owner {
            app: AppId::parse("a").unwrap(),
            participant: UserId::parse("u").unwrap(),
        };
        let claims: Vec<Claim> = (0..3)
            .map(|i| Claim {
                key: ObjectKey::new(&owner, &UploadId::generate()),
                since: DateTime::from_timestamp_millis(1_700_000_000_000 + i).unwrap(),
            })
            .collect();
        let text = Claim::encode_all(&claims).unwrap();
        assert_eq!(Claim::decode_all(&text), Some(claims));
        assert_eq!(Claim::encode_all(&[]), None);
        assert_eq!(Claim::decode_all("a/u/x@1"), None);
        assert_eq!(Claim::decode_all(""), None);
    }

    #[test]
    fn accepts_the_contract_alphabet() {
        for ok in [
            "a",
            "photo-1.jpg",
            "A_b.C-9",
            "..a",
            "a..",
            &"x".repeat(255),
        ] {
            assert!(FileId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(FileId::parse(""), Err(IdentError::Empty));
        assert_eq!(FileId::parse(&"x".repeat(256)), Err(IdentError::TooLong));
        for bad in ["a/b", "a%2Fb", "caf\u{e9}", "a b", "a\\b", "a\0", "a:b"] {
            assert_eq!(FileId::parse(bad), Err(IdentError::BadCharacter), "{bad:?}");
        }
        for reserved in [".", "..", "self"] {
            assert_eq!(FileId::parse(reserved), Err(IdentError::Reserved));
        }
    }
}
