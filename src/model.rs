//! Domain types: validated identifiers, file records and their versions, scan status.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::keys::{ObjectKey, UploadId};

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
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub app: AppId,
    pub participant: UserId,
}

/// Whether the stored bytes went through a virus scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    Clean,
    Unscanned,
}

impl ScanStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Unscanned => "unscanned",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clean" => Some(Self::Clean),
            "unscanned" => Some(Self::Unscanned),
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
}

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
}

/// One index row: a file's current bytes (if any) and its outstanding upload (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub owner: Owner,
    pub file_id: FileId,
    pub current: Option<StoredFile>,
    pub pending: Option<PendingUpload>,
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
