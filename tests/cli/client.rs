//! `participant-files upload`/`download` run as a user runs them, against the real service or a
//! fake one on loopback: they fail fast and say why and what to do, keep their state private,
//! send the token only to `--url`'s origin, and stop when the service does not move.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::{self, JWT_SECRET, TestApp};
use crate::fake_server::{FakeServer, bridge_error, created};

/// Every run here ends within seconds with the fixes; this bound only keeps a broken client
/// from hanging the suite.
const BOUND: Duration = Duration::from_mins(1);

/// Runs the binary with `args`, its state under `dir/state`, and waits (at most [`BOUND`]).
async fn run(dir: &Path, token: &str, args: &[&str]) -> Output {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_participant-files"));
    c.args(args)
        .current_dir(dir)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("PF_TOKEN", token)
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("PF_") && k != "PF_TOKEN" {
            c.env_remove(k);
        }
    }
    tokio::time::timeout(BOUND, c.output())
        .await
        .unwrap_or_else(|_| panic!("`{}` still ran after {BOUND:?}", args.join(" ")))
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A file of `len` bytes in `dir`.
fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, common::noise(len, 7)).unwrap();
    path
}

fn token() -> String {
    common::participant_token("alice", "study")
}

/// The saved upload states under `dir/state`.
fn saved(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("state/participant-files"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_wrong_url_fails_within_seconds_naming_the_address_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let port = common::closed_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["upload", f.to_str().unwrap(), "--url", &url],
        vec!["download", "a.bin", "--url", &url],
    ] {
        let out = run(dir.path(), &token(), &args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(
            err.to_lowercase().contains("connection refused"),
            "no cause: {err}"
        );
        assert!(err.contains("check --url"), "no advice: {err}");
        assert!(!err.contains("trying again"), "retried: {err}");
    }
}

#[tokio::test]
async fn failures_after_progress_are_retried_for_retry_for_then_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let fake = FakeServer::start(|method, _, base| match method {
        "POST" => created(format!("{base}/v3/participants/self/uploads/u1")),
        _ => bridge_error(503, "Try again shortly."),
    })
    .await;
    // The default (10 minutes) is not waited for here: --retry-for bounds it.
    let out = run(
        dir.path(),
        &token(),
        &[
            "upload",
            f.to_str().unwrap(),
            "--url",
            &fake.base,
            "--retry-for",
            "2s",
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("trying again in"), "no retry: {err}");
    assert!(
        err.contains("gave up after retrying for 2s") && err.contains("--retry-for"),
        "{err}"
    );
    assert!(err.contains("run the same command again"), "{err}");
    // Tried again: after the failed PATCH, HEADs ask where the upload stands.
    assert!(
        fake.count("PATCH") + fake.count("HEAD") >= 2,
        "{:?}",
        fake.hits()
    );
}

#[tokio::test]
async fn token_refusals_say_why_and_an_expired_one_when() {
    let app = TestApp::start_embedded(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let exp = chrono::Utc::now().timestamp() - 7200;
    let sign = |secret: &str, exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "alice", "app": "study", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let expired = sign(JWT_SECRET, exp);
    let upload = ["upload", f.to_str().unwrap(), "--url", &app.base];
    let out = run(dir.path(), &expired, &upload).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let at = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        err.contains(&format!("the token expired at {at} (2h")),
        "{err}"
    );
    assert!(err.contains("(401)") && err.contains("PF_TOKEN"), "{err}");

    let foreign = sign("another-secret-0123456789abcdef0123456789", exp + 9000);
    let err = stderr(&run(dir.path(), &foreign, &upload).await);
    assert!(
        err.contains("valid until") && err.contains("another secret"),
        "{err}"
    );
    let err = stderr(&run(dir.path(), "garbage", &upload).await);
    assert!(err.contains("not a JWT"), "{err}");
    let err = stderr(
        &run(
            dir.path(),
            &expired,
            &["download", "a.bin", "--url", &app.base],
        )
        .await,
    );
    assert!(err.contains("the token expired at"), "{err}");
}

#[tokio::test]
async fn a_file_over_the_limit_is_told_in_human_units() {
    let app = TestApp::start_embedded(&["--max-file-size", "1MiB"]).await;
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "big.bin", 3 << 20);
    let out = run(
        dir.path(),
        &token(),
        &["upload", f.to_str().unwrap(), "--url", &app.base],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("(413)"), "{err}");
    assert!(
        err.contains("the file is 3.0 MiB") && err.contains("at most 1.0 MiB"),
        "{err}"
    );
    assert!(err.contains("PF_MAX_FILE_SIZE"), "{err}");
}

#[tokio::test]
async fn a_chunk_size_under_the_floor_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let url = format!("http://127.0.0.1:{}", common::closed_port());
    let out = run(
        dir.path(),
        &token(),
        &[
            "upload",
            f.to_str().unwrap(),
            "--url",
            &url,
            "--chunk-size",
            "1KiB",
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("256KiB") && err.contains("--chunk-size"),
        "{err}"
    );
    // The floor itself is taken: the run goes on to the (closed) service.
    let out = run(
        dir.path(),
        &token(),
        &[
            "upload",
            f.to_str().unwrap(),
            "--url",
            &url,
            "--chunk-size",
            "256KiB",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[tokio::test]
async fn a_file_id_refused_by_the_service_points_to_file_id_when_it_came_from_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "my notes.txt", 1000);
    let fake =
        FakeServer::start(|_, _, _| bridge_error(400, "fileId may only contain A-Z a-z 0-9 . _ -"))
            .await;
    let out = run(
        dir.path(),
        &token(),
        &["upload", f.to_str().unwrap(), "--url", &fake.base],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fileId may only contain"), "{err}");
    assert!(err.contains("give one with --file-id"), "{err}");
    // Given with --file-id, the service's words stand alone.
    let out = run(
        dir.path(),
        &token(),
        &[
            "upload",
            f.to_str().unwrap(),
            "--url",
            &fake.base,
            "--file-id",
            "x y",
        ],
    )
    .await;
    assert!(!stderr(&out).contains("--file-id"), "{}", stderr(&out));
}

/// A fake service that creates uploads and refuses their first PATCH (401), so that the
/// client stops with its state saved.
async fn saving_service() -> FakeServer {
    FakeServer::start(|method, _, base| match method {
        "POST" => created(format!("{base}/v3/participants/self/uploads/u1")),
        _ => bridge_error(401, "Not signed in."),
    })
    .await
}

#[tokio::test]
async fn the_saved_state_is_only_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let fake = saving_service().await;
    let out = run(
        dir.path(),
        &token(),
        &["upload", f.to_str().unwrap(), "--url", &fake.base],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let files = saved(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("state/participant-files")), 0o700);
    assert_eq!(mode(&files[0]), 0o600);
}

#[tokio::test]
async fn the_token_goes_only_to_the_origin_of_url() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let elsewhere = FakeServer::start(|_, _, _| bridge_error(401, "Not signed in.")).await;
    let other = elsewhere.base.clone();
    let service = FakeServer::start(move |_, _, _| {
        created(format!("{other}/v3/participants/self/uploads/u1"))
    })
    .await;
    let out = run(
        dir.path(),
        &token(),
        &["upload", f.to_str().unwrap(), "--url", &service.base],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("upload URL at {}", elsewhere.base)) && err.contains("--url"),
        "{err}"
    );
    assert!(elsewhere.hits().is_empty(), "{:?}", elsewhere.hits());
    assert!(saved(dir.path()).is_empty(), "the other origin was saved");

    // A saved state that names another origin (an earlier version saved any) is not used.
    let fake = saving_service().await;
    let upload = ["upload", f.to_str().unwrap(), "--url", &fake.base];
    run(dir.path(), &token(), &upload).await;
    let state = saved(dir.path());
    assert_eq!(state.len(), 1, "{state:?}");
    std::fs::write(
        &state[0],
        format!("{}/v3/participants/self/uploads/u1", elsewhere.base),
    )
    .unwrap();
    let err = stderr(&run(dir.path(), &token(), &upload).await);
    assert!(elsewhere.hits().is_empty(), "{:?}", elsewhere.hits());
    assert_eq!(fake.count("POST"), 2, "not started over: {err}");
}

#[tokio::test]
async fn an_offset_that_does_not_move_stops_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "a.bin", 1000);
    let fake = FakeServer::start(|method, _, base| match method {
        "POST" => created(format!("{base}/v3/participants/self/uploads/u1")),
        "PATCH" => (204, vec![("upload-offset", "0".to_owned())], String::new()),
        _ => (200, vec![("upload-offset", "0".to_owned())], String::new()),
    })
    .await;
    let out = run(
        dir.path(),
        &token(),
        &["upload", f.to_str().unwrap(), "--url", &fake.base],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("without moving the upload's offset"), "{err}");
    assert!(fake.count("PATCH") <= 5, "{} PATCHes", fake.count("PATCH"));
    assert!(
        fake.hits()
            .iter()
            .filter(|h| h.method != "OPTIONS")
            .all(|h| h.bearer && h.path.starts_with("/v3/participants/self/uploads")),
        "{:?}",
        fake.hits()
    );
}
