//! ClamAV in the upload pipeline (a real clamd with a signature for the EICAR test string):
//! nothing infected or unscanned is ever committed, and clean files come out `clean`.

mod common;

use std::io::Write;

use common::{TestApp, closed_port, eicar, error, json, noise};
use participant_files::scan::INSTREAM_CHUNK;
use reqwest::StatusCode;
use serde_json::json;

fn clamd() -> String {
    std::env::var("PF_TEST_CLAMD").expect(
        "PF_TEST_CLAMD is not set: run the suite with scripts/test, which installs and starts clamd on loopback",
    )
}

async fn scanning_app(extra: &[&str]) -> TestApp {
    let address = clamd();
    let mut flags = vec!["--clamd", address.as_str()];
    flags.extend_from_slice(extra);
    TestApp::start_with(&flags).await
}

async fn assert_infected(app: &TestApp, t: &str, file: &str, body: Vec<u8>, mime: &str) {
    let res = app.put_file(t, "self", file, mime, body).await;
    let err = error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Eicar-Test-Signature"),
        "{err}"
    );
    error(
        app.get_file(t, "self", file).await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn eicar_alone_is_refused_and_nothing_is_kept() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    assert_infected(&app, &t, "eicar.com", eicar(), "application/octet-stream").await;
    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    app.assert_nothing_stored().await;
    let line = app
        .audit()
        .into_iter()
        .find(|l| l["fileId"] == "eicar.com")
        .unwrap();
    assert_eq!(line["status"], 422);
}

#[tokio::test]
async fn eicar_in_the_middle_of_50_mib() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    let mut body = noise(50 * 1024 * 1024, 9);
    let at = 25 * 1024 * 1024 + 12_345;
    body[at..at + 68].copy_from_slice(&eicar());
    assert_infected(&app, &t, "big.bin", body, "application/octet-stream").await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn eicar_across_an_instream_chunk_boundary() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    let mut body = noise(4 * INSTREAM_CHUNK, 10);
    let at = 2 * INSTREAM_CHUNK - 30;
    body[at..at + 68].copy_from_slice(&eicar());
    assert_infected(&app, &t, "split.bin", body, "application/octet-stream").await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn eicar_inside_a_zip() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    let mut zipped = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut zipped);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("readme.txt", options).unwrap();
        z.write_all(b"nothing to see").unwrap();
        z.start_file("tools/eicar.com", options).unwrap();
        z.write_all(&eicar()).unwrap();
        z.finish().unwrap();
    }
    let body = zipped.into_inner();
    // Deflated: the string is not in the bytes as sent, so clamd must have opened the archive.
    assert!(!body.windows(68).any(|w| w == eicar()));
    assert_infected(&app, &t, "dump.zip", body, "application/zip").await;
    app.assert_nothing_stored().await;
}

#[tokio::test]
async fn clean_files_of_several_kinds_are_stored_as_clean() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    for (name, mime) in [
        ("plaque.jpg", "image/jpeg"),
        ("plaque.png", "image/png"),
        ("plaque.pdf", "application/pdf"),
        ("sensor-dump.zip", "application/zip"),
        ("notes.txt", "text/plain"),
    ] {
        let bytes = std::fs::read(fixtures.join(name)).unwrap();
        let file = json(
            app.put_file(&t, "self", name, mime, bytes.clone()).await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(file["scanStatus"], "clean", "{name}");
        assert_eq!(file["mimeType"], mime, "{name}");
        assert_eq!(app.download(&t, "self", name).await, bytes, "{name}");
        // The evidence of the verdict: clamd's own VERSION (this test clamd has custom
        // signatures only, so no database version follows), and when.
        let engine = file["scanEngine"].as_str().unwrap_or_default();
        assert!(engine.starts_with("ClamAV 1."), "{name}: {file}");
        let scanned =
            chrono::DateTime::parse_from_rfc3339(file["scannedOn"].as_str().unwrap()).unwrap();
        let created =
            chrono::DateTime::parse_from_rfc3339(file["createdOn"].as_str().unwrap()).unwrap();
        assert!(scanned <= created, "{name}: {file}");
    }
    // The listing shows the same evidence, and a file stored without a scanner has none.
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    for item in page["items"].as_array().unwrap() {
        assert!(
            item["scanEngine"]
                .as_str()
                .unwrap()
                .starts_with("ClamAV 1."),
            "{item}"
        );
        assert!(item["scannedOn"].is_string(), "{item}");
    }
    // A PDF declared as a JPEG is refused before anything is scanned or stored.
    let pdf = std::fs::read(fixtures.join("plaque.pdf")).unwrap();
    let res = app
        .put_file(&t, "self", "fake.jpg", "image/jpeg", pdf)
        .await;
    error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
    )
    .await;
    let body = json(
        app.request(reqwest::Method::GET, "/ready")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["checks"]["scanner"]["status"], "ok");
}

#[tokio::test]
async fn upload_urls_are_scanned_too() {
    let app = scanning_app(&[]).await;
    let t = app.token("alice", "study");
    let posted = json(
        app.post_file(&t, "self", "e.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap();
    let res = app
        .client
        .put(url)
        .header("content-type", "text/plain")
        .body(eicar())
        .send()
        .await
        .unwrap();
    error(
        res,
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    // The upload URL was not used up by a refused body; a clean one still goes through.
    let res = app
        .client
        .put(url)
        .header("content-type", "text/plain")
        .body("clean")
        .send()
        .await
        .unwrap();
    assert_eq!(json(res, StatusCode::CREATED).await["scanStatus"], "clean");
}

#[tokio::test]
async fn an_unreachable_scanner_fails_uploads_closed_but_not_reads() {
    let app =
        TestApp::start_with(&["--clamd", &format!("tcp://127.0.0.1:{}", closed_port())]).await;
    let t = app.token("alice", "study");
    for len in [100, 20 * 1024 * 1024] {
        let res = app
            .put_file(
                &t,
                "self",
                "a.bin",
                "application/octet-stream",
                noise(len, 11),
            )
            .await;
        let err = error(
            res,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
        )
        .await;
        assert!(
            err["message"].as_str().unwrap().contains("virus scanner"),
            "{err}"
        );
    }
    app.assert_nothing_stored().await;
    // Reads stay up: the instance is ready, and says the scanner is not.
    let body = json(
        app.request(reqwest::Method::GET, "/ready")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["checks"]["scanner"]["status"], "unavailable");
    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_scan_leaves_nothing() {
    let app = scanning_app(&["--s3-part-size", "5MiB"]).await;
    let t = app.token("alice", "study");
    let stream = app.partial_put(&t, "half.bin", 12_000_000, 6_000_000).await;
    app.wait_until_staged().await;
    drop(stream);
    app.assert_nothing_stored().await;
    error(
        app.get_file(&t, "self", "half.bin").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

#[tokio::test]
async fn clamd_over_a_unix_socket() {
    let socket =
        std::env::var("PF_TEST_CLAMD_SOCKET").expect("PF_TEST_CLAMD_SOCKET is set by scripts/test");
    let app = TestApp::start_with(&["--clamd", &socket]).await;
    let t = app.token("alice", "study");
    let file = json(
        app.put_file(&t, "self", "n.txt", "text/plain", b"fine".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(file["scanStatus"], "clean");
    assert_infected(&app, &t, "e.txt", eicar(), "text/plain").await;
}
