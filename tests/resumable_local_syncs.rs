//! What a PATCH of a resumable upload makes the local store sync, told by strace: the staged
//! file's bytes start for the disk while the PATCH still arrives, so that the sync its answer
//! waits for finds little left to write; only the first PATCH of an upload syncs the folder that
//! holds the upload's file; and every PATCH still syncs its bytes before its answer.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::strace::{Traced, calls, spawn_traced};
use common::tus::meta;
use common::{JWT_SECRET, URL_SECRET, closed_port, noise, participant_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// Files opened, duplicated (the handle a sync started early uses) and synced.
const TRACED: &str = "openat,close,fcntl,fsync,fdatasync";

/// A service on the local store under strace, and an upload of `length` bytes created on it.
struct Setup {
    service: Traced,
    trace: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    url: reqwest::Url,
    token: String,
}

impl Setup {
    async fn new(length: usize) -> Self {
        let (data, traces) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let trace = traces.path().join("service.strace");
        let env = [
            ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
            ("PF_URL_SECRET", URL_SECRET.to_owned()),
            ("PF_DATA_DIR", data.path().display().to_string()),
        ];
        let port = closed_port();
        let service = spawn_traced(port, &env, &trace, TRACED).await;
        let token = participant_token("syncs", "study");
        let res = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{port}/v3/participants/self/uploads"
            ))
            .bearer_auth(&token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", length)
            .header("upload-metadata", meta(&[("filename", "syncs.bin")]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let location = res.headers()["location"].to_str().unwrap();
        Self {
            service,
            trace,
            _dirs: (data, traces),
            url: reqwest::Url::parse(location).unwrap(),
            token,
        }
    }

    /// Opens a PATCH of `length` bytes at `offset`; the connection, its head sent.
    async fn start_patch(&self, offset: usize, length: usize) -> tokio::net::TcpStream {
        let addr = format!(
            "{}:{}",
            self.url.host_str().unwrap(),
            self.url.port().unwrap()
        );
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PATCH {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {offset}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
            self.url.path(),
            self.token
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn
    }

    /// The syncs of the upload's staged file and of its folder that ended after `since`.
    fn syncs(&self, since: f64) -> Syncs {
        let id = self.url.path_segments().unwrap().next_back().unwrap();
        let log = std::fs::read_to_string(&self.trace).unwrap_or_default();
        // What each open descriptor is: the staged file, its folder, or something else.
        let mut kinds: HashMap<i64, Kind> = HashMap::new();
        let mut found = Syncs::default();
        for call in calls(&log) {
            match call.name.as_str() {
                "openat" if call.ret >= 0 => {
                    let path = call.text();
                    let kind = if path.ends_with(&format!("/resumable/{id}")) {
                        Kind::Staged
                    } else if path.ends_with("/resumable") {
                        Kind::Folder
                    } else {
                        Kind::Other
                    };
                    kinds.insert(call.ret, kind);
                }
                "fcntl" if call.ret >= 0 && call.args.contains("F_DUPFD") => {
                    let kind = call.fd().and_then(|fd| kinds.get(&fd).copied());
                    kinds.insert(call.ret, kind.unwrap_or(Kind::Other));
                }
                "close" => {
                    if let Some(fd) = call.fd() {
                        kinds.remove(&fd);
                    }
                }
                "fsync" | "fdatasync" if call.ret == 0 && call.end > since => {
                    match call.fd().and_then(|fd| kinds.get(&fd)) {
                        Some(Kind::Staged) => found.staged += 1,
                        Some(Kind::Folder) => found.folder += 1,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        found
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.service.pid.to_string()])
            .status();
        let _ = self.service.strace.wait();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Staged,
    Folder,
    Other,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Syncs {
    staged: usize,
    folder: usize,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sends the rest of a PATCH and reads its answer's status line.
async fn finish_patch(mut conn: tokio::net::TcpStream, rest: &[u8]) -> String {
    conn.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_patch_starts_its_bytes_for_the_disk_before_its_last_byte_arrives() {
    let setup = Setup::new(8 * MIB).await;
    let body = noise(8 * MIB, 31);
    let since = now();
    let mut conn = setup.start_patch(0, body.len()).await;
    conn.write_all(&body[..6 * MIB]).await.unwrap();
    // The last 2 MiB are held back until the staged file was synced (or a minute passed).
    let started = Instant::now();
    let mut early = setup.syncs(since);
    while early.staged == 0 && started.elapsed() < Duration::from_mins(1) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        early = setup.syncs(since);
    }
    let status = finish_patch(conn, &body[6 * MIB..]).await;
    assert!(status.starts_with("HTTP/1.1 204"), "{status}");
    assert!(
        early.staged > 0,
        "with 6 of its 8 MiB in, the PATCH had not synced any of the staged file: all its \
         bytes wait for the sync at its end ({early:?})"
    );
}

#[tokio::test]
async fn only_the_first_patch_of_an_upload_syncs_its_folder() {
    let setup = Setup::new(8 * MIB).await;
    let body = noise(8 * MIB, 32);
    let mut folder = Vec::new();
    for half in 0..2 {
        let since = now();
        let conn = setup.start_patch(half * 4 * MIB, 4 * MIB).await;
        let status = finish_patch(conn, &body[half * 4 * MIB..(half + 1) * 4 * MIB]).await;
        assert!(status.starts_with("HTTP/1.1 204"), "PATCH {half}: {status}");
        let syncs = setup.syncs(since);
        // Before its answer, each PATCH synced its bytes.
        assert!(
            syncs.staged > 0,
            "PATCH {half} answered before a sync: {syncs:?}"
        );
        folder.push(syncs.folder);
    }
    assert_eq!(
        folder,
        [1, 0],
        "syncs of the upload's folder by the first and the second PATCH: the file's name is \
         durable once the first PATCH's bytes are"
    );
}
