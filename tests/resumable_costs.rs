//! What a resumable upload's PATCH costs, told by what reaches the S3 server and the index: each
//! part goes to S3 while its PATCH arrives, no part is signed over its payload (the service
//! hashes every byte already), and a PATCH writes the upload's row once per durable point. The
//! S3 tests run on s3s-fs whatever `PF_TEST_BACKEND` says; the index test on the set it names.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::tus::{create, meta, patch};
use common::{JWT_SECRET, Process, TestApp, URL_SECRET, noise, participant_token, unique_name};
use participant_files::keys::UploadId;
use participant_files::model::{AppId, Owner, UserId};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// What one connection sent, kept as it goes.
type Sent = Arc<Mutex<Vec<u8>>>;

/// A relay to the S3 test server that keeps a copy of what each connection sends it.
struct S3Tap {
    port: u16,
    /// What each connection sent, one buffer per connection.
    sent: Arc<Mutex<Vec<Sent>>>,
    total: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Tap {
    async fn start() -> Self {
        common::aws_env();
        let target = std::env::var("AWS_ENDPOINT_URL_S3")
            .unwrap()
            .trim_start_matches("http://")
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let total = Arc::new(AtomicU64::new(0));
        let (sent2, total2) = (Arc::clone(&sent), Arc::clone(&total));
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = tokio::net::TcpStream::connect(&target).await.unwrap();
                let copy: Sent = Arc::default();
                sent2.lock().unwrap().push(Arc::clone(&copy));
                let total = Arc::clone(&total2);
                tokio::spawn(async move {
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = in_read.read(&mut buf).await {
                            copy.lock().unwrap().extend_from_slice(&buf[..n]);
                            if out_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            total.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        let _ = out_write.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                        let _ = in_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            port,
            sent,
            total,
            task,
        }
    }

    /// Bytes passed on to S3 so far, over every connection.
    fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// The request line and headers of every request whose line starts with `method`, read
    /// one request after the other on each connection (each body skipped by its length).
    fn heads(&self, method: &str) -> Vec<String> {
        let mut heads = Vec::new();
        for conn in self.sent.lock().unwrap().iter() {
            let bytes = conn.lock().unwrap();
            let mut at = 0;
            while let Some(end) = find(&bytes[at..], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[at..at + end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                at += end + 4 + length;
                if head.starts_with(&format!("{method} ")) {
                    heads.push(head);
                }
                if at >= bytes.len() {
                    break;
                }
            }
        }
        heads
    }
}

impl Drop for S3Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The service in its own process, its S3 client pointed at `tap`, with 5 MiB parts and the
/// embedded index.
async fn service(tap: &S3Tap) -> Process {
    let bucket = unique_name("pf");
    let store = format!("s3://{bucket}/files");
    let _ = common::open_backends(&["--store", &store, "--s3-force-path-style", "true"]).await;
    let env = [
        ("PF_STORE", store),
        ("PF_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ("PF_S3_PART_SIZE", "5MiB".to_owned()),
        (
            "AWS_ENDPOINT_URL_S3",
            format!("http://127.0.0.1:{}", tap.port),
        ),
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_UPLOAD_MODE", "streaming".to_owned()),
        ("PF_DOWNLOAD_MODE", "streaming".to_owned()),
        (
            "PF_DATA_DIR",
            tempfile::tempdir().unwrap().keep().display().to_string(),
        ),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
    ];
    Process::spawn(&env, &[]).await
}

/// Creates an upload of `length` bytes at `base`; its URL.
async fn create_at(base: &str, token: &str, file: &str, length: usize) -> String {
    let res = reqwest::Client::new()
        .post(format!("{base}/v3/participants/self/uploads"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length)
        .header("upload-metadata", meta(&[("filename", file)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.headers()["location"].to_str().unwrap().to_owned()
}

fn patch_head(url: &str, token: &str, offset: usize, length: usize) -> (String, String) {
    let url = reqwest::Url::parse(url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {offset}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        url.path()
    );
    (addr, head)
}

#[tokio::test]
async fn a_part_reaches_s3_while_its_patch_still_arrives() {
    let tap = S3Tap::start().await;
    let service = service(&tap).await;
    let token = participant_token("ines", "study");
    let body = noise(5 * MIB, 1);
    let url = create_at(&service.base, &token, "streamed.bin", body.len()).await;
    let (addr, head) = patch_head(&url, &token, 0, body.len());
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let before = tap.total();
    // Four of the part's five MiB; the last one is held back until S3 has most of the four.
    conn.write_all(&body[..4 * MIB]).await.unwrap();
    let started = Instant::now();
    while tap.total() - before < 3 * MIB as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "S3 got {} bytes in 30 s while the PATCH held back its last MiB: the part waits \
             for its last byte before it leaves",
            tap.total() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.write_all(&body[4 * MIB..]).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let res = reqwest::Client::new()
        .get(format!(
            "{}/v3/participants/self/files/streamed.bin",
            service.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.bytes().await.unwrap() == body,
        "the stored file differs"
    );
}

#[tokio::test]
async fn no_staged_byte_is_signed_over_its_payload() {
    let tap = S3Tap::start().await;
    let service = service(&tap).await;
    let token = participant_token("ines", "study");
    // One whole part and a tail: the tail is a PutObject at the PATCH's durable point, and
    // becomes the last part at completion.
    let body = noise(6 * MIB, 2);
    let url = create_at(&service.base, &token, "unsigned.bin", body.len()).await;
    let res = reqwest::Client::new()
        .patch(&url)
        .bearer_auth(&token)
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", 0)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let puts = tap.heads("PUT");
    let parts = puts.iter().filter(|h| h.contains("partNumber=")).count();
    let tails = puts.iter().filter(|h| h.contains(".tail-")).count();
    assert_eq!((parts, tails), (2, 1), "{puts:#?}");
    for head in &puts {
        assert!(
            head.to_ascii_lowercase()
                .contains("x-amz-content-sha256: unsigned-payload"),
            "a staged body was hashed for its signature: {head}"
        );
    }
}

#[tokio::test]
async fn a_patch_writes_the_row_once_per_durable_point() {
    let app = TestApp::start().await;
    let t = app.token("ines", "study");
    let path = create(&app, &t, "rows.bin", Some(16 * MIB as u64)).await;
    let owner = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("ines").unwrap(),
    };
    let id = UploadId::parse(path.rsplit('/').next().unwrap()).unwrap();
    let version = async || {
        let uploads = app.files.index().uploads();
        uploads
            .get_upload(&owner, &id)
            .await
            .unwrap()
            .unwrap()
            .version
    };
    let before = version().await;
    // 8 MiB is one durable point's worth: it falls on the request's end, which makes its own.
    let res = patch(&app, &t, &path, 0, noise(8 * MIB, 3)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        version().await - before,
        2,
        "the row is written for the lease and once at the request's end"
    );
}
