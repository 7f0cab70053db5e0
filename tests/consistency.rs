//! Nothing half-written: disconnects, crashes, racing writers and readers during a replace.

mod common;

use std::sync::Arc;

use base64::Engine;
use common::{TestApp, json, noise};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Digest;

#[tokio::test]
async fn a_client_that_disconnects_halfway_leaves_nothing() {
    // Small parts, so that with S3 the upload is a multipart upload by the time the client goes.
    let app = TestApp::start_with(&["--s3-part-size", "5MiB"]).await;
    let t = app.token("alice", "study");
    let stream = app.partial_put(&t, "half.bin", 12_000_000, 6_000_000).await;
    // Wait until the service has started staging the upload, then go away.
    app.wait_until_staged().await;
    drop(stream);
    app.assert_nothing_stored().await;
    let res = app.get_file(&t, "self", "half.bin").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let line = app
        .audit()
        .into_iter()
        .find(|l| l["fileId"] == "half.bin")
        .expect("the attempt is audited");
    assert_eq!(line["status"], 400);
}

#[tokio::test]
async fn readers_see_the_old_bytes_or_the_new_never_a_mix() {
    let app = Arc::new(TestApp::start().await);
    let t = app.token("alice", "study");
    let a = noise(300_000, 1);
    let b = noise(300_000, 2);
    app.put_file(&t, "self", "f.bin", "application/octet-stream", a.clone())
        .await;
    let writer = {
        let (app, t, a, b) = (Arc::clone(&app), t.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                let body = if i % 2 == 0 { b.clone() } else { a.clone() };
                let res = app
                    .put_file(&t, "self", "f.bin", "application/octet-stream", body)
                    .await;
                assert_eq!(res.status(), StatusCode::CREATED);
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let res = app.get_file(&t, "self", "f.bin").await;
        let url = res.headers()["location"].to_str().unwrap().to_owned();
        let res = app.client.get(&url).send().await.unwrap();
        // A replace between the two requests makes the URL stale: that is a 404, not a mix.
        if res.status() == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(res.status(), StatusCode::OK);
        let got = res.bytes().await.unwrap();
        assert!(
            got == a || got == b,
            "a read saw neither version ({} bytes)",
            got.len()
        );
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    assert_eq!(app.stored_files().len(), 1);
}

#[tokio::test]
async fn racing_uploads_of_one_file_end_with_one_consistent_file() {
    let app = Arc::new(TestApp::start().await);
    let t = app.token("alice", "study");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (app, t) = (Arc::clone(&app), t.clone());
            tokio::spawn(async move {
                let body = noise(20_000 + i * 100, i as u64);
                let res = app
                    .put_file(&t, "self", "race.bin", "application/octet-stream", body)
                    .await;
                assert_eq!(res.status(), StatusCode::CREATED);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    let row = &page["items"][0];
    let bytes = app.download(&t, "self", "race.bin").await;
    assert_eq!(row["size"], bytes.len());
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&bytes));
    assert_eq!(row["sha256"], sha);
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn one_upload_url_used_concurrently_commits_once() {
    let app = Arc::new(TestApp::start().await);
    let t = app.token("alice", "study");
    let posted = json(
        app.post_file(
            &t,
            "self",
            "once.bin",
            &json!({"mimeType": "application/octet-stream"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (app, url) = (Arc::clone(&app), url.clone());
            tokio::spawn(async move {
                let res = app
                    .client
                    .put(&url)
                    .header("content-type", "application/octet-stream")
                    .body(noise(50_000, i))
                    .send()
                    .await
                    .unwrap();
                res.status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::FORBIDDEN),
        "{statuses:?}"
    );
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn every_access_is_audited_without_secrets() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let r = app.token_with(
        "rita",
        "study",
        &[participant_files::auth::Role::Researcher],
    );
    app.put_file(
        &t,
        "self",
        "a.txt",
        "text/plain",
        b"secret content".to_vec(),
    )
    .await;
    app.list(&r, "alice", "?pageSize=5").await;
    let url = app.get_file(&r, "alice", "a.txt").await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    app.client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    app.get_file(&t, "self", "missing").await;
    app.delete_file(&t, "self", "a.txt").await;
    let lines = app.audit();
    let summary: Vec<(String, String, String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().into(),
                l["actor"].as_str().unwrap().into(),
                l["role"].as_str().unwrap().into(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, u64)> = [
        ("upload", "alice", "participant", 201),
        ("list", "rita", "researcher", 200),
        ("read", "rita", "researcher", 302),
        ("download", "rita", "researcher", 200),
        ("read", "alice", "participant", 404),
        ("delete", "alice", "participant", 200),
    ]
    .iter()
    .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), *d))
    .collect();
    assert_eq!(summary, expected);
    for l in &lines {
        assert_eq!(l["app"], "study");
        assert_eq!(l["participant"], "alice");
        assert!(l["requestId"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(l["time"].as_str().is_some());
    }
    assert_eq!(lines[3]["bytes"], 14);
    let text = std::fs::read_to_string(&app.audit_path).unwrap();
    let capability = url.rsplit('/').next().unwrap();
    for secret in [t.as_str(), r.as_str(), capability, "secret content"] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
}
