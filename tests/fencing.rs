//! The resumable writer's lease fences a stalled instance, end to end: two service processes on
//! one S3 and one DynamoDB; one is stopped (SIGSTOP) mid-PATCH while the other takes the upload
//! over and completes it, then woken (SIGCONT).

mod common;

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use common::processes::{create_tus_upload, fresh_aws, until};
use common::{Process, noise, participant_token};
use participant_files::model::{AppId, Owner, ScanStatus, UploadOutcome, UserId};
use reqwest::{Client, StatusCode};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn signal(child: &std::process::Child, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig}");
}

/// The file's bytes, as a GET serves them (streaming downloads: in the answer itself).
async fn download(client: &Client, base: &str, token: &str, file: &str) -> Vec<u8> {
    let res = client
        .get(format!("{base}/v3/participants/self/files/{file}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.bytes().await.unwrap().to_vec()
}

/// Every stored file under `dir` that holds `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    common::walk_files(dir, &mut files);
    files.retain(|f| {
        std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    });
    files
}

#[tokio::test]
async fn an_instance_stopped_mid_patch_that_wakes_after_a_takeover_changes_nothing() {
    let clamd = std::env::var("PF_TEST_CLAMD").expect(
        "PF_TEST_CLAMD is not set: run the suite with scripts/test, which starts clamd on loopback",
    );
    let s3_dir = common::aws_env().s3_dir;
    let aws = fresh_aws().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = |data: &tempfile::TempDir| {
        vec![
            ("PF_STORE", aws.store.clone()),
            ("PF_INDEX", aws.index.clone()),
            ("PF_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("PF_JWT_SECRET", common::JWT_SECRET.to_owned()),
            ("PF_URL_SECRET", common::URL_SECRET.to_owned()),
            ("PF_UPLOAD_MODE", "streaming".to_owned()),
            ("PF_DOWNLOAD_MODE", "streaming".to_owned()),
            ("PF_CLAMD", clamd.clone()),
            ("PF_DATA_DIR", data.path().display().to_string()),
            ("PF_AUDIT_LOG", "stderr".to_owned()),
        ]
    };
    let a = Process::spawn(&env(&dir_a), &[]).await;
    let b = Process::spawn(&env(&dir_b), &[]).await;
    let token = participant_token("zoe", "study");
    let client = Client::new();
    let len: usize = 3 << 20;
    let (good, zombie) = (noise(len, 40), noise(len, 41));
    let (path, id) = create_tus_upload(&a.base, &token, len, "fenced.bin").await;
    let owner = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("zoe").unwrap(),
    };
    let uploads = aws.backends.index.uploads();
    let row = || async {
        uploads
            .get_upload(&owner, &id)
            .await
            .unwrap()
            .unwrap()
            .value
    };

    // The zombie: a PATCH to a, with 1 MiB of its bytes read by a and the rest still to come.
    let addr = a.base.trim_start_matches("http://").to_owned();
    let mut zombie_conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len}\r\n\r\n"
    );
    zombie_conn.write_all(head.as_bytes()).await.unwrap();
    zombie_conn.write_all(&zombie[..1 << 20]).await.unwrap();
    let port = zombie_conn.local_addr().unwrap().port();
    until(
        Duration::from_secs(30),
        "a to read the zombie's bytes",
        || async { common::tus::drained(port) },
    )
    .await;
    let lease = row().await.writer.expect("a holds the upload's lease");
    signal(&a.child, "-STOP");

    // a's lease runs out unrenewed; b takes the upload over and completes it with other bytes.
    until(Duration::from_mins(1), "a's lease to run out", || async {
        row().await.writer.is_none_or(|w| !w.live(Utc::now()))
    })
    .await;
    let offset = usize::try_from(row().await.offset).unwrap();
    let res = client
        .patch(format!("{}{path}", b.base))
        .bearer_auth(&token)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset)
        .body(good[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "{}",
        res.text().await.unwrap()
    );
    let done = row().await;
    assert_eq!(done.outcome, Some(UploadOutcome::Committed));
    assert!(done.writer.is_none_or(|w| w.epoch > lease.epoch));

    // a wakes, and its client sends the rest of the zombie's bytes.
    signal(&a.child, "-CONT");
    let _ = zombie_conn.write_all(&zombie[1 << 20..]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_mins(1), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match zombie_conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        !answer.starts_with("HTTP/1.1 2"),
        "the stopped instance's PATCH was taken: {answer}"
    );

    // The file is b's bytes, as clamd scanned them, whichever instance serves it.
    let file = aws
        .backends
        .index
        .get(&owner, &done.file_id)
        .await
        .unwrap()
        .unwrap()
        .value
        .current
        .unwrap();
    assert_eq!(file.scan_status, ScanStatus::Clean);
    assert_eq!(
        file.sha256.as_deref(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(&good))
                .as_str()
        )
    );
    for base in [&a.base, &b.base] {
        assert!(download(&client, base, &token, done.file_id.as_str()).await == good);
    }
    // None of the zombie's bytes are in the committed object; once reconcile ran, none are
    // anywhere in the bucket.
    let sample = &zombie[..4096];
    let bucket_dir = s3_dir.join(&aws.bucket);
    let committed: Vec<_> = holding(&bucket_dir, sample)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(file.key.as_str()))
        .collect();
    assert!(committed.is_empty(), "{committed:?}");
    let mut reconcile = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"));
    reconcile.args(["reconcile", "--min-age", "0s"]);
    for (k, v) in env(&dir_b) {
        reconcile.env(k, v);
    }
    let out = reconcile.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let left = holding(&bucket_dir, sample);
    assert!(
        left.is_empty(),
        "the zombie's bytes outlived the upload: {left:?}"
    );
}
