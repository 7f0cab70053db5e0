//! Real tus clients against the service in its own process, on the backend set
//! `PF_TEST_BACKEND` names: tus-js-client (npm) and tuspy (`PyPI`) upload 64 MiB in 5 MiB chunks.
//! In one run of each the service is killed with SIGKILL mid-upload and started again on the
//! same port; the client resumes by itself (HEAD, then PATCH from the offset), and the file is
//! the bytes that were sent. On S3 the parts are 8 MiB, so that the kill (after 20 MiB) leaves
//! 4 MiB in a tail, under S3's 5 MiB minimum part, for the restarted service to go on from.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, JWT_SECRET, Process, URL_SECRET, aws_flags, backend, closed_port, noise};

const SIZE: usize = 64 << 20;

fn token() -> String {
    common::participant_token("alice", "study")
}

/// The service's environment and flags, on fresh resources of the backend set under test.
async fn config(data: &std::path::Path) -> (Vec<(&'static str, String)>, Vec<String>) {
    let env = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_DATA_DIR", data.display().to_string()),
        ("PF_MAX_FILE_SIZE", "100MiB".to_owned()),
        ("PF_S3_PART_SIZE", "8MiB".to_owned()),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
    ];
    let args = match backend() {
        Backend::Embedded => Vec::new(),
        Backend::Aws => {
            let (flags, _) = aws_flags();
            // `setup` creates the bucket and table that the store and index flags name.
            let resources: Vec<&str> = flags
                .chunks(2)
                .filter(|pair| matches!(pair[0].as_str(), "--store" | "--index"))
                .flatten()
                .map(String::as_str)
                .chain(["--s3-force-path-style", "true"])
                .collect();
            common::open_backends(&resources).await;
            flags
        }
    };
    (env, args)
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
    let (env, args) = config(data.path()).await;
    let port = closed_port();
    let mut service = Some(Process::spawn_on(port, &env, &args).await);
    let bytes = noise(SIZE, 42);
    let file = data.path().join("upload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let file_id = format!("{which}-{kill}.bin");
    let endpoint = format!("http://127.0.0.1:{port}/v3/participants/self/uploads");
    let mut child = client(which, &endpoint, &file, &file_id)
        .spawn()
        .unwrap_or_else(|e| panic!("{which} client: {e}; run the suite with scripts/test, which installs the tus clients"));
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
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
            let mut s = service.take().unwrap();
            s.child.kill().unwrap();
            s.child.wait().unwrap();
            drop(s);
            tokio::time::sleep(Duration::from_millis(500)).await;
            service = Some(Process::spawn_on(port, &env, &args).await);
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
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let res = http
        .get(format!("{base}/v3/participants/self/files/{file_id}"))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{which}: the file is there");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let got = http
        .get(location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
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
