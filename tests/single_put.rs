//! Uploads of known length as one streaming `PutObject` (`PF_S3_SINGLE_PUT_MAX`), on s3s-fs:
//! the bytes travel to S3 while they arrive, yet S3 keeps nothing that the pipeline refuses,
//! because the last chunk is held back until every check has passed.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{TestApp, eicar, error, json, noise};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Bodies of 12 MiB: more than one 5 MiB part, so one streaming PUT rather than a buffered one.
const LEN: usize = 12 * MIB;

async fn single_put_app(extra: &[&str]) -> TestApp {
    let mut flags = vec!["--s3-part-size", "5MiB", "--s3-single-put-max", "64MiB"];
    flags.extend_from_slice(extra);
    TestApp::start_aws(&flags).await
}

fn sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_body_of_known_length_round_trips() {
    let app = single_put_app(&[]).await;
    let t = app.token("alice", "study");
    let body = noise(LEN, 21);
    let res = app
        .put_file(
            &t,
            "self",
            "scan.bin",
            "application/octet-stream",
            body.clone(),
        )
        .await;
    let file = json(res, StatusCode::CREATED).await;
    assert_eq!(file["size"], LEN);
    assert_eq!(file["sha256"], sha256(&body));
    assert!(app.download(&t, "self", "scan.bin").await == body);
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn a_wrong_checksum_leaves_nothing() {
    let app = single_put_app(&[]).await;
    let t = app.token("alice", "study");
    let res = app
        .request(reqwest::Method::PUT, "/v3/participants/self/files/bad.bin")
        .bearer_auth(&t)
        .header("content-type", "application/octet-stream")
        .header("x-amz-checksum-sha256", sha256(b"something else"))
        .body(noise(LEN, 22))
        .send()
        .await
        .unwrap();
    error(res, StatusCode::BAD_REQUEST, "BadRequestException").await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn an_infected_body_leaves_nothing_though_all_but_its_end_reached_s3() {
    let clamd = std::env::var("PF_TEST_CLAMD")
        .expect("PF_TEST_CLAMD is not set: run the suite with scripts/test, which starts clamd");
    let app = single_put_app(&["--clamd", &clamd]).await;
    let t = app.token("alice", "study");
    let mut body = noise(LEN, 23);
    let at = LEN - 1000;
    body[at..at + 68].copy_from_slice(&eicar());
    let res = app
        .put_file(&t, "self", "late.bin", "application/octet-stream", body)
        .await;
    error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    // Aborts run in the background: this waits until nothing is kept.
    app.assert_nothing_stored().await;
    error(
        app.get_file(&t, "self", "late.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn a_client_that_disconnects_leaves_nothing() {
    let app = single_put_app(&[]).await;
    let t = app.token("alice", "study");
    let stream = app.partial_put(&t, "half.bin", LEN, 8 * MIB).await;
    // The upload is under way (the service has started its PutObject) before the client goes.
    let mut under_way = false;
    for _ in 0..200 {
        let metrics = app
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("pf_uploads_in_flight 1") {
            under_way = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(under_way, "the upload never started");
    drop(stream);
    app.assert_nothing_stored().await;
    error(
        app.get_file(&t, "self", "half.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let line = app
        .audit()
        .into_iter()
        .find(|l| l["fileId"] == "half.bin")
        .expect("an audit line for the failed upload");
    assert_ne!(line["status"], 201);
}
