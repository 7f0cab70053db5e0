//! On a bucket with S3 versioning enabled, no path that deletes an object leaves a version or a
//! delete marker behind: DELETE, replace, erase, an infected arrival's refusal, termination and
//! expiry of resumable uploads, and `reconcile`.
//!
//! s3s-fs keeps no versions, so these run the service's S3 store on `moto_server` (the emulator
//! `scripts/test` starts for DynamoDB, which serves S3 versioning too). The SDK reads its S3
//! endpoint from the environment, which a test may not change in its own process: each test
//! runs itself again in a child process whose `AWS_ENDPOINT_URL_S3` is moto's.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use common::tus::{create, patch};
use common::{TestApp, eicar, json, noise};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

const IN_CHILD: &str = "PF_TEST_VERSIONED_CHILD";

/// Runs the test `name` in a child process whose S3 endpoint is moto, and fails with its output
/// when it fails; in that child, runs `body`.
fn on_moto<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var_os(IN_CHILD).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
        return;
    }
    common::aws_env();
    let moto = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_CHILD, "1")
        .env("AWS_ENDPOINT_URL_S3", moto)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed on moto:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn s3() -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// Starts the service on fresh resources and turns versioning on in its bucket before any
/// object is written.
async fn versioned(flags: &[&str], presigned: bool) -> (TestApp, aws_sdk_s3::Client) {
    let app = if presigned {
        TestApp::start_presigned(flags).await
    } else {
        TestApp::start_aws(flags).await
    };
    let s3 = s3().await;
    s3.put_bucket_versioning()
        .bucket(app.bucket.as_ref().unwrap())
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("moto turns versioning on");
    (app, s3)
}

/// Every version and delete marker (key, version ID) the bucket keeps under `study/user/`.
async fn versions_of(app: &TestApp, s3: &aws_sdk_s3::Client, user: &str) -> Vec<String> {
    let out = s3
        .list_object_versions()
        .bucket(app.bucket.as_ref().unwrap())
        .prefix(format!("files/study/{user}/"))
        .send()
        .await
        .unwrap();
    assert_ne!(out.is_truncated(), Some(true));
    let versions = out.versions().iter().map(|v| (v.key(), v.version_id()));
    let markers = out
        .delete_markers()
        .iter()
        .map(|m| (m.key(), m.version_id()));
    versions
        .chain(markers)
        .map(|(k, v)| format!("{} {}", k.unwrap_or("?"), v.unwrap_or("?")))
        .collect()
}

/// Waits (deletes after a refusal or a termination may run in the background) until the bucket
/// keeps nothing of `user`, and fails naming what is left.
async fn assert_no_versions(app: &TestApp, s3: &aws_sdk_s3::Client, user: &str) {
    let start = Instant::now();
    loop {
        let left = versions_of(app, s3, user).await;
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "versions of {user} left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ok(status: StatusCode, what: &str) {
    assert!(status.is_success(), "{what}: {status}");
}

#[test]
fn delete_replace_and_erase_leave_no_version() {
    on_moto("delete_replace_and_erase_leave_no_version", || async {
        let (app, s3) = versioned(&[], false).await;
        let t = app.token("alice", "study");
        let mime = "application/octet-stream";
        ok(
            app.put_file(&t, "self", "a.bin", mime, noise(3000, 1))
                .await
                .status(),
            "PUT a",
        );
        ok(
            app.put_file(&t, "self", "gone.bin", mime, noise(3000, 2))
                .await
                .status(),
            "PUT gone",
        );
        // Replace: the first object of a.bin goes, every version of it.
        ok(
            app.put_file(&t, "self", "a.bin", mime, noise(4000, 3))
                .await
                .status(),
            "PUT a again",
        );
        ok(
            app.delete_file(&t, "self", "gone.bin").await.status(),
            "DELETE",
        );
        let left = versions_of(&app, &s3, "alice").await;
        assert_eq!(left.len(), 1, "only a.bin's current object stays: {left:?}");
        assert_eq!(app.download(&t, "self", "a.bin").await, noise(4000, 3));
        ok(
            app.put_file(&t, "self", "b.bin", mime, noise(100, 4))
                .await
                .status(),
            "PUT b",
        );
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
        assert_eq!(erased["count"], 2, "{erased}");
        assert_no_versions(&app, &s3, "alice").await;
    });
}

#[test]
fn an_infected_arrival_leaves_no_version() {
    on_moto("an_infected_arrival_leaves_no_version", || async {
        let clamd = std::env::var("PF_TEST_CLAMD").expect(
            "PF_TEST_CLAMD is not set: run the suite with scripts/test, which starts clamd",
        );
        let (app, s3) = versioned(
            &[
                "--clamd",
                &clamd,
                "--upload-mode",
                "presigned",
                "--settle-interval",
                "1s",
            ],
            true,
        )
        .await;
        let t = app.token("carol", "study");
        let posted = json(
            app.post_file(
                &t,
                "self",
                "bad.bin",
                &json!({"mimeType": "application/octet-stream"}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let url = posted["uploadUrl"].as_str().unwrap();
        let mut bad = noise(2000, 5);
        bad.extend(eicar());
        // Sent twice, as a client that retries does: two versions of the arrival.
        for _ in 0..2 {
            let res = app
                .client
                .put(url)
                .header("content-type", "application/octet-stream")
                .body(bad.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
        let start = Instant::now();
        while !app
            .audit()
            .iter()
            .any(|l| l["status"] == 422 && l["fileId"] == "bad.bin")
        {
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "the infected arrival was not refused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_no_versions(&app, &s3, "carol").await;
    });
}

#[test]
fn terminated_and_expired_resumable_uploads_leave_no_version() {
    on_moto(
        "terminated_and_expired_resumable_uploads_leave_no_version",
        || async {
            let (app, s3) = versioned(&["--resumable-ttl", "2s"], false).await;
            let t = app.token("dave", "study");
            // Terminated: its tails (two appends, the second tail written under the name of
            // none before) and its multipart upload go.
            let path = create(&app, &t, "t.bin", Some(10_000)).await;
            ok(
                patch(&app, &t, &path, 0, noise(1000, 6)).await.status(),
                "PATCH",
            );
            ok(
                patch(&app, &t, &path, 1000, noise(1000, 7)).await.status(),
                "PATCH",
            );
            assert!(!versions_of(&app, &s3, "dave").await.is_empty());
            let res = app
                .request(Method::DELETE, &path)
                .bearer_auth(&t)
                .header("tus-resumable", "1.0.0")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
            assert_no_versions(&app, &s3, "dave").await;

            // Expired: reconcile removes it, every version of its tails.
            let path = create(&app, &t, "e.bin", Some(10_000)).await;
            ok(
                patch(&app, &t, &path, 0, noise(1000, 8)).await.status(),
                "PATCH",
            );
            let start = Instant::now();
            while !app.reconcile("1h").contains("expired resumable upload") {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the upload never expired"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_no_versions(&app, &s3, "dave").await;
        },
    );
}

#[test]
fn reconcile_removes_what_plain_deletes_left_behind() {
    on_moto(
        "reconcile_removes_what_plain_deletes_left_behind",
        || async {
            let (app, s3) = versioned(&[], false).await;
            let bucket = app.bucket.clone().unwrap();
            // What an earlier version of the service left on a versioned bucket: an object deleted
            // with a plain DeleteObject (two versions kept behind a delete marker), and an object
            // no row names.
            let put = |key: String, body: Vec<u8>| {
                s3.put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into())
                    .send()
            };
            let deleted = format!("files/study/erin/{}", "a".repeat(32));
            put(deleted.clone(), noise(500, 9)).await.unwrap();
            put(deleted.clone(), noise(600, 10)).await.unwrap();
            s3.delete_object()
                .bucket(&bucket)
                .key(&deleted)
                .send()
                .await
                .unwrap();
            put(
                format!("files/study/erin/{}", "b".repeat(32)),
                noise(700, 11),
            )
            .await
            .unwrap();
            assert_eq!(versions_of(&app, &s3, "erin").await.len(), 4);
            let out = app.reconcile("0s");
            assert!(out.contains("object without a row"), "{out}");
            assert_no_versions(&app, &s3, "erin").await;
        },
    );
}
