//! The participant routes end to end on a real listener: upload, list, download, replace,
//! delete, and the shapes Bridge clients read.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestApp, error, jpeg, json, noise, pdf};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_b64(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

fn is_bridge_timestamp(s: &str) -> bool {
    // 2026-11-26T22:00:00.000Z
    s.len() == 24 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[tokio::test]
async fn put_list_get_download_delete() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let bytes = jpeg(5000);

    let res = app
        .put_file(&t, "self", "photo-1.jpg", "image/jpeg", bytes.clone())
        .await;
    let file = json(res, StatusCode::CREATED).await;
    assert_eq!(file["fileId"], "photo-1.jpg");
    assert_eq!(file["userId"], "alice");
    assert_eq!(file["appId"], "study");
    assert_eq!(file["mimeType"], "image/jpeg");
    assert_eq!(file["size"], 5000);
    assert_eq!(file["sha256"], sha256_b64(&bytes));
    assert_eq!(file["scanStatus"], "unscanned");
    // Without a scanner there is no verdict to give evidence of.
    assert!(
        file.get("scanEngine").is_none() && file.get("scannedOn").is_none(),
        "{file}"
    );
    assert_eq!(file["type"], "ParticipantFile");
    assert!(
        is_bridge_timestamp(file["createdOn"].as_str().unwrap()),
        "{file}"
    );
    for absent in ["downloadUrl", "uploadUrl", "expiresOn"] {
        assert!(file.get(absent).is_none(), "{absent} in {file}");
    }

    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["type"], "ForwardCursorPagedResourceList");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0], file);
    assert_eq!(page["hasNext"], false);
    assert!(page.get("nextPageOffsetKey").is_none());
    assert_eq!(
        page["requestParams"],
        json!({"offsetKey": null, "pageSize": 50, "type": "RequestParams"})
    );

    let res = app.get_file(&t, "self", "photo-1.jpg").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let body = json(res, StatusCode::FOUND).await;
    assert_eq!(body["downloadUrl"], location);
    assert!(location.starts_with(&format!("{}/v3/downloads/", app.base)));
    assert!(is_bridge_timestamp(body["expiresOn"].as_str().unwrap()));
    assert_eq!(body["sha256"], file["sha256"]);

    let res = app.client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "image/jpeg");
    assert_eq!(h["content-length"], "5000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"photo-1.jpg\"; filename*=UTF-8''photo-1.jpg"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);

    let res = app.delete_file(&t, "self", "photo-1.jpg").await;
    assert_eq!(
        json(res, StatusCode::OK).await,
        json!({"message": "Participant file deleted.", "type": "StatusMessage"})
    );
    error(
        app.get_file(&t, "self", "photo-1.jpg").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.delete_file(&t, "self", "photo-1.jpg").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let page = json(app.list(&t, "self", "").await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));
    // The old download URL no longer serves anything, and no bytes are left on disk.
    let res = app.client.get(&location).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());
}

#[tokio::test]
async fn replace_serves_new_bytes_and_keeps_one_object() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let first = json(
        app.put_file(&t, "self", "f.pdf", "application/pdf", pdf(3000))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let old_url = app.get_file(&t, "self", "f.pdf").await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let second = json(
        app.put_file(&t, "self", "f.pdf", "image/jpeg", jpeg(100))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(second["mimeType"], "image/jpeg");
    assert_eq!(second["size"], 100);
    assert_ne!(first["sha256"], second["sha256"]);
    assert_eq!(app.download(&t, "self", "f.pdf").await, jpeg(100));
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    // A download URL serves only the bytes it was issued for.
    assert_eq!(
        app.client.get(&old_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let actions: Vec<_> = app
        .audit()
        .iter()
        .filter(|l| l["fileId"] == "f.pdf")
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["upload", "read", "replace", "read", "download", "download"]
    );
}

#[tokio::test]
async fn post_then_put_to_the_upload_url() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let bytes = b"some notes".to_vec();
    let res = app
        .post_file(&t, "self", "notes.txt", &json!({"mimeType": "text/plain", "size": bytes.len(), "sha256": sha256_b64(&bytes), "fileId": "ignored", "type": "ParticipantFile"}))
        .await;
    let posted = json(res, StatusCode::CREATED).await;
    assert_eq!(posted["fileId"], "notes.txt");
    assert_eq!(posted["mimeType"], "text/plain");
    assert_eq!(posted["size"], 10);
    assert!(is_bridge_timestamp(posted["expiresOn"].as_str().unwrap()));
    assert!(posted.get("scanStatus").is_none());
    let upload_url = posted["uploadUrl"].as_str().unwrap().to_owned();
    assert!(upload_url.starts_with(&format!("{}/v3/uploads/", app.base)));

    // Not there until the bytes arrive.
    error(
        app.get_file(&t, "self", "notes.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );

    let res = app
        .client
        .put(&upload_url)
        .header("content-type", "text/plain")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let file = json(res, StatusCode::CREATED).await;
    assert_eq!(file["sha256"], sha256_b64(&bytes));
    assert_eq!(app.download(&t, "self", "notes.txt").await, bytes);

    // An upload URL commits at most once.
    let res = app
        .client
        .put(&upload_url)
        .header("content-type", "text/plain")
        .body(b"other".to_vec())
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    assert_eq!(app.download(&t, "self", "notes.txt").await, bytes);
}

#[tokio::test]
async fn a_newer_post_replaces_the_pending_upload_but_not_the_file() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "a.txt", "text/plain", b"v1".to_vec())
        .await;
    let first = json(
        app.post_file(&t, "self", "a.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let second = json(
        app.post_file(&t, "self", "a.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    // The current file is untouched by POSTs.
    assert_eq!(app.download(&t, "self", "a.txt").await, b"v1");
    let res = app
        .client
        .put(first["uploadUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body("v2")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    let res = app
        .client
        .put(second["uploadUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body("v3")
        .send()
        .await
        .unwrap();
    json(res, StatusCode::CREATED).await;
    assert_eq!(app.download(&t, "self", "a.txt").await, b"v3");
    assert_eq!(app.stored_files().len(), 1);
}

#[tokio::test]
async fn deleting_a_pending_upload_cancels_it() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let posted = json(
        app.post_file(&t, "self", "p.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    json(app.delete_file(&t, "self", "p.txt").await, StatusCode::OK).await;
    let res = app
        .client
        .put(posted["uploadUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body("late")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    error(
        app.get_file(&t, "self", "p.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.delete_file(&t, "self", "p.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert!(app.stored_files().is_empty());
}

#[tokio::test]
async fn post_body_errors() {
    let app = TestApp::start_with(&[
        "--max-file-size",
        "1KiB",
        "--allowed-types",
        "image/*,text/plain",
    ])
    .await;
    let t = app.token("alice", "study");
    let post_raw = |body: &'static str| {
        app.request(Method::POST, "/v3/participants/self/files/x.jpg")
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "",
        "{",
        "[]",
        "{}",
        r#"{"mimeType": ""}"#,
        r#"{"mimeType": "jpeg"}"#,
        r#"{"mimeType": 3}"#,
        r#"{"mimeType": "image/jpeg", "size": -5}"#,
        r#"{"mimeType": "image/jpeg", "sha256": "nope"}"#,
    ] {
        let res = post_raw(body).await.unwrap();
        error(res, StatusCode::BAD_REQUEST, "InvalidEntityException").await;
    }
    let res = app
        .post_file(
            &t,
            "self",
            "x.jpg",
            &json!({"mimeType": "image/jpeg", "size": 1025}),
        )
        .await;
    error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    let res = app
        .post_file(&t, "self", "x.pdf", &json!({"mimeType": "application/pdf"}))
        .await;
    error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
    )
    .await;
    // None of these left a row behind.
    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    assert!(
        app.post_file(
            &t,
            "self",
            "x.jpg",
            &json!({"mimeType": "image/jpeg", "size": 1024})
        )
        .await
        .status()
            == StatusCode::CREATED
    );
}

#[tokio::test]
async fn upload_errors_leave_nothing_behind() {
    let app = TestApp::start_with(&[
        "--max-file-size",
        "4KiB",
        "--allowed-types",
        "image/*,text/plain,application/octet-stream",
    ])
    .await;
    let t = app.token("alice", "study");

    // Over the limit by Content-Length: refused before the body is read.
    let res = app
        .put_file(&t, "self", "big.jpg", "image/jpeg", jpeg(4097))
        .await;
    error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    // Over the limit without a Content-Length (chunked): refused when the limit is passed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(jpeg(3000)), Ok(noise(3000, 1))];
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/big2.jpg")
        .bearer_auth(&t)
        .header("content-type", "image/jpeg")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    error(
        res,
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLargeException",
    )
    .await;
    // A PDF declared as a JPEG, and a type outside the allowed ones.
    let res = app
        .put_file(&t, "self", "fake.jpg", "image/jpeg", pdf(500))
        .await;
    let body = error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("application/pdf"),
        "{body}"
    );
    let res = app
        .put_file(&t, "self", "doc.pdf", "application/pdf", pdf(500))
        .await;
    error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
    )
    .await;
    let res = app
        .put_file(
            &t,
            "self",
            "sneaky.bin",
            "application/octet-stream",
            pdf(500),
        )
        .await;
    error(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaTypeException",
    )
    .await;
    // A malformed Content-Type, and a declared checksum that the body does not match.
    let res = app
        .put_file(&t, "self", "a.txt", "text", b"hi".to_vec())
        .await;
    error(res, StatusCode::BAD_REQUEST, "BadRequestException").await;
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/a.txt")
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .header("x-amz-checksum-sha256", sha256_b64(b"something else"))
        .body("hi")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::BAD_REQUEST, "BadRequestException").await;

    assert_eq!(
        json(app.list(&t, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    assert!(app.stored_files().is_empty(), "{:?}", app.stored_files());

    // The matching checksum and no Content-Type at all are fine: the type is sniffed.
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/a.txt")
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .header("x-amz-checksum-sha256", sha256_b64(b"hi"))
        .body("hi")
        .send()
        .await
        .unwrap();
    json(res, StatusCode::CREATED).await;
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/p.jpg")
        .bearer_auth(&t)
        .body(jpeg(100))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(res, StatusCode::CREATED).await["mimeType"],
        "image/jpeg"
    );
}

#[tokio::test]
async fn capability_upload_checks_what_was_signed() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let bytes = jpeg(2000);
    let posted = json(
        app.post_file(
            &t,
            "self",
            "x.jpg",
            &json!({"mimeType": "image/jpeg", "size": 2000, "sha256": sha256_b64(&bytes)}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap().to_owned();
    let put = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut r = app.client.put(&url);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.body(body).send()
    };
    error(
        put(Some("image/png"), bytes.clone()).await.unwrap(),
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    error(
        put(None, bytes.clone()).await.unwrap(),
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    let mut longer = bytes.clone();
    longer.push(0);
    error(
        put(Some("image/jpeg"), longer).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    let mut altered = bytes.clone();
    altered[1999] ^= 1;
    error(
        put(Some("image/jpeg"), altered).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    assert!(app.stored_files().is_empty());
    // Failed attempts do not use the URL up; the right bytes still go through, with parameters
    // and another case in the Content-Type.
    json(
        put(Some("IMAGE/JPEG; foo=bar"), bytes.clone())
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.download(&t, "self", "x.jpg").await, bytes);
}

#[tokio::test]
async fn capability_urls_refuse_tampering_expiry_and_the_other_purpose() {
    let app = TestApp::start_with(&["--url-ttl", "2s"]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "a.txt", "text/plain", b"hello".to_vec())
        .await;
    let download = app.get_file(&t, "self", "a.txt").await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let posted = json(
        app.post_file(&t, "self", "b.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let upload = posted["uploadUrl"].as_str().unwrap().to_owned();
    let download_token = download.rsplit('/').next().unwrap().to_owned();
    let upload_token = upload.rsplit('/').next().unwrap().to_owned();

    // Tampered: one character of the payload or of the MAC changed.
    for tampered in [
        flip(&download_token, 3),
        flip(&download_token, download_token.len() - 2),
        "garbage".into(),
        "a.b".into(),
    ] {
        let res = app
            .client
            .get(app.url(&format!("/v3/downloads/{tampered}")))
            .send()
            .await
            .unwrap();
        error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    }
    // The other purpose.
    let res = app
        .client
        .get(app.url(&format!("/v3/downloads/{upload_token}")))
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    let res = app
        .client
        .put(app.url(&format!("/v3/uploads/{download_token}")))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    // Still good now; expired after the TTL.
    assert_eq!(
        app.client.get(&download).send().await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    error(
        app.client.get(&download).send().await.unwrap(),
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    let res = app
        .client
        .put(&upload)
        .header("content-type", "text/plain")
        .body("late")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    error(
        app.get_file(&t, "self", "b.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
}

fn flip(token: &str, at: usize) -> String {
    let mut b = token.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn ranges() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let bytes = noise(1000, 7);
    app.put_file(
        &t,
        "self",
        "r.bin",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    let url = app.get_file(&t, "self", "r.bin").await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let get = |range: &'static str| app.client.get(&url).header("range", range).send();

    let res = get("bytes=10-19").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(res.headers()["content-length"], "10");
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes[10..20]);
    let res = get("bytes=-5").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["content-range"], "bytes 995-999/1000");
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes[995..]);
    let res = get("bytes=990-").await.unwrap();
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes[990..]);
    let res = get("bytes=1000-1010").await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()["content-range"], "bytes */1000");
    // Several ranges are answered with the whole object.
    let res = get("bytes=0-1,5-6").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);
    // A HEAD tells the size without the bytes.
    let res = app.client.head(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], "1000");
}

#[tokio::test]
async fn paging_follows_bridge() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let ids: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
    for id in ids.iter().rev() {
        json(
            app.put_file(&t, "self", id, "text/plain", id.as_bytes().to_vec())
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    // Pending-only rows sit between the files and must not shorten pages.
    for id in ["f00a", "f03a", "f04a", "f07a"] {
        json(
            app.post_file(&t, "self", id, &json!({"mimeType": "text/plain"}))
                .await,
            StatusCode::CREATED,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut query = "?pageSize=5".to_owned();
    let mut pages = 0;
    loop {
        let page = json(app.list(&t, "self", &query).await, StatusCode::OK).await;
        pages += 1;
        let items: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["fileId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(page["requestParams"]["pageSize"], 5);
        if items.len() == 5 {
            assert_eq!(page["hasNext"], true);
            assert_eq!(page["nextPageOffsetKey"], items[4]);
        } else {
            assert_eq!(page["hasNext"], false);
            assert!(page.get("nextPageOffsetKey").is_none());
        }
        seen.extend(items);
        match page["nextPageOffsetKey"].as_str() {
            Some(next) => query = format!("?pageSize=5&offsetKey={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    // offsetKey need not exist; it is echoed back.
    let page = json(
        app.list(&t, "self", "?offsetKey=f05x").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"][0]["fileId"], "f06");
    assert_eq!(page["requestParams"]["offsetKey"], "f05x");
    for bad in [
        "?pageSize=4",
        "?pageSize=101",
        "?pageSize=ten",
        "?pageSize=",
    ] {
        let body = error(
            app.list(&t, "self", bad).await,
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        )
        .await;
        assert_eq!(body["message"], "pageSize must be from 5-100 records");
    }
    error(
        app.list(&t, "self", "?offsetKey=a%2Fb").await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    error(
        app.list(&t, "self", "?offsetKey=..").await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
}

#[tokio::test]
async fn malformed_file_ids_are_400_and_store_nothing() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let long = "x".repeat(256);
    for path in [
        "/",
        "/..",
        "/.",
        "/self",
        "/a/b",
        "/a%2Fb",
        "/%2e%2e",
        "/caf%C3%A9",
        "/caf\u{e9}",
        "/%FF",
        "/a%00",
        "/a%20b",
        &format!("/{long}"),
    ] {
        for method in ["GET", "PUT", "POST", "DELETE"] {
            let (status, body) = app.raw(&format!(
                "{method} /v3/participants/self/files{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            )).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["type"], "BadRequestException", "{method} {path}");
        }
    }
    for user in ["..", "a%2Fb", &long] {
        let (status, _) = app
            .raw_get(&t, &format!("/v3/participants/{user}/files"))
            .await;
        assert_eq!(status, 400, "{user}");
    }
    assert!(app.stored_files().is_empty());
    // 255 characters is still a valid ID.
    let ok = "y".repeat(255);
    json(
        app.put_file(&t, "self", &ok, "text/plain", b"ok".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_bridge_shape() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    error(
        app.request(Method::GET, "/v3/nothing")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let res = app
        .request(Method::PATCH, "/v3/participants/self/files/a")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    error(res, StatusCode::METHOD_NOT_ALLOWED, "BadRequestException").await;
    let res = app
        .request(Method::POST, "/v3/participants/self/files")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    error(res, StatusCode::METHOD_NOT_ALLOWED, "BadRequestException").await;
}

#[tokio::test]
async fn health_and_ready() {
    let app = TestApp::start().await;
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(json(res, StatusCode::OK).await["status"], "ok");
    let body = json(
        app.request(Method::GET, "/ready").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(body["checks"]["index"]["status"], "ok");
    assert_eq!(body["checks"]["store"]["status"], "ok");
    assert_eq!(body["checks"]["scanner"]["status"], "not configured");
    // Take the store away: the instance is no longer ready, and says which part failed.
    app.break_store();
    let res = app.request(Method::GET, "/ready").send().await.unwrap();
    let body = error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("file store"),
        "{body}"
    );
    assert_eq!(body["checks"]["store"]["status"], "unavailable");
    assert_eq!(body["checks"]["index"]["status"], "ok");
}
