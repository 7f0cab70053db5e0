//! tus 1.0.0 requests as a client sends them, for the resumable-upload tests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, Response, StatusCode};

use super::TestApp;

pub const OFFSET_STREAM: &str = "application/offset+octet-stream";

pub fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates an upload of `length` bytes (`None`: deferred) and returns its path.
pub async fn create(app: &TestApp, token: &str, file: &str, length: Option<u64>) -> String {
    let mut req = app
        .request(Method::POST, "/v3/participants/self/uploads")
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header(
            "upload-metadata",
            meta(&[("filename", file), ("filetype", "application/octet-stream")]),
        );
    req = match length {
        Some(l) => req.header("upload-length", l),
        None => req.header("upload-defer-length", "1"),
    };
    let res = req.send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    assert!(res.headers().contains_key("upload-expires"));
    let location = res.headers()["location"].to_str().unwrap();
    reqwest::Url::parse(location).unwrap().path().to_owned()
}

pub async fn patch(
    app: &TestApp,
    token: &str,
    path: &str,
    offset: u64,
    bytes: Vec<u8>,
) -> Response {
    patch_with(app, token, path, offset, &[], bytes).await
}

/// A PATCH with more headers (`Upload-Checksum`, `Upload-Length`).
pub async fn patch_with(
    app: &TestApp,
    token: &str,
    path: &str,
    offset: u64,
    headers: &[(&str, String)],
    bytes: Vec<u8>,
) -> Response {
    let mut req = app
        .request(Method::PATCH, path)
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("content-type", OFFSET_STREAM)
        .header("upload-offset", offset);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.body(bytes).send().await.unwrap()
}

pub async fn head(app: &TestApp, token: &str, path: &str) -> Response {
    app.request(Method::HEAD, path)
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap()
}

pub async fn offset_of(app: &TestApp, token: &str, path: &str) -> u64 {
    let res = head(app, token, path).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every stored or staged file of the upload `id` (its object, its tails, its staged file).
pub fn bytes_of(app: &TestApp, id: &str) -> Vec<std::path::PathBuf> {
    let mut all = app.stored_files();
    super::walk_files(&app.data.path().join("data/blobs/resumable"), &mut all);
    all.retain(|p| p.to_string_lossy().contains(id));
    all
}

pub fn new_offset(res: &Response) -> u64 {
    res.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends the head of a PATCH of `total` bytes and the first `body` of them, and keeps the
/// connection open: a client on a slow network, mid-request.
pub async fn slow_patch(
    app: &TestApp,
    token: &str,
    path: &str,
    body: &[u8],
    total: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_STREAM}\r\nUpload-Offset: 0\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    // The bodies sent are larger than hyper's read buffer: the connection drains only once
    // the request's handler took the upload and is reading the body.
    let port = stream.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    while !drained(port) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the service did not read the PATCH's body"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stream
}

/// Whether every byte the loopback connection from `client_port` sent has been read by the
/// service: nothing queued to send at the client's end, nothing unread at the server's (the
/// kernel's own counts, in /proc/net/tcp and tcp6).
pub fn drained(client_port: u16) -> bool {
    let port = format!(":{client_port:04X}");
    let (mut client_sending, mut server_unread) = (None, None);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(queues)) =
                (fields.get(1), fields.get(2), fields.get(4))
            else {
                continue;
            };
            let Some((tx, rx)) = queues.split_once(':') else {
                continue;
            };
            let count = |hex: &str| u64::from_str_radix(hex, 16).unwrap_or(u64::MAX);
            if local.ends_with(&port) {
                client_sending = Some(count(tx));
            } else if remote.ends_with(&port) {
                server_unread = Some(count(rx));
            }
        }
    }
    client_sending == Some(0) && server_unread == Some(0)
}

/// Sends a PATCH of `bytes` from offset 0 on a task of its own (a client waiting for its
/// answer while the test goes on); the task gives the answer's status.
pub fn spawn_patch(
    app: &TestApp,
    token: &str,
    path: &str,
    bytes: Vec<u8>,
) -> tokio::task::JoinHandle<StatusCode> {
    let (url, token) = (app.url(path), token.to_owned());
    tokio::spawn(async move {
        reqwest::Client::new()
            .patch(url)
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("content-type", OFFSET_STREAM)
            .header("upload-offset", 0)
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status()
    })
}
