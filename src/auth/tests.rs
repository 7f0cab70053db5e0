//! Checks of token verification: algorithms, keys, claims, expiry, and minted tokens.

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
    let started = serde_json::json!({"sub": "u", "app": "a", "exp": now() + 60, "nbf": now() - 10});
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

fn signed(alg: Algorithm, private: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
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
