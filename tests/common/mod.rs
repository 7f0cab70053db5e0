//! Test harness: starts the real service on a loopback port with its own data dir, and speaks
//! HTTP to it.
#![allow(dead_code)]

pub mod fake_clamd;
pub mod processes;
pub mod relay;
pub mod signatures;
pub mod strace;
pub mod tus;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use participant_files::auth::{self, Role};
use participant_files::config::{Cli, Config};
use participant_files::model::{AppId, UserId};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
pub const URL_SECRET: &str = "test-url-secret-0123456789abcdef0123456789";

/// Which backend set the suite runs against: `PF_TEST_BACKEND=embedded` (the default) or `aws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

pub fn backend() -> Backend {
    match std::env::var("PF_TEST_BACKEND").as_deref() {
        Err(_) | Ok("" | "embedded") => Backend::Embedded,
        Ok("aws") => Backend::Aws,
        Ok(other) => panic!("PF_TEST_BACKEND={other}: expected embedded or aws"),
    }
}

/// The S3 and DynamoDB emulators `scripts/test` starts; a test that needs them fails, never
/// skips, when they are not there.
pub struct AwsEnv {
    /// The folder s3s-fs serves, to look at what it keeps on disk.
    pub s3_dir: PathBuf,
}

pub fn aws_env() -> AwsEnv {
    let missing: Vec<&str> = [
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_REGION",
        "PF_TEST_S3_DIR",
    ]
    .into_iter()
    .filter(|v| std::env::var(v).is_err())
    .collect();
    assert!(
        missing.is_empty(),
        "the S3 and DynamoDB test servers are not configured ({} unset): run the suite with \
         scripts/test, which installs and starts s3s-fs and moto_server on loopback",
        missing.join(", ")
    );
    for endpoint in ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB"] {
        let url = std::env::var(endpoint).unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("http://[::1]:"),
            "{endpoint}={url}: tests talk to loopback only"
        );
    }
    AwsEnv {
        s3_dir: PathBuf::from(std::env::var("PF_TEST_S3_DIR").unwrap()),
    }
}

/// A fresh bucket and table name, so tests running at once never share state.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Flags that put the service on fresh AWS resources, created with `setup`.
pub fn aws_flags() -> (Vec<String>, String) {
    let (mut flags, bucket) = aws_presigned_flags();
    flags.extend(["--upload-mode", "streaming", "--download-mode", "streaming"].map(str::to_owned));
    (flags, bucket)
}

/// Flags for fresh AWS resources with the S3 default modes (presigned uploads and downloads).
pub fn aws_presigned_flags() -> (Vec<String>, String) {
    aws_env();
    let bucket = unique_name("pf");
    let flags = vec![
        "--store".to_owned(),
        format!("s3://{bucket}/files"),
        "--index".to_owned(),
        format!("dynamodb://{}", unique_name("pf")),
        "--s3-force-path-style".to_owned(),
        "true".to_owned(),
        "--url-secret".to_owned(),
        URL_SECRET.to_owned(),
    ];
    (flags, bucket)
}

/// Multipart uploads of `bucket` that s3s-fs still keeps (metadata and parts on disk).
pub fn s3_multipart_leftovers(s3_dir: &Path, bucket: &str) -> Vec<PathBuf> {
    use base64::Engine;
    let tag = format!(
        ".bucket-{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bucket)
    );
    let mut uploads = Vec::new();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(s3_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&tag) && name.contains(".upload-") {
            if let Some(id) = name
                .split(".upload-")
                .nth(1)
                .and_then(|r| r.split('.').next())
            {
                uploads.push(id.to_owned());
            }
            out.push(entry.path());
        }
    }
    for entry in std::fs::read_dir(s3_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if uploads.iter().any(|u| {
            name.starts_with(&format!(".upload_id-{u}.")) || name == format!(".upload-{u}.json")
        }) {
            out.push(entry.path());
        }
    }
    out
}

pub struct TestApp {
    pub base: String,
    pub data: TempDir,
    pub audit_path: PathBuf,
    pub client: Client,
    pub backend: Backend,
    /// With the AWS backends: the bucket this app writes to.
    pub bucket: Option<String>,
    /// The service's file operations, to look at state no route shows (in-process only).
    pub files: participant_files::files::FileService,
    flags: Vec<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the service with extra command-line flags, like `["--max-file-size", "1KiB"]`.
    pub async fn start_with(flags: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), flags).await
    }

    /// Starts the service on an existing folder (its `data` subfolder is the data dir), on the
    /// backend set that `PF_TEST_BACKEND` names.
    pub async fn start_in(data: TempDir, flags: &[&str]) -> Self {
        let (mut all, bucket) = match backend() {
            Backend::Embedded => (Vec::new(), None),
            Backend::Aws => {
                let (f, b) = aws_flags();
                (f, Some(b))
            }
        };
        all.extend(flags.iter().map(|s| (*s).to_owned()));
        Self::launch(data, all, bucket).await
    }

    /// Starts the service on the embedded backends whatever `PF_TEST_BACKEND` says, for tests
    /// of what only the local store does.
    pub async fn start_embedded(flags: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        Self::launch(data, flags.iter().map(|s| (*s).to_owned()).collect(), None).await
    }

    /// Starts the service on fresh S3 and DynamoDB resources in streaming mode, whatever
    /// `PF_TEST_BACKEND` says.
    pub async fn start_aws(flags: &[&str]) -> Self {
        let (mut all, bucket) = aws_flags();
        all.extend(flags.iter().map(|s| (*s).to_owned()));
        Self::launch(tempfile::tempdir().expect("temp dir"), all, Some(bucket)).await
    }

    /// Starts the service on fresh S3 and DynamoDB resources in presigned mode: uploads and
    /// downloads go straight to the S3 server.
    pub async fn start_presigned(flags: &[&str]) -> Self {
        let (mut all, bucket) = aws_presigned_flags();
        all.extend(flags.iter().map(|s| (*s).to_owned()));
        Self::launch(tempfile::tempdir().expect("temp dir"), all, Some(bucket)).await
    }

    /// Starts the embedded backends again on a folder an earlier app left.
    pub async fn start_in_embedded(data: TempDir) -> Self {
        Self::launch(data, Vec::new(), None).await
    }

    async fn launch(data: TempDir, flags: Vec<String>, bucket: Option<String>) -> Self {
        let audit_path = data.path().join("audit.log");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let listen = addr.to_string();
        let data_dir = data.path().join("data");
        let mut args: Vec<String> = vec![
            "participant-files".into(),
            "--listen".into(),
            listen,
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--audit-log".into(),
            audit_path.display().to_string(),
        ];
        if !flags.iter().any(|f| f == "--jwt-public-key-file") {
            args.extend(["--jwt-secret".to_owned(), JWT_SECRET.to_owned()]);
        }
        args.extend(flags.iter().cloned());
        let cli = Cli::try_parse_from(&args).expect("test flags parse");
        let config = Config::from_args(cli.serve).expect("test config is valid");
        if bucket.is_some() {
            let backends = participant_files::backends::open(&config)
                .await
                .expect("AWS backends open");
            participant_files::setup::run(&backends, config.resumable.ttl)
                .await
                .expect("setup creates the bucket and table");
            if config.master_key.is_some() {
                participant_files::encryption::setup(&config)
                    .await
                    .expect("setup creates the key table");
            }
        }
        let state = participant_files::build(&config).await.expect("app builds");
        let files = state.files.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(participant_files::serve(
            state,
            listener,
            async {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_mins(1))
            .build()
            .unwrap();
        Self {
            base: format!("http://{addr}"),
            data,
            audit_path,
            client,
            backend: if bucket.is_some() {
                Backend::Aws
            } else {
                Backend::Embedded
            },
            bucket,
            files,
            flags,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A participant token for `user` in `app` (roles absent: participant).
    pub fn token(&self, user: &str, app: &str) -> String {
        self.token_with(user, app, &[Role::Participant])
    }

    #[allow(
        clippy::unused_self,
        reason = "tokens belong to the app under test, like its URLs"
    )]
    pub fn token_with(&self, user: &str, app: &str, roles: &[Role]) -> String {
        auth::mint(
            JWT_SECRET.as_bytes(),
            &UserId::parse(user).unwrap(),
            &AppId::parse(app).unwrap(),
            roles,
            Duration::from_mins(10),
        )
        .unwrap()
    }

    /// Every audit line written so far.
    pub fn audit(&self) -> Vec<Value> {
        match std::fs::read_to_string(&self.audit_path) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Everything the store keeps on disk for this app: objects, and uploads in progress or
    /// left behind (the local store's temp files; s3s-fs's multipart uploads).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let mut out = self.staged_files();
        match &self.bucket {
            None => walk(&self.data.path().join("data/blobs/objects"), &mut out),
            Some(bucket) => walk(&aws_env().s3_dir.join(bucket), &mut out),
        }
        out.sort();
        out
    }

    /// Uploads in progress or left behind.
    pub fn staged_files(&self) -> Vec<PathBuf> {
        match &self.bucket {
            None => {
                let mut out = Vec::new();
                walk(&self.data.path().join("data/blobs/temp"), &mut out);
                out
            }
            Some(bucket) => s3_multipart_leftovers(&aws_env().s3_dir, bucket),
        }
    }

    /// Sends the head of a PUT that declares `declared` bytes and the first `sent` of them, and
    /// returns the connection, still open.
    pub async fn partial_put(
        &self,
        token: &str,
        file: &str,
        declared: usize,
        sent: usize,
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /v3/participants/self/files/{file} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&noise(sent, 3)).await.unwrap();
        stream
    }

    /// Waits until an upload has reached the store (a temp file, a multipart upload).
    pub async fn wait_until_staged(&self) {
        for _ in 0..200 {
            if !self.staged_files().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the upload never reached the store");
    }

    /// Waits (briefly: aborts run in the background) until the store keeps nothing for this
    /// app, and fails naming what is left.
    pub async fn assert_nothing_stored(&self) {
        for _ in 0..250 {
            if self.stored_files().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("left behind: {:?}", self.stored_files());
    }

    /// Makes the store unreachable for this app (its folder or bucket disappears).
    pub fn break_store(&self) {
        match &self.bucket {
            None => std::fs::remove_dir_all(self.data.path().join("data/blobs")).unwrap(),
            Some(bucket) => std::fs::remove_dir_all(aws_env().s3_dir.join(bucket)).unwrap(),
        }
    }

    /// The listed file `file` of `user`, if the listing's first page shows it.
    pub async fn listed(&self, token: &str, user: &str, file: &str) -> Option<Value> {
        let page = json(self.list(token, user, "").await, StatusCode::OK).await;
        page["items"]
            .as_array()
            .expect("a page has items")
            .iter()
            .find(|i| i["fileId"] == file)
            .cloned()
    }

    /// One counter or gauge of `/metrics`, by its name with labels; 0 when absent.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Starts a second instance on this app's backends (same bucket, table and flags), with
    /// `extra` flags added.
    pub async fn start_beside(&self, extra: &[&str]) -> Self {
        let mut flags = self.flags.clone();
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::launch(
            tempfile::tempdir().expect("temp dir"),
            flags,
            self.bucket.clone(),
        )
        .await
    }

    /// Like [`Self::start_beside`], with the value after `flag` (every time it occurs) replaced
    /// by `value`: another scanner, say.
    pub async fn start_beside_replacing(&self, flag: &str, value: &str) -> Self {
        let mut flags = self.flags.clone();
        for i in 1..flags.len() {
            if flags[i - 1] == flag {
                value.clone_into(&mut flags[i]);
            }
        }
        Self::launch(
            tempfile::tempdir().expect("temp dir"),
            flags,
            self.bucket.clone(),
        )
        .await
    }

    /// The command line of a maintenance command on this app's backends and data dir.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(self.flags().iter().cloned());
        all.extend([
            "--data-dir".to_owned(),
            self.data.path().join("data").display().to_string(),
            "--audit-log".to_owned(),
            self.audit_path.display().to_string(),
            "--jwt-secret".to_owned(),
            JWT_SECRET.to_owned(),
        ]);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"));
        cmd.args(&all);
        cmd
    }

    /// Runs `participant-files reconcile` on this app's backends and returns what it printed.
    pub fn reconcile(&self, min_age: &str) -> String {
        let mut args = vec![
            "reconcile".to_owned(),
            "--min-age".to_owned(),
            min_age.to_owned(),
        ];
        args.extend(self.flags().iter().cloned());
        args.extend([
            "--data-dir".to_owned(),
            self.data.path().join("data").display().to_string(),
            "--jwt-secret".to_owned(),
            JWT_SECRET.to_owned(),
        ]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reconcile failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The backend flags this app was started with (store, index, modes...).
    pub fn flags(&self) -> &[String] {
        &self.flags
    }

    /// Stops the server and starts it again on the same data and backends.
    pub async fn restart(self) -> Self {
        let flags = self.flags.clone();
        let bucket = self.bucket.clone();
        let data = self.stop().await;
        Self::launch(data, flags, bucket).await
    }

    /// Stops the server and starts it again on the same data and backends with `flags` (the
    /// backends' own flags, from [`Self::flags`], included) instead of its own.
    pub async fn restart_with(self, flags: Vec<String>) -> Self {
        let bucket = self.bucket.clone();
        let data = self.stop().await;
        Self::launch(data, flags, bucket).await
    }

    /// Stops the server and hands back its folder, for a restart on the same data.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data, placeholder)
    }

    /// Sends raw bytes as an HTTP/1.1 request (for paths a URL library would normalise) and
    /// returns the status code and body.
    pub async fn raw(&self, request: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// A GET with a bearer token on a path sent exactly as given.
    pub async fn raw_get(&self, token: &str, path: &str) -> (u16, String) {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    // Participant-route helpers: each sends one request with `token`.

    pub async fn put_file(
        &self,
        token: &str,
        user: &str,
        file: &str,
        mime: &str,
        body: Vec<u8>,
    ) -> Response {
        self.request(
            Method::PUT,
            &format!("/v3/participants/{user}/files/{file}"),
        )
        .bearer_auth(token)
        .header("content-type", mime)
        .body(body)
        .send()
        .await
        .unwrap()
    }

    pub async fn post_file(&self, token: &str, user: &str, file: &str, body: &Value) -> Response {
        self.request(
            Method::POST,
            &format!("/v3/participants/{user}/files/{file}"),
        )
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
    }

    pub async fn get_file(&self, token: &str, user: &str, file: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/v3/participants/{user}/files/{file}"),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
    }

    pub async fn delete_file(&self, token: &str, user: &str, file: &str) -> Response {
        self.request(
            Method::DELETE,
            &format!("/v3/participants/{user}/files/{file}"),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
    }

    pub async fn list(&self, token: &str, user: &str, query: &str) -> Response {
        self.request(
            Method::GET,
            &format!("/v3/participants/{user}/files{query}"),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
    }

    /// Follows a GET's 302 to the capability URL and returns the bytes.
    pub async fn download(&self, token: &str, user: &str, file: &str) -> Vec<u8> {
        let res = self.get_file(token, user, file).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let res = self.client.get(location).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.bytes().await.unwrap().to_vec()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Every file below `dir` (none when it does not exist).
pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    walk(dir, out);
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Reads a response as JSON, asserting its status first.
pub async fn json(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts a Bridge-shaped error with this status and type.
pub async fn error(res: Response, status: StatusCode, kind: &str) -> Value {
    let body = json(res, status).await;
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert_eq!(body["type"], kind, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// A tiny valid JPEG header followed by filler; `infer` reads it as image/jpeg.
pub fn jpeg(len: usize) -> Vec<u8> {
    let mut v = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
    ];
    v.resize(len.max(v.len()), 0x42);
    v
}

pub fn pdf(len: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    v.resize(len.max(v.len()), b' ');
    v
}

/// The EICAR test string, put together here so that no file of the repository holds it.
pub fn eicar() -> Vec<u8> {
    let s = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-",
        "TEST-FILE!$H+H*",
    ]
    .concat();
    assert_eq!(s.len(), 68);
    s.into_bytes()
}

/// Deterministic pseudo-random bytes (no sniffable header).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// Opens backends straight from flags (no HTTP), for the conformance suites. The data dir is
/// a fresh temp dir; AWS resources named in the flags are created with `setup`.
pub async fn open_backends(flags: &[&str]) -> (TempDir, participant_files::backends::Backends) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = vec![
        "participant-files".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
        "--jwt-secret".into(),
        JWT_SECRET.into(),
        "--url-secret".into(),
        URL_SECRET.into(),
    ];
    args.extend(flags.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from(&args).expect("flags parse");
    let config = Config::from_args(cli.serve).expect("config is valid");
    let backends = participant_files::backends::open(&config)
        .await
        .expect("backends open");
    participant_files::setup::run(&backends, config.resumable.ttl)
        .await
        .expect("setup");
    (data, backends)
}

/// The index an app runs on, opened beside it (its store is left alone: opening the local
/// store for the service would clear uploads in progress).
pub async fn index_of(app: &TestApp) -> std::sync::Arc<dyn participant_files::index::FileIndex> {
    use participant_files::index::{DynamoFileIndex, SqliteFileIndex};
    if app.bucket.is_none() {
        return std::sync::Arc::new(
            SqliteFileIndex::open(&app.data.path().join("data/index.sqlite"))
                .await
                .unwrap(),
        );
    }
    let flags = app.flags();
    let table = flags
        .iter()
        .position(|f| f == "--index")
        .and_then(|i| flags[i + 1].strip_prefix("dynamodb://"))
        .expect("an AWS app names its table")
        .to_owned();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    std::sync::Arc::new(DynamoFileIndex::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        table,
    ))
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A participant token signed with the tests' JWT secret, for a service in its own process.
pub fn participant_token(user: &str, app: &str) -> String {
    auth::mint(
        JWT_SECRET.as_bytes(),
        &UserId::parse(user).unwrap(),
        &AppId::parse(app).unwrap(),
        &[Role::Participant],
        Duration::from_mins(30),
    )
    .unwrap()
}

/// The service binary, running in its own process with extra environment; stopped on drop.
pub struct Process {
    pub child: std::process::Child,
    pub base: String,
}

impl Process {
    pub async fn spawn(env: &[(&str, String)], args: &[String]) -> Self {
        Self::spawn_on(closed_port(), env, args).await
    }

    /// Starts the service on `port`: the same port again after a kill, as a client that keeps
    /// its upload URL expects.
    pub async fn spawn_on(port: u16, env: &[(&str, String)], args: &[String]) -> Self {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"));
        cmd.args(args)
            .env("PF_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::new();
        let started = std::time::Instant::now();
        while client.get(format!("{base}/health")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the service did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
