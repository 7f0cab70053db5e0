//! The binary as a user runs it: configuration errors, the embedded default with no
//! configuration, `token`, what the diagnostic log may hold, and SIGTERM; and the command-line
//! client (`upload`, `download`) in `cli/client.rs`.

#[path = "cli/client.rs"]
mod client;
mod common;
#[path = "cli/fake_server.rs"]
mod fake_server;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_participant-files");

fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("PF_") {
            c.env_remove(k);
        }
    }
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_configuration_is_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases: [(&str, &str, &str); 10] = [
        (
            "PF_JWT_SECRET",
            "a-secret-of-31-bytes-0123456789",
            "at least 32",
        ),
        ("PF_URL_SECRET", "short", "PF_URL_SECRET"),
        ("PF_MAX_FILE_SIZE", "lots", "PF_MAX_FILE_SIZE"),
        ("PF_URL_TTL", "8d", "PF_URL_TTL"),
        ("PF_LISTEN", "nowhere", "PF_LISTEN"),
        ("PF_ALLOWED_TYPES", "images", "PF_ALLOWED_TYPES"),
        ("PF_STORE", "ftp://x", "PF_STORE"),
        ("PF_UPLOAD_MODE", "presigned", "PF_UPLOAD_MODE"),
        ("PF_CLAMD", "clamd", "PF_CLAMD"),
        ("PF_MAX_BUFFER_MEMORY", "a lot", "PF_MAX_BUFFER_MEMORY"),
    ];
    for (var, value, named) in cases {
        let out = command(dir.path())
            .env("PF_LISTEN", format!("127.0.0.1:{port}"))
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
    }
    let out = command(dir.path())
        .env("PF_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PF_PUBLIC_URL"));
    // None of them got as far as creating the data dir.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn token_needs_a_user_and_an_app() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["token", "--app", "a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = command(dir.path())
        .args(["token", "--user", "../x", "--app", "a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = command(dir.path())
        .args(["token", "--user", "u", "--app", "a", "--role", "admin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn token_says_which_secret_it_used_and_warns_when_it_made_one() {
    let dir = tempfile::tempdir().unwrap();
    let token = |envs: &[(&str, &str)]| {
        let out = command(dir.path())
            .args(["token", "--user", "alice", "--app", "study"])
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let path = dir.path().join("data/secrets/jwt-secret");
    let made = token(&[]);
    assert!(
        made.starts_with("warning: ")
            && made.contains("created")
            && made.contains(&path.display().to_string()),
        "{made}"
    );
    assert!(
        made.contains("PF_DATA_DIR") && made.contains("PF_JWT_SECRET"),
        "{made}"
    );
    let reused = token(&[]);
    assert!(
        !reused.contains("warning") && reused.contains(&path.display().to_string()),
        "{reused}"
    );
    let configured = token(&[("PF_JWT_SECRET", "a-configured-secret-0123456789abcdef")]);
    assert!(
        configured.contains("PF_JWT_SECRET") && !configured.contains("jwt-secret"),
        "{configured}"
    );
}

#[tokio::test]
async fn embedded_default_runs_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = command(dir.path())
        .env("PF_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = Instant::now();
    while !client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for made in [
        "data/secrets/jwt-secret",
        "data/secrets/url-secret",
        "data/index.sqlite",
        "data/blobs",
    ] {
        assert!(dir.path().join(made).exists(), "{made} was not created");
    }
    let out = command(dir.path())
        .args(["token", "--user", "alice", "--app", "study"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let content = b"%PDF-1.4 the content of a private file".to_vec();
    let files = format!("{base}/v3/participants/self/files/report.pdf");
    let res = client
        .put(&files)
        .bearer_auth(&token)
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let res = client.get(&files).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let res = client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), content);

    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "SIGTERM did not stop the service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    // Diagnostic logs carry routes and statuses, never tokens, capability URLs or contents.
    assert!(
        stderr.contains("/v3/participants/self/files/{fileId}"),
        "{stderr}"
    );
    let capability = location.rsplit('/').next().unwrap();
    for secret in [
        token.as_str(),
        capability,
        "private file",
        "report.pdf",
        "alice",
    ] {
        assert!(
            !stderr.contains(secret),
            "the log holds {secret:?}: {stderr}"
        );
    }
    // The audit log (stdout by default) has one line per access.
    let actions: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["upload", "read", "download"]);
}

#[tokio::test]
async fn json_logs_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = command(dir.path())
        .env("PF_LISTEN", format!("127.0.0.1:{port}"))
        .env("PF_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client
        .get(format!("http://127.0.0.1:{port}/health"))
        .header("x-request-id", "json-log-check")
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["request_id"] == "json-log-check" && l["fields"]["status"] == 200),
        "{stderr}"
    );
}

/// A token's header and claims are the client's bytes: a refusal logs only its kind, and no
/// control character reaches the log raw (a newline would start a forged line, an escape
/// sequence would drive the terminal). Without a terminal there are no colour codes either.
#[tokio::test]
async fn refused_tokens_cannot_forge_log_lines() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secret = "log-test-secret-0123456789abcdef0123456789";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = command(dir.path())
        .env("PF_LISTEN", format!("127.0.0.1:{port}"))
        .env("PF_JWT_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(started.elapsed() < Duration::from_secs(20), "no start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let forged = "\n2026-01-01T00:00:00.000000Z  INFO FORGED: admin signed in\u{1b}[2J";
    let now = chrono::Utc::now().timestamp();
    let header = |alg: &str| b64.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
    let claims = |c: serde_json::Value| b64.encode(c.to_string());
    let signed = |c: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let tokens = [
        // An algorithm no one knows, holding a line of its own.
        format!(
            "{}.{}.c2ln",
            header(&format!("HS256{forged}")),
            claims(serde_json::json!({"sub": "u", "app": "a", "exp": now + 60}))
        ),
        // Correctly signed, with claims of the wrong type that serde would quote back.
        signed(serde_json::json!({"sub": "u", "app": "a", "exp": format!("soon{forged}")})),
        signed(serde_json::json!({"sub": ["x"], "app": forged, "exp": now + 60})),
        signed(serde_json::json!({"sub": format!("u{forged}"), "app": "a", "exp": now + 60})),
    ];
    for t in &tokens {
        let res = client
            .get(format!("{base}/v3/participants/self/files"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    server.wait().unwrap();
    let mut stderr = Vec::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let text = String::from_utf8_lossy(&stderr);
    assert!(!stderr.contains(&0x1b), "escape codes in the log: {text:?}");
    // Nor colour codes written out as text: stderr is a pipe here, not a terminal.
    assert!(!text.contains("\\x1b"), "colour codes in the log: {text}");
    assert!(!text.contains("FORGED"), "token content in the log: {text}");
    for t in &tokens {
        for part in t.split('.') {
            assert!(!text.contains(part), "a part of a token in the log: {text}");
        }
    }
    // Every line is one event that the service wrote: it starts with its timestamp.
    for line in text.lines() {
        assert!(
            line.starts_with("20") && line.as_bytes().get(4) == Some(&b'-'),
            "a line the service did not start: {line:?}\n{text}"
        );
    }
    assert_eq!(
        text.matches("token refused").count(),
        tokens.len(),
        "{text}"
    );
}
