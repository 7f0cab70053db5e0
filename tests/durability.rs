//! Writes of the embedded index are durable before they are answered, also when they are
//! committed together: the service is killed with SIGKILL while 32 clients POST upload URLs,
//! and after a restart every POST that was answered 201 is there (its upload URL still takes
//! the upload).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{JWT_SECRET, Process, URL_SECRET, closed_port, participant_token};

const CLIENTS: usize = 32;

#[tokio::test]
async fn every_acknowledged_post_outlives_a_sigkill_during_a_burst() {
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_DATA_DIR", data.path().display().to_string()),
        ("PF_MAX_PENDING_PER_PARTICIPANT", "100000".to_owned()),
    ];
    let port = closed_port();
    let mut service = Process::spawn_on(port, &env, &[]).await;
    let base = service.base.clone();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (base, acked) = (base.clone(), Arc::clone(&acked));
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let token = participant_token(&format!("burst-{c}"), "study");
            for i in 0.. {
                let res = http
                    .post(format!("{base}/v3/participants/self/files/f-{i}.txt"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "mimeType": "text/plain" }))
                    .send()
                    .await;
                // The service was killed: an answer that did not arrive promises nothing.
                let Ok(res) = res else { return };
                assert_eq!(res.status(), 201);
                let Ok(body) = res.json::<serde_json::Value>().await else {
                    return;
                };
                let url = body["uploadUrl"].as_str().unwrap().to_owned();
                acked.lock().unwrap().push(url);
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().unwrap().len() < 2000 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    drop(service);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 500,
        "only {} POSTs before the kill",
        acked.len()
    );

    let _service = Process::spawn_on(port, &env, &[]).await;
    let http = reqwest::Client::new();
    let mut lost = 0;
    for url in &acked {
        let res = http
            .put(url)
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .unwrap();
        if res.status() != 201 {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged POSTs were lost",
        acked.len()
    );
}
