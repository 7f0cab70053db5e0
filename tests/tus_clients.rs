//! Real tus clients against the service in its own process, on the backend set
//! `PF_TEST_BACKEND` names: tus-js-client (npm), tuspy (`PyPI`) and the service's own
//! command-line client (`participant-files upload`) upload 64 MiB in 5 MiB chunks.
//! In one run of each the service is killed with SIGKILL mid-upload and started again on the
//! same port; the client resumes by itself (HEAD, then PATCH from the offset), and the file is
//! the bytes that were sent. On S3 the parts are 8 MiB, so that the kill (after 20 MiB) leaves
//! 4 MiB in a tail, under S3's 5 MiB minimum part, for the restarted service to go on from.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{client_service, download_followed, kill_and_restart, lines};
use common::{Process, closed_port, noise};

const SIZE: usize = 64 << 20;

fn token() -> String {
    common::participant_token("alice", "study")
}

/// A client's command line for one upload; `kill` stops the service at about 20 MiB and
/// starts it again.
fn client(which: &str, endpoint: &str, file: &std::path::Path, file_id: &str) -> Command {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let (program, script) = match which {
        "js" => ("node", "tus_upload.mjs"),
        _ => ("python3", "tus_upload.py"),
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(&dir)
        .arg(dir.join(script))
        .args([
            endpoint,
            &file.display().to_string(),
            &token(),
            "5",
            file_id,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

async fn upload_with(which: &str, kill: bool) {
    let data = tempfile::tempdir().unwrap();
    let (env, args) = client_service(data.path(), &[("PF_MAX_FILE_SIZE", "100MiB")]).await;
    let port = closed_port();
    let mut service = Process::spawn_on(port, &env, &args).await;
    let bytes = noise(SIZE, 42);
    let file = data.path().join("upload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let file_id = format!("{which}-{kill}.bin");
    let endpoint = format!("http://127.0.0.1:{port}/v3/participants/self/uploads");
    let mut child = client(which, &endpoint, &file, &file_id)
        .spawn()
        .unwrap_or_else(|e| panic!("{which} client: {e}; run the suite with scripts/test, which installs the tus clients"));
    let mut rx = lines(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut killed = false;
    let done = loop {
        let line = tokio::time::timeout(Duration::from_mins(2), rx.recv())
            .await
            .expect("the client said nothing for 2 minutes")
            .expect("the client ended without finishing");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(e) = event.get("error") {
            panic!("{which} client: {e}");
        }
        if let Some(url) = event.get("done") {
            break url.as_str().unwrap().to_owned();
        }
        let sent = event.get("sent").and_then(serde_json::Value::as_u64);
        if kill && !killed && sent.is_some_and(|s| s >= 20 << 20) {
            // SIGKILL: no shutdown, no flush; then the same service on the same port.
            kill_and_restart(&mut service, port, &env, &args).await;
            killed = true;
        }
        assert!(
            started.elapsed() < Duration::from_mins(5),
            "{which}: too slow"
        );
    };
    assert!(child.wait().unwrap().success());
    assert_eq!(killed, kill, "{which}: the kill happened");
    assert!(done.contains("/v3/participants/self/uploads/"), "{done}");
    // The file is what was sent, byte for byte.
    let got = download_followed(&service.base, &token(), &file_id).await;
    assert!(
        got.len() == SIZE && got[..] == bytes[..],
        "{which}: the bytes differ"
    );
}

#[tokio::test]
async fn tus_js_client_uploads_in_chunks() {
    upload_with("js", false).await;
}

#[tokio::test]
async fn tus_js_client_resumes_after_the_service_was_killed() {
    upload_with("js", true).await;
}

#[tokio::test]
async fn tuspy_uploads_in_chunks() {
    upload_with("py", false).await;
}

#[tokio::test]
async fn tuspy_resumes_after_the_service_was_killed() {
    upload_with("py", true).await;
}

/// `participant-files upload` of `file`, its progress lines (stderr) sent to a channel.
fn cli_upload(
    base: &str,
    file: &std::path::Path,
    file_id: &str,
    state: &std::path::Path,
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["upload", &file.display().to_string(), "--url", base])
        .args(["--file-id", file_id, "--chunk-size", "5MiB"])
        .env("PF_TOKEN", token())
        .env("XDG_STATE_HOME", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(child.stderr.take().unwrap());
    (child, rx)
}

/// Reads progress lines until one says at least `bytes` went up; every line read.
async fn progress_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    bytes: u64,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_mins(2), rx.recv())
            .await
            .expect("the client said nothing for 2 minutes")
            .expect("the client ended first");
        seen.push(line.clone());
        let sent = line
            .strip_prefix("uploaded ")
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if sent.is_some_and(|s| s >= bytes) {
            return seen;
        }
    }
}

/// Waits for the client's end; its exit code, stdout and every stderr line left (read to the
/// end of stderr: the reader thread may still be passing lines on when the process is gone).
async fn finished(
    mut child: std::process::Child,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> (i32, String, Vec<String>) {
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let mut err = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_mins(2), rx.recv())
        .await
        .expect("stderr did not end with the client")
    {
        err.push(line);
    }
    (code, out, err)
}

/// `participant-files download` of `file_id` to `output`.
fn cli_download(base: &str, file_id: &str, output: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["download", file_id, "--url", base, "-o"])
        .arg(output)
        .env("PF_TOKEN", token())
        .output()
        .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// The command-line client, run to its end while the service is killed and restarted under it
/// (`kill_service`), or killed itself and run again (`kill_client`).
async fn cli_with(kill_service: bool, kill_client: bool) {
    let data = tempfile::tempdir().unwrap();
    let (env, args) = client_service(data.path(), &[("PF_MAX_FILE_SIZE", "100MiB")]).await;
    let port = closed_port();
    let mut service = Some(Process::spawn_on(port, &env, &args).await);
    let base = format!("http://127.0.0.1:{port}");
    let bytes = noise(SIZE, 43);
    let file = data.path().join("upload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let state = data.path().join("state");
    let file_id = format!("cli-{kill_service}-{kill_client}.bin");

    let (mut child, mut rx) = cli_upload(&base, &file, &file_id, &state);
    if kill_service || kill_client {
        progress_until(&mut rx, 20 << 20).await;
    }
    let mut retried = false;
    if kill_service {
        // SIGKILL, then the same service on the same port once the client has met the dead
        // one and said it tries again (not after a pause that the client may sleep through).
        let mut s = service.take().unwrap();
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        drop(s);
        while !retried {
            let line = tokio::time::timeout(Duration::from_mins(2), rx.recv())
                .await
                .expect("the client said nothing for 2 minutes")
                .expect("the client ended first");
            retried = line.contains("trying again");
        }
        service = Some(Process::spawn_on(port, &env, &args).await);
    }
    if kill_client {
        child.kill().unwrap();
        child.wait().unwrap();
        // The same command again goes on from the service's offset.
        (child, rx) = cli_upload(&base, &file, &file_id, &state);
    }
    let (code, out, err) = finished(child, rx).await;
    assert_eq!(code, 0, "the upload failed: {err:?}");
    if kill_client {
        let resumed: u64 = err
            .iter()
            .find_map(|l| l.strip_prefix("resuming at byte "))
            .unwrap_or_else(|| panic!("the second run did not resume: {err:?}"))
            .parse()
            .unwrap();
        assert!(resumed >= 15 << 20, "resumed at {resumed}");
    }
    let stored: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["fileId"], file_id.as_str());
    assert_eq!(stored["size"], SIZE);
    assert_eq!(stored["sha256"], sha256(&bytes).as_str());
    assert!(
        stored.get("downloadUrl").is_none(),
        "a capability URL printed"
    );

    let got = data.path().join("got.bin");
    let out = cli_download(&base, &file_id, &got);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&got).unwrap() == bytes, "the bytes differ");
    drop(service);
}

#[tokio::test]
async fn the_command_line_client_uploads_in_chunks_and_downloads() {
    cli_with(false, false).await;
}

#[tokio::test]
async fn the_command_line_client_goes_on_after_the_service_was_killed() {
    cli_with(true, false).await;
}

#[tokio::test]
async fn the_command_line_client_run_again_resumes_where_a_killed_run_stopped() {
    cli_with(false, true).await;
}

#[tokio::test]
async fn the_command_line_client_tells_refusals_and_keeps_no_wrong_bytes() {
    let data = tempfile::tempdir().unwrap();
    let (env, args) = client_service(
        data.path(),
        &[
            ("PF_MAX_FILE_SIZE", "100MiB"),
            ("PF_ALLOWED_TYPES", "image/*,application/octet-stream"),
        ],
    )
    .await;
    let service = Process::spawn(&env, &args).await;
    let state = data.path().join("state");

    // A PDF where only images are allowed: refused at completion, with Bridge's message.
    let pdf = data.path().join("scan.pdf");
    std::fs::write(&pdf, common::pdf(3 << 20)).unwrap();
    let (child, rx) = cli_upload(&service.base, &pdf, "scan.pdf", &state);
    let (code, out, err) = finished(child, rx).await;
    assert_eq!(code, 1, "{err:?}");
    assert!(out.is_empty());
    let last = err.last().unwrap();
    assert!(
        last.starts_with("error: ") && last.contains("(415)") && last.contains("application/pdf"),
        "{last}"
    );

    // Usage: no URL.
    let usage = Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["upload", &pdf.display().to_string()])
        .env("PF_TOKEN", token())
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));

    // A download resumes a partial file with Range; one whose bytes are not the file's
    // beginning fails the SHA-256 check and is not kept, and the next run gets it whole.
    let bytes = noise(4 << 20, 44);
    let file = data.path().join("photo.bin");
    std::fs::write(&file, &bytes).unwrap();
    let (child, rx) = cli_upload(&service.base, &file, "photo.bin", &state);
    assert_eq!(finished(child, rx).await.0, 0);
    let got = data.path().join("got.bin");
    let part = data.path().join("got.bin.part");
    std::fs::write(&part, vec![0u8; 1 << 20]).unwrap();
    let out = cli_download(&service.base, "photo.bin", &got);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHA-256"));
    assert!(!part.exists() && !got.exists());
    std::fs::write(&part, &bytes[..1 << 20]).unwrap();
    let out = cli_download(&service.base, "photo.bin", &got);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming at byte 1048576"));
    assert!(std::fs::read(&got).unwrap() == bytes);
    // An unknown file: 404, Bridge's message.
    let out = cli_download(&service.base, "nothing.bin", &data.path().join("x"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(404)"));
}
