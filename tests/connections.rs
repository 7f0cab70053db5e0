//! The listener over raw sockets: a head that never ends is cut, an idle kept-alive connection
//! is closed, slow bodies and slow readers are not, and connections past the cap are refused
//! with 503 while `/health` keeps answering.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, json, noise};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "still open after {limit:?}; received {:?}",
        String::from_utf8_lossy(&got)
    );
    (got, started.elapsed())
}

/// Reads one response with a Content-Length body; returns its head and body.
async fn one_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

#[tokio::test]
async fn a_head_that_never_ends_is_cut() {
    let app = TestApp::start_with(&["--header-read-timeout", "1s", "--idle-timeout", "30s"]).await;
    // Nothing at all, part of a head, and a head trickled a byte at a time.
    let mut silent = connect(&app).await;
    let mut partial = connect(&app).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut trickle = connect(&app).await;
    let trickling = tokio::spawn(async move {
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*b]).await.is_err() {
                return trickle;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        trickle
    });
    for stream in [&mut silent, &mut partial] {
        let (got, after) = until_closed(stream, Duration::from_secs(5)).await;
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{got:?}"
        );
        assert!(after < Duration::from_secs(4), "{after:?}");
    }
    let mut trickle = trickling.await.unwrap();
    until_closed(&mut trickle, Duration::from_secs(5)).await;
    // The service still answers.
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = TestApp::start_with(&["--idle-timeout", "1s", "--header-read-timeout", "30s"]).await;
    let mut stream = connect(&app).await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let (head, _) = one_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Kept alive within the limit...
    stream.write_all(request).await.unwrap();
    let (head, _) = one_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // ...and closed past it.
    let (got, after) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "{after:?}"
    );
}

/// Neither deadline applies while a request is in flight: an upload whose client pauses longer
/// than both (but within `PF_CLIENT_TIMEOUT`) and a download read slowly both complete.
#[tokio::test]
async fn slow_bodies_and_slow_readers_are_not_cut() {
    let app = TestApp::start_with(&[
        "--idle-timeout",
        "1s",
        "--header-read-timeout",
        "1s",
        "--client-timeout",
        "20s",
    ])
    .await;
    let t = app.token("alice", "study");
    let body = noise(3000, 1);
    let mut stream = connect(&app).await;
    let head = format!(
        "PUT /v3/participants/self/files/slow.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for part in body.chunks(1000) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stream.write_all(part).await.unwrap();
    }
    let (head, _) = one_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");

    let big = noise(24 * 1024 * 1024, 2);
    json(
        app.put_file(
            &t,
            "self",
            "big.bin",
            "application/octet-stream",
            big.clone(),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let res = app.get_file(&t, "self", "big.bin").await;
    let url = res.headers()["location"].to_str().unwrap().to_owned();
    let path = url.trim_start_matches(&app.base).to_owned();
    let mut stream = connect(&app).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    stream.read_exact(&mut first).await.unwrap();
    // The reader stalls past both deadlines; the server is blocked writing, not idle.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The server closes the connection once the response is out (Connection: close).
    let (rest, _) = until_closed(&mut stream, Duration::from_mins(1)).await;
    let all = [&first[..], &rest[..]].concat();
    let start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"));
    assert_eq!(all.len() - start, big.len());
    assert!(all[start..] == big[..], "the body differs");
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_health_recovers() {
    let app = TestApp::start_with(&["--max-connections", "8", "--header-read-timeout", "2s"]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = connect(&app).await;
        s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for _ in 0..3 {
        let mut extra = connect(&app).await;
        extra
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = until_closed(&mut extra, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("ServiceUnavailableException"), "{text}");
    }
    // The held sockets are cut at their header deadline; /health then answers again.
    let health = loop {
        let res = app.client.get(app.url("/health")).send().await;
        if let Ok(r) = res
            && r.status() == StatusCode::OK
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/health never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(health < Duration::from_secs(5), "{health:?}");
    for mut s in held {
        until_closed(&mut s, Duration::from_secs(5)).await;
    }
}

/// On shutdown every connection is told to finish; those with nothing under way (a new one that
/// sent nothing, a kept-alive one between requests) close at once instead of holding the
/// shutdown until their deadlines.
#[tokio::test]
async fn shutdown_closes_quiet_connections_at_once() {
    let app = TestApp::start_with(&["--header-read-timeout", "30s", "--idle-timeout", "30s"]).await;
    let mut fresh = connect(&app).await;
    let mut kept = connect(&app).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = one_response(&mut kept).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let started = Instant::now();
    app.stop().await;
    let stopped = started.elapsed();
    assert!(
        stopped < Duration::from_secs(3),
        "the shutdown took {stopped:?}"
    );
    for s in [&mut fresh, &mut kept] {
        let (got, _) = until_closed(s, Duration::from_secs(2)).await;
        assert!(got.is_empty(), "{got:?}");
    }
}
