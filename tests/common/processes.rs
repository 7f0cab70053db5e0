//! What the tests that run the service (and real clients) in processes of their own share:
//! waiting on a condition, fresh S3 and DynamoDB resources, the service's configuration for a
//! client test, a tus upload created at a process, and a child's output lines as a channel.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

use super::{Backend, JWT_SECRET, URL_SECRET, aws_flags, backend, open_backends, unique_name};
use participant_files::backends::Backends;
use participant_files::keys::UploadId;

/// Waits until `check` holds, looking every 100 ms; fails naming `what` after `limit`.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh bucket and table, created with `setup`, for services in processes of their own.
pub struct FreshAws {
    /// `setup`'s data dir, kept as long as the resources are used.
    pub setup: tempfile::TempDir,
    pub backends: Backends,
    pub bucket: String,
    /// The `s3://` and `dynamodb://` addresses a process is given.
    pub store: String,
    pub index: String,
}

pub async fn fresh_aws() -> FreshAws {
    let bucket = unique_name("pf");
    let store = format!("s3://{bucket}/files");
    let index = format!("dynamodb://{}", unique_name("pf"));
    let (setup, backends) = open_backends(&[
        "--store",
        &store,
        "--index",
        &index,
        "--s3-force-path-style",
        "true",
    ])
    .await;
    FreshAws {
        setup,
        backends,
        bucket,
        store,
        index,
    }
}

/// The environment and flags of a service that real clients upload to, on fresh resources of
/// the backend set under test, with `extra` environment.
pub async fn client_service(
    data: &std::path::Path,
    extra: &[(&'static str, &str)],
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let mut env = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_DATA_DIR", data.display().to_string()),
        ("PF_S3_PART_SIZE", "8MiB".to_owned()),
        ("PF_AUDIT_LOG", "stderr".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
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
            open_backends(&resources).await;
            flags
        }
    };
    (env, args)
}

/// Creates a tus upload of `len` bytes named `filename` at the service at `base`; its path
/// and ID.
pub async fn create_tus_upload(
    base: &str,
    token: &str,
    len: usize,
    filename: &str,
) -> (String, UploadId) {
    let res = Client::new()
        .post(format!("{base}/v3/participants/self/uploads"))
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len)
        .header(
            "upload-metadata",
            super::tus::meta(&[
                ("filename", filename),
                ("filetype", "application/octet-stream"),
            ]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap();
    let path = reqwest::Url::parse(location).unwrap().path().to_owned();
    let id = UploadId::parse(path.rsplit('/').next().unwrap()).unwrap();
    (path, id)
}

/// The lines `output` (a child's stdout or stderr) writes, as they come, read on a thread.
pub fn lines<R: Read + Send + 'static>(output: R) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let lines = BufReader::new(output).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Kills the service with SIGKILL (no shutdown, no flush) and starts the same one again on
/// the same port, as a client that keeps its upload URL expects.
pub async fn kill_and_restart(
    service: &mut super::Process,
    port: u16,
    env: &[(&str, String)],
    args: &[String],
) {
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    *service = super::Process::spawn_on(port, env, args).await;
}

/// The file's bytes as a participant gets them from the service at `base`: its GET's 302,
/// followed without the token (the download URL is the credential).
pub async fn download_followed(base: &str, token: &str, file_id: &str) -> Vec<u8> {
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!("{base}/v3/participants/self/files/{file_id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302, "{file_id}: the file is there");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let got = http.get(location).send().await.unwrap();
    got.bytes().await.unwrap().to_vec()
}
