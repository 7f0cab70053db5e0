//! Several scanners (`PF_CLAMD` as a comma list): uploads go on while one is down, fail closed
//! when all are, spread over the ones that answer, and `/ready` and `/metrics` show each (by
//! position, as last probed in the background, never waiting on a scanner).

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
    assert_eq!(
        states(&ready),
        [
            ("scanner 1".to_owned(), "unavailable".to_owned()),
            ("scanner 2".to_owned(), "ok".to_owned())
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
        metrics.contains("pf_scanner_up{scanner=\"scanner 1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pf_scanner_up{scanner=\"scanner 2\"} 1"),
        "{metrics}"
    );
    for body in [ready.to_string(), metrics] {
        assert!(!body.contains(&down) && !body.contains(&clamd()), "{body}");
    }
}

/// Each scanner's name and status in a `/ready` body.
fn states(ready: &serde_json::Value) -> Vec<(String, String)> {
    ready["checks"]["scanner"]["scanners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A loopback port that accepts connections and never answers on them: a blackholed clamd.
async fn blackhole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

#[tokio::test]
async fn a_blackholed_scanner_holds_back_neither_ready_nor_metrics() {
    let (hole, _held) = blackhole().await;
    let good = FakeClamd::start(Behaviour::Answers("stream: OK")).await;
    let list = format!("{hole},{}", good.address);
    // A scan may take a minute; `/ready` and `/metrics` must not wait that long for a PING.
    let app = TestApp::start_with(&["--clamd", &list, "--scan-timeout", "60s"]).await;
    let prompt = std::time::Duration::from_secs(5);
    let ask = |path: &'static str| app.request(Method::GET, path).timeout(prompt).send();
    let ready = json(
        ask("/ready").await.expect("/ready answers at once"),
        StatusCode::OK,
    )
    .await;
    let body = ready.to_string();
    assert!(!body.contains("127.0.0.1"), "{body}");
    let names: Vec<String> = states(&ready).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["scanner 1", "scanner 2"], "{ready}");
    let metrics = ask("/metrics")
        .await
        .expect("/metrics answers at once")
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("127.0.0.1"), "{metrics}");
    // The background probe gives up on the blackholed scanner after its own short timeout, far
    // within the scan timeout; every answer meanwhile comes at once.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = json(
            ask("/ready").await.expect("/ready answers at once"),
            StatusCode::OK,
        )
        .await;
        let now = states(&ready);
        if now
            == [
                ("scanner 1".to_owned(), "unavailable".to_owned()),
                ("scanner 2".to_owned(), "ok".to_owned()),
            ]
        {
            assert_eq!(ready["checks"]["scanner"]["status"], "ok", "{ready}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blackholed scanner was never reported: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = ask("/metrics")
        .await
        .expect("/metrics answers at once")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pf_scanner_up{scanner=\"scanner 1\"} 0")
            && metrics.contains("pf_scanner_up{scanner=\"scanner 2\"} 1"),
        "{metrics}"
    );
    // Uploads now go to the scanner that answers first, without waiting on the other's PING.
    let t = app.token("alice", "study");
    let res = app
        .request(Method::PUT, "/v3/participants/self/files/f")
        .bearer_auth(&t)
        .header("content-type", "application/octet-stream")
        .body(noise(3000, 1))
        .timeout(std::time::Duration::from_secs(15))
        .send()
        .await
        .expect("the upload is not held back by the blackholed scanner");
    assert_eq!(json(res, StatusCode::CREATED).await["scanStatus"], "clean");
    assert_eq!(good.sessions(), 1);
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
