//! Operator limits over HTTP: uploads in flight, per-participant quotas, the download byte
//! budget, and clients that stop sending.

mod common;

use std::time::Duration;

use common::{TestApp, error, json, noise};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts an upload that sends half its body and then waits; returns the open connection.
async fn stalled_upload(app: &TestApp, token: &str, file: &str) -> tokio::net::TcpStream {
    let stream = app.partial_put(token, file, 200_000, 100_000).await;
    if app.backend == common::Backend::Embedded {
        app.wait_until_staged().await;
    }
    stream
}

#[tokio::test]
async fn uploads_beyond_the_limit_are_told_to_retry() {
    let app = TestApp::start_with(&["--max-uploads", "1"]).await;
    let t = app.token("alice", "study");
    let mut first = stalled_upload(&app, &t, "slow.bin").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = app
        .put_file(
            &t,
            "self",
            "other.bin",
            "application/octet-stream",
            b"x".to_vec(),
        )
        .await;
    assert_eq!(res.headers()["retry-after"], "5");
    error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    first.write_all(&noise(100_000, 2)).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut reply)).await;
    // The first upload finished; its slot is free again.
    let res = app
        .put_file(
            &t,
            "self",
            "other.bin",
            "application/octet-stream",
            b"x".to_vec(),
        )
        .await;
    json(res, StatusCode::CREATED).await;
}

#[tokio::test]
async fn per_participant_quotas() {
    let app = TestApp::start_with(&[
        "--max-files-per-participant",
        "2",
        "--max-bytes-per-participant",
        "1000",
    ])
    .await;
    let t = app.token("alice", "study");
    json(
        app.put_file(&t, "self", "a", "application/octet-stream", noise(600, 1))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app
        .put_file(&t, "self", "b", "application/octet-stream", noise(500, 2))
        .await;
    let body = error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("quota"),
        "{body}"
    );
    json(
        app.put_file(&t, "self", "b", "application/octet-stream", noise(300, 3))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app
        .put_file(&t, "self", "c", "application/octet-stream", noise(10, 4))
        .await;
    error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    // Replacing a file counts its new size instead of its old one.
    json(
        app.put_file(&t, "self", "a", "application/octet-stream", noise(700, 5))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.stored_files().len(), 2, "{:?}", app.stored_files());
    // Another participant has quotas of its own.
    let bob = app.token("bob", "study");
    json(
        app.put_file(&bob, "self", "c", "application/octet-stream", noise(900, 6))
            .await,
        StatusCode::CREATED,
    )
    .await;
}

/// Streaming downloads are charged the bytes they serve: a download URL replayed is charged
/// each time, a range only its length, a HEAD nothing; the budget is per participant.
#[tokio::test]
async fn download_budget_per_participant() {
    let app = TestApp::start_with(&["--download-bytes-per-hour", "1000"]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "a", "application/octet-stream", noise(600, 1))
        .await;
    let res = app.get_file(&t, "self", "a").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let url = res.headers()["location"].to_str().unwrap().to_owned();
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().len(), 600);
    // Issuing another URL costs nothing; serving the file again would pass the budget.
    assert_eq!(
        app.get_file(&t, "self", "a").await.status(),
        StatusCode::FOUND
    );
    for _ in 0..3 {
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait > 3000 && wait <= 3600, "{wait}");
        error(
            res,
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
        )
        .await;
    }
    assert_eq!(
        app.client.head(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let range = |r: &'static str| app.client.get(&url).header("range", r).send();
    // The range is read whole: bytes a client leaves untaken are given back to the budget, so
    // an unread body would make what follows depend on how much the socket took.
    let res = range("bytes=0-399").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap().len(), 400);
    assert_eq!(
        range("bytes=0-0").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let bob = app.token("bob", "study");
    app.put_file(&bob, "self", "b", "application/octet-stream", noise(600, 2))
        .await;
    assert_eq!(app.download(&bob, "self", "b").await.len(), 600);
}

#[tokio::test]
async fn a_client_that_stops_sending_is_given_up() {
    let app = TestApp::start_with(&["--client-timeout", "1s"]).await;
    let t = app.token("alice", "study");
    let mut stream = stalled_upload(&app, &t, "stalled.bin").await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    app.assert_nothing_stored().await;
    error(
        app.get_file(&t, "self", "stalled.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

/// The participant the racing uploads below belong to.
fn alice() -> participant_files::model::Owner {
    use participant_files::model::{AppId, Owner, UserId};
    Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("alice").unwrap(),
    }
}

/// Sends `n` streaming PUTs of new files of `size` bytes for `alice` at once, their bodies
/// held back until every one of them has passed the early quota check (its claim is in the
/// index), so that only the commit can hold the quota. Returns the statuses.
async fn racing_puts(app: &TestApp, n: usize, size: usize) -> Vec<StatusCode> {
    use participant_files::model::FileId;
    let t = app.token("alice", "study");
    let owner = alice();
    let (open, gate) = tokio::sync::watch::channel(false);
    let mut puts = Vec::new();
    for i in 0..n {
        let mut gate = gate.clone();
        let body = futures::stream::once(async move {
            gate.wait_for(|open| *open).await.unwrap();
            Ok::<_, std::io::Error>(bytes::Bytes::from(noise(size, i as u64)))
        });
        let request = app
            .request(
                reqwest::Method::PUT,
                &format!("/v3/participants/self/files/race-{i}"),
            )
            .bearer_auth(&t)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        puts.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let index = app.files.index();
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    'claimed: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every upload was claimed within 60 s"
        );
        for i in 0..n {
            let id = FileId::parse(&format!("race-{i}")).unwrap();
            let row = index.get(&owner, &id).await.unwrap();
            if row.is_none_or(|r| r.value.claims.is_empty()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'claimed;
            }
        }
        break;
    }
    open.send(true).unwrap();
    let mut statuses = Vec::new();
    for p in puts {
        let res = p.await.unwrap();
        let status = res.status();
        if status != StatusCode::CREATED {
            error(
                res,
                StatusCode::PAYLOAD_TOO_LARGE,
                "EntityTooLargeException",
            )
            .await;
        }
        statuses.push(status);
    }
    statuses
}

/// After racing uploads: the participant holds `files` files, its counters say so, and each
/// refused upload left nothing (its claim goes in the background: waited for).
async fn holds_only(app: &TestApp, n: usize, files: usize, bytes: u64) {
    use participant_files::model::FileId;
    let t = app.token("alice", "study");
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), files, "{page}");
    assert_eq!(app.stored_files().len(), files, "{:?}", app.stored_files());
    let owner = alice();
    let index = app.files.index();
    let counters = index.counters(&owner).await.unwrap().unwrap();
    assert_eq!((counters.files, counters.bytes), (files as u64, bytes));
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    for i in 0..n {
        let id = FileId::parse(&format!("race-{i}")).unwrap();
        loop {
            let row = index.get(&owner, &id).await.unwrap();
            if row.as_ref().is_none_or(|r| r.value.current.is_some()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a refused upload's row stays: {row:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_uploads_never_pass_the_file_quota() {
    let app = TestApp::start_with(&["--max-files-per-participant", "3"]).await;
    let statuses = racing_puts(&app, 10, 1000).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{statuses:?}");
    holds_only(&app, 10, 3, 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_uploads_never_pass_the_byte_quota() {
    let app = TestApp::start_with(&["--max-bytes-per-participant", "1000"]).await;
    let statuses = racing_puts(&app, 8, 300).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3, "{statuses:?}");
    holds_only(&app, 8, 3, 900).await;
}
