//! A request with both `Content-Length` and `Transfer-Encoding` over a raw socket: 400 in
//! Bridge's error shape, nothing stored, and the connection closed (RFC 9112 6.1), also when it
//! comes after other requests on a kept-alive connection.

mod common;

use std::time::Duration;

use common::TestApp;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `bytes` on a new connection and reads until the server closes it.
async fn exchange(app: &TestApp, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(read.is_ok(), "the connection stayed open; received {got:?}");
    got
}

fn put(token: &str, file: &str, framing: &str, body: &str) -> String {
    format!(
        "PUT /v3/participants/self/files/{file} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\n{framing}\r\n{body}"
    )
}

/// The status codes of the responses in `text`, in order, and the last one's JSON body.
fn responses(text: &str) -> (Vec<u16>, String) {
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i + 9..i + 12].parse().unwrap())
        .collect();
    // The JSON of the last response, whatever its framing.
    let last = &text[text.rfind("HTTP/1.1 ").unwrap_or_default()..];
    let json = match (last.find('{'), last.rfind('}')) {
        (Some(a), Some(b)) => last[a..=b].to_owned(),
        _ => String::new(),
    };
    (statuses, json)
}

async fn assert_refused(app: &TestApp, token: &str, sent: &str) {
    let got = exchange(app, sent.as_bytes()).await;
    let (statuses, body) = responses(&got);
    assert_eq!(statuses, vec![400], "{got}");
    assert!(
        got.to_lowercase().contains("\r\nconnection: close\r\n"),
        "{got}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {got}"));
    assert_eq!(body["statusCode"], 400, "{body}");
    assert_eq!(body["type"], "BadRequestException", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Transfer-Encoding")
    );
    let res = app.get_file(token, "self", "both.txt").await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "the refused body was stored"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let app = TestApp::start().await;
    let t = app.token("ines", "study");
    let chunked = "5\r\nhello\r\n0\r\n\r\n";
    for framing in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        assert_refused(&app, &t, &put(&t, "both.txt", framing, chunked)).await;
    }
    // After other requests on the same connection: one framed by length whose body looks like
    // a head with both, and one chunked.
    let decoy = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let sent = [
        put(
            &t,
            "decoy.txt",
            &format!("Content-Length: {}\r\n", decoy.len()),
            decoy,
        ),
        put(&t, "chunked.txt", "Transfer-Encoding: chunked\r\n", chunked),
        put(
            &t,
            "both.txt",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            chunked,
        ),
    ]
    .concat();
    let got = exchange(&app, sent.as_bytes()).await;
    let (statuses, _) = responses(&got);
    assert_eq!(statuses, vec![201, 201, 400], "{got}");
    let res = app.get_file(&t, "self", "both.txt").await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "the refused body was stored"
    );
    assert_eq!(app.download(&t, "self", "chunked.txt").await, b"hello");
}
