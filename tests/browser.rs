//! A browser on another origin than the service: headless Chromium (Debian's `chromium`, driven
//! by puppeteer-core from tests/clients/browser.mjs) on tests/clients/browser/index.html,
//! served by `python3 -m http.server` on another loopback port, against a service with
//! `PF_CORS_ORIGINS` naming that page's origin. The page discovers the tus service with an
//! OPTIONS, uploads with tus-js-client, and downloads a file that it cuts part-way and resumes
//! with `Range` + `If-Range`, checking the result's SHA-256 with `crypto.subtle.digest`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestApp, closed_port, noise};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn chromium() -> String {
    let path = std::env::var("PF_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&path).exists(),
        "no browser at {path}: run the suite with scripts/test, which installs Debian's chromium \
         (or set PF_CHROMIUM)"
    );
    assert!(
        clients().join("node_modules/puppeteer-core").exists(),
        "no puppeteer-core in tests/clients/node_modules: run the suite with scripts/test, \
         which installs it (npm ci)"
    );
    path
}

/// The page's static server, stopped on drop.
struct StaticServer {
    child: Child,
    origin: String,
}

impl StaticServer {
    async fn start() -> Self {
        let port = closed_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(clients())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let server = Self {
            child,
            origin: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        let page = server.page();
        loop {
            match reqwest::get(&page).await {
                Ok(res) if res.status() == StatusCode::OK => break,
                _ => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the static server did not serve {page}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn page(&self) -> String {
        format!("{}/browser/index.html", self.origin)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the page's steps in Chromium and returns what the page reported.
async fn in_browser(args: Value) -> Value {
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(clients())
        .arg(clients().join("browser.mjs"))
        .arg(args.to_string())
        .env("PF_CHROMIUM", chromium())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_mins(3), cmd.output())
        .await
        .expect("the browser finished within 3 minutes")
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let report: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: the driver said {text:?}"));
    assert!(report.get("error").is_none(), "{report:#}");
    report
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_page_on_another_origin_discovers_uploads_and_resumes_a_download() {
    chromium();
    let page = StaticServer::start().await;
    let app = TestApp::start_with(&["--cors-origins", &page.origin]).await;
    let t = app.token("maya", "study");
    let file = noise(8 << 20, 23);
    let res = app
        .put_file(
            &t,
            "self",
            "scan.bin",
            "application/octet-stream",
            file.clone(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let cut_at = 1 << 20;

    let report = in_browser(json!({
        "page": page.page(),
        "service": app.base,
        "token": t,
        "upload": {"fileId": "from-page.bin", "size": 12 << 20, "chunkSize": 5 << 20},
        "download": {"fileId": "scan.bin", "cutAt": cut_at},
    }))
    .await;

    eprintln!("what the page did: {report}");

    // Discovery: the page reads the tus headers of the route's own OPTIONS.
    let d = &report["discover"];
    assert_eq!(d["status"], 204, "{report:#}");
    assert_eq!(d["tusVersion"], "1.0.0", "{report:#}");
    assert_eq!(d["tusResumable"], "1.0.0", "{report:#}");
    assert!(
        d["tusExtension"]
            .as_str()
            .is_some_and(|e| e.contains("creation")),
        "{report:#}"
    );
    assert!(
        d["tusMaxSize"]
            .as_str()
            .is_some_and(|m| m.parse::<u64>().is_ok_and(|m| m >= 12 << 20)),
        "{report:#}"
    );

    // The upload: tus-js-client's three PATCHes, then the stored bytes are the page's.
    let u = &report["upload"];
    assert!(u.get("error").is_none(), "{report:#}");
    let stored = app.download(&t, "self", "from-page.bin").await;
    assert_eq!(stored.len(), 12 << 20);
    assert_eq!(Some(sha256_hex(&stored).as_str()), u["sha256"].as_str());

    // The download: cut, resumed from what was kept, whole and the same by SHA-256.
    let dl = &report["download"];
    assert!(dl.get("error").is_none(), "{report:#}");
    let size = file.len() as u64;
    let kept = dl["kept"].as_u64().unwrap();
    assert!(kept >= cut_at && kept < size, "{report:#}");
    assert_eq!(dl["status"], 206, "{report:#}");
    assert_eq!(
        dl["contentRange"].as_str(),
        Some(format!("bytes {kept}-{}/{size}", size - 1).as_str()),
        "{report:#}"
    );
    assert!(dl["etag"].as_str().is_some_and(|e| e.starts_with('"')));
    assert!(
        dl["contentDisposition"]
            .as_str()
            .is_some_and(|c| c.contains("scan.bin")),
        "{report:#}"
    );
    assert!(dl["requestId"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(dl["length"].as_u64(), Some(size), "{report:#}");
    assert_eq!(dl["sha256"].as_str(), Some(sha256_hex(&file).as_str()));
}
