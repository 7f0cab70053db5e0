//! Per-participant encryption (`PF_ENCRYPTION`, issue #25), through the HTTP service on both
//! backend sets: the store holds only age files under the participant's key; downloads (whole,
//! ranges, `If-Range`, HEAD) decrypt; a tampered object stops its download, counted in
//! `/metrics`; erase destroys the key, so that a copy of the ciphertext taken before cannot be
//! decrypted after; intakes that do not encrypt yet are refused.

#![allow(deprecated)] // age's X25519 identity: what the service uses, see src/encryption/age_file.rs.

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use common::{TestApp, error, json, noise};
use participant_files::config::{Cli, Config};
use participant_files::model::{AppId, FileId, Owner, UserId};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

const APP: &str = "study";
const CHUNK: usize = 64 * 1024;

/// A fresh master key file beside the app's data.
fn master_key(dir: &Path) -> PathBuf {
    named_master_key(dir, "master.key")
}

fn named_master_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        participant_files::encryption::MasterKey::generate()
            .unwrap()
            .to_file_text(),
    )
    .unwrap();
    path
}

async fn start() -> (TestApp, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let setting = format!("file://{}", master_key(keys.path()).display());
    (TestApp::start_with(&["--encryption", &setting]).await, keys)
}

/// Uploads `body` as `file` of `user` through the service.
async fn upload(app: &TestApp, user: &str, file: &str, body: Vec<u8>) {
    let token = app.token(user, APP);
    let res = app
        .put_file(&token, "self", file, "application/octet-stream", body)
        .await;
    json(res, StatusCode::CREATED).await;
}

/// The one stored object (what the store keeps on disk, for the local store and s3s-fs alike).
fn stored_object(app: &TestApp) -> PathBuf {
    let objects: Vec<PathBuf> = app
        .stored_files()
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".upload"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    objects.into_iter().next().unwrap()
}

/// The capability URL a GET of the file redirects to.
async fn download_url(app: &TestApp, user: &str, file: &str) -> String {
    let res = app.get_file(&app.token(user, APP), "self", file).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// What a client receives of a download before the body ends, and whether it ended cleanly.
async fn receive(res: reqwest::Response) -> (Vec<u8>, bool) {
    let mut res = res;
    let mut got = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(piece)) => got.extend_from_slice(&piece),
            Ok(None) => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

fn decrypt(identity: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let identity = age::x25519::Identity::from_str(identity.trim()).map_err(str::to_owned)?;
    let decryptor = age::Decryptor::new(sealed).map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?
        .read_to_end(&mut plain)
        .map_err(|e| e.to_string())?;
    Ok(plain)
}

/// `participant-files keys identity` for `user`: its output, or its error.
fn export_identity(app: &TestApp, user: &str) -> Result<String, String> {
    let out = app
        .command(&["keys", "identity", "--app", APP, "--participant", user])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

#[tokio::test]
async fn the_store_holds_only_ciphertext_and_downloads_decrypt_ranges_included() {
    let (app, _keys) = start().await;
    let plain = noise(3 * CHUNK + 1000, 1);
    upload(&app, "alice", "data.bin", plain.clone()).await;

    // Stored: an age file, none of the plaintext in it, a tag per 64 KiB chunk.
    let sealed = std::fs::read(stored_object(&app)).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    assert!(!sealed.windows(32).any(|w| w == &plain[CHUNK..CHUNK + 32]));
    assert!(!sealed.windows(32).any(|w| w == &plain[..32]));
    // The row keeps the plaintext's size and SHA-256.
    let listed = app
        .listed(&app.token("alice", APP), "self", "data.bin")
        .await
        .unwrap();
    assert_eq!(listed["size"], plain.len() as u64);
    let sha = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        Sha256::digest(&plain),
    );
    assert_eq!(listed["sha256"], sha.as_str(), "{listed}");
    assert!(sealed.len() > plain.len());

    assert_eq!(
        app.download(&app.token("alice", APP), "self", "data.bin")
            .await,
        plain
    );
    let url = download_url(&app, "alice", "data.bin").await;
    let n = plain.len();
    // Ranges in the first chunk, across chunks, from a chunk boundary, to the end, suffixes.
    for (header, from, to) in [
        ("bytes=0-9".to_owned(), 0, 9),
        (format!("bytes=100-{}", CHUNK + 5), 100, CHUNK + 5),
        (
            format!("bytes={}-{}", CHUNK, 2 * CHUNK - 1),
            CHUNK,
            2 * CHUNK - 1,
        ),
        (format!("bytes={}-", 2 * CHUNK + 7), 2 * CHUNK + 7, n - 1),
        (format!("bytes={}-{}", CHUNK - 1, CHUNK), CHUNK - 1, CHUNK),
        ("bytes=-300".to_owned(), n - 300, n - 1),
        (format!("bytes={}-{}", n - 1, n + 50), n - 1, n - 1),
    ] {
        let res = app
            .client
            .get(&url)
            .header("range", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{header}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {from}-{to}/{n}").as_str(),
            "{header}"
        );
        let got = res.bytes().await.unwrap();
        assert_eq!(&got[..], &plain[from..=to], "{header}");
    }
    // A range past the end: 416 with the plaintext's size.
    let res = app
        .client
        .get(&url)
        .header("range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{n}").as_str()
    );

    // If-Range: the file's ETag keeps the range, another one gets the whole file.
    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], n.to_string().as_str());
    let etag = head.headers()["etag"].to_str().unwrap().to_owned();
    let res = app
        .client
        .get(&url)
        .header("range", "bytes=70000-70009")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&res.bytes().await.unwrap()[..], &plain[70000..70010]);
    let res = app
        .client
        .get(&url)
        .header("range", "bytes=70000-70009")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(&res.bytes().await.unwrap()[..], &plain[..]);

    // Empty, tiny and exactly-one-chunk files too; ranges of the small ones reach past what
    // is stored.
    for (file, body) in [
        ("empty.bin", Vec::new()),
        ("tiny.bin", noise(20, 12)),
        ("chunk.bin", noise(CHUNK, 2)),
    ] {
        upload(&app, "alice", file, body.clone()).await;
        assert_eq!(
            app.download(&app.token("alice", APP), "self", file).await,
            body
        );
        if body.is_empty() {
            continue;
        }
        let res = app
            .client
            .get(download_url(&app, "alice", file).await)
            .header("range", "bytes=5-")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{file}");
        assert_eq!(&res.bytes().await.unwrap()[..], &body[5..], "{file}");
    }
    assert_eq!(app.metric("pf_decrypt_failures_total").await, 0);
}

#[tokio::test]
async fn a_tampered_object_stops_its_download_at_the_failing_chunk_and_is_counted() {
    let (app, _keys) = start().await;
    let plain = noise(4 * CHUNK, 3);
    upload(&app, "alice", "data.bin", plain.clone()).await;
    let path = stored_object(&app);
    let mut sealed = std::fs::read(&path).unwrap();
    // One bit in the third chunk's ciphertext (the header is about 200 bytes).
    let at = sealed.len() - (CHUNK + 16) - 100;
    sealed[at] ^= 1;
    std::fs::write(&path, &sealed).unwrap();

    let url = download_url(&app, "alice", "data.bin").await;
    // The answer's head goes out with the first chunk; the connection is cut at the tampered
    // one, which can come before the client has read the head.
    let (got, clean) = match app.client.get(&url).send().await {
        Ok(res) => {
            assert_eq!(res.status(), StatusCode::OK);
            receive(res).await
        }
        Err(e) => {
            assert!(!e.is_timeout() && !e.is_builder(), "{e}");
            (Vec::new(), false)
        }
    };
    assert!(!clean, "the download ended as if complete");
    // Only whole, authenticated chunks before the tampered one went out.
    assert!(got.len() <= 2 * CHUNK, "{} bytes went out", got.len());
    assert_eq!(&got[..], &plain[..got.len()]);
    assert_eq!(app.metric("pf_decrypt_failures_total").await, 1);

    // A range that starts in the tampered chunk fails before any byte: a Bridge error.
    let res = app
        .client
        .get(&url)
        .header("range", format!("bytes={}-", 2 * CHUNK + 10))
        .send()
        .await
        .unwrap();
    error(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        "BridgeServiceException",
    )
    .await;
    assert_eq!(app.metric("pf_decrypt_failures_total").await, 2);
    // A range before it still reads.
    let res = app
        .client
        .get(&url)
        .header("range", "bytes=10-99")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&res.bytes().await.unwrap()[..], &plain[10..100]);
}

#[tokio::test]
async fn erase_destroys_the_key_and_a_copy_of_the_ciphertext_cannot_be_decrypted_after() {
    let (app, _keys) = start().await;
    let plain = noise(CHUNK + 500, 4);
    upload(&app, "alice", "data.bin", plain.clone()).await;
    upload(&app, "bob", "data.bin", noise(100, 5)).await;
    let owner = Owner {
        app: AppId::parse(APP).unwrap(),
        participant: UserId::parse("alice").unwrap(),
    };
    let file = app
        .files
        .get(&owner, &FileId::parse("data.bin").unwrap())
        .await
        .unwrap();
    let objects: Vec<PathBuf> = app
        .stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("alice"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let object = objects[0].clone();
    // The "backup": the ciphertext copied away before the erase.
    let backup = std::fs::read(&object).unwrap();

    // Before: the README's way for an operator decrypts the copy.
    let identity = export_identity(&app, "alice").unwrap();
    assert!(identity.starts_with("AGE-SECRET-KEY-1"));
    assert_eq!(decrypt(&identity, &backup).unwrap(), plain);

    let worker = app.token_with("worker", APP, &[participant_files::auth::Role::Worker]);
    let res = app
        .request(Method::DELETE, "/v3/participants/alice/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res, StatusCode::OK).await["count"], 1);
    let line = app
        .audit()
        .into_iter()
        .rfind(|l| l["action"] == "erase")
        .unwrap();
    assert_eq!(line["keyDestroyed"], true, "{line}");
    assert_eq!(line["participant"], "alice");

    // After: no command gives the identity any more...
    let refused = export_identity(&app, "alice").unwrap_err();
    assert!(refused.contains("has no key"), "{refused}");
    // ...nor does the service read the copy restored into the store where it was.
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, &backup).unwrap();
    let read = app.files.read(&file, None).await;
    assert!(
        matches!(
            read,
            Err(participant_files::files::FilesError::Store(
                participant_files::store::StoreError::Unreadable
            ))
        ),
        "the restored copy was read"
    );
    assert_eq!(app.metric("pf_decrypt_failures_total").await, 1);
    // A key made for alice later (a new upload) is another key: the copy stays unreadable.
    upload(&app, "alice", "new.bin", noise(10, 6)).await;
    let later = export_identity(&app, "alice").unwrap();
    assert_ne!(later, identity);
    assert!(decrypt(&later, &backup).is_err());
    // Bob's key and files are untouched.
    assert_eq!(
        app.download(&app.token("bob", APP), "self", "data.bin")
            .await,
        noise(100, 5)
    );
}

#[tokio::test]
async fn resumable_uploads_are_refused_while_they_would_store_plaintext() {
    let (app, _keys) = start().await;
    let token = app.token("alice", APP);
    let res = app
        .request(Method::POST, "/v3/participants/self/uploads")
        .bearer_auth(&token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", "filename YS5iaW4=")
        .send()
        .await
        .unwrap();
    let body = error(res, StatusCode::NOT_IMPLEMENTED, "NotImplementedException").await;
    assert!(
        body["message"].as_str().unwrap().contains("PF_ENCRYPTION"),
        "{body}"
    );
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
    let line = app.audit().pop().unwrap();
    assert_eq!(line["status"], 501, "{line}");
}

#[tokio::test]
async fn an_upload_url_arrival_is_stored_encrypted_and_its_plaintext_deleted() {
    let keys = tempfile::tempdir().unwrap();
    let setting = format!("file://{}", master_key(keys.path()).display());
    let app = TestApp::start_presigned(&[
        "--encryption",
        &setting,
        "--upload-mode",
        "presigned",
        "--download-mode",
        "streaming",
    ])
    .await;
    let token = app.token("alice", APP);
    let posted = json(
        app.post_file(
            &token,
            "self",
            "s.bin",
            &serde_json::json!({"mimeType": "application/octet-stream"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap();
    assert!(url.starts_with(&std::env::var("AWS_ENDPOINT_URL_S3").unwrap()));
    let plain = noise(2 * CHUNK + 3, 7);
    let res = app
        .client
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(plain.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The list settles what arrived: read once, checked, written encrypted, arrival deleted.
    let page = json(app.list(&token, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"][0]["size"], plain.len() as u64, "{page}");
    let sealed = std::fs::read(stored_object(&app)).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    assert!(!sealed.windows(32).any(|w| w == &plain[..32]));
    assert_eq!(app.download(&token, "self", "s.bin").await, plain);
    // Downloads stream through the service: the redirect is to the service, not to S3.
    let location = download_url(&app, "alice", "s.bin").await;
    assert!(location.starts_with(&app.base), "{location}");
}

#[tokio::test]
async fn rescan_decrypts_what_it_scans_and_quarantines_ciphertext() {
    use common::signatures::{marker, rescan_clamd, teach_clamd, with_marker};
    let (clamd, _) = rescan_clamd();
    let keys = tempfile::tempdir().unwrap();
    let setting = format!("file://{}", master_key(keys.path()).display());
    let app = TestApp::start_with(&[
        "--encryption",
        &setting,
        "--clamd",
        &clamd,
        "--quarantine",
        "keep",
    ])
    .await;
    let (mark, name) = marker();
    let plain = with_marker(3 * CHUNK, 8, &mark);
    upload(&app, "alice", "bad.bin", plain.clone()).await;
    // What the store holds does not show the marker: only a scan of the plaintext finds it.
    assert!(
        !std::fs::read(stored_object(&app))
            .unwrap()
            .windows(mark.len())
            .any(|w| w == &mark[..])
    );
    teach_clamd(&mark, &name).await;
    let out = app
        .command(&["rescan", "--older-than", "0s"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("1 infected"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = app
        .listed(&app.token("alice", APP), "self", "bad.bin")
        .await
        .unwrap();
    assert_eq!(listed["scanStatus"], "infected", "{listed}");
    // Kept in quarantine, still as ciphertext.
    let sealed = std::fs::read(stored_object(&app)).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
    assert!(!sealed.windows(mark.len()).any(|w| w == &mark[..]));
}

/// `flags` without `flag` and its value, and with `flag value` when `value` is given.
fn with_flag(flags: &[String], flag: &str, value: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for f in flags {
        if skip {
            skip = false;
        } else if f == flag {
            skip = true;
        } else {
            out.push(f.clone());
        }
    }
    if let Some(v) = value {
        out.extend([flag.to_owned(), v.to_owned()]);
    }
    out
}

fn rotate(app: &TestApp) -> String {
    let out = app.command(&["keys", "rotate"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

#[tokio::test]
async fn keys_rotate_rewraps_every_key_while_the_service_serves() {
    let dir = tempfile::tempdir().unwrap();
    let old = format!(
        "file://{}",
        named_master_key(dir.path(), "old.key").display()
    );
    let new = format!(
        "file://{}",
        named_master_key(dir.path(), "new.key").display()
    );
    let app = TestApp::start_with(&["--encryption", &old]).await;
    let (a, b) = (noise(3 * CHUNK + 5, 9), noise(1000, 10));
    upload(&app, "alice", "a.bin", a.clone()).await;
    upload(&app, "bob", "b.bin", b.clone()).await;

    // Serving with the new master key, the old one still unwrapping what it wrapped.
    let flags = with_flag(app.flags(), "--encryption", Some(&new));
    let flags = with_flag(&flags, "--encryption-previous", Some(&old));
    let app = app.restart_with(flags).await;
    assert_eq!(
        app.download(&app.token("alice", APP), "self", "a.bin")
            .await,
        a
    );

    // The rotation runs while downloads and an upload go on; none of them fails.
    let command = app.command(&["keys", "rotate"]);
    let rotation = tokio::task::spawn_blocking(move || {
        let mut command = command;
        command.output().unwrap()
    });
    let mut rounds = 0;
    while !rotation.is_finished() || rounds < 3 {
        assert_eq!(
            app.download(&app.token("alice", APP), "self", "a.bin")
                .await,
            a
        );
        assert_eq!(
            app.download(&app.token("bob", APP), "self", "b.bin").await,
            b
        );
        rounds += 1;
    }
    upload(&app, "carol", "c.bin", noise(10, 11)).await;
    let out = rotation.await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 keys rewrapped"), "{said}");
    // Run again (as after an interruption): nothing left to do.
    assert!(rotate(&app).contains("0 keys rewrapped"));

    // The old master key is no longer needed: everything reads with the new one alone.
    let flags = with_flag(app.flags(), "--encryption-previous", None);
    let app = app.restart_with(flags).await;
    assert_eq!(
        app.download(&app.token("alice", APP), "self", "a.bin")
            .await,
        a
    );
    assert_eq!(
        app.download(&app.token("bob", APP), "self", "b.bin").await,
        b
    );
    assert_eq!(
        app.download(&app.token("carol", APP), "self", "c.bin")
            .await,
        noise(10, 11)
    );
    // And the old one alone reads nothing any more.
    let flags = with_flag(app.flags(), "--encryption", Some(&old));
    let app = app.restart_with(flags).await;
    let url = download_url(&app, "alice", "a.bin").await;
    error(
        app.client.get(&url).send().await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "BridgeServiceException",
    )
    .await;
}

fn config_error(flags: &[&str]) -> String {
    let mut args = vec!["participant-files", "--jwt-secret", common::JWT_SECRET];
    args.extend(flags);
    let cli = Cli::try_parse_from(&args).unwrap();
    Config::from_args(cli.serve).unwrap_err().to_string()
}

#[test]
fn presigned_downloads_with_encryption_are_a_configuration_error() {
    let keys = tempfile::tempdir().unwrap();
    let setting = format!("file://{}", master_key(keys.path()).display());
    let s3 = [
        "--store",
        "s3://bucket/files",
        "--url-secret",
        common::URL_SECRET,
        "--encryption",
        &setting,
    ];
    let e = config_error(&[&s3[..], &["--download-mode", "presigned"]].concat());
    assert!(
        e.contains("PF_DOWNLOAD_MODE=presigned cannot be used with PF_ENCRYPTION")
            && e.contains("ciphertext"),
        "{e}"
    );
    // Without a mode named, S3 with encryption streams both ways (a scan of what arrives
    // through an upload URL is what encrypts it: asked for, not assumed).
    let mut args = vec!["participant-files", "--jwt-secret", common::JWT_SECRET];
    args.extend(s3);
    let config = Config::from_args(Cli::try_parse_from(&args).unwrap().serve).unwrap();
    assert_eq!(
        (config.upload_mode, config.download_mode),
        (
            participant_files::config::Mode::Streaming,
            participant_files::config::Mode::Streaming
        )
    );
}
