//! `/openapi.json` documents exactly the routes the service answers, with the contract's names
//! and the constraints the handlers enforce; and request IDs.

mod common;

use std::collections::BTreeSet;

use common::{TestApp, json};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn document(app: &TestApp) -> Value {
    json(
        app.request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// The schema of an operation's parameter, by name.
fn param<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    let params = operation(doc, path, method)["parameters"]
        .as_array()
        .unwrap();
    let p = params
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}: {params:?}"));
    if p["in"] == "path" {
        assert_eq!(p["required"], true, "{name} of {method} {path}");
    }
    &p["schema"]
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let app = TestApp::start().await;
    let doc = json(
        app.request(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((path.clone(), method.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = [
        ("/v3/participants/self/files", "get"),
        ("/v3/participants/self/files", "delete"),
        ("/v3/participants/files", "get"),
        ("/v3/participants/self/files/{fileId}", "get"),
        ("/v3/participants/self/files/{fileId}", "post"),
        ("/v3/participants/self/files/{fileId}", "put"),
        ("/v3/participants/self/files/{fileId}", "delete"),
        ("/v3/participants/{userId}/files", "get"),
        ("/v3/participants/{userId}/files", "delete"),
        ("/v3/participants/{userId}/files/{fileId}", "get"),
        ("/v3/participants/{userId}/files/{fileId}", "post"),
        ("/v3/participants/{userId}/files/{fileId}", "put"),
        ("/v3/participants/{userId}/files/{fileId}", "delete"),
        ("/v3/participants/self/uploads", "options"),
        ("/v3/participants/self/uploads", "post"),
        ("/v3/participants/self/uploads/{uploadId}", "head"),
        ("/v3/participants/self/uploads/{uploadId}", "patch"),
        ("/v3/participants/self/uploads/{uploadId}", "delete"),
        ("/v3/participants/{userId}/uploads", "options"),
        ("/v3/participants/{userId}/uploads", "post"),
        ("/v3/participants/{userId}/uploads/{uploadId}", "head"),
        ("/v3/participants/{userId}/uploads/{uploadId}", "patch"),
        ("/v3/participants/{userId}/uploads/{uploadId}", "delete"),
        ("/v3/uploads/{token}", "put"),
        ("/v3/downloads/{token}", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ]
    .iter()
    .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
    .collect();
    assert_eq!(operations, expected);

    // Every documented operation reaches a handler: none falls through to "No such resource"
    // or to 405.
    let t = app.token_with("alice", "study", &[Role::Participant, Role::Worker]);
    for (path, method) in &operations {
        let concrete = path
            .replace("{userId}", "bob")
            .replace("{fileId}", "x.txt")
            .replace("{token}", "not-a-token");
        let res = app
            .request(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &concrete,
            )
            .bearer_auth(&t)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        assert!(
            !body.contains("No such resource"),
            "{method} {concrete} was not routed"
        );
    }
}

#[tokio::test]
async fn the_participants_own_routes_are_paths_of_their_own() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    for (path, methods) in [
        ("/v3/participants/self/files", &["get", "delete"][..]),
        (
            "/v3/participants/self/files/{fileId}",
            &["get", "post", "put", "delete"],
        ),
    ] {
        for method in methods {
            let op = operation(&doc, path, method);
            assert_eq!(op["tags"][0], "self", "{method} {path}");
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let expected: &[&str] = if path.ends_with("{fileId}") {
                &["fileId"]
            } else {
                &[]
            };
            assert_eq!(names, expected, "{method} {path}");
        }
    }
    // No parameter is named otherwise than in the contract.
    let text = doc.to_string();
    for old in ["user_id", "file_id", "{user_id}", "{file_id}"] {
        assert!(!text.contains(old), "the document still says {old}");
    }
    // The self erase answers only 401 and 403, and says so.
    let erase = operation(&doc, "/v3/participants/self/files", "delete");
    let statuses: Vec<&String> = erase["responses"].as_object().unwrap().keys().collect();
    assert_eq!(statuses, ["401", "403"]);
}

#[tokio::test]
async fn the_self_routes_behave_as_before() {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    // DELETE on the participant's collection is refused (erase is for workers), not 405.
    let res = app
        .request(Method::DELETE, "/v3/participants/self/files")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let body = json(res, StatusCode::FORBIDDEN).await;
    assert_eq!(body["type"], "UnauthorizedException");
    let res = app
        .request(Method::DELETE, "/v3/participants/self/files")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Methods no self route has stay 405, with Allow.
    let res = app
        .request(Method::POST, "/v3/participants/self/files")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(res.headers().contains_key("allow"));
    // The self routes need the participant role; `{userId}` ones researcher or worker.
    let worker = app.token_with("wendy", "study", &[Role::Worker]);
    let res = app
        .request(Method::GET, "/v3/participants/self/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A file put through the self route is the caller's, seen by a worker under its userId.
    assert_eq!(
        app.put_file(&t, "self", "a.txt", "text/plain", b"hello".to_vec())
            .await
            .status(),
        StatusCode::CREATED
    );
    let page = json(
        app.request(Method::GET, "/v3/participants/alice/files")
            .bearer_auth(&worker)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"][0]["fileId"], "a.txt");
    // An escaped `self` reaches the `{userId}` route, which still treats it as the caller.
    let page = json(
        app.request(Method::GET, "/v3/participants/%73elf/files")
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page["items"][0]["fileId"], "a.txt");
}

#[tokio::test]
async fn every_enforced_constraint_is_in_the_document() {
    let app = TestApp::start_with(&["--max-file-size", "1MiB"]).await;
    let doc = document(&app).await;
    let ident = "^[A-Za-z0-9._-]{1,255}$";
    let file = param(
        &doc,
        "/v3/participants/self/files/{fileId}",
        "get",
        "fileId",
    );
    assert_eq!(file["pattern"], ident);
    assert_eq!(file["maxLength"], 255);
    assert_eq!(file["not"]["enum"], serde_json::json!([".", "..", "self"]));
    let user = param(
        &doc,
        "/v3/participants/{userId}/files/{fileId}",
        "put",
        "userId",
    );
    assert_eq!(user["pattern"], ident);
    assert_eq!(user["not"]["enum"], serde_json::json!([".", ".."]));
    let size = param(&doc, "/v3/participants/{userId}/files", "get", "pageSize");
    assert_eq!(
        (&size["minimum"], &size["maximum"]),
        (&5.into(), &100.into())
    );
    let offset = param(&doc, "/v3/participants/self/files", "get", "offsetKey");
    assert_eq!(offset["pattern"], "^[A-Za-z0-9._-]{0,255}$");
    let sha = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";
    let header = param(
        &doc,
        "/v3/participants/self/files/{fileId}",
        "put",
        "x-amz-checksum-sha256",
    );
    assert_eq!(header["pattern"], sha);
    for (path, method) in [
        ("/v3/participants/self/files", "get"),
        ("/v3/uploads/{token}", "put"),
        ("/health", "get"),
    ] {
        param(&doc, path, method, "X-Request-Id");
    }
    let request = &doc["components"]["schemas"]["UploadRequest"];
    assert_eq!(request["required"], serde_json::json!(["mimeType"]));
    let props = &request["properties"];
    assert_eq!(props["sha256"]["pattern"], sha);
    assert_eq!(props["size"]["minimum"], 0);
    // The configured limit, not a constant: a client learns it, a fuzzer expects the 413.
    assert_eq!(props["size"]["maximum"], 1024 * 1024);
    assert!(
        props["mimeType"]["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/")
    );
    // Every documented refusal has Bridge's error shape and an example; every operation has
    // an example of its success.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let content = response["content"].as_object();
                let code: u16 = status.parse().unwrap();
                if code >= 400 && path != "/ready" {
                    let json = &response["content"]["application/json"];
                    assert_eq!(
                        json["schema"]["$ref"], "#/components/schemas/BridgeError",
                        "{status} of {method} {path}"
                    );
                    assert_eq!(json["example"]["statusCode"], code, "{method} {path}");
                }
                if let Some(content) = content {
                    for (media, c) in content {
                        assert!(
                            !c["example"].is_null() || !c["examples"].is_null(),
                            "{status} {media} of {method} {path} has no example"
                        );
                    }
                }
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, c) in content {
                    assert!(
                        !c["example"].is_null(),
                        "the {media} body of {method} {path} has no example"
                    );
                }
            }
            let secured = !op["security"].is_null();
            // tus clients ask OPTIONS before they hold a token.
            let public = path.starts_with("/v3/uploads")
                || path.starts_with("/v3/downloads")
                || !path.starts_with("/v3")
                || method == "options";
            assert_eq!(secured, !public, "{method} {path}");
            if secured {
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            }
        }
    }
    // The upload chain is linked, so a client or a fuzzer can follow it.
    let post = operation(&doc, "/v3/participants/self/files/{fileId}", "post");
    let link = &post["responses"]["201"]["links"]["UploadToTheUrl"];
    assert_eq!(link["operationId"], "uploadWithUrl");
    assert_eq!(
        link["parameters"]["header.Content-Type"],
        "$response.body#/mimeType"
    );
}

#[tokio::test]
async fn every_error_type_the_service_sends_is_documented() {
    // Error bodies are checked against BridgeError's closed list of `type`s (schemathesis does);
    // a new kind of refusal anywhere in the service must be added to it.
    let app = TestApp::start().await;
    let doc = document(&app).await;
    let documented: BTreeSet<String> = doc["components"]["schemas"]["ErrorType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut sent = BTreeSet::new();
    let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.ends_with("Exception")
                        && piece.chars().all(|c| c.is_ascii_alphabetic())
                    {
                        sent.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(sent.len() >= 10, "{sent:?}");
    let missing: Vec<&String> = sent.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "not in BridgeError's type list: {missing:?}"
    );
}

#[test]
fn every_route_is_registered_with_its_documentation() {
    // Routes are only ever added through utoipa-axum's `routes!`, which documents them; a plain
    // `.route(` anywhere in the service would add one the document does not know.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains(".route("),
                    "{} adds an undocumented route",
                    path.display()
                );
                assert!(
                    !text.contains(".nest("),
                    "{} nests an undocumented router",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn request_ids_are_taken_over_or_set_and_echoed() {
    let app = TestApp::start().await;
    let res = app
        .request(Method::GET, "/health")
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-id-42");
    let res = app.request(Method::GET, "/health").send().await.unwrap();
    let made = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 36, "{made}");
    // An ID that is not a plain token (it would land in every log line) is replaced.
    let res = app
        .request(Method::GET, "/health")
        .header("x-request-id", "eyJ token with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "eyJ token with spaces");
    // The audit line carries the request's ID.
    let t = app.token("alice", "study");
    app.request(Method::GET, "/v3/participants/self/files")
        .bearer_auth(&t)
        .header("x-request-id", "trace-7")
        .send()
        .await
        .unwrap();
    assert_eq!(app.audit().last().unwrap()["requestId"], "trace-7");
}
