//! Backends that fail: an unreachable S3 or DynamoDB gives 503 naming it, and nothing is left
//! half-written (no row without its object, no object without its row).

mod common;

use common::{
    JWT_SECRET, Process, TestApp, aws_env, closed_port, error, json, noise, open_backends,
    unique_name,
};
use reqwest::{Client, StatusCode};

fn token() -> String {
    common::participant_token("alice", "study")
}

/// Fresh bucket and table, then the service in its own process with `env` on top.
async fn service_with(env: Vec<(&'static str, String)>) -> (Process, String) {
    aws_env();
    let bucket = unique_name("pf");
    let table = unique_name("pf");
    let store = format!("s3://{bucket}");
    let index = format!("dynamodb://{table}");
    let _ = open_backends(&[
        "--store",
        &store,
        "--index",
        &index,
        "--s3-force-path-style",
        "true",
    ])
    .await;
    let mut all = vec![
        ("PF_STORE", store),
        ("PF_INDEX", index),
        ("PF_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", common::URL_SECRET.to_owned()),
        ("PF_UPLOAD_MODE", "streaming".to_owned()),
        ("PF_DOWNLOAD_MODE", "streaming".to_owned()),
        (
            "PF_DATA_DIR",
            tempfile::tempdir().unwrap().keep().display().to_string(),
        ),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
    ];
    all.extend(env);
    (Process::spawn(&all, &[]).await, bucket)
}

#[tokio::test]
async fn s3_unreachable() {
    let (service, bucket) = service_with(vec![(
        "AWS_ENDPOINT_URL_S3",
        format!("http://127.0.0.1:{}", closed_port()),
    )])
    .await;
    let c = Client::new();
    let res = c
        .get(format!("{}/ready", service.base))
        .send()
        .await
        .unwrap();
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("s3 file store"),
        "{body}"
    );
    assert_eq!(body["checks"]["index"]["status"], "ok");
    let url = format!("{}/v3/participants/self/files/a.bin", service.base);
    let res = c
        .put(&url)
        .bearer_auth(token())
        .body(noise(1000, 1))
        .send()
        .await
        .unwrap();
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("s3 file store"),
        "{body}"
    );
    // No row was written for bytes that were not stored.
    let res = c
        .get(format!("{}/v3/participants/self/files", service.base))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(res, StatusCode::OK).await["items"],
        serde_json::json!([])
    );
    assert!(!aws_env().s3_dir.join(&bucket).join("study").exists());
}

#[tokio::test]
async fn dynamodb_unreachable() {
    let (service, bucket) = service_with(vec![(
        "AWS_ENDPOINT_URL_DYNAMODB",
        format!("http://127.0.0.1:{}", closed_port()),
    )])
    .await;
    let c = Client::new();
    let res = c
        .get(format!("{}/ready", service.base))
        .send()
        .await
        .unwrap();
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("dynamodb file index"),
        "{body}"
    );
    assert_eq!(body["checks"]["store"]["status"], "ok");
    // Small (one PutObject) and large (multipart) bodies: stored, then removed again when no
    // row can name them.
    for len in [1000, 9 * 1024 * 1024] {
        let url = format!("{}/v3/participants/self/files/a.bin", service.base);
        let res = c
            .put(&url)
            .bearer_auth(token())
            .body(noise(len, 2))
            .send()
            .await
            .unwrap();
        let body = error(
            res,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
        )
        .await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("dynamodb file index"),
            "{body}"
        );
    }
    let mut objects = Vec::new();
    common::walk_files(&aws_env().s3_dir.join(&bucket), &mut objects);
    assert!(objects.is_empty(), "objects without rows: {objects:?}");
    assert!(common::s3_multipart_leftovers(&aws_env().s3_dir, &bucket).is_empty());
}

#[tokio::test]
async fn a_table_that_disappears_leaves_no_object_behind() {
    let app = TestApp::start_aws(&[]).await;
    let t = app.token("alice", "study");
    json(
        app.put_file(&t, "self", "a.txt", "text/plain", b"first".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let table = app
        .flags()
        .iter()
        .find_map(|f| f.strip_prefix("dynamodb://"))
        .unwrap()
        .to_owned();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let res = app
        .put_file(&t, "self", "b.txt", "text/plain", b"second".to_vec())
        .await;
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("dynamodb"),
        "{body}"
    );
    // Only the first file's object remains.
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}
