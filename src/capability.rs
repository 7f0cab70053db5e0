//! Capability URLs: HMAC-signed tokens that grant one upload or one download of one object,
//! for a limited time, without a bearer token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::Role;
use crate::keys::ObjectKey;
use crate::model::{AppId, FileId, Owner, UserId};

type HmacSha256 = Hmac<Sha256>;

/// Separates these MACs from any other use of the same secret.
const DOMAIN: &[u8] = b"participant-files capability v1\0";

/// Longer tokens are refused before any work is done on them.
const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    #[serde(rename = "upload")]
    Upload,
    #[serde(rename = "download")]
    Download,
}

/// What a capability token allows. Everything in it is covered by the MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub purpose: Purpose,
    pub owner: Owner,
    pub file_id: FileId,
    /// The object to serve (download), or the pending upload's object (upload).
    pub key: ObjectKey,
    pub mime_type: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// Who the URL was issued to, for the audit log.
    pub actor: UserId,
    pub role: Role,
    pub expires_on: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    p: Purpose,
    a: String,
    u: String,
    f: String,
    k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    act: String,
    r: Role,
    exp: i64,
}

/// Every refusal looks the same to the client (403); the reason is for tests and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token is for another purpose")]
    WrongPurpose,
    #[error("token expired")]
    Expired,
}

pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    #[must_use]
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac
    }

    #[must_use]
    pub fn sign(&self, grant: &Grant) -> String {
        let wire = Wire {
            p: grant.purpose,
            a: grant.owner.app.to_string(),
            u: grant.owner.participant.to_string(),
            f: grant.file_id.to_string(),
            k: grant.key.to_string(),
            t: grant.mime_type.clone(),
            s: grant.size,
            h: grant.sha256.clone(),
            act: grant.actor.to_string(),
            r: grant.role,
            exp: grant.expires_on.timestamp(),
        };
        let payload = serde_json::to_vec(&wire).expect("grant serialises");
        let mut mac = self.mac();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks the MAC (in constant time), the purpose and the expiry.
    pub fn verify(
        &self,
        token: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Grant, CapabilityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(CapabilityError::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(CapabilityError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CapabilityError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CapabilityError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag)
            .map_err(|_| CapabilityError::BadSignature)?;
        let wire: Wire =
            serde_json::from_slice(&payload).map_err(|_| CapabilityError::Malformed)?;
        if wire.p != purpose {
            return Err(CapabilityError::WrongPurpose);
        }
        let expires_on = DateTime::from_timestamp(wire.exp, 0).ok_or(CapabilityError::Malformed)?;
        if expires_on <= now {
            return Err(CapabilityError::Expired);
        }
        let owner = Owner {
            app: AppId::parse(&wire.a).map_err(|_| CapabilityError::Malformed)?,
            participant: UserId::parse(&wire.u).map_err(|_| CapabilityError::Malformed)?,
        };
        let file_id = FileId::parse(&wire.f).map_err(|_| CapabilityError::Malformed)?;
        let key = ObjectKey::parse(&wire.k).ok_or(CapabilityError::Malformed)?;
        // A key always belongs to its grant's participant; one that does not was not made by us.
        if key.owner() != owner {
            return Err(CapabilityError::Malformed);
        }
        Ok(Grant {
            purpose: wire.p,
            owner,
            file_id,
            key,
            mime_type: wire.t,
            size: wire.s,
            sha256: wire.h,
            actor: UserId::parse(&wire.act).map_err(|_| CapabilityError::Malformed)?,
            role: wire.r,
            expires_on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::UploadId;

    fn grant(purpose: Purpose, expires_on: DateTime<Utc>) -> Grant {
        let owner = Owner {
            app: AppId::parse("app").unwrap(),
            participant: UserId::parse("u1").unwrap(),
        };
        let file_id = FileId::parse("f.jpg").unwrap();
        Grant {
            purpose,
            key: ObjectKey::new(&owner, &UploadId::generate()),
            owner,
            file_id,
            mime_type: Some("image/jpeg".into()),
            size: Some(10),
            sha256: None,
            actor: UserId::parse("u1").unwrap(),
            role: Role::Participant,
            expires_on,
        }
    }

    fn later() -> DateTime<Utc> {
        DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap()
    }

    #[test]
    fn round_trips() {
        let s = UrlSigner::new(b"k");
        let g = grant(Purpose::Download, later());
        assert_eq!(s.verify(&s.sign(&g), Purpose::Download, Utc::now()), Ok(g));
    }

    #[test]
    fn refuses_other_purpose_expiry_and_other_key() {
        let s = UrlSigner::new(b"k");
        let t = s.sign(&grant(Purpose::Upload, later()));
        assert_eq!(
            s.verify(&t, Purpose::Download, Utc::now()),
            Err(CapabilityError::WrongPurpose)
        );
        let past = DateTime::from_timestamp(Utc::now().timestamp() - 1, 0).unwrap();
        let t = s.sign(&grant(Purpose::Upload, past));
        assert_eq!(
            s.verify(&t, Purpose::Upload, Utc::now()),
            Err(CapabilityError::Expired)
        );
        let t = UrlSigner::new(b"other").sign(&grant(Purpose::Upload, later()));
        assert_eq!(
            s.verify(&t, Purpose::Upload, Utc::now()),
            Err(CapabilityError::BadSignature)
        );
    }

    #[test]
    fn refuses_tampering() {
        let s = UrlSigner::new(b"k");
        let t = s.sign(&grant(Purpose::Download, later()));
        let (payload, tag) = t.split_once('.').unwrap();
        let mut json = URL_SAFE_NO_PAD.decode(payload).unwrap();
        let text = String::from_utf8(json.clone())
            .unwrap()
            .replace("\"u1\"", "\"u2\"");
        json = text.into_bytes();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(json));
        assert_eq!(
            s.verify(&forged, Purpose::Download, Utc::now()),
            Err(CapabilityError::BadSignature)
        );
        for bad in ["", "abc", "a.b", &"x".repeat(5000)] {
            assert!(s.verify(bad, Purpose::Download, Utc::now()).is_err());
        }
    }
}
