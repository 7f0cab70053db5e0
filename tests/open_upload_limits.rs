//! The open-resumable-upload limits over HTTP: creations that race cannot pass them, per
//! participant and per app. On the backend set `PF_TEST_BACKEND` names.

mod common;

use common::TestApp;
use common::tus::meta;
use reqwest::{Method, StatusCode};

/// Fires `n` creations at once for one participant and answers their statuses.
async fn create_at_once(app: &TestApp, token: &str, n: usize) -> Vec<StatusCode> {
    let creations = (0..n).map(|i| {
        app.request(Method::POST, "/v3/participants/self/uploads")
            .bearer_auth(token)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "10")
            .header(
                "upload-metadata",
                meta(&[
                    ("filename", &format!("f{i}.bin")),
                    ("filetype", "application/octet-stream"),
                ]),
            )
            .send()
    });
    futures::future::join_all(creations)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect()
}

fn tally(statuses: &[StatusCode]) -> (usize, usize) {
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    (created, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_racing_creations_against_a_limit_of_ten_make_exactly_ten() {
    let app = TestApp::start_with(&["--max-resumable-per-participant", "10"]).await;
    let t = app.token("racer", "study");
    let statuses = create_at_once(&app, &t, 60).await;
    assert_eq!(tally(&statuses), (10, 50), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_bound_holds_across_its_participants() {
    let app = TestApp::start_with(&[
        "--max-resumable-per-participant",
        "10",
        "--max-resumable-per-app",
        "15",
    ])
    .await;
    let (a, b) = (app.token("anna", "study"), app.token("ben", "study"));
    let (first, second) = tokio::join!(create_at_once(&app, &a, 20), create_at_once(&app, &b, 20));
    let (ca, _) = tally(&first);
    let (cb, _) = tally(&second);
    assert_eq!(ca + cb, 15, "{first:?} {second:?}");
    // Another app has its own bound.
    let other = app.token("anna", "other-study");
    assert_eq!(tally(&create_at_once(&app, &other, 3).await), (3, 0));
}
