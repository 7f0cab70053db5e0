//! Writes of the embedded index are durable before they are answered, also when they are
//! committed together. 32 clients POST upload URLs to the service running under strace, which
//! is then killed with SIGKILL. Every 201 must have left the socket after the index's WAL was
//! written and then synced, both after its request arrived: a SIGKILL alone cannot show a
//! missing fsync, since the kernel keeps the written pages. After a restart, every POST that was
//! answered 201 is there (its upload URL still takes the upload).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::strace::{calls, spawn_traced};
use common::{JWT_SECRET, Process, URL_SECRET, closed_port, participant_token};

const CLIENTS: usize = 32;

/// The system calls the check reads: the index's files opened, written and synced, and the
/// HTTP requests and answers on the sockets.
const TRACED: &str = "openat,close,accept4,read,recvfrom,readv,recvmsg,write,writev,sendto,\
                      sendmsg,pwrite64,pwritev,fsync,fdatasync";

/// What the check found: the 201 answers, and those that left before an index write made
/// after their request arrived had been synced.
struct Findings {
    answers: usize,
    early: Vec<String>,
}

/// For every 201 answer in `log`: between the arrival of its POST and the answer, the service
/// wrote one of the index's files (`index`, the database and its WAL) and then synced that
/// file, the sync ending before the answer started. The commit of the POST is such a write;
/// with `synchronous=OFF` there is no sync at all, with `NORMAL` only at checkpoints.
fn check(log: &str, index: &Path) -> Findings {
    let index_files = [
        format!("{}", index.display()),
        format!("{}-wal", index.display()),
    ];
    let mut is_index: HashMap<i64, bool> = HashMap::new();
    let mut last_write: HashMap<i64, f64> = HashMap::new();
    // Each sync of an index file: when it ended, and when the last write before it started.
    let mut syncs: Vec<(f64, f64)> = Vec::new();
    let mut post_arrived: HashMap<i64, f64> = HashMap::new();
    let mut answers: Vec<(f64, f64)> = Vec::new();
    for call in calls(log) {
        let fd = call.fd();
        match call.name.as_str() {
            "openat" if call.ret >= 0 => {
                is_index.insert(call.ret, index_files.iter().any(|f| f == call.text()));
            }
            "accept4" if call.ret >= 0 => {
                is_index.insert(call.ret, false);
            }
            "close" => {
                if let Some(fd) = fd {
                    is_index.remove(&fd);
                }
            }
            "pwrite64" | "pwritev" | "write" | "writev" | "sendto" | "sendmsg" => {
                let Some(fd) = fd else { continue };
                if is_index.get(&fd) == Some(&true) {
                    last_write.insert(fd, call.start);
                } else if call.text().starts_with("HTTP/1.1 201") {
                    let arrived = post_arrived.get(&fd).copied().unwrap_or(f64::INFINITY);
                    answers.push((arrived, call.start));
                }
            }
            "read" | "recvfrom" | "readv" | "recvmsg" if call.ret > 0 => {
                if let Some(fd) = fd
                    && call.text().starts_with("POST ")
                {
                    post_arrived.insert(fd, call.start);
                }
            }
            "fsync" | "fdatasync" if call.ret == 0 => {
                let Some(fd) = fd else { continue };
                if is_index.get(&fd) == Some(&true) {
                    syncs.push((call.end, last_write.get(&fd).copied().unwrap_or(f64::MIN)));
                }
            }
            _ => {}
        }
    }
    syncs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The latest write covered by any sync that ended by then.
    let mut covered = Vec::with_capacity(syncs.len());
    let mut latest = f64::MIN;
    for &(_, written) in &syncs {
        latest = latest.max(written);
        covered.push(latest);
    }
    let early = answers
        .iter()
        .filter(|&&(arrived, answered)| {
            let ended = syncs.partition_point(|&(end, _)| end < answered);
            ended == 0 || covered[ended - 1] <= arrived
        })
        .map(|(arrived, answered)| format!("POST at {arrived:.6} answered at {answered:.6}"))
        .collect();
    Findings {
        answers: answers.len(),
        early,
    }
}

#[tokio::test]
async fn every_acknowledged_post_is_synced_before_its_answer_and_outlives_a_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let traces = tempfile::tempdir().unwrap();
    let trace = traces.path().join("service.strace");
    let env = vec![
        ("PF_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PF_URL_SECRET", URL_SECRET.to_owned()),
        ("PF_DATA_DIR", data.path().display().to_string()),
        ("PF_MAX_PENDING_PER_PARTICIPANT", "100000".to_owned()),
    ];
    let port = closed_port();
    let mut service = spawn_traced(port, &env, &trace, TRACED).await;
    let base = format!("http://127.0.0.1:{port}");
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
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &service.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    service.strace.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 500,
        "only {} POSTs before the kill",
        acked.len()
    );

    let log = std::fs::read_to_string(&trace).unwrap();
    let found = check(&log, &data.path().join("index.sqlite"));
    // Every answer a client read is in the log, or the check looked at the wrong calls.
    assert!(
        found.answers >= acked.len(),
        "the trace shows {} answers 201, the clients read {}",
        found.answers,
        acked.len()
    );
    assert!(
        found.early.is_empty(),
        "{} of {} answers 201 left before the index was synced after their POST arrived; \
         the first: {:?}",
        found.early.len(),
        found.answers,
        &found.early[..found.early.len().min(3)]
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
