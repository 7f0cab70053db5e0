//! Several scanners (`PF_CLAMD` as a comma list): uploads go on while one is down, fail closed
//! when all are, spread over the ones that answer, and `/ready` and `/metrics` show each.

mod common;

use common::fake_clamd::{Behaviour, FakeClamd};
use common::{TestApp, closed_port, error, json, noise};
use reqwest::{Method, StatusCode};

fn clamd() -> String {
    std::env::var("PF_TEST_CLAMD").expect(
        "PF_TEST_CLAMD is not set: run the suite with scripts/test, which installs and starts clamd on loopback",
    )
}

#[tokio::test]
async fn uploads_go_on_while_one_scanner_is_down() {
    let down = format!("tcp://127.0.0.1:{}", closed_port());
    let list = format!("{down},{}", clamd());
    let app = TestApp::start_with(&["--clamd", &list]).await;
    let t = app.token("alice", "study");
    for i in 0..3 {
        let file = json(
            app.put_file(
                &t,
                "self",
                &format!("f{i}"),
                "application/octet-stream",
                noise(5000, i),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(file["scanStatus"], "clean");
    }
    let ready = json(
        app.request(Method::GET, "/ready").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let scanner = &ready["checks"]["scanner"];
    assert_eq!(scanner["status"], "ok", "{ready}");
    let states: Vec<(String, String)> = scanner["scanners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (down.clone(), "unavailable".to_owned()),
            (clamd(), "ok".to_owned())
        ]
    );
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("pf_scanner_up{{scanner=\"{down}\"}} 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("pf_scanner_up{{scanner=\"{}\"}} 1", clamd())),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_every_scanner_down_uploads_fail_closed() {
    let list = format!(
        "tcp://127.0.0.1:{},tcp://127.0.0.1:{}",
        closed_port(),
        closed_port()
    );
    let app = TestApp::start_with(&["--clamd", &list]).await;
    let t = app.token("alice", "study");
    error(
        app.put_file(&t, "self", "f", "application/octet-stream", noise(5000, 1))
            .await,
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
    )
    .await;
    app.assert_nothing_stored().await;
    let ready = json(
        app.request(Method::GET, "/ready").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ready["checks"]["scanner"]["status"], "unavailable",
        "{ready}"
    );
}

#[tokio::test]
async fn uploads_spread_over_the_scanners() {
    // No scan is answered before all four have started, so each choice sees the others busy.
    let together = std::sync::Arc::new(tokio::sync::Barrier::new(4));
    let a = FakeClamd::start(Behaviour::AnswersTogether(
        std::sync::Arc::clone(&together),
        "stream: OK",
    ))
    .await;
    let b = FakeClamd::start(Behaviour::AnswersTogether(together, "stream: OK")).await;
    let list = format!("{},{}", a.address, b.address);
    let app = std::sync::Arc::new(TestApp::start_with(&["--clamd", &list]).await);
    let uploads: Vec<_> = (0..4)
        .map(|i| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let t = app.token(&format!("u{i}"), "study");
                let res = app
                    .put_file(&t, "self", "f", "application/octet-stream", noise(3000, i))
                    .await;
                assert_eq!(res.status(), StatusCode::CREATED);
            })
        })
        .collect();
    for u in uploads {
        u.await.unwrap();
    }
    // The least busy first: with every scan held open, both scanners get some.
    assert_eq!(a.sessions() + b.sessions(), 4);
    assert!(
        a.sessions() >= 1 && b.sessions() >= 1,
        "{} / {}",
        a.sessions(),
        b.sessions()
    );
}
