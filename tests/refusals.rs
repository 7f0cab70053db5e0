//! Requests refused before their target is known (403 for a role, 400 for a path) are in the
//! audit log too, with what is known of them.

mod common;

use common::{TestApp, error};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn last(app: &TestApp) -> Value {
    app.audit().pop().expect("an audit line")
}

#[tokio::test]
async fn refusals_before_the_target_are_audited() {
    let app = TestApp::start().await;
    let alice = app.token("alice", "study");
    let researcher = app.token_with("rita", "study", &[Role::Researcher]);
    let nobody = app.token_with("nina", "study", &[]);

    // A participant at another participant's files: 403, the target named in the path.
    error(
        app.list(&alice, "bob", "").await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    let line = last(&app);
    assert_eq!(
        (
            &line["app"],
            &line["actor"],
            &line["role"],
            &line["participant"],
            &line["action"],
            &line["status"]
        ),
        (
            &Value::from("study"),
            &Value::from("alice"),
            &Value::from("participant"),
            &Value::from("bob"),
            &Value::from("list"),
            &Value::from(403)
        ),
        "{line}"
    );
    assert!(line.get("fileId").is_none(), "{line}");

    // A researcher uploading: 403, with the file.
    app.put_file(
        &researcher,
        "bob",
        "x.bin",
        "application/octet-stream",
        vec![1],
    )
    .await;
    let line = last(&app);
    assert_eq!(line["role"], "researcher", "{line}");
    assert_eq!(line["fileId"], "x.bin", "{line}");
    assert_eq!(line["action"], "upload", "{line}");
    assert_eq!(line["status"], 403, "{line}");

    // A token with no role this service knows, on the self routes.
    app.get_file(&nobody, "self", "x.bin").await;
    let line = last(&app);
    assert_eq!(
        (&line["role"], &line["status"]),
        (&Value::from("none"), &Value::from(403)),
        "{line}"
    );
    assert_eq!(line["participant"], "nina", "{line}");

    // Invalid identifiers: 400; what is not valid is left out of the line.
    error(
        app.get_file(&alice, "self", "bad%20name").await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    let line = last(&app);
    assert_eq!(
        (&line["action"], &line["status"]),
        (&Value::from("read"), &Value::from(400)),
        "{line}"
    );
    assert_eq!(line["participant"], "alice", "{line}");
    assert!(line.get("fileId").is_none(), "{line}");
    let worker = app.token_with("walt", "study", &[Role::Worker]);
    error(
        app.delete_file(&worker, "bad%20user", "f.bin").await,
        StatusCode::BAD_REQUEST,
        "BadRequestException",
    )
    .await;
    let line = last(&app);
    assert_eq!(line["action"], "delete", "{line}");
    assert_eq!(line["fileId"], "f.bin", "{line}");
    assert!(line.get("participant").is_none(), "{line}");

    // Erasing the self files; a malformed file path; a bad page size.
    let res = app
        .request(Method::DELETE, "/v3/participants/self/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        (&last(&app)["action"], &last(&app)["status"]),
        (&Value::from("erase"), &Value::from(403))
    );
    let (status, _) = app.raw_get(&alice, "/v3/participants/self/files/a/b").await;
    assert_eq!(status, 400);
    let line = last(&app);
    assert_eq!(
        (&line["action"], &line["status"]),
        (&Value::from("read"), &Value::from(400)),
        "{line}"
    );
    app.list(&alice, "self", "?pageSize=1000").await;
    let line = last(&app);
    assert_eq!(
        (&line["action"], &line["status"]),
        (&Value::from("list"), &Value::from(400)),
        "{line}"
    );

    // Every line carries the request ID, and there is one per refused request.
    let lines = app.audit();
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["requestId"].as_str().is_some_and(|r| !r.is_empty()))
    );
}
