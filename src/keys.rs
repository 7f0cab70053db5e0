//! Object keys and upload IDs: the one place where a file's storage location is built.

use std::fmt;

use crate::model::{AppId, Owner, UserId};

/// A fresh random ID for one upload; every upload writes to its own object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl TryFrom<String> for UploadId {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or("not an upload ID")
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.0
    }
}

impl UploadId {
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Accepts only what [`UploadId::generate`] makes: 32 lowercase hex digits.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const QUARANTINE: &str = "quarantine/";

/// `{app}/{participant}/{uploadId}`: every segment is validated, so a key is also a safe
/// relative path; it names exactly one upload. The object of a file a rescan found infected
/// may be kept under `quarantine/{app}/{participant}/{uploadId}` (four segments, so never taken
/// for the key of an app called `quarantine`). The file ID stays out of it on purpose: file
/// names ("left-arm-plaque.jpg") can say something about a participant, and object keys end up
/// in bucket listings, access logs and audit trails that this service does not control.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

impl TryFrom<String> for ObjectKey {
    type Error = &'static str;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or("not an object key")
    }
}

impl From<ObjectKey> for String {
    fn from(key: ObjectKey) -> String {
        key.0
    }
}

impl ObjectKey {
    #[must_use]
    pub fn new(owner: &Owner, upload: &UploadId) -> Self {
        Self(format!(
            "{}/{}/{}",
            owner.app,
            owner.participant,
            upload.as_str()
        ))
    }

    /// Parses a key read back from the index, a capability token or a store listing.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let (owner, upload) = Self::split(s)?;
        let key = Self::new(&owner, &upload);
        Some(if s.split('/').count() == 4 {
            key.quarantined()
        } else {
            key
        })
    }

    /// Where a rescan keeps this key's object once found infected.
    #[must_use]
    pub fn quarantined(&self) -> Self {
        if self.is_quarantined() {
            return self.clone();
        }
        Self(format!("{QUARANTINE}{}", self.0))
    }

    #[must_use]
    pub fn is_quarantined(&self) -> bool {
        self.0.split('/').count() == 4
    }

    fn split(s: &str) -> Option<(Owner, UploadId)> {
        let s = match s.strip_prefix(QUARANTINE) {
            Some(rest) if rest.split('/').count() == 3 => rest,
            _ => s,
        };
        let mut it = s.split('/');
        let app = AppId::parse(it.next()?).ok()?;
        let participant = UserId::parse(it.next()?).ok()?;
        let upload = UploadId::parse(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some((Owner { app, participant }, upload))
    }

    /// The participant this key belongs to.
    #[must_use]
    pub fn owner(&self) -> Owner {
        Self::split(&self.0)
            .expect("an ObjectKey is always well formed")
            .0
    }

    #[must_use]
    pub fn upload_id(&self) -> UploadId {
        Self::split(&self.0)
            .expect("an ObjectKey is always well formed")
            .1
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments, each a validated identifier (for building file system paths).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            app: AppId::parse("app").unwrap(),
            participant: UserId::parse("user-1").unwrap(),
        }
    }

    #[test]
    fn round_trips_and_names_its_owner() {
        let upload = UploadId::generate();
        let key = ObjectKey::new(&owner(), &upload);
        assert_eq!(key.as_str(), format!("app/user-1/{}", upload.as_str()));
        assert_eq!(ObjectKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(key.owner(), owner());
        assert_eq!(key.upload_id(), upload);
    }

    #[test]
    fn quarantine_keys_round_trip() {
        let upload = UploadId::generate();
        let key = ObjectKey::new(&owner(), &upload);
        let q = key.quarantined();
        assert_eq!(
            q.as_str(),
            format!("quarantine/app/user-1/{}", upload.as_str())
        );
        assert!(q.is_quarantined() && !key.is_quarantined());
        assert_eq!(ObjectKey::parse(q.as_str()), Some(q.clone()));
        assert_eq!(q.owner(), owner());
        assert_eq!(q.upload_id(), upload);
        // An app named `quarantine` keeps its ordinary keys.
        let app_q = format!("quarantine/user-1/{}", upload.as_str());
        let parsed = ObjectKey::parse(&app_q).unwrap();
        assert!(!parsed.is_quarantined());
        assert_eq!(parsed.owner().app.as_str(), "quarantine");
    }

    #[test]
    fn fresh_keys_differ() {
        let a = ObjectKey::new(&owner(), &UploadId::generate());
        let b = ObjectKey::new(&owner(), &UploadId::generate());
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_malformed_keys() {
        let upload = UploadId::generate();
        for bad in [
            String::new(),
            format!("app/user/{}/x", upload.as_str()),
            format!("app/../{}", upload.as_str()),
            "app/user/not-an-upload-id".to_owned(),
            format!("app//{}", upload.as_str()),
            format!("app/user/file/{}", upload.as_str()),
        ] {
            assert_eq!(ObjectKey::parse(&bad), None, "{bad}");
        }
    }
}
