//! tus-js-client in its IETF draft modes (`ietf-draft-03`: interop version 5, `ietf-draft-05`:
//! 6) against the service in its own process, on the backend set `PF_TEST_BACKEND` names: 20 MiB
//! in 4 MiB appends, the service killed with SIGKILL in the middle and started again on the
//! same port; the client resumes by itself (HEAD, then PATCH from the offset), and the download's
//! SHA-256 is the file's.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{client_service, download_followed, kill_and_restart, lines};
use common::{Process, closed_port, noise};
use sha2::Digest;

const SIZE: usize = 20 << 20;

fn token() -> String {
    common::participant_token("alice", "study")
}

async fn upload_with(protocol: &str) {
    let data = tempfile::tempdir().unwrap();
    let (env, args) = client_service(data.path(), &[]).await;
    let port = closed_port();
    let mut service = Process::spawn_on(port, &env, &args).await;
    let bytes = noise(SIZE, 24);
    let file = data.path().join("upload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let file_id = format!("{protocol}.bin");
    let endpoint = format!("http://127.0.0.1:{port}/v3/participants/self/uploads");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let mut child = Command::new("node")
        .current_dir(&dir)
        .arg(dir.join("draft_upload.mjs"))
        .args([
            &endpoint,
            &file.display().to_string(),
            &token(),
            "4",
            &file_id,
            protocol,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("node: {e}; scripts/backends.sh installs tus-js-client"));
    let mut rx = lines(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut killed = false;
    loop {
        let line = tokio::time::timeout(Duration::from_mins(2), rx.recv())
            .await
            .expect("the client said nothing for 2 minutes")
            .expect("the client ended without finishing");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(e) = event.get("error") {
            panic!("{protocol}: {e}");
        }
        if event.get("done").is_some() {
            break;
        }
        let sent = event.get("sent").and_then(serde_json::Value::as_u64);
        if !killed && sent.is_some_and(|s| s >= 8 << 20) {
            // In the middle: SIGKILL, no shutdown, no flush; then the same service again.
            kill_and_restart(&mut service, port, &env, &args).await;
            killed = true;
        }
        assert!(
            started.elapsed() < Duration::from_mins(5),
            "{protocol}: too slow"
        );
    }
    assert!(child.wait().unwrap().success());
    assert!(killed, "{protocol}: the kill happened");
    let got = download_followed(&service.base, &token(), &file_id).await;
    assert_eq!(got.len(), SIZE);
    assert_eq!(
        sha2::Sha256::digest(&got),
        sha2::Sha256::digest(&bytes),
        "{protocol}: the download's sha256"
    );
}

#[tokio::test]
async fn tus_js_client_draft_03_resumes_after_the_service_was_killed() {
    upload_with("ietf-draft-03").await;
}

#[tokio::test]
async fn tus_js_client_draft_05_resumes_after_the_service_was_killed() {
    upload_with("ietf-draft-05").await;
}
