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
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token claim {0} is not a valid identifier")]
    BadClaim(&'static str),
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

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Verifies HS256 tokens signed with a shared secret.
    #[must_use]
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims;
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
        let p = TokenVerifier::hs256(SECRET).verify(&t).unwrap();
        assert_eq!(p.subject, u);
        assert_eq!(p.app, a);
        assert_eq!(p.roles, vec![Role::Researcher]);
    }

    #[test]
    fn absent_roles_mean_participant_and_unknown_roles_grant_nothing() {
        let v = TokenVerifier::hs256(SECRET);
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
        let v = TokenVerifier::hs256(SECRET);
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
        assert!(v.verify("not.a.jwt").is_err());
        let mut tampered = raw(&good, SECRET);
        tampered.pop();
        assert!(v.verify(&tampered).is_err());
    }

    #[test]
    fn refuses_unsigned_tokens() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"u","app":"a","exp":{}}}"#, now() + 60));
        assert!(
            TokenVerifier::hs256(SECRET)
                .verify(&format!("{header}.{body}."))
                .is_err()
        );
    }
}
