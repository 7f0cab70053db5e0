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
mod tests;
