//! Uploads still receiving when an erase or `reconcile` runs: an erase stops them before they
//! commit, `reconcile` leaves young ones alone and stops abandoned ones, and in no case is a row
//! left naming a missing object. On both backend sets.

mod common;

use std::time::Duration;

use common::{TestApp, error, json, noise};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends the rest of a partial upload and returns the status line and body of its answer.
async fn finish(mut stream: tokio::net::TcpStream, rest: usize) -> String {
    stream.write_all(&noise(rest, 4)).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut reply))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// Waits until the upload's claim is in its row (it is written before the first byte is
/// stored), so that what follows races a started upload.
async fn wait_for_claim(app: &TestApp) {
    let index = common::index_of(app).await;
    for _ in 0..200 {
        let rows = index.scan(None, 100).await.unwrap();
        if rows.iter().any(|r| !r.value.claims.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upload never claimed its object");
}

#[tokio::test]
async fn an_erase_stops_an_upload_that_is_still_receiving() {
    let app = TestApp::start().await;
    let alice = app.token("alice", "study");
    let stream = app.partial_put(&alice, "late.bin", 600_000, 300_000).await;
    wait_for_claim(&app).await;
    let worker = app.token_with("w", "study", &[Role::Worker]);
    let erased = json(
        app.request(Method::DELETE, "/v3/participants/alice/files")
            .bearer_auth(&worker)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(erased["count"], 0);
    let reply = finish(stream, 300_000).await;
    assert!(reply.starts_with("HTTP/1.1 409"), "{reply}");
    assert!(reply.contains("ConcurrentModificationException"), "{reply}");
    error(
        app.get_file(&alice, "self", "late.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn reconcile_leaves_a_young_upload_alone_and_stops_an_abandoned_one() {
    let app = TestApp::start().await;
    let alice = app.token("alice", "study");
    json(
        app.put_file(
            &alice,
            "self",
            "f.bin",
            "application/octet-stream",
            noise(1000, 1),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    // A slow replacement is under way while reconcile runs with the default age: it finishes.
    let stream = app.partial_put(&alice, "f.bin", 600_000, 300_000).await;
    wait_for_claim(&app).await;
    let report = app.reconcile("1h");
    assert_eq!(report, "", "{report}");
    let reply = finish(stream, 300_000).await;
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    assert_eq!(app.download(&alice, "self", "f.bin").await.len(), 600_000);

    // Another one, with reconcile told that anything started is abandoned: the upload cannot
    // commit any more, and the file stays the one before it, whole.
    let before = app.download(&alice, "self", "f.bin").await;
    let stream = app.partial_put(&alice, "f.bin", 700_000, 300_000).await;
    wait_for_claim(&app).await;
    let report = app.reconcile("0s");
    assert!(report.contains("abandoned upload study/alice/"), "{report}");
    let reply = finish(stream, 400_000).await;
    assert!(reply.starts_with("HTTP/1.1 409"), "{reply}");
    assert_eq!(app.download(&alice, "self", "f.bin").await, before);
    for _ in 0..100 {
        if app.stored_files().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}
