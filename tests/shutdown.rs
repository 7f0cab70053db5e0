//! SIGTERM during a large upload: the service stops taking connections, gives requests in
//! flight `PF_SHUTDOWN_TIMEOUT`, then stops the upload, and nothing of it remains: no row, no
//! object, no temp file, no multipart upload.

mod common;

use std::time::{Duration, Instant};

use common::{
    JWT_SECRET, Process, URL_SECRET, aws_env, noise, s3_multipart_leftovers, unique_name,
    walk_files,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn token() -> String {
    common::participant_token("alice", "study")
}

async fn sigterm_mid_upload(env: Vec<(&'static str, String)>) -> Process {
    let mut all = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_SHUTDOWN_TIMEOUT", "1s".to_owned()),
        ("PF_S3_PART_SIZE", "5MiB".to_owned()),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
    ];
    all.extend(env);
    let mut service = Process::spawn(&all, &[]).await;
    let addr = service.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v3/participants/self/files/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 20000000\r\n\r\n",
        token()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&noise(7_000_000, 1)).await.unwrap();
    // The upload is under way before the service is told to stop.
    let started = std::time::Instant::now();
    loop {
        let metrics = reqwest::get(format!("{}/metrics", service.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("pf_uploads_in_flight 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "the upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The client sends nothing more; the service answers 503 once the deadline has passed.
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = service.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    service
}

async fn no_row(data_dir: &std::path::Path, extra: Vec<(&'static str, String)>) {
    let mut env = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_DATA_DIR", data_dir.display().to_string()),
    ];
    env.extend(extra);
    let again = Process::spawn(&env, &[]).await;
    let res = reqwest::Client::new()
        .get(format!("{}/v3/participants/self/files", again.base))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn local_store() {
    let data = tempfile::tempdir().unwrap();
    let env = vec![("PF_DATA_DIR", data.path().display().to_string())];
    sigterm_mid_upload(env).await;
    let mut files = Vec::new();
    walk_files(&data.path().join("blobs"), &mut files);
    assert!(files.is_empty(), "left behind: {files:?}");
    no_row(data.path(), vec![]).await;
}

#[tokio::test]
async fn s3_store() {
    let s3_dir = aws_env().s3_dir;
    let data = tempfile::tempdir().unwrap();
    let bucket = unique_name("pf");
    let _ = common::open_backends(&[
        "--store",
        &format!("s3://{bucket}"),
        "--s3-force-path-style",
        "true",
    ])
    .await;
    let store = vec![
        ("PF_STORE", format!("s3://{bucket}")),
        ("PF_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("PF_UPLOAD_MODE", "streaming".to_owned()),
        ("PF_DOWNLOAD_MODE", "streaming".to_owned()),
    ];
    let mut env = store.clone();
    env.push(("PF_DATA_DIR", data.path().display().to_string()));
    sigterm_mid_upload(env).await;
    let mut objects = Vec::new();
    walk_files(&s3_dir.join(&bucket), &mut objects);
    assert!(objects.is_empty(), "objects: {objects:?}");
    assert!(
        s3_multipart_leftovers(&s3_dir, &bucket).is_empty(),
        "a multipart upload was left"
    );
    no_row(data.path(), store).await;
}
