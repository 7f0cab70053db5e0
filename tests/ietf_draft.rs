//! The IETF "Resumable Uploads for HTTP" draft, a client per interop version (3 to 8) sending
//! what that version's examples send, through a real server on a socket, on the backend set
//! `PF_TEST_BACKEND` names: optimistic creation, creation then appends, offset retrieval after a
//! cut, the draft's refusals as problem details, cancellation, isolation, and one upload
//! carried by both protocols.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::tus::{OFFSET_STREAM, meta};
use common::{TestApp, json, noise};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use sha2::Digest;

const VERSIONS: std::ops::RangeInclusive<u8> = 3..=8;
const TYPES: &str = "https://iana.org/assignments/http-problem-types#";

/// A client of one interop version.
#[derive(Clone, Copy)]
struct Draft(u8);

impl Draft {
    fn req(self, app: &TestApp, method: Method, path: &str, token: &str) -> RequestBuilder {
        app.request(method, path)
            .bearer_auth(token)
            .header("upload-draft-interop-version", self.0.to_string())
    }

    /// "This is the last of the upload", as this version says it.
    fn complete(self, req: RequestBuilder, complete: bool) -> RequestBuilder {
        match (self.0, complete) {
            (3, true) => req,
            (3, false) => req.header("upload-incomplete", "?1"),
            (_, c) => req.header("upload-complete", if c { "?1" } else { "?0" }),
        }
    }

    fn says_complete(self, res: &Response) -> bool {
        let h = |n: &str| res.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        if self.0 == 3 {
            h("upload-incomplete").as_deref() == Some("?0")
        } else {
            h("upload-complete").as_deref() == Some("?1")
        }
    }

    /// Creation without content (careful creation); returns the upload's path.
    async fn create(self, app: &TestApp, token: &str, name: &str, length: u64) -> String {
        let mut req = self.req(app, Method::POST, "/v3/participants/self/uploads", token);
        req = self
            .complete(req, false)
            .header(
                "content-disposition",
                format!("attachment; filename=\"{name}\""),
            )
            .header("content-length", "0");
        if self.0 >= 6 {
            req = req.header("upload-length", length);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "v{}", self.0);
        assert!(!self.says_complete(&res), "v{}", self.0);
        assert_eq!(res.headers()["upload-offset"], "0");
        assert_eq!(res.headers()["x-file-id"], name);
        let limit = res
            .headers()
            .get("upload-limit")
            .map(|v| v.to_str().unwrap().to_owned());
        match self.0 {
            3..=5 => assert_eq!(limit, None, "Upload-Limit came with interop version 6"),
            6 => assert!(limit.unwrap().contains("expires="), "v6 says expires"),
            _ => assert!(limit.unwrap().contains("max-age="), "v7 on say max-age"),
        }
        let location = res.headers()["location"].to_str().unwrap();
        reqwest::Url::parse(location).unwrap().path().to_owned()
    }

    async fn patch(
        self,
        app: &TestApp,
        token: &str,
        path: &str,
        offset: u64,
        bytes: Vec<u8>,
        complete: bool,
    ) -> Response {
        let mut req = self.req(app, Method::PATCH, path, token);
        if self.0 >= 6 {
            req = req.header("content-type", "application/partial-upload");
        }
        self.complete(req, complete)
            .header("upload-offset", offset)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    async fn offset(self, app: &TestApp, token: &str, path: &str) -> (StatusCode, Option<u64>) {
        let res = self
            .req(app, Method::HEAD, path, token)
            .send()
            .await
            .unwrap();
        let offset = res
            .headers()
            .get("upload-offset")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        (res.status(), offset)
    }
}

fn digest(bytes: &[u8]) -> String {
    STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// A problem details answer with this status; its body.
async fn problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status, "not the refusal expected");
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    let body = json(res, status).await;
    assert_eq!(body["status"], status.as_u16(), "{body}");
    body
}

#[tokio::test]
async fn optimistic_creation_with_the_whole_body_is_the_file_in_every_version() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    for v in VERSIONS.map(Draft) {
        let file = format!("whole-v{}.txt", v.0);
        let bytes = format!("Hello from interop version {}", v.0).into_bytes();
        // The draft's own examples POST; an app's URLSession upload PUTs.
        let method = if v.0 % 2 == 0 {
            Method::POST
        } else {
            Method::PUT
        };
        let res = v
            .complete(
                v.req(
                    &app,
                    method,
                    &format!("/v3/participants/self/files/{file}"),
                    &t,
                ),
                true,
            )
            .header("content-type", "text/plain")
            .header("repr-digest", format!("sha-256=:{}:", digest(&bytes)))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert!(v.says_complete(&res), "v{}", v.0);
        assert!(res.headers().contains_key("location"));
        let body = json(res, StatusCode::CREATED).await;
        assert_eq!(body["fileId"], file.as_str());
        assert_eq!(body["sha256"], digest(&bytes).as_str());
        assert_eq!(body["type"], "ParticipantFile");
        assert_eq!(app.download(&t, "self", &file).await, bytes);
    }
}

#[tokio::test]
async fn a_whole_body_of_unknown_length_completes_where_it_ends() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    let bytes = noise(3 << 20, 9);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    // Chunked: no Content-Length, no Upload-Length; the upload's length is where it ends.
    let res = Draft(8)
        .complete(
            Draft(8).req(&app, Method::POST, "/v3/participants/self/uploads", &t),
            true,
        )
        .header("x-file-id", "chunked.bin")
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let body = json(res, StatusCode::CREATED).await;
    assert_eq!(body["fileId"], "chunked.bin");
    assert_eq!(body["size"], bytes.len());
    assert_eq!(app.download(&t, "self", "chunked.bin").await, bytes);
}

#[tokio::test]
async fn creation_then_appends_and_each_version_reads_its_own_answers() {
    let app = TestApp::start().await;
    let t = app.token("bob", "study");
    for v in VERSIONS.map(Draft) {
        let file = format!("parts-v{}.bin", v.0);
        let bytes = noise(300_000, u64::from(v.0));
        let path = v.create(&app, &t, &file, bytes.len() as u64).await;
        let res = v
            .patch(&app, &t, &path, 0, bytes[..100_000].to_vec(), false)
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "v{}", v.0);
        assert!(!v.says_complete(&res));
        assert_eq!(res.headers()["upload-offset"], "100000");
        let (status, offset) = v.offset(&app, &t, &path).await;
        assert_eq!((status, offset), (StatusCode::NO_CONTENT, Some(100_000)));
        let res = v
            .patch(&app, &t, &path, 100_000, bytes[100_000..].to_vec(), true)
            .await;
        assert!(v.says_complete(&res), "v{}", v.0);
        let body = json(res, StatusCode::CREATED).await;
        assert_eq!(body["fileId"], file.as_str());
        assert_eq!(body["size"], bytes.len());
        assert_eq!(app.download(&t, "self", &file).await, bytes);
        // Offset retrieval of a completed upload says so.
        let res = v.req(&app, Method::HEAD, &path, &t).send().await.unwrap();
        assert!(v.says_complete(&res), "v{}", v.0);
        assert_eq!(res.headers()["upload-offset"], "300000");
    }
}

#[tokio::test]
async fn after_a_cut_the_offset_is_what_arrived_and_the_upload_resumes() {
    let app = TestApp::start().await;
    let t = app.token("erin", "study");
    for v in VERSIONS.map(Draft) {
        let file = format!("cut-v{}.bin", v.0);
        let bytes = noise(5 << 20, 30 + u64::from(v.0));
        let path = v.create(&app, &t, &file, bytes.len() as u64).await;
        // A raw PATCH that says 4 MiB and sends 3 MiB before the connection drops.
        let addr = app.base.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let flag = if v.0 == 3 {
            "Upload-Incomplete: ?1".to_owned()
        } else {
            "Upload-Complete: ?0\r\nContent-Type: application/partial-upload".to_owned()
        };
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\nUpload-Draft-Interop-Version: {}\r\n{flag}\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
            v.0,
            4 << 20
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes[..3 << 20])
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut stream).await.unwrap();
        drop(stream);
        // The cut request's audit line says it was interrupted and what it kept.
        let started = std::time::Instant::now();
        loop {
            let cut = app.audit().into_iter().any(|l| {
                l["action"] == "upload_append" && l["status"] == 499 && l["fileId"] == file.as_str()
            });
            if cut {
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_mins(1));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, at) = v.offset(&app, &t, &path).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let at = at.unwrap();
        assert_eq!(at, 3 << 20, "v{}: what arrived before the cut is kept", v.0);
        let rest = bytes[usize::try_from(at).unwrap()..].to_vec();
        let res = v.patch(&app, &t, &path, at, rest, true).await;
        assert_eq!(res.status(), StatusCode::CREATED, "v{}", v.0);
        assert_eq!(app.download(&t, "self", &file).await, bytes);
    }
}

#[tokio::test]
async fn the_drafts_refusals_are_problem_details_of_their_version() {
    let app = TestApp::start().await;
    let t = app.token("carol", "study");
    for v in VERSIONS.map(Draft) {
        let file = format!("refused-v{}.bin", v.0);
        let path = v.create(&app, &t, &file, 20).await;
        assert_eq!(
            v.patch(&app, &t, &path, 0, vec![1; 10], false)
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        // An append at the wrong offset: 409, nothing changed.
        let res = v.patch(&app, &t, &path, 5, vec![2; 10], true).await;
        assert_eq!(res.headers()["upload-offset"], "10");
        assert!(!v.says_complete(&res));
        let body = problem(res, StatusCode::CONFLICT).await;
        if v.0 >= 6 {
            assert_eq!(
                body["type"],
                format!("{TYPES}mismatching-upload-offset"),
                "{body}"
            );
            assert_eq!(body["expected-offset"], 10);
            assert_eq!(body["provided-offset"], 5);
        } else {
            assert_eq!(body["type"], "about:blank", "v{}: {body}", v.0);
        }
        assert_eq!(v.offset(&app, &t, &path).await.1, Some(10));
        let res = v.patch(&app, &t, &path, 10, vec![3; 10], true).await;
        assert_eq!(res.status(), StatusCode::CREATED, "v{}", v.0);
        // An append after completion.
        let res = v.patch(&app, &t, &path, 20, vec![4; 5], true).await;
        let body = problem(res, StatusCode::BAD_REQUEST).await;
        let want = if v.0 >= 6 {
            format!("{TYPES}completed-upload")
        } else {
            "about:blank".to_owned()
        };
        assert_eq!(body["type"], want.as_str(), "v{}: {body}", v.0);
        // A client that lost the final answer completes again, with no content: told so.
        let res = v.patch(&app, &t, &path, 20, Vec::new(), true).await;
        assert!(res.status().is_success(), "v{}: {}", v.0, res.status());
        assert!(v.says_complete(&res));
        // Lengths that disagree (Upload-Length and the content of a complete creation).
        if v.0 >= 6 {
            let res = v
                .complete(
                    v.req(&app, Method::POST, "/v3/participants/self/uploads", &t),
                    true,
                )
                .header("x-file-id", "lengths.bin")
                .header("upload-length", "9")
                .body(vec![0; 5])
                .send()
                .await
                .unwrap();
            let body = problem(res, StatusCode::BAD_REQUEST).await;
            let want = if v.0 >= 7 {
                format!("{TYPES}inconsistent-upload-length")
            } else {
                "about:blank".to_owned()
            };
            assert_eq!(body["type"], want.as_str(), "v{}: {body}", v.0);
        }
    }
    assert!(app.listed(&t, "self", "lengths.bin").await.is_none());
}

#[tokio::test]
async fn a_repr_digest_mismatch_is_refused_and_nothing_kept() {
    let app = TestApp::start().await;
    let t = app.token("dan", "study");
    for v in VERSIONS.map(Draft) {
        let file = format!("digest-v{}.bin", v.0);
        let path = v.create(&app, &t, &file, 10).await;
        // The declared digest is the creation's: this one names other bytes.
        let res = v
            .complete(
                v.req(
                    &app,
                    Method::PUT,
                    &format!("/v3/participants/self/files/{file}"),
                    &t,
                ),
                true,
            )
            .header("repr-digest", format!("sha-256=:{}:", digest(b"other")))
            .body(vec![7; 10])
            .send()
            .await
            .unwrap();
        let body = problem(res, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"].as_str().unwrap().contains("SHA-256"),
            "{body}"
        );
        assert!(app.listed(&t, "self", &file).await.is_none());
        // Cancellation of the careful creation's upload.
        let res = v.req(&app, Method::DELETE, &path, &t).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "v{}", v.0);
        assert_eq!(v.offset(&app, &t, &path).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn another_participant_or_app_gets_404_in_every_version() {
    let app = TestApp::start().await;
    let alice = app.token("alice", "study");
    for v in VERSIONS.map(Draft) {
        let path = v
            .create(&app, &alice, &format!("mine-v{}.bin", v.0), 20)
            .await;
        for other in [
            app.token("mallory", "study"),
            app.token("alice", "other-app"),
        ] {
            assert_eq!(v.offset(&app, &other, &path).await.0, StatusCode::NOT_FOUND);
            let res = v.patch(&app, &other, &path, 0, vec![1; 20], true).await;
            problem(res, StatusCode::NOT_FOUND).await;
            let res = v
                .req(&app, Method::DELETE, &path, &other)
                .send()
                .await
                .unwrap();
            problem(res, StatusCode::NOT_FOUND).await;
        }
        assert_eq!(
            v.offset(&app, &alice, &path).await,
            (StatusCode::NO_CONTENT, Some(0)),
            "the owner's upload is untouched"
        );
    }
}

#[tokio::test]
async fn one_upload_is_carried_by_either_protocol() {
    let app = TestApp::start().await;
    let t = app.token("frank", "study");
    let bytes = noise(200_000, 77);
    // Created with tus, finished with draft appends.
    let path = common::tus::create(&app, &t, "tus-then-draft.bin", Some(200_000)).await;
    assert_eq!(
        common::tus::patch(&app, &t, &path, 0, bytes[..50_000].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let v = Draft(8);
    assert_eq!(v.offset(&app, &t, &path).await.1, Some(50_000));
    let res = v
        .patch(&app, &t, &path, 50_000, bytes[50_000..].to_vec(), true)
        .await;
    json(res, StatusCode::CREATED).await;
    assert_eq!(app.download(&t, "self", "tus-then-draft.bin").await, bytes);
    // Created with the draft, finished with tus.
    let path = Draft(5).create(&app, &t, "draft-then-tus.bin", 0).await;
    let res = app
        .request(Method::PATCH, &path)
        .bearer_auth(&t)
        .header("tus-resumable", "1.0.0")
        .header("content-type", OFFSET_STREAM)
        .header("upload-offset", 0)
        .header("upload-length", 200_000)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.download(&t, "self", "draft-then-tus.bin").await, bytes);
    // tus-js-client's draft modes send Upload-Metadata: its fileId is taken.
    let res = v
        .complete(
            v.req(&app, Method::POST, "/v3/participants/self/uploads", &t),
            false,
        )
        .header("upload-metadata", meta(&[("filename", "from-meta.bin")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["x-file-id"], "from-meta.bin");
}

#[tokio::test]
async fn other_interop_versions_are_not_the_draft() {
    let app = TestApp::start().await;
    let t = app.token("gus", "study");
    // Version 9 is no draft served here: the PUT is a plain upload, answered as one.
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/plain.txt")
        .bearer_auth(&t)
        .header("upload-draft-interop-version", "9")
        .header("upload-complete", "?1")
        .header("content-type", "text/plain")
        .body("plain")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("location"));
    json(res, StatusCode::CREATED).await;
    // OPTIONS of the creation URL tells a draft client its limits.
    let res = Draft(8)
        .req(&app, Method::OPTIONS, "/v3/participants/self/uploads", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let limit = res.headers()["upload-limit"].to_str().unwrap();
    assert!(limit.starts_with("max-size="), "{limit}");
    assert_eq!(res.headers()["want-repr-digest"], "sha-256=10");
}

#[tokio::test]
async fn eicar_split_across_draft_appends_is_found_and_nothing_kept() {
    let clamd = std::env::var("PF_TEST_CLAMD").expect("PF_TEST_CLAMD is not set: run scripts/test");
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let t = app.token("gina", "study");
    for v in [Draft(3), Draft(8)] {
        let file = format!("split-v{}.bin", v.0);
        let mut bytes = noise(1 << 20, 5);
        bytes.extend(common::eicar());
        bytes.extend(noise(1000, 6));
        let path = v.create(&app, &t, &file, bytes.len() as u64).await;
        let cut = (1 << 20) + 30;
        let res = v
            .patch(&app, &t, &path, 0, bytes[..cut].to_vec(), false)
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = v
            .patch(&app, &t, &path, cut as u64, bytes[cut..].to_vec(), true)
            .await;
        let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(
            body["detail"].as_str().unwrap().contains("infected"),
            "{body}"
        );
        assert_eq!(
            v.offset(&app, &t, &path).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert!(app.listed(&t, "self", &file).await.is_none());
    }
}

#[tokio::test]
async fn the_document_describes_the_draft_beside_tus() {
    let app = TestApp::start().await;
    let doc = json(
        app.request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    for (path, method) in [
        ("/v3/participants/self/files/{fileId}", "put"),
        ("/v3/participants/self/files/{fileId}", "post"),
        ("/v3/participants/{userId}/uploads", "post"),
        ("/v3/participants/self/uploads/{uploadId}", "head"),
        ("/v3/participants/{userId}/uploads/{uploadId}", "patch"),
        ("/v3/participants/self/uploads/{uploadId}", "delete"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op["description"].as_str().unwrap().contains("IETF draft"),
            "{method} {path}"
        );
    }
    let conflict = &doc["paths"]["/v3/participants/self/uploads/{uploadId}"]["patch"]["responses"]
        ["409"]["content"];
    assert!(
        conflict["application/problem+json"].is_object(),
        "{conflict}"
    );
}

#[tokio::test]
async fn draft_uploads_hold_the_same_limits_and_erase_ends_them() {
    let app = TestApp::start_with(&[
        "--max-file-size",
        "1MiB",
        "--max-resumable-per-participant",
        "2",
    ])
    .await;
    let t = app.token("hal", "study");
    let worker = app.token_with("wes", "study", &[participant_files::auth::Role::Worker]);
    let v = Draft(8);
    // A length over PF_MAX_FILE_SIZE: 413, as tus's Upload-Length.
    let res = v
        .complete(
            v.req(&app, Method::POST, "/v3/participants/self/uploads", &t),
            false,
        )
        .header("x-file-id", "big.bin")
        .header("upload-length", 2 << 20)
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Open uploads count against PF_MAX_RESUMABLE_PER_PARTICIPANT, whichever protocol made them.
    let a = v.create(&app, &t, "a.bin", 100).await;
    common::tus::create(&app, &t, "b.bin", Some(100)).await;
    let res = v
        .complete(
            v.req(&app, Method::POST, "/v3/participants/self/uploads", &t),
            false,
        )
        .header("x-file-id", "c.bin")
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Erase terminates the draft's uploads too.
    let res = app
        .request(Method::DELETE, "/v3/participants/hal/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    let body = json(res, StatusCode::OK).await;
    assert_eq!(body["count"], 2, "{body}");
    assert_eq!(v.offset(&app, &t, &a).await.0, StatusCode::NOT_FOUND);
}

/// A draft creation with `Upload-Complete: ?0` and no content, with `extra` headers (without
/// `Upload-Length` its length is deferred, as every client of versions 3 to 5 creates one);
/// returns the upload's path.
async fn create_careful(
    v: Draft,
    app: &TestApp,
    token: &str,
    file: &str,
    extra: &[(&str, String)],
) -> String {
    let mut req = v
        .complete(
            v.req(app, Method::POST, "/v3/participants/self/uploads", token),
            false,
        )
        .header("x-file-id", file)
        .header("content-length", "0");
    for (name, value) in extra {
        req = req.header(*name, value);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "v{}", v.0);
    let location = res.headers()["location"].to_str().unwrap();
    reqwest::Url::parse(location).unwrap().path().to_owned()
}

/// An append of this version at `offset`, its body and any other header still to come.
fn append(
    v: Draft,
    app: &TestApp,
    token: &str,
    path: &str,
    offset: u64,
    complete: bool,
) -> RequestBuilder {
    let mut req = v.req(app, Method::PATCH, path, token);
    if v.0 >= 6 {
        req = req.header("content-type", "application/partial-upload");
    }
    v.complete(req, complete).header("upload-offset", offset)
}

/// `res` refused the upload's completion for a SHA-256 mismatch: nothing is listed, and HEAD
/// answers the refusal.
async fn digest_refused(
    v: Draft,
    app: &TestApp,
    t: &str,
    (file, path): (&str, &str),
    res: Response,
) {
    let body = problem(res, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"].as_str().unwrap().contains("SHA-256"),
        "v{}: {body}",
        v.0
    );
    assert!(app.listed(t, "self", file).await.is_none(), "v{}", v.0);
    assert_eq!(
        v.offset(app, t, path).await.0,
        StatusCode::BAD_REQUEST,
        "v{}: HEAD does not tell the refusal",
        v.0
    );
}

/// Past `PF_MAX_FILE_SIZE` is 413 in every version, also in 3 to 5, which have no
/// `Upload-Limit` to tell the client the bound ahead: no draft defines a problem type for it,
/// so it is `about:blank` with the status; none of the bytes are kept.
#[tokio::test]
async fn past_the_size_limit_is_413_in_every_version() {
    let app = TestApp::start_with(&["--max-file-size", "1MiB"]).await;
    let t = app.token("ivy", "study");
    let too_large = |body: &Value, v: Draft| {
        assert_eq!(body["type"], "about:blank", "v{}: {body}", v.0);
        assert!(
            body["detail"].as_str().unwrap().contains("1048576"),
            "v{}: {body}",
            v.0
        );
    };
    for v in VERSIONS.map(Draft) {
        // Optimistic creation with a whole body over the limit.
        let file = format!("whole-big-v{}.bin", v.0);
        let res = v
            .complete(
                v.req(
                    &app,
                    Method::PUT,
                    &format!("/v3/participants/self/files/{file}"),
                    &t,
                ),
                true,
            )
            .body(vec![1; (1 << 20) + 1])
            .send()
            .await
            .unwrap();
        too_large(&problem(res, StatusCode::PAYLOAD_TOO_LARGE).await, v);
        assert!(app.listed(&t, "self", &file).await.is_none(), "v{}", v.0);

        // One append over the limit, then an append that would cross it.
        let path = create_careful(v, &app, &t, &format!("grows-v{}.bin", v.0), &[]).await;
        let res = v
            .patch(&app, &t, &path, 0, vec![2; (1 << 20) + 1], false)
            .await;
        too_large(&problem(res, StatusCode::PAYLOAD_TOO_LARGE).await, v);
        assert_eq!(
            v.offset(&app, &t, &path).await,
            (StatusCode::NO_CONTENT, Some(0)),
            "v{}: bytes of a refused append were kept",
            v.0
        );
        let res = v.patch(&app, &t, &path, 0, vec![3; 1 << 20], false).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "v{}", v.0);
        let res = v.patch(&app, &t, &path, 1 << 20, vec![4; 1], true).await;
        too_large(&problem(res, StatusCode::PAYLOAD_TOO_LARGE).await, v);
        assert_eq!(
            v.offset(&app, &t, &path).await,
            (StatusCode::NO_CONTENT, Some(1 << 20)),
            "v{}",
            v.0
        );
        let res = v.req(&app, Method::DELETE, &path, &t).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "v{}", v.0);
    }
    // Of the refused bytes nothing was kept, and the cancelled uploads left nothing either.
    app.assert_nothing_stored().await;
}

/// RFC 9530 allows `Repr-Digest` on any request, and a client that hashes as it reads sends
/// it with its last append: a mismatch there is refused as at creation, nothing is kept, and
/// HEAD tells the refusal; a match commits the file.
#[tokio::test]
async fn a_repr_digest_on_the_final_append_is_checked() {
    let app = TestApp::start().await;
    let t = app.token("jo", "study");
    let bytes = noise(100_000, 31);
    let header = |b: &[u8]| format!("sha-256=:{}:", digest(b));
    for v in VERSIONS.map(Draft) {
        for matches in [false, true] {
            let file = format!("late-digest-{matches}-v{}.bin", v.0);
            let path = create_careful(v, &app, &t, &file, &[]).await;
            let res = v
                .patch(&app, &t, &path, 0, bytes[..60_000].to_vec(), false)
                .await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT, "v{}", v.0);
            let claimed = if matches {
                header(&bytes)
            } else {
                header(b"other")
            };
            let res = append(v, &app, &t, &path, 60_000, true)
                .header("repr-digest", claimed)
                .body(bytes[60_000..].to_vec())
                .send()
                .await
                .unwrap();
            if matches {
                let f = json(res, StatusCode::CREATED).await;
                assert_eq!(f["sha256"], digest(&bytes).as_str(), "v{}", v.0);
                assert_eq!(app.download(&t, "self", &file).await, bytes);
            } else {
                digest_refused(v, &app, &t, (&file, &path), res).await;
            }
        }
    }
}

/// A final append whose `Repr-Digest` contradicts the creation's is refused before any of its
/// bytes are kept (no file can match both), and the upload stays where it was.
#[tokio::test]
async fn a_final_digest_that_contradicts_the_creations_is_refused() {
    let app = TestApp::start().await;
    let t = app.token("lee", "study");
    let bytes = noise(30_000, 41);
    for v in VERSIONS.map(Draft) {
        let file = format!("two-digests-v{}.bin", v.0);
        let declared = format!("sha-256=:{}:", digest(&bytes));
        let path = create_careful(v, &app, &t, &file, &[("repr-digest", declared)]).await;
        let res = append(v, &app, &t, &path, 0, true)
            .header("repr-digest", format!("sha-256=:{}:", digest(b"other")))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        let body = problem(res, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"].as_str().unwrap().contains("SHA-256"),
            "v{}: {body}",
            v.0
        );
        assert_eq!(
            v.offset(&app, &t, &path).await,
            (StatusCode::NO_CONTENT, Some(0)),
            "v{}",
            v.0
        );
        assert!(app.listed(&t, "self", &file).await.is_none(), "v{}", v.0);
    }
}

/// From version 6 a declared `Upload-Length` tells the server where the upload ends, so an
/// append with `Upload-Complete: ?0` that reaches it completes the upload; when that
/// completion is refused (here the creation's `Repr-Digest`), the client is told so, as one
/// that said `?1` is, and nothing is kept.
#[tokio::test]
async fn a_completion_refused_on_an_append_that_did_not_say_complete() {
    let app = TestApp::start().await;
    let t = app.token("kim", "study");
    for v in (6..=8).map(Draft) {
        let file = format!("quiet-end-v{}.bin", v.0);
        let declared = [
            ("upload-length", "50000".to_owned()),
            ("repr-digest", format!("sha-256=:{}:", digest(b"other"))),
        ];
        let path = create_careful(v, &app, &t, &file, &declared).await;
        let res = v.patch(&app, &t, &path, 0, noise(50_000, 9), false).await;
        digest_refused(v, &app, &t, (&file, &path), res).await;
    }
}
