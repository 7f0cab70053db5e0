//! `GET /v3/participants/files`: every participant's files of the caller's app, for researchers
//! and workers, newest first, paged with an opaque offsetKey; on both backend sets.

mod common;

use common::{TestApp, error, json};
use participant_files::auth::Role;
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn list_app(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.request(Method::GET, &format!("/v3/participants/files{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `userId/fileId` of each item.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["userId"].as_str().unwrap(),
                i["fileId"].as_str().unwrap()
            )
        })
        .collect()
}

/// The order the contract gives: newest `createdOn` first, then userId and fileId descending.
fn assert_newest_first(items: &[Value]) {
    let keys: Vec<(String, String, String)> = items
        .iter()
        .map(|i| {
            (
                i["createdOn"].as_str().unwrap().to_owned(),
                i["userId"].as_str().unwrap().to_owned(),
                i["fileId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted);
}

/// A worker of "study" uploads `files` (user, fileId) in order; each is committed after the last.
async fn upload_all(app: &TestApp, files: &[(&str, &str)]) {
    let worker = app.token_with("wendy", "study", &[Role::Worker]);
    for (user, file) in files {
        json(
            app.put_file(
                &worker,
                user,
                file,
                "text/plain",
                format!("{user} {file}").into_bytes(),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
    }
}

fn list_app_lines(app: &TestApp) -> Vec<Value> {
    app.audit()
        .into_iter()
        .filter(|l| l["action"] == "list_app")
        .collect()
}

#[tokio::test]
async fn researchers_and_workers_page_through_every_participants_files_newest_first() {
    let app = TestApp::start().await;
    let mut files = Vec::new();
    for i in 0..4 {
        for user in ["alice", "bob", "carol"] {
            files.push((
                user,
                if i == 0 {
                    "consent.pdf"
                } else {
                    ["a.txt", "b.txt", "c.txt"][i - 1]
                },
            ));
        }
    }
    upload_all(&app, &files).await;
    // Not listed: another app's file, and an upload URL whose upload never came.
    let other = app.token_with("wendy", "other", &[Role::Worker]);
    json(
        app.put_file(&other, "alice", "consent.pdf", "text/plain", b"x".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let worker = app.token_with("wendy", "study", &[Role::Worker]);
    json(
        app.post_file(
            &worker,
            "erin",
            "never.txt",
            &serde_json::json!({"mimeType": "text/plain"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    for token in [
        app.token_with("rita", "study", &[Role::Researcher]),
        worker.clone(),
    ] {
        let page = json(list_app(&app, &token, "").await, StatusCode::OK).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 12, "{page}");
        assert_newest_first(items);
        assert_eq!(page["hasNext"], false);
        assert!(page.get("nextPageOffsetKey").is_none(), "{page}");
        assert_eq!(page["type"], "ForwardCursorPagedResourceList");
        assert_eq!(page["requestParams"]["pageSize"], 50);
        for item in items {
            assert_eq!(item["appId"], "study");
            assert_eq!(item["type"], "ParticipantFile");
            assert!(item["size"].as_u64().unwrap() > 0);
            assert!(item.get("downloadUrl").is_none(), "metadata only: {item}");
        }
        // The uploads went in order: the last one is first.
        assert_eq!(ids(&page)[0], "carol/c.txt");
        assert_eq!(ids(&page)[11], "alice/consent.pdf");
        assert!(!ids(&page).iter().any(|i| i.starts_with("erin/")));
    }

    // Pages of 5: every file once, in the same order.
    let researcher = app.token_with("rita", "study", &[Role::Researcher]);
    let whole = ids(&json(list_app(&app, &researcher, "").await, StatusCode::OK).await);
    let mut paged = Vec::new();
    let mut query = "?pageSize=5".to_owned();
    let mut page_count = 0;
    loop {
        let page = json(list_app(&app, &researcher, &query).await, StatusCode::OK).await;
        page_count += 1;
        paged.extend(ids(&page));
        match page.get("nextPageOffsetKey").and_then(Value::as_str) {
            Some(key) => {
                assert_eq!(page["hasNext"], true);
                query = format!("?pageSize=5&offsetKey={key}");
            }
            None => break,
        }
    }
    assert_eq!(page_count, 3);
    assert_eq!(paged, whole);

    // By file ID across participants, and by time: startTime inclusive, endTime exclusive.
    let page = json(
        list_app(&app, &researcher, "?fileId=consent.pdf").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&page),
        ["carol/consent.pdf", "bob/consent.pdf", "alice/consent.pdf"]
    );
    assert_eq!(page["requestParams"]["fileId"], "consent.pdf");
    let all = json(list_app(&app, &researcher, "").await, StatusCode::OK).await;
    let items = all["items"].as_array().unwrap();
    let newest = items[0]["createdOn"].as_str().unwrap().to_owned();
    let oldest = items[11]["createdOn"].as_str().unwrap().to_owned();
    let page = json(
        list_app(
            &app,
            &researcher,
            &format!("?startTime={oldest}&endTime={newest}"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let expected: Vec<String> = ids(&all)
        .into_iter()
        .zip(items)
        .filter(|(_, i)| {
            let t = i["createdOn"].as_str().unwrap();
            t >= oldest.as_str() && t < newest.as_str()
        })
        .map(|(id, _)| id)
        .collect();
    assert!(expected.contains(&"alice/consent.pdf".to_owned()));
    assert!(!expected.contains(&"carol/c.txt".to_owned()));
    assert_eq!(ids(&page), expected);
    assert_eq!(page["requestParams"]["startTime"], oldest.as_str());
    // Identifier and range together; the same instant written with an offset.
    let page = json(
        list_app(
            &app,
            &researcher,
            &format!("?fileId=consent.pdf&startTime={oldest}&endTime={newest}"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(ids(&page).contains(&"alice/consent.pdf".to_owned()));
    assert!(ids(&page).iter().all(|i| i.ends_with("/consent.pdf")));

    // A deleted file is gone from the listing at once; a replaced one shows its new version.
    json(
        app.delete_file(&worker, "bob", "consent.pdf").await,
        StatusCode::OK,
    )
    .await;
    json(
        app.put_file(
            &worker,
            "alice",
            "consent.pdf",
            "text/plain",
            b"a longer second version".to_vec(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let page = json(
        list_app(&app, &researcher, "?fileId=consent.pdf").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(&page), ["alice/consent.pdf", "carol/consent.pdf"]);
    assert_eq!(page["items"][0]["size"], 23);
}

#[tokio::test]
async fn participants_may_not_list_the_app_and_apps_stay_apart() {
    let app = TestApp::start().await;
    upload_all(&app, &[("alice", "a.txt")]).await;
    let alice = app.token("alice", "study");
    error(
        list_app(&app, &alice, "").await,
        StatusCode::FORBIDDEN,
        "UnauthorizedException",
    )
    .await;
    let line = list_app_lines(&app).pop().expect("the refusal is audited");
    assert_eq!(line["status"], 403);
    assert_eq!(line["actor"], "alice");
    assert!(line.get("participant").is_none(), "{line}");
    let res = app
        .request(Method::GET, "/v3/participants/files")
        .send()
        .await
        .unwrap();
    error(res, StatusCode::UNAUTHORIZED, "NotAuthenticatedException").await;

    // Another app's researcher and worker see nothing of "study".
    for roles in [
        &[Role::Researcher][..],
        &[Role::Worker],
        &[Role::Researcher, Role::Participant],
    ] {
        let t = app.token_with("rita", "other", roles);
        let page = json(list_app(&app, &t, "").await, StatusCode::OK).await;
        assert_eq!(page["items"], serde_json::json!([]), "{roles:?}");
        let t = app.token_with("rita", "stud", roles);
        let page = json(list_app(&app, &t, "?fileId=a.txt").await, StatusCode::OK).await;
        assert_eq!(page["items"], serde_json::json!([]), "{roles:?}");
    }
    let t = app.token_with("rita", "study", &[Role::Researcher, Role::Participant]);
    assert_eq!(
        ids(&json(list_app(&app, &t, "").await, StatusCode::OK).await),
        ["alice/a.txt"]
    );
}

#[tokio::test]
async fn the_route_is_not_a_participant_called_files() {
    let app = TestApp::start().await;
    upload_all(&app, &[("files", "mine.txt"), ("alice", "a.txt")]).await;
    let worker = app.token_with("wendy", "study", &[Role::Worker]);
    // `/v3/participants/files/files` is the participant "files"; `/v3/participants/files` the app.
    let own = json(app.list(&worker, "files", "").await, StatusCode::OK).await;
    assert_eq!(ids(&own), ["files/mine.txt"]);
    let all = json(list_app(&app, &worker, "").await, StatusCode::OK).await;
    assert_eq!(ids(&all), ["alice/a.txt", "files/mine.txt"]);
    // Only GET is routed here: a DELETE erases nobody.
    let res = app
        .request(Method::DELETE, "/v3/participants/files")
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        ids(&json(list_app(&app, &worker, "").await, StatusCode::OK).await).len(),
        2
    );
}

#[tokio::test]
async fn bad_queries_are_400_and_audited() {
    let app = TestApp::start().await;
    upload_all(&app, &[("alice", "a.txt")]).await;
    let researcher = app.token_with("rita", "study", &[Role::Researcher]);
    let page = json(
        list_app(&app, &researcher, "?pageSize=5").await,
        StatusCode::OK,
    )
    .await;
    assert!(page.get("nextPageOffsetKey").is_none());
    // A real key from a full page, to tamper with.
    upload_all(&app, &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).await;
    let page = json(
        list_app(&app, &researcher, "?pageSize=5").await,
        StatusCode::OK,
    )
    .await;
    let key = page["nextPageOffsetKey"].as_str().unwrap().to_owned();
    let mut tampered = key.clone();
    tampered.insert(3, '!');
    let before = list_app_lines(&app).len();
    let bad = [
        "?startTime=yesterday".to_owned(),
        "?startTime=2026-11-26".to_owned(),
        "?endTime=2026-11-26T22:00:00".to_owned(),
        "?startTime=1795730400000".to_owned(),
        "?startTime=".to_owned(),
        "?pageSize=4".to_owned(),
        "?pageSize=101".to_owned(),
        "?pageSize=ten".to_owned(),
        "?offsetKey=garbage".to_owned(),
        format!("?offsetKey={tampered}"),
        format!("?offsetKey={}", &key[..key.len() - 4]),
        "?fileId=a%2Fb".to_owned(),
        "?fileId=self".to_owned(),
        "?fileId=".to_owned(),
    ];
    for query in &bad {
        let body = error(
            list_app(&app, &researcher, query).await,
            StatusCode::BAD_REQUEST,
            "BadRequestException",
        )
        .await;
        if query.starts_with("?pageSize") {
            assert_eq!(body["message"], "pageSize must be from 5-100 records");
        }
    }
    let lines = list_app_lines(&app);
    assert_eq!(lines.len() - before, bad.len());
    assert!(lines[before..].iter().all(|l| l["status"] == 400));
    // The key as it came still works; an empty one is the first page.
    json(
        list_app(&app, &researcher, &format!("?pageSize=5&offsetKey={key}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(&json(
            list_app(&app, &researcher, "?offsetKey=").await,
            StatusCode::OK
        )
        .await)
        .len(),
        5
    );
}

#[tokio::test]
async fn empty_answers_and_one_audit_line_per_page() {
    let app = TestApp::start().await;
    let researcher = app.token_with("rita", "study", &[Role::Researcher]);
    let page = json(list_app(&app, &researcher, "").await, StatusCode::OK).await;
    assert_eq!(page["items"], serde_json::json!([]));
    assert_eq!(page["hasNext"], false);
    assert!(page.get("nextPageOffsetKey").is_none());
    let line = list_app_lines(&app).pop().unwrap();
    assert_eq!(line["count"], 0);

    upload_all(
        &app,
        &[("alice", "a.txt"), ("bob", "a.txt"), ("bob", "b.txt")],
    )
    .await;
    for query in [
        "?startTime=2000-01-01T00:00:00Z&endTime=2000-01-02T00:00:00Z",
        "?startTime=2999-01-01T00:00:00.000Z",
        "?endTime=2000-01-01T00:00:00%2B01:00",
        // Not after startTime: nothing, not an error.
        "?startTime=2026-01-02T00:00:00Z&endTime=2026-01-01T00:00:00Z",
        "?fileId=nothing-called-this",
    ] {
        let page = json(list_app(&app, &researcher, query).await, StatusCode::OK).await;
        assert_eq!(page["items"], serde_json::json!([]), "{query}");
    }
    let before = list_app_lines(&app).len();
    let res = app
        .request(Method::GET, "/v3/participants/files?fileId=a.txt")
        .bearer_auth(&researcher)
        .header("x-request-id", "trace-list-app")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ids(&json(res, StatusCode::OK).await),
        ["bob/a.txt", "alice/a.txt"]
    );
    let lines = list_app_lines(&app);
    assert_eq!(lines.len(), before + 1, "one line per page");
    let line = lines.last().unwrap();
    assert_eq!(line["requestId"], "trace-list-app");
    assert_eq!(line["app"], "study");
    assert_eq!(line["actor"], "rita");
    assert_eq!(line["role"], "researcher");
    assert_eq!(line["fileId"], "a.txt");
    assert_eq!(line["status"], 200);
    assert_eq!(line["count"], 2);
    assert!(line.get("participant").is_none(), "{line}");
}
