//! Capability URLs as a client and a proxy see them: opaque tokens, a media type too long for
//! a URL refused at the POST, HEAD audited as such, and `If-Range`.

mod common;

use base64::Engine;
use common::{TestApp, error, json, noise};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn token_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
async fn tokens_show_nothing_of_the_grant() {
    let app = TestApp::start().await;
    let t = app.token("visible-alice", "visible-study");
    let posted = json(
        app.post_file(
            &t,
            "self",
            "visible-file.pdf",
            &json!({"mimeType": "application/pdf"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let upload = posted["uploadUrl"].as_str().unwrap().to_owned();
    json(
        app.client
            .put(&upload)
            .header("content-type", "application/pdf")
            .body(common::pdf(300))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let res = app.get_file(&t, "self", "visible-file.pdf").await;
    let download = res.headers()["location"].to_str().unwrap().to_owned();
    for url in [&upload, &download] {
        let token = token_of(url);
        // Whatever base64 a token is made of, in whole or in parts, shows nothing readable.
        let mut shown = token.to_owned();
        for part in token.split(['.', '~']) {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap_or_default();
            shown.push_str(&String::from_utf8_lossy(&decoded));
        }
        for secret in ["visible", "application/pdf", "participant"] {
            assert!(!shown.contains(secret), "{url} shows {secret}: {shown}");
        }
        assert!(token.len() < 600, "{}", token.len());
    }
    // Still checked: altered, or used for the other purpose.
    let mut altered = download.clone().into_bytes();
    let i = altered.len() - 10;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for (method, url) in [
        (Method::GET, altered.as_str()),
        (
            Method::GET,
            &upload.replace("/v3/uploads/", "/v3/downloads/"),
        ),
        (
            Method::PUT,
            &download.replace("/v3/downloads/", "/v3/uploads/"),
        ),
    ] {
        error(
            app.client.request(method, url).send().await.unwrap(),
            StatusCode::FORBIDDEN,
            "UnauthorizedException",
        )
        .await;
    }
    let res = app.client.get(&download).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// A media type is carried inside the upload URL; one that would make the URL too long for
/// the service to take back is refused when the URL is asked for.
#[tokio::test]
async fn a_media_type_too_long_for_a_url_is_refused_at_the_post() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let long = format!("image/jpeg; x={}", "a".repeat(3000));
    error(
        app.post_file(&t, "self", "a.jpg", &json!({"mimeType": long}))
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidEntityException",
    )
    .await;
    // The longest accepted one gives a URL that works.
    let longest = format!("image/jpeg; x={}", "a".repeat(255 - 14));
    assert_eq!(longest.len(), 255);
    let posted = json(
        app.post_file(&t, "self", "a.jpg", &json!({"mimeType": longest}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app
        .client
        .put(posted["uploadUrl"].as_str().unwrap())
        .header("content-type", &longest)
        .body(common::jpeg(100))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap()
    );
}

async fn stored(app: &TestApp, body: Vec<u8>) -> (String, String) {
    let t = app.token("alice", "study");
    json(
        app.put_file(&t, "self", "f.bin", "application/octet-stream", body)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app.get_file(&t, "self", "f.bin").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let url = res.headers()["location"].to_str().unwrap().to_owned();
    let etag = app.client.head(&url).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    (url, etag)
}

#[tokio::test]
async fn a_head_is_audited_as_a_head_and_serves_nothing() {
    let app = TestApp::start().await;
    let (url, _) = stored(&app, noise(5000, 1)).await;
    let res = app.client.head(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], "5000");
    assert!(res.bytes().await.unwrap().is_empty());
    let actions: Vec<(String, u64)> = app
        .audit()
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    // `stored` made one HEAD already.
    let heads = actions.iter().filter(|(a, _)| a == "download_head").count();
    assert_eq!(heads, 2, "{actions:?}");
    assert!(
        actions.iter().all(|(a, b)| a != "download_head" || *b == 0),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|(a, _)| a == "download"), "{actions:?}");
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pf_download_bytes_total 0"), "{metrics}");
}

/// RFC 9110 13.1.5: with an `If-Range` that is not the current strong entity tag, the answer is the
/// whole file (200), so a client resuming a download never splices two versions.
#[tokio::test]
async fn if_range_serves_the_whole_file_unless_the_etag_matches() {
    let app = TestApp::start().await;
    let body = noise(4000, 2);
    let (url, etag) = stored(&app, body.clone()).await;
    let get = |range: &str, if_range: Option<&str>| {
        let mut r = app.client.get(&url).header("range", range);
        if let Some(v) = if_range {
            r = r.header("if-range", v);
        }
        r.send()
    };
    let res = get("bytes=100-199", Some(&etag)).await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), body[100..200]);
    for other in [
        "\"0123456789abcdef0123456789abcdef\"".to_owned(),
        format!("W/{etag}"),
        "Tue, 01 Dec 2026 00:00:00 GMT".to_owned(),
    ] {
        let res = get("bytes=100-199", Some(&other)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "If-Range: {other}");
        assert!(res.headers().get("content-range").is_none());
        assert_eq!(res.bytes().await.unwrap(), body, "If-Range: {other}");
        // A range past the end is not refused either: the Range is not in play.
        let res = get("bytes=9000-", Some(&other)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "If-Range: {other}");
    }
    assert_eq!(
        get("bytes=9000-", Some(&etag)).await.unwrap().status(),
        StatusCode::RANGE_NOT_SATISFIABLE
    );
}

/// A download its client leaves is audited with the bytes that went out, not the file's size,
/// and a status that says it was interrupted (499); a whole one with its size and 200.
#[tokio::test]
async fn a_download_left_early_is_audited_with_the_bytes_that_went_out() {
    use futures::StreamExt;
    let app = TestApp::start().await;
    let size = 32 << 20;
    let (url, _) = stored(&app, noise(size, 2)).await;
    let downloads = |app: &TestApp| -> Vec<serde_json::Value> {
        app.audit()
            .into_iter()
            .filter(|l| l["action"] == "download")
            .collect()
    };
    let res = app.client.get(&url).send().await.unwrap();
    let mut body = res.bytes_stream();
    let mut got = 0;
    while got < 1 << 20 {
        got += body.next().await.unwrap().unwrap().len();
    }
    drop(body);
    let started = std::time::Instant::now();
    while downloads(&app).is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_mins(1));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = &downloads(&app)[0];
    assert_eq!(line["status"], 499, "{line}");
    let sent = line["bytes"].as_u64().unwrap();
    assert!(
        sent >= got as u64 && sent < size as u64,
        "{line}, read {got}"
    );

    assert_eq!(
        app.client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        size
    );
    while downloads(&app).len() < 2 {
        assert!(started.elapsed() < std::time::Duration::from_mins(1));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let whole = &downloads(&app)[1];
    assert_eq!(
        (whole["status"].as_u64(), whole["bytes"].as_u64()),
        (Some(200), Some(size as u64))
    );
}
