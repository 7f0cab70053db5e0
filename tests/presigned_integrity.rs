//! Presigned mode's integrity holes, closed: an upload URL used again after its upload became
//! the file, arrived uploads left by DELETE and erase, quotas, and the work one list may do.
//! On `s3s-fs` (signatures verified) and `moto_server`.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestApp, error, json, noise};
use participant_files::auth::Role;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

async fn upload_url(app: &TestApp, token: &str, user: &str, file: &str) -> String {
    let posted = json(
        app.post_file(
            token,
            user,
            file,
            &json!({"mimeType": "application/octet-stream"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    posted["uploadUrl"].as_str().unwrap().to_owned()
}

/// A PUT straight to S3, as a Bridge client sends it (Content-Type only).
async fn put_to_s3(app: &TestApp, url: &str, body: Vec<u8>) -> StatusCode {
    app.client
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// What a download through the GET's 302 serves.
async fn served(app: &TestApp, token: &str, file: &str) -> Vec<u8> {
    let res = app.get_file(token, "self", file).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let res = app.client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_used_upload_url_never_changes_what_is_served() {
    let app = TestApp::start_presigned(&[]).await;
    let t = app.token("alice", "study");
    let url = upload_url(&app, &t, "self", "plaque.bin").await;
    let first = noise(1024, 1);
    assert_eq!(put_to_s3(&app, &url, first.clone()).await, StatusCode::OK);
    let got = json(
        app.get_file(&t, "self", "plaque.bin").await,
        StatusCode::FOUND,
    )
    .await;
    assert_eq!(got["size"], 1024);
    assert_eq!(got["sha256"], sha(&first));

    // The same URL again, with 3 MiB: S3 takes it (the URL has not expired), but the file stays
    // what was settled, in the listing, the GET and the bytes served.
    assert_eq!(
        put_to_s3(&app, &url, noise(3 * 1024 * 1024, 2)).await,
        StatusCode::OK
    );
    let got = json(
        app.get_file(&t, "self", "plaque.bin").await,
        StatusCode::FOUND,
    )
    .await;
    assert_eq!(
        (got["size"].clone(), got["sha256"].clone()),
        (json!(1024), json!(sha(&first)))
    );
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"][0]["size"], 1024);
    assert_eq!(served(&app, &t, "plaque.bin").await, first);
    // The bytes sent to the used URL are gone after reconcile: one object for one file.
    assert_eq!(app.stored_files().len(), 2, "{:?}", app.stored_files());
    let report = app.reconcile("1h");
    assert!(report.contains("object without a row"), "{report}");
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    assert_eq!(served(&app, &t, "plaque.bin").await, first);

    // After a DELETE, the URL can put bytes into the bucket, but never back into the file, and
    // reconcile removes them.
    json(
        app.delete_file(&t, "self", "plaque.bin").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(put_to_s3(&app, &url, noise(2048, 3)).await, StatusCode::OK);
    error(
        app.get_file(&t, "self", "plaque.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    app.reconcile("1h");
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
}

#[tokio::test]
async fn delete_removes_an_arrived_upload_that_expired_unsettled() {
    let app = TestApp::start_presigned(&["--url-ttl", "2s"]).await;
    let t = app.token("alice", "study");
    let url = upload_url(&app, &t, "self", "late.bin").await;
    assert_eq!(put_to_s3(&app, &url, noise(5000, 4)).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Nothing looked at the file before the URL expired; the bytes arrived all the same.
    json(
        app.delete_file(&t, "self", "late.bin").await,
        StatusCode::OK,
    )
    .await;
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    error(
        app.delete_file(&t, "self", "late.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn erase_removes_every_file_and_every_arrived_upload_past_a_page() {
    let app =
        TestApp::start_presigned(&["--url-ttl", "5s", "--max-pending-per-participant", "1000"])
            .await;
    let t = app.token("bob", "study");
    let worker = app.token_with("w", "study", &[Role::Worker]);
    // 240 uploads that arrived and were never looked at, 10 settled files, and 5 URLs never
    // used: erase pages through all of them.
    for i in 0..250 {
        let url = upload_url(&app, &t, "self", &format!("f{i:03}")).await;
        assert_eq!(
            put_to_s3(&app, &url, noise(100 + i, i as u64)).await,
            StatusCode::OK
        );
    }
    for i in 240..250 {
        json(
            app.get_file(&t, "self", &format!("f{i:03}")).await,
            StatusCode::FOUND,
        )
        .await;
    }
    for i in 0..5 {
        upload_url(&app, &t, "self", &format!("unused{i}")).await;
    }
    // Half of them expire unsettled before the erase.
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let erased = json(
        app.request(reqwest::Method::DELETE, "/v3/participants/bob/files")
            .bearer_auth(&worker)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(erased["count"], 250, "{erased}");
    assert!(
        app.stored_files().is_empty(),
        "{} left",
        app.stored_files().len()
    );
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn quotas_hold_for_presigned_uploads() {
    let app = TestApp::start_presigned(&[
        "--max-files-per-participant",
        "2",
        "--max-bytes-per-participant",
        "3KiB",
    ])
    .await;
    let t = app.token("carol", "study");
    let a = upload_url(&app, &t, "self", "a").await;
    let b = upload_url(&app, &t, "self", "b").await;
    // Two pending uploads count as two files: a third URL is refused at the POST.
    error(
        app.post_file(&t, "self", "c", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    assert_eq!(put_to_s3(&app, &a, noise(2048, 1)).await, StatusCode::OK);
    assert_eq!(put_to_s3(&app, &b, noise(2048, 2)).await, StatusCode::OK);
    // a settles (2 KiB); b would take the participant to 4 KiB and is deleted, not settled.
    json(app.get_file(&t, "self", "a").await, StatusCode::FOUND).await;
    error(
        app.get_file(&t, "self", "b").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    let refused: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|l| l["fileId"] == "b" && l["action"] == "upload")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["status"], 413);
    // With b gone, a second file fits again; a declared size over the byte quota does not.
    error(
        app.post_file(
            &t,
            "self",
            "c",
            &json!({"mimeType": "text/plain", "size": 2048}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    json(
        app.post_file(
            &t,
            "self",
            "c",
            &json!({"mimeType": "text/plain", "size": 1000}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn arrivals_are_audited_with_who_asked_for_the_url() {
    let app = TestApp::start_presigned(&[]).await;
    let worker = app.token_with("w-1", "study", &[Role::Worker]);
    let url = upload_url(&app, &worker, "dave", "scan.bin").await;
    assert_eq!(put_to_s3(&app, &url, noise(700, 7)).await, StatusCode::OK);
    let researcher = app.token_with("r-1", "study", &[Role::Researcher]);
    let page = json(app.list(&researcher, "dave", "").await, StatusCode::OK).await;
    assert_eq!(page["items"][0]["size"], 700);
    let uploads: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "upload")
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let line = &uploads[0];
    assert_eq!(
        (
            &line["actor"],
            &line["role"],
            &line["participant"],
            &line["status"],
            &line["bytes"]
        ),
        (
            &json!("w-1"),
            &json!("worker"),
            &json!("dave"),
            &json!(201),
            &json!(700)
        )
    );
}

#[tokio::test]
async fn open_upload_urls_and_the_work_of_one_list_are_bounded() {
    let app = TestApp::start_presigned(&["--max-pending-per-participant", "25"]).await;
    let t = app.token("erin", "study");
    let mut urls = Vec::new();
    for i in 0..25 {
        urls.push(upload_url(&app, &t, "self", &format!("p{i:02}")).await);
    }
    error(
        app.post_file(&t, "self", "one-more", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequestsException",
    )
    .await;
    // A new URL for a file that has one replaces it, and is not refused.
    urls[0] = upload_url(&app, &t, "self", "p00").await;
    for url in &urls {
        assert_eq!(put_to_s3(&app, url, noise(10, 1)).await, StatusCode::OK);
    }
    // Each list looks for at most ten arrivals, so the files appear ten at a time.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let page = json(app.list(&t, "self", "?pageSize=100").await, StatusCode::OK).await;
        seen.push(page["items"].as_array().unwrap().len());
    }
    assert_eq!(seen, [10, 20, 25]);
}
