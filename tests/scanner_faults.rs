//! The scanner's refusal paths, each caused for real: a clamd that never answers, one that
//! answers an error, one that ends the stream early, a real clamd that cannot scan a file
//! whole, and a client that leaves while the verdict is pending. On both backend sets.

mod common;

use std::time::Duration;

use common::fake_clamd::{Behaviour, FakeClamd};
use common::{TestApp, error, json, noise};
use participant_files::config::ClamdAddress;
use participant_files::scan::{ClamdScanner, ScanError, Scanner};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn app_with(clamd: &str, extra: &[&str]) -> TestApp {
    let mut flags = vec!["--clamd", clamd];
    flags.extend_from_slice(extra);
    TestApp::start_with(&flags).await
}

/// A PUT that the scanner must refuse with 503, leaving nothing behind.
async fn refused_as_unavailable(app: &TestApp) {
    let t = app.token("alice", "study");
    let res = app
        .put_file(
            &t,
            "self",
            "f.bin",
            "application/octet-stream",
            noise(300_000, 1),
        )
        .await;
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("virus scanner"),
        "{body}"
    );
    error(
        app.get_file(&t, "self", "f.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_clamd_that_never_answers_times_out() {
    let clamd = FakeClamd::start(Behaviour::NeverAnswers).await;
    let app = app_with(&clamd.address, &["--scan-timeout", "1s"]).await;
    refused_as_unavailable(&app).await;
    assert_eq!(clamd.sessions(), 1);
}

#[tokio::test]
async fn a_clamd_that_answers_an_error_is_no_verdict() {
    let clamd = FakeClamd::start(Behaviour::Answers("stream: Can't allocate memory ERROR")).await;
    let app = app_with(&clamd.address, &[]).await;
    refused_as_unavailable(&app).await;
}

#[tokio::test]
async fn a_clamd_that_ends_the_stream_early_is_no_verdict() {
    let clamd = FakeClamd::start(Behaviour::EndsEarlyAfter(128 * 1024)).await;
    let app = app_with(&clamd.address, &[]).await;
    refused_as_unavailable(&app).await;
}

#[tokio::test]
async fn the_reason_clamd_gave_for_ending_a_stream_is_kept() {
    // What the service logs for a scanner failure is this error and its cause.
    let clamd = FakeClamd::start(Behaviour::EndsEarlyAfter(128 * 1024)).await;
    let address = clamd.address.trim_start_matches("tcp://").to_owned();
    let scanner = ClamdScanner::new(ClamdAddress::Tcp(address), Duration::from_secs(5));
    let mut session = scanner.session().await.unwrap();
    let mut failure = None;
    for i in 0..64 {
        if let Err(e) = session.feed(noise(64 * 1024, i).into()).await {
            failure = Some(e);
            break;
        }
    }
    let failure = match failure {
        Some(e) => e,
        None => session.finish().await.unwrap_err(),
    };
    assert!(
        matches!(&failure, ScanError::Failed(reason) if reason.contains("INSTREAM size limit exceeded")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_file_too_large_to_scan_whole_is_refused_as_infected() {
    let small = std::env::var("PF_TEST_CLAMD_SMALL").expect(
        "PF_TEST_CLAMD_SMALL is not set: run the suite with scripts/test, which starts a clamd \
         with 1 MiB scan limits",
    );
    let app = app_with(&small, &[]).await;
    let t = app.token("alice", "study");
    let res = app
        .put_file(
            &t,
            "self",
            "big.bin",
            "application/octet-stream",
            noise(3 * 1024 * 1024, 2),
        )
        .await;
    let body = error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Heuristics.Limits.Exceeded"),
        "{body}"
    );
    app.assert_nothing_stored().await;
    // A file within the limits still passes.
    json(
        app.put_file(
            &t,
            "self",
            "small.bin",
            "application/octet-stream",
            noise(4096, 3),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_after_its_last_byte_still_gets_its_file_stored() {
    // clamd answers once the test lets it: after the client has gone.
    let verdict = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let clamd = FakeClamd::start(Behaviour::AnswersTogether(
        std::sync::Arc::clone(&verdict),
        "stream: OK",
    ))
    .await;
    let app = app_with(&clamd.address, &[]).await;
    let t = app.token("alice", "study");
    let body = noise(2 * 1024 * 1024 + 123, 9);
    // The whole body, then the connection goes while clamd is still deciding.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v3/participants/self/files/left.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    // clamd has the whole stream and is deciding: the client goes, then clamd answers.
    let started = std::time::Instant::now();
    while clamd.streams_read() == 0 {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "clamd never got the stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    verdict.wait().await;
    // The commit runs to its end: the file appears, whole, with nothing else kept.
    let mut found = None;
    for _ in 0..100 {
        let res = app.get_file(&t, "self", "left.bin").await;
        if res.status() == StatusCode::FOUND {
            found = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found.is_some(), "the upload was never committed");
    assert_eq!(app.download(&t, "self", "left.bin").await, body);
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    let uploads: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "upload" && l["fileId"] == "left.bin")
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0]["status"], 201);
}

#[tokio::test]
async fn slow_clients_holding_the_buffer_budget_cannot_starve_a_small_upload() {
    // Twelve clients start 20 MiB uploads, send 1 MiB each and then nothing; a budget of 40 MiB
    // with 8 MiB parts cannot give each a part buffer.
    let app = TestApp::start_with(&[
        "--max-buffer-memory",
        "40MiB",
        "--buffer-wait",
        "2s",
        "--client-timeout",
        "5m",
    ])
    .await;
    let mut stalled = Vec::new();
    for i in 0..12 {
        let t = app.token(&format!("slow-{i}"), "study");
        stalled.push(
            app.partial_put(&t, "big.bin", 20 * 1024 * 1024, 1024 * 1024)
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = app.token("someone-else", "study");
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        app.put_file(&t, "self", "note.txt", "text/plain", vec![b'x'; 600]),
    )
    .await
    .expect("a 600-byte upload got no answer while slow clients held the budget");
    json(res, StatusCode::CREATED).await;
    // Uploads that waited for a part buffer past the budget's wait were told to come back.
    let mut refused = 0;
    for mut s in stalled {
        let mut reply = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut reply)).await {
            let text = String::from_utf8_lossy(&reply[..n]);
            if text.starts_with("HTTP/1.1 503") {
                assert!(
                    text.to_ascii_lowercase().contains("retry-after: 5"),
                    "{text}"
                );
                refused += 1;
            }
        }
    }
    if app.backend == common::Backend::Aws {
        // Part buffers may take 35 of the 40 MiB: four uploads hold one, the others waited.
        assert_eq!(refused, 8);
    } else {
        // The local store writes through a small buffer of its own: nobody waited.
        assert_eq!(refused, 0);
    }
}
