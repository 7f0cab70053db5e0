//! `/openapi.json` documents exactly the routes the service answers, and request IDs.

mod common;

use std::collections::BTreeSet;

use common::{TestApp, json};
use reqwest::{Method, StatusCode};

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
        ("/v3/participants/{user_id}/files", "get"),
        ("/v3/participants/{user_id}/files", "delete"),
        ("/v3/participants/{user_id}/files/{file_id}", "get"),
        ("/v3/participants/{user_id}/files/{file_id}", "post"),
        ("/v3/participants/{user_id}/files/{file_id}", "put"),
        ("/v3/participants/{user_id}/files/{file_id}", "delete"),
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
    let t = app.token("alice", "study");
    for (path, method) in &operations {
        let concrete = path
            .replace("{user_id}", "self")
            .replace("{file_id}", "x.txt")
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
