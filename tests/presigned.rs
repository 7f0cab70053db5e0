//! Presigned mode on S3 (s3s-fs verifies the signatures): uploads and downloads go straight to
//! the store, and the service learns of an upload lazily, on the next GET, list or DELETE.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestApp, error, json, noise};
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

async fn upload_url(app: &TestApp, token: &str, file: &str, body: serde_json::Value) -> String {
    let posted = json(
        app.post_file(token, "self", file, &body).await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap().to_owned();
    let s3 = std::env::var("AWS_ENDPOINT_URL_S3").unwrap();
    assert!(url.starts_with(&s3), "{url} is not an S3 URL");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    url
}

#[tokio::test]
async fn upload_and_download_go_straight_to_s3() {
    let app = TestApp::start_presigned(&[]).await;
    let t = app.token("alice", "study");
    let bytes = noise(3000, 1);
    let url = upload_url(
        &app,
        &t,
        "s.bin",
        json!({"mimeType": "application/octet-stream"}),
    )
    .await;
    // Not a file until the bytes are there.
    error(
        app.get_file(&t, "self", "s.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );

    // A Bridge client sends only Content-Type (and the Content-Length every client sends).
    let res = app
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );

    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"][0]["fileId"], "s.bin");
    assert_eq!(page["items"][0]["size"], 3000);
    assert_eq!(page["items"][0]["scanStatus"], "unscanned");
    let res = app.get_file(&t, "self", "s.bin").await;
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&std::env::var("AWS_ENDPOINT_URL_S3").unwrap()),
        "{location}"
    );
    let res = app.client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"s.bin\"; filename*=UTF-8''s.bin"
    );
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);

    // The URL cannot be used again for another PUT after the file was made from it... but S3
    // itself does not know that; what matters is that a second POST gets a fresh key.
    let second = upload_url(
        &app,
        &t,
        "s.bin",
        json!({"mimeType": "application/octet-stream"}),
    )
    .await;
    assert_ne!(second.split('?').next(), url.split('?').next());
    let res = app
        .client
        .put(&second)
        .header("content-type", "application/octet-stream")
        .body(b"v2".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.download(&t, "self", "s.bin").await, b"v2");
    // The replaced object is gone: one object for one file.
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    json(app.delete_file(&t, "self", "s.bin").await, StatusCode::OK).await;
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
}

#[tokio::test]
async fn s3_refuses_what_was_not_signed() {
    let app = TestApp::start_presigned(&[]).await;
    let t = app.token("alice", "study");
    let bytes = noise(2000, 2);
    let url = upload_url(
        &app,
        &t,
        "x.bin",
        json!({"mimeType": "application/octet-stream", "size": 2000, "sha256": sha(&bytes)}),
    )
    .await;
    // A client that declared a checksum sends it as S3 expects, in x-amz-checksum-sha256.
    let checksum = sha(&bytes);
    let put = |url: String, ct: &'static str, body: Vec<u8>| {
        app.client
            .put(url)
            .header("content-type", ct)
            .header("x-amz-checksum-sha256", checksum.clone())
            .body(body)
            .send()
    };

    let tampered = url.replacen("X-Amz-Signature=", "X-Amz-Signature=0", 1);
    assert!(
        put(tampered, "application/octet-stream", bytes.clone())
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    let other_key = url.replacen("/study/", "/study2/", 1);
    assert!(
        put(other_key, "application/octet-stream", bytes.clone())
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    assert!(
        put(url.clone(), "image/png", bytes.clone())
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    let s_len = put(url.clone(), "application/octet-stream", noise(2001, 2))
        .await
        .unwrap()
        .status();
    assert!(s_len.is_client_error(), "longer body: {s_len}");
    let mut altered = bytes.clone();
    altered[0] ^= 1;
    let s_alt = put(url.clone(), "application/octet-stream", altered.clone())
        .await
        .unwrap()
        .status();
    assert!(s_alt.is_client_error(), "altered body: {s_alt}");
    let without_checksum = app
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(without_checksum.status().is_client_error());
    assert!(
        app.client
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error(),
        "a PUT URL is not a GET URL"
    );

    let res = put(url, "application/octet-stream", bytes.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let file = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(file["items"][0]["sha256"], sha(&bytes));
    assert_eq!(app.download(&t, "self", "x.bin").await, bytes);
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());

    // s3s-fs answers 400 to a body whose checksum differs, but keeps it (real S3 does not).
    // The service checks the declared checksum when it finds the upload, and deletes it.
    let url = upload_url(
        &app,
        &t,
        "y.bin",
        json!({"mimeType": "application/octet-stream", "sha256": sha(&bytes)}),
    )
    .await;
    let status = put(url, "application/octet-stream", altered)
        .await
        .unwrap()
        .status();
    assert!(status.is_client_error(), "{status}");
    error(
        app.get_file(&t, "self", "y.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn expired_urls_are_refused_and_pending_uploads_dropped() {
    let app = TestApp::start_presigned(&["--url-ttl", "1s"]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "kept.txt", "text/plain", b"kept".to_vec())
        .await;
    let url = upload_url(
        &app,
        &t,
        "late.bin",
        json!({"mimeType": "application/octet-stream"}),
    )
    .await;
    let get_url = app.get_file(&t, "self", "kept.txt").await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let res = app
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(b"late".to_vec())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    assert!(
        app.client
            .get(&get_url)
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    error(
        app.get_file(&t, "self", "late.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let items = json(app.list(&t, "self", "").await, StatusCode::OK).await["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(app.stored_files().len(), 1);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_deleted_when_found() {
    let app = TestApp::start_presigned(&["--max-file-size", "1KiB"]).await;
    let t = app.token("alice", "study");
    app.put_file(
        &t,
        "self",
        "f.bin",
        "application/octet-stream",
        b"small".to_vec(),
    )
    .await;
    // Without a declared size, S3 takes any length; the service checks when it finds it.
    let url = upload_url(
        &app,
        &t,
        "f.bin",
        json!({"mimeType": "application/octet-stream"}),
    )
    .await;
    let res = app
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(noise(2048, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.stored_files().len(), 2);
    assert_eq!(app.download(&t, "self", "f.bin").await, b"small");
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn reconcile_removes_orphans_and_expired_uploads() {
    let app = TestApp::start_presigned(&["--url-ttl", "1s"]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "kept.txt", "text/plain", b"kept".to_vec())
        .await;
    let _pending = upload_url(
        &app,
        &t,
        "never.bin",
        json!({"mimeType": "application/octet-stream"}),
    )
    .await;
    // An object no row names (a crash between commit and row, say), written straight to S3.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let orphan = "files/study/alice/0123456789abcdef0123456789abcdef";
    s3.put_object()
        .bucket(app.bucket.as_deref().unwrap())
        .key(orphan)
        .body(b"orphan".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(app.stored_files().len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let mut args = vec![
        "reconcile".to_owned(),
        "--min-age".to_owned(),
        "1s".to_owned(),
    ];
    args.extend(app.flags().iter().cloned());
    args.extend([
        "--data-dir".to_owned(),
        app.data.path().display().to_string(),
        "--jwt-secret".to_owned(),
        common::JWT_SECRET.to_owned(),
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("object without a row study/alice/0123456789abcdef0123456789abcdef"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expired pending upload study/alice/"),
        "{stdout}"
    );
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    assert_eq!(app.download(&t, "self", "kept.txt").await, b"kept");
    // A second run finds nothing more.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}
