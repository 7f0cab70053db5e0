//! What only the embedded local store does: clearing a crash's half-written uploads at start.

mod common;

use common::TestApp;

#[tokio::test]
async fn leftovers_of_a_crash_are_removed_at_start() {
    let app = TestApp::start_embedded(&[]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "kept.txt", "text/plain", b"kept".to_vec())
        .await;
    let data = app.stop().await;
    let temp = data.path().join("data/blobs/temp");
    std::fs::write(temp.join("0123.part"), b"half an upload").unwrap();
    // Where a version before the folder's rename left its own.
    let old = data.path().join("data/blobs/staging");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("0456.part"), b"half an older upload").unwrap();
    let app = TestApp::start_in_embedded(data).await;
    assert!(app.staged_files().is_empty(), "{:?}", app.staged_files());
    assert!(!old.exists(), "the older version's folder is left");
    assert_eq!(app.download(&t, "self", "kept.txt").await, b"kept");
}

#[tokio::test]
async fn reconcile_on_the_embedded_backends() {
    let app = TestApp::start_embedded(&["--url-ttl", "1s"]).await;
    let t = app.token("alice", "study");
    app.put_file(&t, "self", "kept.txt", "text/plain", b"kept".to_vec())
        .await;
    let posted = app
        .post_file(
            &t,
            "self",
            "never.txt",
            &serde_json::json!({"mimeType": "text/plain"}),
        )
        .await;
    assert_eq!(posted.status(), reqwest::StatusCode::CREATED);
    let orphan_dir = app.data.path().join("data/blobs/objects/study/alice");
    std::fs::write(
        orphan_dir.join("0123456789abcdef0123456789abcdef"),
        b"orphan",
    )
    .unwrap();
    let data = app.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .args(["reconcile", "--min-age", "1s"])
        .env("PF_DATA_DIR", data.path().join("data"))
        .env("PF_JWT_SECRET", common::JWT_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("object without a row study/alice/0123456789abcdef0123456789abcdef"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expired pending upload study/alice/"),
        "{stdout}"
    );
    let app = TestApp::start_in_embedded(data).await;
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
    assert_eq!(app.download(&t, "self", "kept.txt").await, b"kept");
}
