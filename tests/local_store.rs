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
    let staging = data.path().join("data/blobs/staging");
    std::fs::write(staging.join("0123.part"), b"half an upload").unwrap();
    let app = TestApp::start_in_embedded(data).await;
    assert!(app.staged_files().is_empty(), "{:?}", app.staged_files());
    assert_eq!(app.download(&t, "self", "kept.txt").await, b"kept");
}
