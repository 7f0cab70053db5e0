//! Who may see what: participants, researchers and workers, within and across apps. Nobody
//! learns whether another participant's or another app's file exists.

mod common;

use common::{TestApp, error, json};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Alice (app "study") has `a.txt`; everybody else tries every route on it.
async fn with_alice_file() -> TestApp {
    let app = TestApp::start().await;
    let t = app.token("alice", "study");
    json(
        app.put_file(&t, "self", "a.txt", "text/plain", b"alice's".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    app
}

async fn alice_file_intact(app: &TestApp) {
    let t = app.token("alice", "study");
    assert_eq!(app.download(&t, "self", "a.txt").await, b"alice's");
}

#[tokio::test]
async fn another_participant_cannot_reach_alices_file() {
    let app = with_alice_file().await;
    let bob = app.token("bob", "study");
    // Through "self", Bob only ever addresses his own files.
    error(
        app.get_file(&bob, "self", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.delete_file(&bob, "self", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(
        json(app.list(&bob, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    // His upload of the same ID is his own file.
    json(
        app.put_file(&bob, "self", "a.txt", "text/plain", b"bob's".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(app.download(&bob, "self", "a.txt").await, b"bob's");
    // Naming Alice directly needs a researcher or worker role.
    for (method, path) in [
        (Method::GET, "/v3/participants/alice/files"),
        (Method::GET, "/v3/participants/alice/files/a.txt"),
        (Method::POST, "/v3/participants/alice/files/a.txt"),
        (Method::PUT, "/v3/participants/alice/files/a.txt"),
        (Method::DELETE, "/v3/participants/alice/files/a.txt"),
        (Method::DELETE, "/v3/participants/alice/files"),
    ] {
        let res = app
            .request(method.clone(), path)
            .bearer_auth(&bob)
            .header("content-type", "text/plain")
            .body(r#"{"mimeType":"text/plain"}"#)
            .send()
            .await
            .unwrap();
        error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    }
    alice_file_intact(&app).await;
}

#[tokio::test]
async fn the_same_participant_id_in_another_app_is_another_participant() {
    let app = with_alice_file().await;
    let other_app = app.token("alice", "other-study");
    error(
        app.get_file(&other_app, "self", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.delete_file(&other_app, "self", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(
        json(app.list(&other_app, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    alice_file_intact(&app).await;
}

#[tokio::test]
async fn researchers_read_within_their_app_only() {
    let app = with_alice_file().await;
    let r = app.token_with("rita", "study", &[Role::Researcher]);
    let page = json(app.list(&r, "alice", "").await, StatusCode::OK).await;
    assert_eq!(page["items"][0]["fileId"], "a.txt");
    assert_eq!(page["items"][0]["userId"], "alice");
    assert_eq!(app.download(&r, "alice", "a.txt").await, b"alice's");
    error(
        app.put_file(&r, "alice", "a.txt", "text/plain", b"x".to_vec())
            .await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    error(
        app.post_file(&r, "alice", "b.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    error(
        app.delete_file(&r, "alice", "a.txt").await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    let res = app
        .request(Method::DELETE, "/v3/participants/alice/files")
        .bearer_auth(&r)
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;
    // A researcher is not a participant: the self routes are not theirs.
    error(
        app.list(&r, "self", "").await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;

    // A researcher of another app sees nothing, and cannot tell that the file exists.
    let other = app.token_with("rita", "other-study", &[Role::Researcher]);
    assert_eq!(
        json(app.list(&other, "alice", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    error(
        app.get_file(&other, "alice", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.get_file(&other, "alice", "missing.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    alice_file_intact(&app).await;
}

#[tokio::test]
async fn workers_write_within_their_app_only() {
    let app = with_alice_file().await;
    let w = app.token_with("wes", "study", &[Role::Worker]);
    json(
        app.put_file(&w, "alice", "b.txt", "text/plain", b"from worker".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let posted = json(
        app.post_file(&w, "alice", "c.txt", &json!({"mimeType": "text/plain"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(posted["userId"], "alice");
    let res = app
        .client
        .put(posted["uploadUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body("c")
        .send()
        .await
        .unwrap();
    json(res, StatusCode::CREATED).await;
    let t = app.token("alice", "study");
    assert_eq!(app.download(&t, "self", "b.txt").await, b"from worker");
    assert_eq!(app.download(&w, "alice", "c.txt").await, b"c");
    json(app.delete_file(&w, "alice", "c.txt").await, StatusCode::OK).await;

    // A worker of another app can change nothing of Alice's.
    let other = app.token_with("wes", "other-study", &[Role::Worker]);
    error(
        app.get_file(&other, "alice", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    error(
        app.delete_file(&other, "alice", "a.txt").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    let res = app
        .request(Method::DELETE, "/v3/participants/alice/files")
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(json(res, StatusCode::OK).await["count"], 0);
    json(
        app.put_file(
            &other,
            "alice",
            "a.txt",
            "text/plain",
            b"other app".to_vec(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    alice_file_intact(&app).await;
}

#[tokio::test]
async fn erase_removes_every_file_of_one_participant() {
    let app = with_alice_file().await;
    let alice = app.token("alice", "study");
    let bob = app.token("bob", "study");
    for i in 0..7 {
        app.put_file(
            &alice,
            "self",
            &format!("x{i}"),
            "text/plain",
            vec![b'a'; 10],
        )
        .await;
    }
    app.post_file(
        &alice,
        "self",
        "pending",
        &json!({"mimeType": "text/plain"}),
    )
    .await;
    app.put_file(&bob, "self", "keep", "text/plain", b"bob".to_vec())
        .await;
    let before = app.stored_files().len();
    assert_eq!(before, 9);

    // A participant may not erase, even their own files.
    let res = app
        .request(Method::DELETE, "/v3/participants/self/files")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    error(res, StatusCode::FORBIDDEN, "UnauthorizedException").await;

    let w = app.token_with("wes", "study", &[Role::Worker]);
    let res = app
        .request(Method::DELETE, "/v3/participants/alice/files")
        .bearer_auth(&w)
        .send()
        .await
        .unwrap();
    let body = json(res, StatusCode::OK).await;
    assert_eq!(body["count"], 8);
    assert_eq!(body["type"], "StatusMessage");
    assert_eq!(
        json(app.list(&alice, "self", "").await, StatusCode::OK).await["items"],
        json!([])
    );
    error(
        app.get_file(&alice, "self", "pending").await,
        StatusCode::NOT_FOUND,
        "EntityNotFoundException",
    )
    .await;
    assert_eq!(
        app.stored_files().len(),
        1,
        "only Bob's file is left: {:?}",
        app.stored_files()
    );
    assert_eq!(app.download(&bob, "self", "keep").await, b"bob");
    // Alice's refused attempt has its line too.
    let erases: Vec<_> = app
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "erase")
        .collect();
    assert_eq!(erases.len(), 2, "{erases:?}");
    assert_eq!(
        (&erases[0]["actor"], &erases[0]["status"]),
        (&json!("alice"), &json!(403))
    );
    let erase = &erases[1];
    assert_eq!(erase["status"], 200);
    assert_eq!(erase["participant"], "alice");
    assert_eq!(erase["actor"], "wes");
    assert_eq!(erase["role"], "worker");
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let app = with_alice_file().await;
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let exp = chrono::Utc::now().timestamp() - 3600;
        encode(
            &Header::default(),
            &json!({"sub": "alice", "app": "study", "exp": exp}),
            &EncodingKey::from_secret(common::JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let wrong_key = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let exp = chrono::Utc::now().timestamp() + 3600;
        encode(
            &Header::default(),
            &json!({"sub": "alice", "app": "study", "exp": exp}),
            &EncodingKey::from_secret(b"not the service's secret at all"),
        )
        .unwrap()
    };
    let bad_sub = app.token("alice", "study").replace('.', ".x");
    let routes = [
        (Method::GET, "/v3/participants/self/files"),
        (Method::GET, "/v3/participants/self/files/a.txt"),
        (Method::POST, "/v3/participants/self/files/a.txt"),
        (Method::PUT, "/v3/participants/self/files/a.txt"),
        (Method::DELETE, "/v3/participants/self/files/a.txt"),
        (Method::GET, "/v3/participants/alice/files"),
        (Method::DELETE, "/v3/participants/alice/files"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer".to_owned()),
            Some("Bearer garbage".to_owned()),
            Some(format!("Bearer {expired}")),
            Some(format!("Bearer {wrong_key}")),
            Some(format!("Bearer {bad_sub}")),
            Some(format!("Basic {}", app.token("alice", "study"))),
        ] {
            let mut req = app.request(method.clone(), path).body("x");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let res = req.send().await.unwrap();
            error(res, StatusCode::UNAUTHORIZED, "NotAuthenticatedException").await;
        }
    }
    // Bridge clients send the token in Bridge-Session.
    let res = app
        .request(Method::GET, "/v3/participants/self/files")
        .header("bridge-session", app.token("alice", "study"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(res, StatusCode::OK).await["items"][0]["fileId"],
        "a.txt"
    );
    let res = app
        .request(Method::GET, "/v3/participants/self/files")
        .header("bridge-session", expired)
        .send()
        .await
        .unwrap();
    error(res, StatusCode::UNAUTHORIZED, "NotAuthenticatedException").await;
    alice_file_intact(&app).await;
}
