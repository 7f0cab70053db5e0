//! Production tokens over HTTP: RS256 and ES256 public keys chosen by `kid`, `iss` and `aud`
//! checks, and what is refused with 401.

mod common;

use common::{TestApp, error, json};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;

fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name)
        .display()
        .to_string()
}

fn sign(alg: Algorithm, private: &str, kid: &str, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture(private)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn public_keys_with_rotation_issuer_and_audience() {
    let keys = format!("{},{}", fixture("rsa-key-1.pem"), fixture("ec-key-2.pem"));
    let app = TestApp::start_with(&[
        "--jwt-public-key-file",
        &keys,
        "--jwt-issuer",
        "https://bridge.example",
        "--jwt-audience",
        "participant-files",
    ])
    .await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": "alice", "app": "study", "exp": now + 600, "iss": "https://bridge.example", "aud": "participant-files"});
    for (alg, private, kid) in [
        (Algorithm::RS256, "rsa-key-1.private.pem", "rsa-key-1"),
        (Algorithm::ES256, "ec-key-2.private.pem", "ec-key-2"),
    ] {
        let t = sign(alg, private, kid, &claims);
        json(app.list(&t, "self", "").await, StatusCode::OK).await;
    }
    let mut refused = vec![
        sign(Algorithm::ES256, "unknown.private.pem", "ec-key-2", &claims),
        sign(Algorithm::ES256, "unknown.private.pem", "unknown", &claims),
        app.token("alice", "study"),
    ];
    for (field, value) in [
        ("aud", json!("another-service")),
        ("iss", json!("https://elsewhere.example")),
        ("exp", json!(now - 3600)),
    ] {
        let mut c = claims.clone();
        c[field] = value;
        refused.push(sign(
            Algorithm::RS256,
            "rsa-key-1.private.pem",
            "rsa-key-1",
            &c,
        ));
    }
    for t in refused {
        error(
            app.list(&t, "self", "").await,
            StatusCode::UNAUTHORIZED,
            "NotAuthenticatedException",
        )
        .await;
    }
}

#[test]
fn token_command_refuses_with_only_public_keys() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["token", "--user", "u", "--app", "a"])
        .env("PF_JWT_PUBLIC_KEY_FILE", fixture("rsa-key-1.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PF_JWT_PUBLIC_KEY_FILE"));
}

/// A token not valid yet (`nbf` in the future), or one whose header names critical extensions
/// (`crit`, RFC 7515 4.1.11) this service does not implement, is refused.
#[tokio::test]
async fn not_yet_valid_and_critical_extension_tokens_are_refused() {
    let app = TestApp::start().await;
    let now = chrono::Utc::now().timestamp();
    let key = EncodingKey::from_secret(common::JWT_SECRET.as_bytes());
    let claims = json!({"sub": "alice", "app": "study", "exp": now + 7200});
    let mut later = claims.clone();
    later["nbf"] = json!(now + 3600);
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["b64".to_owned()]);
    crit.extras.insert("b64", false);
    for t in [
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &later, &key).unwrap(),
        jsonwebtoken::encode(&crit, &claims, &key).unwrap(),
    ] {
        error(
            app.list(&t, "self", "").await,
            StatusCode::UNAUTHORIZED,
            "NotAuthenticatedException",
        )
        .await;
    }
    let mut started = claims.clone();
    started["nbf"] = json!(now - 60);
    let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &started, &key).unwrap();
    json(app.list(&t, "self", "").await, StatusCode::OK).await;
}
