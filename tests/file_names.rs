//! File names as phones and desktops give them: a tus `filename` alone uploads, under the fileId
//! the README's rule derives from it; the name is kept as `fileName` (NFC, no path part) and
//! names every download in `Content-Disposition` (RFC 6266), presigned ones too.

mod common;

use common::tus::{OFFSET_STREAM, meta};
use common::{TestApp, error, json, noise};
use percent_encoding::percent_decode_str;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The first 8 hex digits of the SHA-256 of the NFC name, as the rule appends them.
fn h8(nfc: &str) -> String {
    hex::encode(&Sha256::digest(nfc.as_bytes())[..4])
}

/// A tus creation-with-upload of `bytes` with this metadata.
async fn tus_upload(app: &TestApp, token: &str, pairs: &[(&str, &str)], bytes: &[u8]) -> Response {
    app.request(Method::POST, "/v3/participants/self/uploads")
        .bearer_auth(token)
        .header("tus-resumable", "1.0.0")
        .header("upload-metadata", meta(pairs))
        .header("upload-length", bytes.len())
        .header("content-type", OFFSET_STREAM)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

/// Uploads by tus with `filename` only, as tus-js-client and Uppy do.
async fn upload_named(app: &TestApp, token: &str, name: &str, bytes: &[u8]) {
    let res = tus_upload(
        app,
        token,
        &[("filename", name), ("filetype", "application/octet-stream")],
        bytes,
    )
    .await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{name:?}: {}",
        res.text().await.unwrap()
    );
}

/// The name a `Content-Disposition` gives in `filename*` and its quoted `filename` fallback,
/// read as RFC 6266 says (not with the service's own parser).
fn disposition(header: &str) -> (String, String) {
    let rest = header
        .strip_prefix("attachment; filename=\"")
        .unwrap_or_else(|| panic!("{header}"));
    let (fallback, rest) = rest.split_once('"').unwrap();
    let encoded = rest
        .strip_prefix("; filename*=UTF-8''")
        .unwrap_or_else(|| panic!("{header}"));
    assert!(
        fallback
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'\\'),
        "{header}"
    );
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%!#$&+-.^_`|~".contains(&b)),
        "{header}"
    );
    let name = percent_decode_str(encoded).decode_utf8().unwrap();
    (name.into_owned(), fallback.to_owned())
}

/// Follows the GET's 302 and returns the download's `Content-Disposition` and bytes.
async fn download(app: &TestApp, token: &str, file: &str) -> (String, Vec<u8>) {
    let res = app.get_file(token, "self", file).await;
    assert_eq!(res.status(), StatusCode::FOUND, "{file}");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let res = app.client.get(location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    (header, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_name_a_device_gives_uploads_by_tus_filename_alone() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let long = format!("{}x.txt", "\u{e9}".repeat(125));
    assert_eq!(long.len(), 255);
    let nfd = "Ro\u{308}ntgen Befund.pdf";
    let nfc = "R\u{f6}ntgen Befund.pdf";
    // (as sent, fileName, fileId)
    let cases = [
        (
            "IMG 0001 (1).jpg",
            "IMG 0001 (1).jpg",
            format!("IMG-0001-1-{}.jpg", h8("IMG 0001 (1).jpg")),
        ),
        (
            "R\u{f6}ntgen.pdf",
            "R\u{f6}ntgen.pdf",
            format!("Rontgen-{}.pdf", h8("R\u{f6}ntgen.pdf")),
        ),
        (
            "my notes (1).txt",
            "my notes (1).txt",
            format!("my-notes-1-{}.txt", h8("my notes (1).txt")),
        ),
        (
            "\u{1f389} Party 2026.png",
            "\u{1f389} Party 2026.png",
            format!("Party-2026-{}.png", h8("\u{1f389} Party 2026.png")),
        ),
        (nfd, nfc, format!("Rontgen-Befund-{}.pdf", h8(nfc))),
        (
            &long,
            &long,
            format!("{}x-{}.txt", "e".repeat(125), h8(&long)),
        ),
        (
            "C:\\fakepath\\scan (2).pdf",
            "scan (2).pdf",
            format!("scan-2-{}.pdf", h8("scan (2).pdf")),
        ),
        ("photo-1.jpg", "photo-1.jpg", "photo-1.jpg".to_owned()),
    ];
    for (i, (sent, name, id)) in cases.iter().enumerate() {
        let bytes = noise(100 + i, i as u64);
        upload_named(&app, &t, sent, &bytes).await;
        let listed = app
            .listed(&t, "self", id)
            .await
            .unwrap_or_else(|| panic!("{sent:?}: no file {id}"));
        assert_eq!(listed["fileName"], *name, "{sent:?}");
        assert_eq!(listed["size"], bytes.len(), "{sent:?}");
        let (header, got) = download(&app, &t, id).await;
        assert_eq!(disposition(&header).0, *name, "{sent:?}: {header}");
        assert!(got == bytes, "{sent:?}");
    }
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), cases.len());

    // Both: the fileId is the id, the filename the name.
    let res = tus_upload(
        &app,
        &t,
        &[("fileId", "report.pdf"), ("filename", "R\u{f6}ntgen.pdf")],
        b"both",
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let listed = app.listed(&t, "self", "report.pdf").await.unwrap();
    assert_eq!(listed["fileName"], "R\u{f6}ntgen.pdf");
}

#[tokio::test]
async fn the_same_name_in_nfd_replaces_the_same_file() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let nfc = "R\u{f6}ntgen \u{e9}t\u{e9}.pdf";
    let nfd = "Ro\u{308}ntgen e\u{301}te\u{301}.pdf";
    upload_named(&app, &t, nfc, b"first, from a phone").await;
    upload_named(&app, &t, nfd, b"second, from a Mac").await;
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["fileId"], format!("Rontgen-ete-{}.pdf", h8(nfc)));
    assert_eq!(items[0]["fileName"], nfc);
    let (_, got) = download(&app, &t, items[0]["fileId"].as_str().unwrap()).await;
    assert_eq!(got, b"second, from a Mac");
    let actions: Vec<String> = app
        .audit()
        .iter()
        .filter_map(|l| l["action"].as_str().map(str::to_owned))
        .collect();
    assert!(actions.iter().any(|a| a == "replace"), "{actions:?}");
}

#[tokio::test]
async fn control_characters_and_bad_explicit_file_ids_are_refused() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    for bad in [
        "a\u{1}b.txt",
        "line\nbreak.txt",
        "del\u{7f}.txt",
        "c1\u{85}.txt",
    ] {
        let body = error(
            tus_upload(&app, &t, &[("filename", bad)], b"x").await,
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        )
        .await;
        assert_eq!(
            body["message"], "filename must not contain control characters.",
            "{bad:?}"
        );
    }
    // A name that names no file, or one longer than any file system allows.
    for bad in ["", "dir/", "..", &"x".repeat(256)] {
        let res = tus_upload(&app, &t, &[("filename", bad)], b"x").await;
        error(res, StatusCode::BAD_REQUEST, "BadRequestException").await;
    }
    // A fileId given explicitly keeps Bridge's rule: in the metadata, and in the path.
    let body = error(
        tus_upload(
            &app,
            &t,
            &[("fileId", "my notes.txt"), ("filename", "my notes.txt")],
            b"x",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    assert_eq!(
        body["message"],
        "fileId may only contain A-Z, a-z, 0-9, '.', '_' and '-'."
    );
    let body = error(
        app.put_file(&t, "self", "my%20notes.txt", "text/plain", b"x".to_vec())
            .await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    assert_eq!(
        body["message"],
        "fileId may only contain A-Z, a-z, 0-9, '.', '_' and '-'."
    );
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn downloads_name_the_file_in_both_parameters() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let name = "R\u{f6}ntgen \"Befund\" 2026.pdf";
    upload_named(&app, &t, name, b"%PDF-1.4 scan").await;
    let id = format!("Rontgen-Befund-2026-{}.pdf", h8(name));
    let (header, _) = download(&app, &t, &id).await;
    assert_eq!(
        header,
        "attachment; filename=\"Rontgen _Befund_ 2026.pdf\"; \
         filename*=UTF-8''R%C3%B6ntgen%20%22Befund%22%202026.pdf"
    );
    assert_eq!(disposition(&header).0, name);

    // A file sent without a name is named by its fileId.
    let res = app
        .put_file(&t, "self", "plain.txt", "text/plain", b"hello".to_vec())
        .await;
    assert!(
        json(res, StatusCode::CREATED)
            .await
            .get("fileName")
            .is_none()
    );
    let (header, _) = download(&app, &t, "plain.txt").await;
    assert_eq!(
        header,
        "attachment; filename=\"plain.txt\"; filename*=UTF-8''plain.txt"
    );
}

#[tokio::test]
async fn a_put_names_its_file_in_content_disposition_and_a_post_in_its_body() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let name = "R\u{f6}ntgen \"Befund\".pdf";
    for (i, header) in [
        "attachment; filename*=UTF-8''Ro%CC%88ntgen%20%22Befund%22.pdf",
        "attachment; filename=\"fallback.pdf\"; filename*=utf-8''R%C3%B6ntgen%20%22Befund%22.pdf",
    ]
    .iter()
    .enumerate()
    {
        let file = format!("scan-{i}.pdf");
        let res = app
            .request(Method::PUT, &format!("/v3/participants/self/files/{file}"))
            .bearer_auth(&t)
            .header("content-type", "application/pdf")
            .header("content-disposition", *header)
            .body(&b"%PDF-1.4 scan"[..])
            .send()
            .await
            .unwrap();
        let stored = json(res, StatusCode::CREATED).await;
        assert_eq!(stored["fileId"], file.as_str());
        assert_eq!(stored["fileName"], name, "{header}");
        let (got, _) = download(&app, &t, &file).await;
        assert_eq!(disposition(&got).0, name);
    }
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/bad.pdf")
        .bearer_auth(&t)
        .header("content-type", "application/pdf")
        .header(
            "content-disposition",
            "attachment; filename*=UTF-8''a%01b.pdf",
        )
        .body(&b"%PDF-1.4"[..])
        .send()
        .await
        .unwrap();
    let body = error(res, StatusCode::BAD_REQUEST, "BadRequestException").await;
    assert_eq!(
        body["message"],
        "Content-Disposition: the filename must not contain control characters."
    );

    // An upload URL: the name comes with the POST, the file has it once the bytes arrive.
    let posted = json(
        app.post_file(
            &t,
            "self",
            "later.pdf",
            &json!({"mimeType": "application/pdf", "fileName": "Scans/Ro\u{308}ntgen \"Befund\".pdf"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(posted["fileName"], name);
    let res = app
        .client
        .put(posted["uploadUrl"].as_str().unwrap())
        .header("content-type", "application/pdf")
        .body(&b"%PDF-1.4 later"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(json(res, StatusCode::CREATED).await["fileName"], name);
    assert_eq!(
        app.listed(&t, "self", "later.pdf").await.unwrap()["fileName"],
        name
    );
    let body = error(
        app.post_file(
            &t,
            "self",
            "x.pdf",
            &json!({"mimeType": "application/pdf", "fileName": "tab\there.pdf"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidEntityException",
    )
    .await;
    assert_eq!(
        body["message"],
        "fileName must not contain control characters."
    );
}

#[tokio::test]
async fn a_presigned_download_names_the_file_in_the_signed_url() {
    let app = TestApp::start_presigned(&[]).await;
    let t = app.token("alice", "study");
    let name = "R\u{f6}ntgen \"Befund\" 2026.pdf";
    let bytes = b"%PDF-1.4 presigned".to_vec();
    let posted = json(
        app.post_file(
            &t,
            "self",
            "scan.pdf",
            &json!({"mimeType": "application/pdf", "fileName": name}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app
        .client
        .put(posted["uploadUrl"].as_str().unwrap())
        .header("content-type", "application/pdf")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    // The service learns of the arrival on the next read, and the name comes with it.
    let listed = app.listed(&t, "self", "scan.pdf").await.unwrap();
    assert_eq!(listed["fileName"], name);

    let res = app.get_file(&t, "self", "scan.pdf").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let url = reqwest::Url::parse(&location).unwrap();
    let signed = url
        .query_pairs()
        .find_map(|(k, v)| (k == "response-content-disposition").then(|| v.into_owned()))
        .unwrap_or_else(|| panic!("no response-content-disposition in {location}"));
    let signed = signed.as_str();
    assert_eq!(
        signed,
        "attachment; filename=\"Rontgen _Befund_ 2026.pdf\"; \
         filename*=UTF-8''R%C3%B6ntgen%20%22Befund%22%202026.pdf"
    );
    assert_eq!(disposition(signed).0, name);
    // The store takes the signed URL (the parameter is covered by the signature) and answers
    // with the header it names.
    let res = app.client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-disposition"], signed);
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test]
async fn the_command_line_client_sends_the_file_name_and_gets_the_derived_file_id() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let name = "my notes (1).txt";
    let path = dir.path().join(name);
    std::fs::write(&path, b"notes from the command line").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["upload", &path.display().to_string(), "--url", &app.base])
        .env("PF_TOKEN", app.token("alice", "study"))
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored["fileId"], format!("my-notes-1-{}.txt", h8(name)));
    assert_eq!(stored["fileName"], name);
}
