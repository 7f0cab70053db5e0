//! The edges of resumable uploads that one request never reaches: a completion running while
//! other requests come, a client that leaves after its last byte, erase and the DELETE of a
//! file while uploads are open, deferred lengths held to the limits, refused creations, and
//! requests that name uploads not the caller's. On the backend set `PF_TEST_BACKEND` names.

mod common;

use std::time::{Duration, Instant};

use auth::Role;
use common::relay::Relay;
use common::tus::{
    OFFSET_STREAM, bytes_of, create, head, meta, offset_of, patch, patch_with, spawn_patch,
};
use common::{TestApp, noise};
use futures::StreamExt;
use participant_files::auth;
use participant_files::keys::UploadId;
use participant_files::model::{AppId, Owner, UserId};
use reqwest::{Method, Response, StatusCode};

async fn with_relay(relay: &Relay) -> TestApp {
    TestApp::start_with(&["--clamd", &relay.address(), "--scan-timeout", "120s"]).await
}

fn owner(user: &str) -> Owner {
    Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse(user).unwrap(),
    }
}

fn id_of(path: &str) -> UploadId {
    UploadId::parse(path.rsplit('/').next().unwrap()).unwrap()
}

/// Commit lines (`upload`, `replace`) of `file` in the audit log.
fn commits(app: &TestApp, file: &str) -> usize {
    app.audit()
        .into_iter()
        .filter(|l| l["fileId"] == file && (l["action"] == "upload" || l["action"] == "replace"))
        .count()
}

/// Polls `check` every 50 ms until it holds, for at most a minute.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "waited a minute for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the upload's row says its completion runs (every byte is durable).
async fn until_completing(app: &TestApp, user: &str, path: &str) {
    let (owner, id) = (owner(user), id_of(path));
    until("the completion to start", async || {
        let row = app.files.index().uploads().get_upload(&owner, &id).await;
        row.unwrap()
            .is_some_and(|r| r.value.writer.is_some_and(|w| w.work.completing))
    })
    .await;
}

fn assert_locked(res: &Response, what: &str) {
    assert_eq!(res.status(), StatusCode::LOCKED, "{what}");
    assert!(res.headers().contains_key("retry-after"), "{what}");
    assert_eq!(res.headers()["tus-resumable"], "1.0.0", "{what}");
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Response {
    app.request(Method::DELETE, path)
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_completion_runs_once_and_other_requests_wait_for_its_outcome() {
    let relay = Relay::start().await;
    let app = with_relay(&relay).await;
    let t = app.token("anna", "study");
    let bytes = noise(1 << 20, 21);
    let path = create(&app, &t, "once.bin", Some(bytes.len() as u64)).await;
    relay.hold(true);
    let completing = spawn_patch(&app, &t, &path, bytes.clone());
    until_completing(&app, "anna", &path).await;
    // While clamd holds the verdict back, nobody starts a second completion or ends this one.
    assert_locked(&head(&app, &t, &path).await, "HEAD");
    let len = bytes.len() as u64;
    assert_locked(&patch(&app, &t, &path, len, Vec::new()).await, "PATCH");
    assert_locked(&delete(&app, &t, &path).await, "DELETE");
    relay.hold(false);
    assert_eq!(completing.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&app, &t, &path).await, len);
    assert_eq!(commits(&app, "once.bin"), 1, "one completion, one commit");
    // Its file is kept: a termination now is refused rather than answered 204.
    let res = delete(&app, &t, &path).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(app.download(&t, "self", "once.bin").await, bytes);
    // Bytes after the last one are not taken; an empty PATCH there replays the outcome.
    let res = patch(&app, &t, &path, len, b"more".to_vec()).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = patch(&app, &t, &path, len, Vec::new()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(commits(&app, "once.bin"), 1);
}

#[tokio::test]
async fn a_client_that_leaves_after_its_last_byte_still_gets_one_audited_commit() {
    use tokio::io::AsyncWriteExt;
    let relay = Relay::start().await;
    let app = with_relay(&relay).await;
    let t = app.token("bert", "study");
    let bytes = noise(1 << 20, 22);
    let path = create(&app, &t, "left.bin", Some(bytes.len() as u64)).await;
    relay.hold(true);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head_of = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nTus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_STREAM}\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head_of.as_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
    until_completing(&app, "bert", &path).await;
    drop(stream);
    relay.hold(false);
    // Nobody asks: the completion ends, is audited and recorded by itself.
    until("the commit's audit line", async || {
        commits(&app, "left.bin") == 1
    })
    .await;
    // The audit line comes before the outcome is written on the upload, and a HEAD in between
    // is rightly 423 (its completion is still running).
    let (owner, id) = (owner("bert"), id_of(&path));
    until("the upload's outcome", async || {
        let row = app.files.index().uploads().get_upload(&owner, &id).await;
        row.unwrap().is_some_and(|r| r.value.outcome.is_some())
    })
    .await;
    let scans = relay.accepted();
    assert_eq!(offset_of(&app, &t, &path).await, bytes.len() as u64);
    assert_eq!(relay.accepted(), scans, "the HEAD scanned the upload again");
    assert_eq!(commits(&app, "left.bin"), 1);
    assert_eq!(app.download(&t, "self", "left.bin").await, bytes);
}

#[tokio::test]
async fn erase_and_delete_end_the_open_uploads_with_every_byte() {
    let app = TestApp::start().await;
    let t = app.token("cora", "study");
    let worker = app.token_with("wes", "study", &[Role::Worker]);
    let bytes = noise(6 << 20, 23);
    let len = Some(bytes.len() as u64);
    let (a, b) = (
        create(&app, &t, "a.bin", len).await,
        create(&app, &t, "b.bin", len).await,
    );
    for path in [&a, &b] {
        let res = patch(&app, &t, path, 0, bytes[..5 << 20].to_vec()).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(!bytes_of(&app, id_of(path).as_str()).is_empty());
    }
    app.put_file(
        &t,
        "self",
        "c.txt",
        "text/plain",
        b"kept until erase".to_vec(),
    )
    .await;

    // DELETE of a.bin ends the upload that would become it, and only that one.
    let res = app.delete_file(&t, "self", "a.bin").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(head(&app, &t, &a).await.status(), StatusCode::NOT_FOUND);
    assert!(bytes_of(&app, id_of(&a).as_str()).is_empty());
    assert_eq!(offset_of(&app, &t, &b).await, 5 << 20);

    let res = app
        .request(Method::DELETE, "/v3/participants/cora/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    let body = common::json(res, StatusCode::OK).await;
    assert_eq!(body["count"], 2, "c.txt and the open upload of b.bin");
    assert_eq!(head(&app, &t, &b).await.status(), StatusCode::NOT_FOUND);
    let res = patch(&app, &t, &b, 5 << 20, bytes[5 << 20..].to_vec()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    assert!(bytes_of(&app, id_of(&b).as_str()).is_empty());
    assert!(app.listed(&t, "self", "b.bin").await.is_none());
}

#[tokio::test]
async fn a_deferred_length_is_held_to_the_size_limit_and_the_byte_quota() {
    let app = TestApp::start_with(&[
        "--max-file-size",
        "1MiB",
        "--max-bytes-per-participant",
        "1536KiB",
    ])
    .await;
    let t = app.token("dora", "study");
    let path = create(&app, &t, "open-ended.bin", None).await;
    let res = patch(&app, &t, &path, 0, noise((1 << 20) + 1, 24)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        offset_of(&app, &t, &path).await,
        0,
        "none of its bytes kept"
    );
    // A committed file uses 1 MiB of the 1.5 MiB quota: 512 KiB are left for this upload.
    app.put_file(
        &t,
        "self",
        "first.bin",
        "application/octet-stream",
        noise(1 << 20, 25),
    )
    .await;
    let res = patch(&app, &t, &path, 0, noise((512 << 10) + 1, 26)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        offset_of(&app, &t, &path).await,
        0,
        "none of its bytes kept"
    );
    // Within both, it goes on, and the length comes with the last PATCH.
    let res = patch(&app, &t, &path, 0, noise(100, 27)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = patch_with(
        &app,
        &t,
        &path,
        100,
        &[("upload-length", "200".to_owned())],
        noise(100, 28),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.listed(&t, "self", "open-ended.bin").await.unwrap()["size"],
        200
    );
}

#[tokio::test]
async fn a_refused_creation_leaves_no_upload_and_holds_no_slot() {
    let app = TestApp::start_with(&["--max-resumable-per-participant", "1"]).await;
    let t = app.token("emil", "study");
    for _ in 0..3 {
        // No bytes are allowed, yet the creation brings some: 413, and no Location.
        let res = app
            .request(Method::POST, "/v3/participants/self/uploads")
            .bearer_auth(&t)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "0")
            .header(
                "upload-metadata",
                meta(&[("filename", "zero.bin"), ("filetype", "text/plain")]),
            )
            .header("content-type", OFFSET_STREAM)
            .body(b"not empty".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!res.headers().contains_key("location"));
    }
    // The one slot is free.
    create(&app, &t, "real.bin", Some(10)).await;
    assert!(
        app.files
            .index()
            .uploads()
            .uploads_of(&owner("emil"), None, 10)
            .await
            .unwrap()
            .len()
            == 1,
        "only the upload that was created stays"
    );
}

#[tokio::test]
async fn requests_for_uploads_not_the_callers_leave_no_trace_and_stop_nothing() {
    let app = TestApp::start().await;
    let (t, stranger) = (app.token("finn", "study"), app.token("gus", "other"));
    let bytes = noise(3 << 20, 29);
    let path = create(&app, &t, "mine.bin", Some(bytes.len() as u64)).await;
    let mut owners = common::tus::slow_patch(&app, &t, &path, &bytes[..1 << 20], bytes.len()).await;
    // Another app's participant names the upload while its owner's PATCH is receiving.
    for res in [
        head(&app, &stranger, &path).await,
        patch(&app, &stranger, &path, 0, b"x".to_vec()).await,
        delete(&app, &stranger, &path).await,
    ] {
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        owners.write_all(&bytes[1 << 20..]).await.unwrap();
        let mut answer = vec![0; 12];
        owners.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 204", "the owner's PATCH went through");
    }
    assert_eq!(app.download(&t, "self", "mine.bin").await, bytes);

    // Thousands of requests for invented IDs leave nothing behind.
    let base = "/v3/participants/self/uploads/";
    let requests = futures::stream::iter(0..20_000).map(|i| {
        let path = format!("{base}{}", UploadId::generate().as_str());
        let req = match i % 3 {
            0 => app.request(Method::HEAD, &path),
            1 => app
                .request(Method::PATCH, &path)
                .header("content-type", OFFSET_STREAM)
                .header("upload-offset", "0")
                .body("x"),
            _ => app.request(Method::DELETE, &path),
        };
        req.bearer_auth(&stranger)
            .header("tus-resumable", "1.0.0")
            .send()
    });
    let statuses: Vec<_> = requests.buffer_unordered(16).collect().await;
    assert!(
        statuses
            .iter()
            .all(|r| r.as_ref().unwrap().status() == StatusCode::NOT_FOUND)
    );
    assert_eq!(app.files.uploads_in_hand(), 0);
}

#[tokio::test]
async fn reconcile_removes_the_tails_a_stalled_writer_left_after_its_upload_ended() {
    // Tails are objects of S3 stores only; the local store appends to one file.
    let app = TestApp::start_aws(&[]).await;
    let t = app.token("hugo", "study");
    let path = create(&app, &t, "stalled.bin", Some(4 << 20)).await;
    let res = patch(&app, &t, &path, 0, noise(1 << 20, 30)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A writer of the upload stalls mid-request (a paused instance)...
    let row = app
        .files
        .index()
        .uploads()
        .get_upload(&owner("hugo"), &id_of(&path))
        .await
        .unwrap()
        .unwrap();
    let mut stalled = app
        .files
        .store()
        .stage(&row.value.staged, row.value.staged.fence + 1)
        .await
        .unwrap();
    stalled
        .write(bytes::Bytes::from(noise(1 << 20, 31)))
        .await
        .unwrap();
    // ...the client terminates the upload, every byte of it goes...
    assert_eq!(
        delete(&app, &t, &path).await.status(),
        StatusCode::NO_CONTENT
    );
    let tails = || {
        let mut all = app.stored_files();
        all.retain(|p| p.to_string_lossy().contains(".tail-"));
        all
    };
    assert!(tails().is_empty());
    // ...and the stalled writer wakes and makes its bytes durable: a tail no row names.
    stalled.sync().await.unwrap();
    assert_eq!(tails().len(), 1);
    let out = app.reconcile("1h");
    assert!(out.contains("tails of an ended resumable upload"), "{out}");
    assert!(tails().is_empty(), "{:?}", tails());
}

#[tokio::test]
async fn a_terminated_upload_whose_completion_failed_leaves_no_claim_and_no_object() {
    let mut relay = Relay::start().await;
    let app = with_relay(&relay).await;
    let t = app.token("ines", "study");
    let bytes = noise(1 << 20, 32);
    let path = create(&app, &t, "failed.bin", Some(bytes.len() as u64)).await;
    relay.down().await;
    // Every byte is in; the scanner is down, so the completion fails and keeps its claim
    // and finished object for a retry.
    let res = patch(&app, &t, &path, 0, bytes).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        delete(&app, &t, &path).await.status(),
        StatusCode::NO_CONTENT
    );
    let file = participant_files::model::FileId::parse("failed.bin").unwrap();
    let row = app.files.index().get(&owner("ines"), &file).await.unwrap();
    assert!(row.is_none(), "the claim outlived its upload: {row:?}");
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
}

#[tokio::test]
async fn patches_take_upload_slots_and_lengths_never_wrap() {
    let app = TestApp::start_with(&["--max-uploads", "1"]).await;
    let t = app.token("jana", "study");
    let len: usize = 4 << 20;
    let (a, b) = (
        create(&app, &t, "a.bin", Some(len as u64)).await,
        create(&app, &t, "b.bin", Some(len as u64)).await,
    );
    // A PATCH that is still receiving holds the one upload slot...
    let receiving = common::tus::slow_patch(&app, &t, &a, &noise(1 << 20, 33), len).await;
    until("the first PATCH to take its lease", async || {
        let row = app
            .files
            .index()
            .uploads()
            .get_upload(&owner("jana"), &id_of(&a))
            .await;
        row.unwrap().is_some_and(|r| r.value.writer.is_some())
    })
    .await;
    // ...so another upload's PATCH waits for a free one, as a streaming upload would.
    let res = patch(&app, &t, &b, 0, noise(1000, 34)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    drop(receiving);
    until("the slot to come back", async || {
        patch(&app, &t, &b, 0, noise(1000, 34)).await.status() == StatusCode::NO_CONTENT
    })
    .await;

    // An offset and a length whose sum passes 2^64 are past any length: 413 before a byte.
    let (status, _) = app
        .raw(&format!(
            "PATCH {b} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nTus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_STREAM}\r\nUpload-Offset: 1000\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            u64::MAX - 10
        ))
        .await;
    assert_eq!(status, 413);
    assert_eq!(offset_of(&app, &t, &b).await, 1000);
}
