//! A service killed (SIGKILL) mid-PATCH leaves nothing of the upload behind once the upload has
//! expired and `participant-files reconcile` has run: no object, part, tail or multipart upload
//! in the bucket, no staged file in the data folder.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use common::processes::{create_tus_upload, fresh_aws, until};
use common::{Process, noise, participant_token};
use participant_files::model::{AppId, Owner, UserId};
use tokio::io::AsyncWriteExt;

/// Every file under `dir` whose path names `id` or whose bytes hold `sample`.
fn traces(dir: &Path, id: &str, sample: &[u8]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    common::walk_files(dir, &mut files);
    files.retain(|f| {
        f.to_string_lossy().contains(id)
            || std::fs::read(f).is_ok_and(|b| b.windows(sample.len()).any(|w| w == sample))
    });
    files
}

/// Starts the service with `env`, sends a PATCH of 12 MiB of which 9 MiB arrive (past the
/// first durable point: a part on S3, bytes synced on the local store), kills the service,
/// waits for the upload's expiry, runs reconcile, and returns the upload's ID and a sample of
/// its bytes.
async fn kill_mid_patch(
    env: &[(&'static str, String)],
    index: &dyn participant_files::index::FileIndex,
) -> (String, Vec<u8>) {
    let mut service = Process::spawn(env, &[]).await;
    let token = participant_token("kim", "study");
    let len: usize = 12 << 20;
    let bytes = noise(len, 50);
    let (path, id) = create_tus_upload(&service.base, &token, len, "killed.bin").await;
    let owner = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("kim").unwrap(),
    };
    let addr = service.base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&bytes[..9 << 20]).await.unwrap();
    let port = conn.local_addr().unwrap().port();
    let uploads = index.uploads();
    until(
        Duration::from_secs(30),
        "the first durable point",
        || async {
            common::tus::drained(port)
                && uploads
                    .get_upload(&owner, &id)
                    .await
                    .unwrap()
                    .is_some_and(|r| r.value.offset >= 8 << 20)
        },
    )
    .await;
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    drop(conn);
    until(Duration::from_secs(30), "the upload's expiry", || async {
        uploads
            .get_upload(&owner, &id)
            .await
            .unwrap()
            .is_none_or(|r| r.value.expires_on < Utc::now())
    })
    .await;
    let mut reconcile = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"));
    reconcile.args(["reconcile", "--min-age", "0s"]);
    for (k, v) in env {
        reconcile.env(k, v);
    }
    let out = reconcile.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        uploads.get_upload(&owner, &id).await.unwrap().is_none(),
        "reconcile left the expired upload's row"
    );
    (id.as_str().to_owned(), bytes[..4096].to_vec())
}

#[tokio::test]
async fn a_kill_mid_patch_leaves_nothing_after_expiry_and_reconcile_on_the_local_store() {
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("PF_DATA_DIR", data.path().display().to_string()),
        ("PF_JWT_SECRET", common::JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", common::URL_SECRET.to_owned()),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
        ("PF_RESUMABLE_TTL", "3s".to_owned()),
    ];
    let index = participant_files::index::SqliteFileIndex::open(&data.path().join("index.sqlite"))
        .await
        .unwrap();
    let (id, sample) = kill_mid_patch(&env, &index).await;
    let left = traces(data.path(), &id, &sample);
    assert!(left.is_empty(), "left in the data folder: {left:?}");
}

#[tokio::test]
async fn a_kill_mid_patch_leaves_nothing_after_expiry_and_reconcile_on_s3() {
    let s3_dir = common::aws_env().s3_dir;
    let aws = fresh_aws().await;
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("PF_STORE", aws.store.clone()),
        ("PF_INDEX", aws.index.clone()),
        ("PF_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("PF_DATA_DIR", data.path().display().to_string()),
        ("PF_JWT_SECRET", common::JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", common::URL_SECRET.to_owned()),
        ("PF_UPLOAD_MODE", "streaming".to_owned()),
        ("PF_DOWNLOAD_MODE", "streaming".to_owned()),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
        ("PF_RESUMABLE_TTL", "3s".to_owned()),
    ];
    let (id, sample) = kill_mid_patch(&env, aws.backends.index.as_ref()).await;
    let mut left = traces(&s3_dir.join(&aws.bucket), &id, &sample);
    left.extend(common::s3_multipart_leftovers(&s3_dir, &aws.bucket));
    left.extend(traces(data.path(), &id, &sample));
    assert!(
        left.is_empty(),
        "left in the bucket or the data folder: {left:?}"
    );
}
