//! `/metrics`: requests by route and status, bytes in and out, uploads in flight, scan verdicts
//! and latency, backend errors, buffer memory.

mod common;

use common::{TestApp, closed_port, json};
use reqwest::{Method, StatusCode};

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

async fn scrape(app: &TestApp) -> String {
    let res = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    res.text().await.unwrap()
}

#[tokio::test]
async fn counts_what_happened() {
    let clamd = std::env::var("PF_TEST_CLAMD").expect("PF_TEST_CLAMD is set by scripts/test");
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let t = app.token("alice", "study");
    json(
        app.put_file(&t, "self", "a.txt", "text/plain", b"twelve bytes".to_vec())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let eicar = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$",
        "EICAR-STANDARD-ANTIVIRUS-",
        "TEST-FILE!$H+H*",
    ]
    .concat();
    assert_eq!(
        app.put_file(&t, "self", "e.txt", "text/plain", eicar.into_bytes())
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(app.download(&t, "self", "a.txt").await.len(), 12);
    app.get_file(&t, "self", "missing").await;

    let text = scrape(&app).await;
    let put = "pf_http_requests_total{method=\"PUT\",route=\"/v3/participants/self/files/{fileId}\",status=\"201\"}";
    assert_eq!(value(&text, put), 1);
    let refused = "pf_http_requests_total{method=\"PUT\",route=\"/v3/participants/self/files/{fileId}\",status=\"422\"}";
    assert_eq!(value(&text, refused), 1);
    let missing = "pf_http_requests_total{method=\"GET\",route=\"/v3/participants/self/files/{fileId}\",status=\"404\"}";
    assert_eq!(value(&text, missing), 1);
    assert_eq!(value(&text, "pf_upload_bytes_total"), 12);
    assert_eq!(value(&text, "pf_download_bytes_total"), 12);
    assert_eq!(value(&text, "pf_uploads_in_flight"), 0);
    assert_eq!(value(&text, "pf_scan_verdicts_total{verdict=\"clean\"}"), 1);
    assert_eq!(
        value(&text, "pf_scan_verdicts_total{verdict=\"infected\"}"),
        1
    );
    assert_eq!(value(&text, "pf_scan_duration_seconds_count"), 1);
    assert_eq!(value(&text, "pf_buffer_memory_bytes"), 0);
    assert!(text.contains("pf_http_request_duration_seconds_bucket"));
    // Labels are route templates: no participant, file or token in them.
    assert!(!text.contains("alice") && !text.contains("a.txt") && !text.contains(&t));
}

#[tokio::test]
async fn counts_backend_errors() {
    let app =
        TestApp::start_with(&["--clamd", &format!("tcp://127.0.0.1:{}", closed_port())]).await;
    let t = app.token("alice", "study");
    assert_eq!(
        app.put_file(&t, "self", "a.txt", "text/plain", b"x".to_vec())
            .await
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let text = scrape(&app).await;
    assert_eq!(
        value(&text, "pf_backend_errors_total{backend=\"clamd\"}"),
        1
    );
    assert_eq!(value(&text, "pf_scan_verdicts_total{verdict=\"error\"}"), 1);
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let app = TestApp::start().await;
    let send = |n: usize| {
        let app = &app;
        async move {
            let method = Method::from_bytes(format!("INVENTED{n}").as_bytes()).unwrap();
            app.request(method, "/v3/participants/self/files")
                .send()
                .await
                .unwrap();
        }
    };
    for n in 0..3 {
        send(n).await;
    }
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let before = scrape(&app).await;
    for n in 3..303 {
        send(n).await;
    }
    let after = scrape(&app).await;
    assert!(!after.contains("INVENTED"), "{after}");
    // The scrape itself adds a GET /metrics series between the two reads, nothing else may.
    let grown: Vec<&str> = after
        .lines()
        .filter(|l| !l.starts_with('#') && !before.lines().any(|b| same_series(b, l)))
        .filter(|l| !l.contains("route=\"/metrics\""))
        .collect();
    assert!(grown.is_empty(), "new series: {grown:?}");
    assert!(series(&after) <= series(&before) + 20, "{after}");
    let other = "pf_http_requests_total{method=\"other\",route=\"/v3/participants/self/files\",status=\"405\"}";
    assert_eq!(value(&after, other), 303, "{after}");
}

/// Whether two exposition lines are the same series (everything before the value).
fn same_series(a: &str, b: &str) -> bool {
    a.rsplit_once(' ').map(|(s, _)| s) == b.rsplit_once(' ').map(|(s, _)| s)
}
