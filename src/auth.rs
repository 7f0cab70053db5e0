//! Bearer JWTs: who is calling (app, participant, roles); and minting tokens for `token`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::{AppId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Participant,
    Researcher,
    Worker,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Participant => "participant",
            Self::Researcher => "researcher",
            Self::Worker => "worker",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "participant" => Some(Self::Participant),
            "researcher" => Some(Self::Researcher),
            "worker" => Some(Self::Worker),
            _ => None,
        }
    }
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub app: AppId,
    pub subject: UserId,
    pub roles: Vec<Role>,
}

impl Principal {
    #[must_use]
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Why a token was refused; never shown to the client, which only learns "not signed in".
/// Its `Display` is a fixed text per kind: the token's own header and claim values (which
/// jsonwebtoken's errors echo) never reach a log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {}", category(.0))]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token claim {0} is not a valid identifier")]
    BadClaim(&'static str),
    #[error("token names no key this service knows, or the wrong algorithm for it")]
    UnknownKey,
    #[error("token header names critical extensions this service does not implement")]
    CriticalExtension,
}

/// A fixed name for a jsonwebtoken error, without the values it may carry.
fn category(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidToken => "malformed",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "wrong algorithm",
        ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::Base64(_) => "bad base64",
        ErrorKind::Json(_) => "bad JSON or claim types",
        ErrorKind::Utf8(_) => "bad UTF-8",
        _ => "invalid",
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    exp: u64,
}

/// How far a token's `exp` may lie in the past, for clocks that disagree a little.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// One key tokens may be signed with.
struct VerifyingKey {
    /// The `kid` a token names this key by: a public key file's name without extension.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// `iss` and `aud` a token must carry, when configured.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
    expected: Expected,
}

/// A public key file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeyFileError {
    pub path: String,
    pub reason: String,
}

impl TokenVerifier {
    /// Verifies HS256 tokens signed with a shared secret.
    #[must_use]
    pub fn hs256(secret: &[u8], expected: Expected) -> Self {
        Self {
            keys: vec![VerifyingKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }],
            expected,
        }
    }

    /// Verifies RS256 (RSA keys) and ES256 (P-256 keys) tokens against PEM public keys; each
    /// key's `kid` is its file name without extension, so keys can be rotated by adding a file.
    pub fn public_keys(
        paths: &[std::path::PathBuf],
        expected: Expected,
    ) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        for path in paths {
            let shown = path.display().to_string();
            let pem = std::fs::read(path).map_err(|e| KeyFileError {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            let (algorithm, key) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (Algorithm::RS256, k)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (Algorithm::ES256, k)
            } else {
                return Err(KeyFileError {
                    path: shown,
                    reason: "not a PEM RSA or P-256 public key".to_owned(),
                });
            };
            let kid = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
            keys.push(VerifyingKey {
                kid,
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyFileError {
                path: String::new(),
                reason: "no public key given".to_owned(),
            });
        }
        Ok(Self { keys, expected })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        // A token not valid yet is refused like an expired one (with the same leeway).
        validation.validate_nbf = true;
        if let Some(iss) = &self.expected.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.expected.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        validation
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)?;
        // RFC 7515 4.1.11: a recipient that does not understand every extension named in `crit`
        // must refuse the token, and this service implements none.
        if header.crit.is_some() {
            return Err(AuthError::CriticalExtension);
        }
        // The key is chosen by `kid` (or is the only one), and the token's algorithm must be the
        // key's: a token cannot pick a weaker algorithm than the key was made for.
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or(AuthError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(AuthError::UnknownKey);
        }
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm))?
                .claims;
        let app = AppId::parse(&claims.app).map_err(|_| AuthError::BadClaim("app"))?;
        let subject = UserId::parse(&claims.sub).map_err(|_| AuthError::BadClaim("sub"))?;
        // Bridge knows more roles than these (developer, admin, ...): they grant nothing here.
        let roles = match claims.roles {
            None => vec![Role::Participant],
            Some(names) => names.iter().filter_map(|n| Role::parse(n)).collect(),
        };
        Ok(Principal {
            app,
            subject,
            roles,
        })
    }
}

/// Signs an HS256 token for `user` in `app`, valid for `ttl`.
pub fn mint(
    secret: &[u8],
    user: &UserId,
    app: &AppId,
    roles: &[Role],
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = chrono::Utc::now().timestamp().max(0).unsigned_abs() + ttl.as_secs();
    let claims = Claims {
        sub: user.to_string(),
        app: app.to_string(),
        roles: Some(roles.iter().map(|r| r.as_str().to_owned()).collect()),
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ids() -> (UserId, AppId) {
        (UserId::parse("u1").unwrap(), AppId::parse("app").unwrap())
    }

    fn raw(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn minted_token_verifies_with_its_roles() {
        let (u, a) = ids();
        let t = mint(SECRET, &u, &a, &[Role::Researcher], Duration::from_mins(1)).unwrap();
        let p = TokenVerifier::hs256(SECRET, Expected::default())
            .verify(&t)
            .unwrap();
        assert_eq!(p.subject, u);
        assert_eq!(p.app, a);
        assert_eq!(p.roles, vec![Role::Researcher]);
    }

    #[test]
    fn absent_roles_mean_participant_and_unknown_roles_grant_nothing() {
        let v = TokenVerifier::hs256(SECRET, Expected::default());
        let t = raw(
            &serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(v.verify(&t).unwrap().roles, vec![Role::Participant]);
        let t = raw(
            &serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60, "roles": ["admin"]}),
            SECRET,
        );
        assert!(v.verify(&t).unwrap().roles.is_empty());
    }

    #[test]
    fn refuses_bad_tokens() {
        let v = TokenVerifier::hs256(SECRET, Expected::default());
        let good = serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60});
        assert!(
            v.verify(&raw(&good, b"another secret of enough length"))
                .is_err()
        );
        let expired = serde_json::json!({"sub": "u", "app": "a", "exp": now() - 120});
        assert!(v.verify(&raw(&expired, SECRET)).is_err());
        let no_exp = serde_json::json!({"sub": "u", "app": "a"});
        assert!(v.verify(&raw(&no_exp, SECRET)).is_err());
        let no_app = serde_json::json!({"sub": "u", "exp": now() + 60});
        assert!(v.verify(&raw(&no_app, SECRET)).is_err());
        let bad_sub = serde_json::json!({"sub": "../u", "app": "a", "exp": now() + 60});
        assert!(matches!(
            v.verify(&raw(&bad_sub, SECRET)),
            Err(AuthError::BadClaim("sub"))
        ));
        let self_sub = serde_json::json!({"sub": "self", "app": "a", "exp": now() + 60});
        assert!(v.verify(&raw(&self_sub, SECRET)).is_err());
        let future =
            serde_json::json!({"sub": "u", "app": "a", "exp": now() + 7200, "nbf": now() + 3600});
        assert!(matches!(
            v.verify(&raw(&future, SECRET)),
            Err(AuthError::Invalid(_))
        ));
        let started =
            serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60, "nbf": now() - 10});
        assert!(v.verify(&raw(&started, SECRET)).is_ok());
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp".to_owned()]);
        let crit = jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(v.verify(&crit), Err(AuthError::CriticalExtension)));
        assert!(v.verify("not.a.jwt").is_err());
        let mut tampered = raw(&good, SECRET);
        tampered.pop();
        assert!(v.verify(&tampered).is_err());
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/jwt")
            .join(name)
    }

    fn signed(
        alg: Algorithm,
        private: &str,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    #[test]
    fn public_keys_by_kid_with_issuer_and_audience() {
        let v = TokenVerifier::public_keys(
            &[fixture("rsa-key-1.pem"), fixture("ec-key-2.pem")],
            Expected {
                issuer: Some("https://bridge.example".into()),
                audience: Some("participant-files".into()),
            },
        )
        .unwrap();
        let good = serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60, "iss": "https://bridge.example", "aud": "participant-files"});
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &good
            ))
            .is_ok()
        );
        assert!(
            v.verify(&signed(
                Algorithm::ES256,
                "ec-key-2.private.pem",
                Some("ec-key-2"),
                &good
            ))
            .is_ok()
        );
        // Several keys: a token must say which.
        assert!(
            v.verify(&signed(
                Algorithm::ES256,
                "ec-key-2.private.pem",
                None,
                &good
            ))
            .is_err()
        );
        // Signed by a key the service does not know, under a known kid.
        assert!(
            v.verify(&signed(
                Algorithm::ES256,
                "unknown.private.pem",
                Some("ec-key-2"),
                &good
            ))
            .is_err()
        );
        // Right key, other kid.
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("ec-key-2"),
                &good
            ))
            .is_err()
        );
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = "someone-else".into();
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &wrong_aud
            ))
            .is_err()
        );
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = "https://evil.example".into();
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &wrong_iss
            ))
            .is_err()
        );
        let mut no_aud = good.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &no_aud
            ))
            .is_err()
        );
        let mut expired = good.clone();
        expired["exp"] = (now() - 120).into();
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &expired
            ))
            .is_err()
        );
        // Within the leeway, a token just past exp still passes.
        let mut skewed = good.clone();
        skewed["exp"] = (now() - 5).into();
        assert!(
            v.verify(&signed(
                Algorithm::RS256,
                "rsa-key-1.private.pem",
                Some("rsa-key-1"),
                &skewed
            ))
            .is_ok()
        );
        // An HS256 token cannot pass against public keys (no algorithm confusion).
        let hs = raw(&good, SECRET);
        assert!(v.verify(&hs).is_err());
    }

    #[test]
    fn refusals_never_echo_the_token() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let v = TokenVerifier::hs256(SECRET, Expected::default());
        let header = b64.encode(br#"{"alg":"HS256\nFORGED","typ":"JWT"}"#);
        let body = b64.encode(br#"{"sub":"u","app":"a","exp":"FORGED\u001b[31m"}"#);
        let hs = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        for token in [
            format!("{header}.{body}.sig"),
            format!("{hs}.{body}.sig"),
            raw(
                &serde_json::json!({"sub": "u", "app": "a", "exp": "FORGED"}),
                SECRET,
            ),
            raw(
                &serde_json::json!({"sub": "u", "app": 5, "exp": now() + 60, "roles": "FORGED"}),
                SECRET,
            ),
        ] {
            let shown = v.verify(&token).unwrap_err().to_string();
            assert!(!shown.contains("FORGED"), "{shown}");
            assert!(!shown.contains(['\n', '\u{1b}']), "{shown}");
        }
    }

    #[test]
    fn refuses_unsigned_tokens() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"u","app":"a","exp":{}}}"#, now() + 60));
        assert!(
            TokenVerifier::hs256(SECRET, Expected::default())
                .verify(&format!("{header}.{body}."))
                .is_err()
        );
    }
}
