//! Resumable uploads over tus 1.0.0, case by case, through a real server on a socket, on the
//! backend set `PF_TEST_BACKEND` names: creation, appends, completion through the pipeline,
//! the protocol's refusals, termination, and whose uploads a token reaches.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::tus::{
    OFFSET_STREAM, bytes_of, create, head, meta, new_offset, offset_of, patch, patch_with,
    slow_patch, spawn_patch,
};
use common::{TestApp, noise};
use reqwest::{Method, StatusCode};
use sha2::Digest;

#[tokio::test]
async fn an_upload_in_many_patches_becomes_the_file() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let options = app
        .request(Method::OPTIONS, "/v3/participants/self/uploads")
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(
        options.headers()["tus-extension"]
            .to_str()
            .unwrap()
            .contains("creation-defer-length")
    );

    let bytes = noise(9 << 20, 1);
    let path = create(&app, &t, "dump.bin", Some(bytes.len() as u64)).await;
    assert_eq!(offset_of(&app, &t, &path).await, 0);
    // Not a file before it completes.
    assert!(app.listed(&t, "self", "dump.bin").await.is_none());
    let mut at = 0;
    for chunk in bytes.chunks(2 << 20) {
        let res = patch(&app, &t, &path, at, chunk.to_vec()).await;
        assert_eq!(
            res.status(),
            StatusCode::NO_CONTENT,
            "{}",
            res.text().await.unwrap()
        );
        at += chunk.len() as u64;
        assert_eq!(new_offset(&res), at);
        assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    }
    let file = app
        .listed(&t, "self", "dump.bin")
        .await
        .expect("listed once complete");
    assert_eq!(file["size"], bytes.len());
    assert_eq!(
        file["sha256"],
        STANDARD.encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(app.download(&t, "self", "dump.bin").await, bytes);
    // The staged bytes became the file in place: nothing of them is left staged.
    let id = path.rsplit('/').next().unwrap();
    let mut staged = Vec::new();
    common::walk_files(&app.data.path().join("data/blobs/resumable"), &mut staged);
    assert!(
        staged.iter().all(|p| !p.to_string_lossy().contains(id)),
        "staged bytes left: {staged:?}"
    );
    // The client lost the last answer and sends its last request again: the same answer.
    let again = patch(&app, &t, &path, at, Vec::new()).await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(new_offset(&again), at);
    assert_eq!(offset_of(&app, &t, &path).await, at);
    let actions: Vec<String> = app
        .audit()
        .iter()
        .filter(|l| l["participant"] == "alice")
        .map(|l| format!("{} {}", l["action"].as_str().unwrap(), l["status"]))
        .collect();
    for expected in ["upload_create 201", "upload_append 204", "upload 201"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
}

#[tokio::test]
async fn the_protocol_refuses_what_it_must_and_changes_nothing() {
    let app = TestApp::start().await;
    let t = app.token("bob", "study");
    let path = create(&app, &t, "p.bin", Some(100)).await;
    assert_eq!(
        patch(&app, &t, &path, 0, vec![1; 40]).await.status(),
        StatusCode::NO_CONTENT
    );

    // No Tus-Resumable: 412, with the version the service speaks.
    let res = app
        .request(Method::PATCH, &path)
        .bearer_auth(&t)
        .header("content-type", OFFSET_STREAM)
        .header("upload-offset", 40)
        .body(vec![2; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(res.headers()["tus-version"], "1.0.0");
    // Another type: 415.
    let res = app
        .request(Method::PATCH, &path)
        .bearer_auth(&t)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/octet-stream")
        .header("upload-offset", 40)
        .body(vec![2; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An offset behind and one ahead: 409.
    for wrong in [30, 50] {
        let res = patch(&app, &t, &path, wrong, vec![2; 10]).await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "offset {wrong}");
    }
    // Past the length: 413, none of it kept.
    let res = patch(&app, &t, &path, 40, vec![2; 61]).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A checksum that does not match: 460, none of it kept; an unknown algorithm: 400.
    let res = patch_with(
        &app,
        &t,
        &path,
        40,
        &[(
            "upload-checksum",
            format!("sha1 {}", STANDARD.encode([0u8; 20])),
        )],
        vec![2; 10],
    )
    .await;
    assert_eq!(res.status().as_u16(), 460);
    let res = patch_with(
        &app,
        &t,
        &path,
        40,
        &[("upload-checksum", "md5 AAAA".to_owned())],
        vec![2; 10],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(offset_of(&app, &t, &path).await, 40, "nothing changed");
    // A checksum that matches is taken.
    let body = vec![3u8; 60];
    let res = patch_with(
        &app,
        &t,
        &path,
        40,
        &[(
            "upload-checksum",
            format!("sha256 {}", STANDARD.encode(sha2::Sha256::digest(&body))),
        )],
        body.clone(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let mut whole = vec![1u8; 40];
    whole.extend(body);
    assert_eq!(app.download(&t, "self", "p.bin").await, whole);
}

#[tokio::test]
async fn a_deferred_length_is_set_once_and_an_empty_upload_completes_at_creation() {
    let app = TestApp::start().await;
    let t = app.token("carol", "study");
    let path = create(&app, &t, "later.bin", None).await;
    let res = head(&app, &t, &path).await;
    assert_eq!(res.headers()["upload-defer-length"], "1");
    assert_eq!(
        patch(&app, &t, &path, 0, vec![5; 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    let set = patch_with(
        &app,
        &t,
        &path,
        10,
        &[("upload-length", "25".to_owned())],
        vec![6; 5],
    )
    .await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&app, &t, &path).await.headers()["upload-length"], "25");
    let change = patch_with(
        &app,
        &t,
        &path,
        15,
        &[("upload-length", "30".to_owned())],
        vec![6; 5],
    )
    .await;
    assert_eq!(change.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        patch(&app, &t, &path, 15, vec![7; 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.listed(&t, "self", "later.bin").await.unwrap()["size"],
        25
    );

    create(&app, &t, "empty.bin", Some(0)).await;
    assert_eq!(
        app.listed(&t, "self", "empty.bin").await.unwrap()["size"],
        0
    );
}

#[tokio::test]
async fn a_refused_completion_is_told_again_and_termination_removes_every_byte() {
    let app = TestApp::start().await;
    let t = app.token("dave", "study");
    // A declared SHA-256 that the bytes do not have: the completion is refused.
    let res = app
        .request(Method::POST, "/v3/participants/self/uploads")
        .bearer_auth(&t)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .header(
            "upload-metadata",
            meta(&[
                ("fileId", "bad.bin"),
                ("sha256", &STANDARD.encode([9u8; 32])),
            ]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let path = reqwest::Url::parse(res.headers()["location"].to_str().unwrap())
        .unwrap()
        .path()
        .to_owned();
    let refused = patch(&app, &t, &path, 0, vec![1; 10]).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let first = refused.text().await.unwrap();
    // The client lost that answer: HEAD tells it again.
    let again = head(&app, &t, &path).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let repeated = patch(&app, &t, &path, 10, Vec::new()).await;
    assert_eq!(repeated.status(), StatusCode::BAD_REQUEST);
    assert_eq!(repeated.text().await.unwrap(), first);
    assert!(app.listed(&t, "self", "bad.bin").await.is_none());

    let path = create(&app, &t, "gone.bin", Some(10 << 20)).await;
    assert_eq!(
        patch(&app, &t, &path, 0, noise(7 << 20, 2)).await.status(),
        StatusCode::NO_CONTENT
    );
    let res = app
        .request(Method::DELETE, &path)
        .bearer_auth(&t)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(head(&app, &t, &path).await.status(), StatusCode::NOT_FOUND);
    let id = path.rsplit('/').next().unwrap();
    let left = bytes_of(&app, id);
    assert!(left.is_empty(), "bytes left: {left:?}");
    if let Some(bucket) = &app.bucket {
        let parts = common::s3_multipart_leftovers(&common::aws_env().s3_dir, bucket);
        assert!(parts.is_empty(), "multipart uploads left: {parts:?}");
    }
}

#[tokio::test]
async fn only_the_owner_reaches_an_upload() {
    let app = TestApp::start().await;
    let alice = app.token("alice", "study");
    let path = create(&app, &alice, "mine.bin", Some(20)).await;
    assert_eq!(
        patch(&app, &alice, &path, 0, vec![1; 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    for other in [
        app.token("mallory", "study"),
        app.token("alice", "other-app"),
    ] {
        assert_eq!(
            head(&app, &other, &path).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            patch(&app, &other, &path, 10, vec![2; 10]).await.status(),
            StatusCode::NOT_FOUND
        );
        let res = app
            .request(Method::DELETE, &path)
            .bearer_auth(&other)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let res = app
        .request(Method::HEAD, &path)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Alice's token expired mid-upload: 401 on HEAD and PATCH, nothing changed; a fresh
    // token goes on from the offset.
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "sub": "alice",
            "app": "study",
            "exp": chrono::Utc::now().timestamp() - 3600,
        }),
        &jsonwebtoken::EncodingKey::from_secret(common::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        head(&app, &expired, &path).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        patch(&app, &expired, &path, 10, vec![2; 10]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.token("alice", "study");
    assert_eq!(offset_of(&app, &fresh, &path).await, 10);
    assert_eq!(
        patch(&app, &fresh, &path, 10, vec![2; 10]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.download(&fresh, "self", "mine.bin").await,
        [[1; 10], [2; 10]].concat()
    );
}

#[tokio::test]
async fn a_patch_cut_mid_body_keeps_what_arrived_and_the_upload_resumes() {
    let app = TestApp::start().await;
    let t = app.token("erin", "study");
    let bytes = noise(6 << 20, 3);
    let path = create(&app, &t, "cut.bin", Some(bytes.len() as u64)).await;
    // A raw request that says 4 MiB and sends 3 MiB before the connection drops.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head_lines = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nTus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_STREAM}\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        4 << 20
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head_lines.as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes[..3 << 20])
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
    drop(stream);
    // The cut request's audit line says it was interrupted, and what it kept.
    let started = std::time::Instant::now();
    let line = loop {
        let appends: Vec<_> = app
            .audit()
            .into_iter()
            .filter(|l| l["action"] == "upload_append")
            .collect();
        if let Some(line) = appends.into_iter().next() {
            break line;
        }
        assert!(started.elapsed() < std::time::Duration::from_mins(1));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["bytes"], 3 << 20, "{line}");
    assert_eq!(line["fileId"], "cut.bin", "{line}");
    let at = offset_of(&app, &t, &path).await;
    assert_eq!(at, 3 << 20, "what arrived before the cut is kept");
    let res = patch(
        &app,
        &t,
        &path,
        at,
        bytes[usize::try_from(at).unwrap()..].to_vec(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "{}",
        res.text().await.unwrap()
    );
    assert_eq!(app.download(&t, "self", "cut.bin").await, bytes);
}

#[tokio::test]
async fn an_expired_upload_is_gone_and_reconcile_removes_its_bytes() {
    let app = TestApp::start_with(&["--resumable-ttl", "2s"]).await;
    let t = app.token("fred", "study");
    let path = create(&app, &t, "slow.bin", Some(20 << 20)).await;
    assert_eq!(
        patch(&app, &t, &path, 0, noise(7 << 20, 4)).await.status(),
        StatusCode::NO_CONTENT
    );
    let id = path.rsplit('/').next().unwrap().to_owned();
    let staged = |app: &TestApp| bytes_of(app, &id).len();
    assert!(
        staged(&app) > 0,
        "the staged bytes are kept while the upload lives"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(head(&app, &t, &path).await.status(), StatusCode::GONE);
    assert_eq!(
        patch(&app, &t, &path, 7 << 20, vec![1; 10]).await.status(),
        StatusCode::GONE
    );
    let out = app.reconcile("1h");
    assert!(out.contains("expired resumable upload"), "{out}");
    assert_eq!(
        staged(&app),
        0,
        "reconcile left bytes of the expired upload"
    );
    assert_eq!(head(&app, &t, &path).await.status(), StatusCode::NOT_FOUND);
    if let Some(bucket) = &app.bucket {
        let parts = common::s3_multipart_leftovers(&common::aws_env().s3_dir, bucket);
        assert!(parts.is_empty(), "multipart uploads left: {parts:?}");
    }
}

#[tokio::test]
async fn eicar_split_across_two_patches_is_found_and_nothing_kept() {
    let clamd = std::env::var("PF_TEST_CLAMD").expect("PF_TEST_CLAMD is not set: run scripts/test");
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let t = app.token("gina", "study");
    let mut bytes = noise(6 << 20, 5);
    bytes.extend(common::eicar());
    bytes.extend(noise(1000, 6));
    let path = create(&app, &t, "split.bin", Some(bytes.len() as u64)).await;
    // The first PATCH ends in the middle of the EICAR string.
    let cut = (6 << 20) + 30;
    assert_eq!(
        patch(&app, &t, &path, 0, bytes[..cut].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let res = patch(&app, &t, &path, cut as u64, bytes[cut..].to_vec()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        head(&app, &t, &path).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert!(app.listed(&t, "self", "split.bin").await.is_none());
    let line = app
        .audit()
        .into_iter()
        .find(|l| l["action"] == "upload_append" && l["status"] == 422)
        .expect("the refusal is audited");
    assert_eq!(line["signature"], "Eicar-Test-Signature.UNOFFICIAL");
    let id = path.rsplit('/').next().unwrap();
    let left = bytes_of(&app, id);
    assert!(
        left.is_empty(),
        "bytes of the infected upload left: {left:?}"
    );
}

/// Waits until the relay passed on at least `bytes` (the scan task sends behind the request).
async fn wait_for_sent(relay: &common::relay::Relay, bytes: u64) {
    let started = std::time::Instant::now();
    while relay.sent() < bytes {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "clamd got {} bytes, not {bytes}",
            relay.sent()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn clamd_gets_each_byte_once_as_the_patches_arrive() {
    let relay = common::relay::Relay::start().await;
    let app = TestApp::start_with(&["--clamd", &relay.address()]).await;
    let t = app.token("iris", "study");
    let bytes = noise(12 << 20, 11);
    let path = create(&app, &t, "live.bin", Some(bytes.len() as u64)).await;
    let mut at = 0u64;
    for chunk in bytes.chunks(4 << 20) {
        let res = patch(&app, &t, &path, at, chunk.to_vec()).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        at += chunk.len() as u64;
        if at < bytes.len() as u64 {
            // Already with clamd, but for the end of an unfinished INSTREAM chunk (64 KiB).
            wait_for_sent(&relay, at - (64 << 10)).await;
        }
    }
    let file = app.listed(&t, "self", "live.bin").await.expect("committed");
    assert_eq!(file["scanStatus"], "clean");
    assert_eq!(app.download(&t, "self", "live.bin").await, bytes);
    // Once: the completion did not stream the stored bytes again (INSTREAM frames each 64 KiB
    // chunk with 4 bytes; VERSION is a few more).
    let sent = relay.sent();
    let len = bytes.len() as u64;
    assert!(
        sent >= len && sent < len + len / 1000,
        "clamd got {sent} bytes for a file of {len}"
    );
}

#[tokio::test]
async fn a_scan_session_lost_between_patches_is_made_up_by_scanning_the_stored_bytes() {
    let relay = common::relay::Relay::start().await;
    let app = TestApp::start_with(&["--clamd", &relay.address()]).await;
    let t = app.token("jack", "study");

    // EICAR split across the PATCHes, and clamd's stream closed in between (a pause longer
    // than its ReadTimeout): the completion scans all of the stored bytes and finds it.
    let mut bytes = noise(6 << 20, 12);
    bytes.extend(common::eicar());
    bytes.extend(noise(1000, 13));
    let path = create(&app, &t, "lost.bin", Some(bytes.len() as u64)).await;
    let cut = (6 << 20) + 30;
    let res = patch(&app, &t, &path, 0, bytes[..cut].to_vec()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    wait_for_sent(&relay, cut as u64 - (64 << 10)).await;
    relay.cut();
    let before = relay.sent();
    let res = patch(&app, &t, &path, cut as u64, bytes[cut..].to_vec()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        relay.sent() - before >= bytes.len() as u64,
        "the stored bytes were not scanned again"
    );
    assert!(app.listed(&t, "self", "lost.bin").await.is_none());
    let id = path.rsplit('/').next().unwrap();
    let left = bytes_of(&app, id);
    assert!(
        left.is_empty(),
        "bytes of the infected upload left: {left:?}"
    );

    // A clean file after the same loss is committed, scanned.
    let clean = noise(5 << 20, 14);
    let path = create(&app, &t, "clean.bin", Some(clean.len() as u64)).await;
    let half = clean.len() / 2;
    let res = patch(&app, &t, &path, 0, clean[..half].to_vec()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    relay.cut();
    let res = patch(&app, &t, &path, half as u64, clean[half..].to_vec()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let file = app
        .listed(&t, "self", "clean.bin")
        .await
        .expect("committed");
    assert_eq!(file["scanStatus"], "clean");
    assert_eq!(app.download(&t, "self", "clean.bin").await, clean);
}

#[tokio::test]
async fn after_a_restart_the_completion_scans_the_stored_bytes_and_finds_eicar() {
    let clamd = std::env::var("PF_TEST_CLAMD").expect("PF_TEST_CLAMD is not set: run scripts/test");
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let t = app.token("kate", "study");
    let mut bytes = noise(6 << 20, 15);
    bytes.extend(common::eicar());
    bytes.extend(noise(1000, 16));
    let path = create(&app, &t, "restart.bin", Some(bytes.len() as u64)).await;
    let cut = (6 << 20) + 30;
    let res = patch(&app, &t, &path, 0, bytes[..cut].to_vec()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The scan session goes with the process; the bytes and the hash state stay.
    let app = app.restart().await;
    let res = patch(&app, &t, &path, cut as u64, bytes[cut..].to_vec()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(app.listed(&t, "self", "restart.bin").await.is_none());
    let id = path.rsplit('/').next().unwrap();
    let left = bytes_of(&app, id);
    assert!(
        left.is_empty(),
        "bytes of the infected upload left: {left:?}"
    );
}

#[tokio::test]
async fn clamd_down_at_completion_commits_nothing_until_it_is_back() {
    let mut relay = common::relay::Relay::start().await;
    let app = TestApp::start_with(&["--clamd", &relay.address()]).await;
    let t = app.token("hank", "study");
    let bytes = noise(3 << 20, 7);
    let path = create(&app, &t, "later.bin", Some(bytes.len() as u64)).await;
    relay.down().await;
    let res = patch(&app, &t, &path, 0, bytes.clone()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(app.listed(&t, "self", "later.bin").await.is_none());
    // HEAD does not tell a complete upload that is not committed: it tries the completion
    // again, and says 503 while clamd is down.
    assert_eq!(
        head(&app, &t, &path).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    relay.up().await;
    // A scanner that refused is passed over for 30 s before it is tried again.
    let started = std::time::Instant::now();
    loop {
        let res = head(&app, &t, &path).await;
        if res.status() == StatusCode::OK {
            assert_eq!(new_offset(&res), bytes.len() as u64);
            break;
        }
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "never completed"
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let file = app.listed(&t, "self", "later.bin").await.unwrap();
    assert_eq!(file["scanStatus"], "clean");
    assert_eq!(app.download(&t, "self", "later.bin").await, bytes);
}

#[tokio::test]
async fn a_newer_patch_on_one_instance_stops_the_older_which_keeps_its_bytes() {
    let app = TestApp::start().await;
    let t = app.token("ivan", "study");
    let bytes = noise(4 << 20, 8);
    let path = create(&app, &t, "twice.bin", Some(bytes.len() as u64)).await;
    let older = slow_patch(&app, &t, &path, &bytes[..2 << 20], bytes.len()).await;
    // The newer request stops the older, which makes its 2 MiB durable: the newer one,
    // sent from 0, is then behind.
    let newer = patch(&app, &t, &path, 0, bytes.clone()).await;
    assert_eq!(newer.status(), StatusCode::CONFLICT);
    assert_eq!(offset_of(&app, &t, &path).await, 2 << 20);
    drop(older);
    let rest = patch(&app, &t, &path, 2 << 20, bytes[2 << 20..].to_vec()).await;
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.download(&t, "self", "twice.bin").await, bytes);
}

#[tokio::test]
async fn a_delete_while_a_patch_is_receiving_stops_it_and_removes_every_byte() {
    let app = TestApp::start().await;
    let t = app.token("olga", "study");
    let bytes = noise(12 << 20, 9);
    let path = create(&app, &t, "dropped.bin", Some(bytes.len() as u64)).await;
    // 10 MiB in and still receiving: past one durable point (8 MiB), one part on S3.
    let receiving = slow_patch(&app, &t, &path, &bytes[..10 << 20], bytes.len()).await;
    let res = app
        .request(Method::DELETE, &path)
        .bearer_auth(&t)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    drop(receiving);
    assert_eq!(head(&app, &t, &path).await.status(), StatusCode::NOT_FOUND);
    assert!(app.listed(&t, "self", "dropped.bin").await.is_none());
    let id = path.rsplit('/').next().unwrap();
    let left = bytes_of(&app, id);
    assert!(left.is_empty(), "bytes left: {left:?}");
    if let Some(bucket) = &app.bucket {
        let parts = common::s3_multipart_leftovers(&common::aws_env().s3_dir, bucket);
        assert!(parts.is_empty(), "multipart uploads left: {parts:?}");
    }
}

#[tokio::test]
async fn an_upload_goes_on_at_another_instance_and_only_one_appends_at_a_time() {
    // Two instances share S3 and DynamoDB (the embedded index is one machine's).
    let a = TestApp::start_aws(&[]).await;
    let b = a.start_beside(&[]).await;
    let t = a.token("judy", "study");
    let bytes = noise(4 << 20, 9);
    let path = create(&a, &t, "shared.bin", Some(bytes.len() as u64)).await;
    let older = slow_patch(&a, &t, &path, &bytes[..2 << 20], bytes.len()).await;
    // Instance a holds the upload's lease: b refuses to append beside it.
    let res = patch(&b, &t, &path, 0, bytes.clone()).await;
    assert_eq!(res.status(), StatusCode::LOCKED);
    // The client of a goes away; a keeps the 2 MiB it got and lets go.
    drop(older);
    let started = std::time::Instant::now();
    while offset_of(&b, &t, &path).await != 2 << 20 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "a never let go"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rest = patch(&b, &t, &path, 2 << 20, bytes[2 << 20..].to_vec()).await;
    assert_eq!(
        rest.status(),
        StatusCode::NO_CONTENT,
        "{}",
        rest.text().await.unwrap()
    );
    assert_eq!(b.download(&t, "self", "shared.bin").await, bytes);
}

#[tokio::test]
async fn browsers_of_the_configured_origins_get_cors_and_others_none() {
    let app = TestApp::start_with(&["--cors-origins", "https://app.example.org"]).await;
    let preflight = |origin: &'static str| {
        app.request(
            Method::OPTIONS,
            "/v3/participants/self/uploads/0f8e3a5c2b6d4e7f9a1b3c5d7e9f1a2b",
        )
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization,tus-resumable,upload-offset,content-type",
        )
        .send()
    };
    let res = preflight("https://app.example.org").await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.org"
    );
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for h in ["tus-resumable", "upload-offset", "authorization"] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    let t = app.token("kim", "study");
    let res = app
        .request(Method::POST, "/v3/participants/self/uploads")
        .bearer_auth(&t)
        .header("origin", "https://app.example.org")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 3)
        .header("upload-metadata", meta(&[("fileId", "web.bin")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for h in [
        "location",
        "upload-offset",
        "upload-expires",
        "tus-resumable",
    ] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }

    // Without the setting, no CORS header at all.
    let plain = TestApp::start().await;
    let res = plain
        .request(Method::OPTIONS, "/v3/participants/self/uploads")
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn a_completion_longer_than_the_lease_keeps_it_and_another_instance_waits() {
    // Two instances on S3 and DynamoDB; their scans go through a relay that holds clamd back.
    let relay = common::relay::Relay::start().await;
    let a = TestApp::start_aws(&["--clamd", &relay.address(), "--scan-timeout", "120s"]).await;
    let b = a.start_beside(&[]).await;
    let t = a.token("lena", "study");
    let bytes = noise(2 << 20, 11);
    let path = create(&a, &t, "long.bin", Some(bytes.len() as u64)).await;
    relay.hold(true);
    let completing = spawn_patch(&a, &t, &path, bytes.clone());
    // Past the 15 s lease: a renews it while clamd keeps it waiting, so b does not complete the
    // upload a second time; it answers 423 at once.
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let res = tokio::time::timeout(std::time::Duration::from_secs(5), head(&b, &t, &path))
        .await
        .expect("b did not wait for a's lease: it began a completion of its own");
    assert_eq!(res.status(), StatusCode::LOCKED);
    relay.hold(false);
    assert_eq!(completing.await.unwrap(), StatusCode::NO_CONTENT);
    let commits = a
        .audit()
        .into_iter()
        .chain(b.audit())
        .filter(|l| {
            l["fileId"] == "long.bin" && (l["action"] == "upload" || l["action"] == "replace")
        })
        .count();
    assert_eq!(commits, 1, "one completion, one commit");
    assert_eq!(offset_of(&b, &t, &path).await, bytes.len() as u64);
    assert_eq!(b.download(&t, "self", "long.bin").await, bytes);
}
