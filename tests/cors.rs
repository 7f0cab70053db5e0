//! CORS as a browser sees it, through a real server on a socket: with `PF_CORS_ORIGINS` set,
//! tus discovery still answers, a preflight gets the CORS answer (with the tus headers on the tus
//! paths), and a page may send and read what a resumed download, an upload in either resumable
//! protocol and an error report need. Also: a 405 on a tus path names the protocol version.

mod common;

use common::{TestApp, error};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

const PAGE: &str = "http://127.0.0.1:8000";

async fn app() -> TestApp {
    TestApp::start_with(&["--cors-origins", PAGE]).await
}

/// A header holding a comma list, as lower-case names.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    let value = headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"));
    value
        .to_str()
        .unwrap()
        .split(',')
        .map(|n| n.trim().to_lowercase())
        .collect()
}

fn assert_contains(have: &[String], want: &[&str], what: &str) {
    for w in want {
        assert!(have.iter().any(|h| h == w), "{w} not in {what}: {have:?}");
    }
}

fn assert_tus_discovery(headers: &HeaderMap) {
    assert_eq!(headers["tus-resumable"], "1.0.0", "{headers:?}");
    assert_eq!(headers["tus-version"], "1.0.0", "{headers:?}");
    assert!(
        headers["tus-extension"]
            .to_str()
            .unwrap()
            .contains("creation"),
        "{headers:?}"
    );
    assert!(headers.contains_key("tus-max-size"), "{headers:?}");
}

#[tokio::test]
async fn tus_discovery_is_the_routes_own_options_with_cors_on() {
    let app = app().await;
    for path in [
        "/v3/participants/self/uploads",
        "/v3/participants/alice/uploads",
    ] {
        // No Origin: a server-side tus client discovering the service.
        let res = app.request(Method::OPTIONS, path).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{path}");
        assert_tus_discovery(res.headers());
        assert!(!res.headers().contains_key("access-control-allow-origin"));

        // An Origin but no Access-Control-Request-Method: no preflight, an OPTIONS a page sent.
        let res = app
            .request(Method::OPTIONS, path)
            .header("origin", PAGE)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{path}");
        assert_tus_discovery(res.headers());
        assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
        assert_contains(
            &list(res.headers(), "access-control-expose-headers"),
            &[
                "tus-version",
                "tus-extension",
                "tus-max-size",
                "tus-resumable",
            ],
            "exposed",
        );
        assert!(!res.headers().contains_key("access-control-allow-methods"));
    }
}

#[tokio::test]
async fn a_preflight_gets_the_cors_answer_and_the_tus_headers() {
    let app = app().await;
    let preflight = |path: &str, method: &str, headers: &str| {
        app.request(Method::OPTIONS, path)
            .header("origin", PAGE)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let res = preflight(
        "/v3/participants/self/uploads",
        "POST",
        "authorization,tus-resumable,upload-length,upload-metadata",
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_tus_discovery(res.headers());
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    assert_contains(
        &list(res.headers(), "access-control-allow-methods"),
        &["post", "patch", "head", "delete", "get", "put"],
        "allowed methods",
    );
    assert!(res.headers().contains_key("access-control-max-age"));

    // An upload's own path has no OPTIONS of its own: the preflight still succeeds, and says
    // which protocol version the path speaks.
    let res = preflight(
        "/v3/participants/self/uploads/0f8e3a5c2b6d4e7f9a1b3c5d7e9f1a2b",
        "PATCH",
        "authorization,tus-resumable,upload-offset,content-type",
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["tus-resumable"], "1.0.0");
    assert!(res.bytes().await.unwrap().is_empty());

    // A resumed download, and the IETF resumable-upload draft's headers.
    let res = preflight(
        "/v3/downloads/sometoken",
        "GET",
        "authorization,range,if-range,x-request-id",
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_contains(
        &list(res.headers(), "access-control-allow-headers"),
        &[
            "authorization",
            "range",
            "if-range",
            "x-request-id",
            "content-type",
            "tus-resumable",
            "upload-offset",
            "upload-length",
            "upload-metadata",
            "upload-checksum",
            "upload-defer-length",
            "upload-complete",
            "upload-incomplete",
            "upload-draft-interop-version",
            "upload-limit",
            "repr-digest",
            "want-repr-digest",
            "content-disposition",
        ],
        "allowed headers",
    );

    // Another origin gets no CORS answer.
    let res = app
        .request(Method::OPTIONS, "/v3/participants/self/uploads")
        .header("origin", "http://127.0.0.1:9")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert!(!res.headers().contains_key("access-control-allow-methods"));
}

#[tokio::test]
async fn a_page_can_read_what_a_resumed_download_and_an_error_report_need() {
    let app = app().await;
    let t = app.token("rosa", "study");
    let res = app
        .put_file(
            &t,
            "self",
            "notes.txt",
            "text/plain",
            b"0123456789".to_vec(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .request(Method::GET, "/v3/participants/self/files/notes.txt")
        .bearer_auth(&t)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    let location = res.headers()["location"].to_str().unwrap().to_owned();

    let whole = app
        .client
        .get(&location)
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    let etag = whole.headers()["etag"].clone();
    let res = app
        .client
        .get(&location)
        .header("origin", PAGE)
        .header("range", "bytes=4-")
        .header("if-range", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    let exposed = list(res.headers(), "access-control-expose-headers");
    assert_contains(
        &exposed,
        &[
            "etag",
            "content-range",
            "content-disposition",
            "content-length",
            "accept-ranges",
            "x-request-id",
            "location",
            "retry-after",
            "upload-offset",
            "upload-length",
            "upload-expires",
            "upload-complete",
            "upload-incomplete",
            "upload-draft-interop-version",
            "upload-limit",
            "repr-digest",
        ],
        "exposed",
    );
    for name in [
        "etag",
        "content-range",
        "content-disposition",
        "x-request-id",
    ] {
        assert!(res.headers().contains_key(name), "{name} not sent");
    }
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"456789");

    // An error answer too: the page can tell the user which request failed.
    let res = app
        .request(Method::GET, "/v3/participants/self/files/notes.txt")
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    assert!(res.headers().contains_key("x-request-id"));
    assert_contains(
        &list(res.headers(), "access-control-expose-headers"),
        &["x-request-id"],
        "exposed",
    );
    error(res, StatusCode::UNAUTHORIZED, "NotAuthenticatedException").await;
}

#[tokio::test]
async fn a_405_on_a_tus_path_names_the_protocol_version() {
    let app = TestApp::start().await;
    let t = app.token("rosa", "study");
    for (method, path) in [
        (Method::GET, "/v3/participants/self/uploads"),
        (Method::PUT, "/v3/participants/alice/uploads"),
        (
            Method::PUT,
            "/v3/participants/self/uploads/0f8e3a5c2b6d4e7f9a1b3c5d7e9f1a2b",
        ),
        (
            Method::POST,
            "/v3/participants/alice/uploads/0f8e3a5c2b6d4e7f9a1b3c5d7e9f1a2b",
        ),
    ] {
        let res = app
            .request(method.clone(), path)
            .bearer_auth(&t)
            .header("tus-resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers().get("tus-resumable").map(|v| v.as_bytes()),
            Some(&b"1.0.0"[..]),
            "{method} {path}: {:?}",
            res.headers()
        );
        error(res, StatusCode::METHOD_NOT_ALLOWED, "BadRequestException").await;
    }
    // Not on the files API's paths, which are no tus paths.
    let res = app
        .request(Method::PATCH, "/v3/participants/self/files/notes.txt")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("tus-resumable"));
    error(res, StatusCode::METHOD_NOT_ALLOWED, "BadRequestException").await;
}
