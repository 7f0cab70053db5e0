//! Capability URLs: sealed tokens that grant one upload or one download of one object, for a
//! limited time, without a bearer token.
//!
//! A token is `base64url(nonce || XChaCha20-Poly1305(claims))` under a key derived from
//! `PF_URL_SECRET` with HKDF-SHA256. The AEAD's tag does what the HMAC did before (any change
//! is refused), and the encryption keeps app, participant and file ID out of proxy and browser
//! logs, where capability URLs end up. The 24-byte random nonce makes reuse negligible for
//! any number of tokens one secret will ever seal.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::Role;
use crate::keys::ObjectKey;
use crate::model::{AppId, FileId, Owner, UserId};

/// Separates this key from any other use of the same secret.
const KEY_INFO: &[u8] = b"participant-files capability v2 xchacha20poly1305";

/// Bound to every token as associated data, so a token of another format or version fails.
const AAD: &[u8] = b"pf-cap-v2";

const NONCE_LEN: usize = 24;

/// Longer tokens are refused before any work is done on them. The longest grant the service
/// can issue (every identifier at 255 characters, a 255-character media type) stays well
/// under it: see the test `the_largest_grant_fits`.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The longest media type an upload URL can carry (RFC 6838 allows 127 + 1 + 127 without
/// parameters).
pub const MAX_MIME_TYPE_LEN: usize = 255;

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
    cipher: XChaCha20Poly1305,
}

impl UrlSigner {
    /// Derives the sealing key from `secret` (`PF_URL_SECRET`).
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, secret)
            .expand(KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `grant` into a token for a URL path segment.
    ///
    /// # Panics
    /// When the system's random source fails, which leaves no safe nonce to use.
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
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                chacha20poly1305::aead::Payload {
                    msg: &payload,
                    aad: AAD,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message this size");
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        let token = URL_SAFE_NO_PAD.encode(raw);
        debug_assert!(
            token.len() <= MAX_TOKEN_LEN,
            "a grant sealed into a token that verify() would refuse"
        );
        token
    }

    /// Opens the token (its tag checked in constant time), then checks purpose and expiry.
    pub fn verify(
        &self,
        token: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Grant, CapabilityError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(CapabilityError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| CapabilityError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(CapabilityError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CapabilityError::Malformed)?;
        let payload = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                chacha20poly1305::aead::Payload {
                    msg: sealed,
                    aad: AAD,
                },
            )
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
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        // Every bit of nonce, ciphertext and tag is covered.
        for i in [0, NONCE_LEN, raw.len() / 2, raw.len() - 1] {
            let mut flipped = raw.clone();
            flipped[i] ^= 1;
            assert_eq!(
                s.verify(
                    &URL_SAFE_NO_PAD.encode(flipped),
                    Purpose::Download,
                    Utc::now()
                ),
                Err(CapabilityError::BadSignature),
                "byte {i}"
            );
        }
        for bad in ["", "abc", "a.b", &"x".repeat(5000), &t[..t.len() - 4]] {
            assert!(s.verify(bad, Purpose::Download, Utc::now()).is_err());
        }
    }

    #[test]
    fn tokens_are_opaque_and_never_repeat() {
        let s = UrlSigner::new(b"k");
        let mut g = grant(Purpose::Download, later());
        g.owner.app = AppId::parse("visible-app").unwrap();
        g.owner.participant = UserId::parse("visible-user").unwrap();
        g.file_id = FileId::parse("visible-file.jpg").unwrap();
        g.key = ObjectKey::new(&g.owner, &UploadId::generate());
        let a = s.sign(&g);
        assert_ne!(a, s.sign(&g), "a nonce was reused");
        let raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
        for window in raw.windows(7) {
            for shown in [&b"visible"[..], b"image/j", b"partici"] {
                assert_ne!(window, shown, "{a} shows the grant's claims");
            }
        }
        assert_eq!(s.verify(&a, Purpose::Download, Utc::now()), Ok(g));
    }

    #[test]
    fn the_largest_grant_fits() {
        let long = |c: &str| c.repeat(255);
        let owner = Owner {
            app: AppId::parse(&long("a")).unwrap(),
            participant: UserId::parse(&long("u")).unwrap(),
        };
        let g = Grant {
            purpose: Purpose::Upload,
            key: ObjectKey::new(&owner, &UploadId::generate()),
            owner,
            file_id: FileId::parse(&long("f")).unwrap(),
            mime_type: Some(format!(
                "application/{}",
                "x".repeat(MAX_MIME_TYPE_LEN - 12)
            )),
            size: Some(u64::MAX),
            sha256: Some("x".repeat(44)),
            actor: UserId::parse(&long("w")).unwrap(),
            role: Role::Participant,
            expires_on: later(),
        };
        let t = UrlSigner::new(b"k").sign(&g);
        // With room to spare for what a grant may carry later.
        assert!(t.len() < MAX_TOKEN_LEN * 3 / 4, "{} characters", t.len());
    }
}
