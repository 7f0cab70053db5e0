//! `participant-files rescan` against a real clamd whose signatures change: a test adds a
//! signature for a random marker and RELOADs, and files stored clean before are then found,
//! marked infected, never served again and quarantined, on the backend set of the run.

mod common;

use std::time::{Duration, Instant};

use common::signatures::{marker, rescan_clamd, teach_clamd, with_marker};
use common::{TestApp, error, json, noise};
use reqwest::StatusCode;
use serde_json::Value;

async fn put(app: &TestApp, token: &str, file: &str, bytes: Vec<u8>) -> Value {
    let f = json(
        app.put_file(token, "self", file, "application/octet-stream", bytes)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(f["scanStatus"], "clean", "{f}");
    f
}

fn rescan(app: &TestApp, extra: &[&str]) -> String {
    let mut args = vec!["rescan", "--older-than", "0s"];
    args.extend_from_slice(extra);
    let out = app.command(&args).output().unwrap();
    assert!(
        out.status.success(),
        "rescan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn item(app: &TestApp, token: &str, file: &str) -> Value {
    app.listed(token, "self", file)
        .await
        .unwrap_or_else(|| panic!("{file} is not listed"))
}

async fn quarantines_what_new_signatures_find(quarantine: &str) {
    let (clamd, _) = rescan_clamd();
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let (alice, bob) = (app.token("alice", "study"), app.token("bob", "study"));
    let (mark, name) = marker();
    let before = put(&app, &alice, "bad.bin", with_marker(300_000, 1, &mark)).await;
    put(&app, &alice, "good.bin", noise(200_000, 2)).await;
    put(&app, &bob, "also-bad.bin", with_marker(5_000, 3, &mark)).await;
    assert_eq!(app.stored_files().len(), 3);

    // A download URL issued while the file was still called clean.
    let res = app.get_file(&alice, "self", "bad.bin").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let issued = res.headers()["location"].to_str().unwrap().to_owned();

    teach_clamd(&mark, &name).await;
    let out = rescan(&app, &["--quarantine", quarantine]);
    assert!(out.contains("2 infected"), "{out}");
    assert!(out.contains("1 clean"), "{out}");

    // Never served again: GET names the signature; the listing shows the status.
    let e = error(
        app.get_file(&alice, "self", "bad.bin").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains(&name), "{e}");
    error(
        app.client.get(&issued).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "InfectedFileException",
    )
    .await;
    let bad = item(&app, &alice, "bad.bin").await;
    assert_eq!(bad["scanStatus"], "infected", "{bad}");
    assert_eq!(
        item(&app, &bob, "also-bad.bin").await["scanStatus"],
        "infected"
    );
    let good = item(&app, &alice, "good.bin").await;
    assert_eq!(good["scanStatus"], "clean");
    assert!(
        good["scannedOn"].as_str().unwrap() > before["scannedOn"].as_str().unwrap(),
        "{good}"
    );
    assert_eq!(
        app.download(&alice, "self", "good.bin").await,
        noise(200_000, 2)
    );

    // The objects: deleted, or kept under quarantine/ only.
    let stored = app.stored_files();
    let quarantined = stored
        .iter()
        .filter(|p| p.to_string_lossy().contains("/quarantine/"))
        .count();
    match quarantine {
        "delete" => assert_eq!((stored.len(), quarantined), (1, 0), "{stored:?}"),
        _ => assert_eq!((stored.len(), quarantined), (3, 2), "{stored:?}"),
    }

    // An audit line for each finding, naming the signature; a metric of the run.
    let findings: Vec<Value> = app
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "rescan" && l["status"] == 422)
        .collect();
    assert_eq!(findings.len(), 2, "{findings:?}");
    // clamd names a signature from a database of one's own with this suffix.
    let found_as = format!("{name}.UNOFFICIAL");
    assert!(
        findings.iter().all(|l| l["signature"] == found_as.as_str()),
        "{findings:?}"
    );
    let metrics = std::fs::read_to_string(app.data.path().join("data/rescan.prom")).unwrap();
    assert!(
        metrics.contains("pf_rescan_files{result=\"infected\"} 2"),
        "{metrics}"
    );

    // A second run finds nothing new.
    let again = rescan(&app, &["--quarantine", quarantine]);
    assert!(again.contains("0 infected"), "{again}");

    // Deleting an infected file removes whatever is kept of it.
    json(
        app.delete_file(&alice, "self", "bad.bin").await,
        StatusCode::OK,
    )
    .await;
    json(
        app.delete_file(&bob, "self", "also-bad.bin").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(app.stored_files().len(), 1, "{:?}", app.stored_files());
}

#[tokio::test]
async fn rescan_deletes_what_new_signatures_find() {
    quarantines_what_new_signatures_find("delete").await;
}

#[tokio::test]
async fn rescan_keeps_what_new_signatures_find_in_quarantine() {
    quarantines_what_new_signatures_find("keep").await;
}

#[tokio::test]
async fn a_stopped_rescan_goes_on_where_it_was() {
    let (clamd, _) = rescan_clamd();
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let t = app.token("dora", "study");
    let n: u64 = 24;
    for i in 0..n {
        put(&app, &t, &format!("f{i:02}.bin"), noise(1 << 20, 100 + i)).await;
    }
    let done = |app: &TestApp| {
        app.audit()
            .iter()
            .filter(|l| l["action"] == "rescan")
            .count() as u64
    };
    let mut child = app
        .command(&["rescan", "--older-than", "0s", "--concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while done(&app) < 4 {
        assert!(
            start.elapsed() < Duration::from_mins(2),
            "the first run did not get going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = done(&app);
    assert!(first < n, "the first run finished before it was stopped");

    let out = rescan(&app, &[]);
    let second: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The rest, not all again: at most the one file in flight when it stopped is done twice.
    assert!(
        second < n && first + second >= n && first + second <= n + 1,
        "first run {first}, second {second} of {n}"
    );
    // A run that finished leaves nothing to go on with: the next one starts over.
    let third = rescan(&app, &[]);
    assert!(
        third.starts_with(&format!("rescanned {n} files")),
        "{third}"
    );
}

/// Rescan reads a file through the upload pipeline, so bytes changed in the store since their
/// commit (bit rot, a restore of another version, tampering) are found and reported, never
/// marked clean as if they were the file that was scanned.
#[tokio::test]
async fn bytes_changed_in_the_store_are_reported_not_marked_clean() {
    let (clamd, _) = rescan_clamd();
    let app = TestApp::start_with(&["--clamd", &clamd]).await;
    let alice = app.token("alice", "study");
    let before = put(&app, &alice, "kept.bin", noise(100_000, 7)).await;
    put(&app, &alice, "other.bin", noise(50_000, 8)).await;
    let stored = app.stored_files();
    let object = stored
        .iter()
        .find(|p| std::fs::read(p).unwrap() == noise(100_000, 7))
        .expect("kept.bin's object is stored");
    // The same size, other bytes: only the hash tells.
    std::fs::write(object, noise(100_000, 9)).unwrap();

    let out = rescan(&app, &[]);
    assert!(out.contains("1 changed in the store"), "{out}");
    assert!(out.contains("1 clean"), "{out}");
    let kept = item(&app, &alice, "kept.bin").await;
    assert_eq!(
        kept["scannedOn"], before["scannedOn"],
        "the changed file was marked as scanned: {kept}"
    );
    let metrics = std::fs::read_to_string(app.data.path().join("data/rescan.prom")).unwrap();
    assert!(
        metrics.contains("pf_rescan_files{result=\"changed\"} 1"),
        "{metrics}"
    );
}

/// Two runs that both read an infected file's row before either moved its object (two
/// `rescan` processes, or a stopped run started again beside one still going), in the order
/// that lost the file: the earlier run keeps the copy under `quarantine/` and points the row at
/// it; the later one then finds the original gone and the row no longer naming it, and must
/// leave the copy the row now names.
#[tokio::test]
async fn a_second_run_on_the_same_row_keeps_the_quarantined_copy() {
    use futures::StreamExt;
    use participant_files::config::Quarantine;
    use participant_files::keys::{ObjectKey, UploadId};
    use participant_files::model::{
        AppId, FileId, FileRow, Owner, ScanEvidence, ScanStatus, StoredFile, UserId,
    };
    use participant_files::store::StoreError;

    let flags = match common::backend() {
        common::Backend::Embedded => Vec::new(),
        common::Backend::Aws => common::aws_flags().0,
    };
    // `open_backends` gives its own URL secret.
    let secret = flags.iter().position(|f| f == "--url-secret");
    let flags: Vec<&str> = (flags.iter().enumerate())
        .filter(|(i, _)| secret.is_none_or(|s| *i != s && *i != s + 1))
        .map(|(_, f)| f.as_str())
        .collect();
    let (_data, backends) = common::open_backends(&flags).await;
    let (index, store) = (backends.index.as_ref(), backends.store.as_ref());
    let owner = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("alice").unwrap(),
    };
    let file_id = FileId::parse("bad.bin").unwrap();
    let key = ObjectKey::new(&owner, &UploadId::generate());
    let bytes = noise(70_000, 11);
    let mut writer = store.create(&key, Some(70_000)).await.unwrap();
    writer.write(bytes.clone().into()).await.unwrap();
    writer.commit().await.unwrap();
    let mut row = FileRow::empty(&owner, &file_id);
    row.current = Some(StoredFile {
        key: key.clone(),
        mime_type: "application/octet-stream".into(),
        size: 70_000,
        sha256: None,
        scan_status: ScanStatus::Infected,
        created_on: chrono::Utc::now(),
        scan: Some(ScanEvidence {
            scanned_on: chrono::Utc::now(),
            engine: "ClamAV 1.4.6/27480/Mon Dec  7 09:00:00 2026".into(),
            signature: Some("Pf-Marker.UNOFFICIAL".into()),
        }),
        file_name: None,
    });
    index.put(&row, None).await.unwrap();

    // What both runs read, before either wrote.
    let read = index.get(&owner, &file_id).await.unwrap().unwrap();
    let file = read.value.current.unwrap();
    for run in ["earlier", "later"] {
        participant_files::rescan::quarantine(
            index,
            store,
            Quarantine::Keep,
            &owner,
            &file_id,
            &file,
            Some("Pf-Marker.UNOFFICIAL"),
        )
        .await
        .unwrap_or_else(|e| panic!("the {run} run failed: {e:#}"));
    }

    let now = index.get(&owner, &file_id).await.unwrap().unwrap();
    let named = now.value.current.unwrap().key;
    assert_eq!(named, key.quarantined(), "the row does not name the copy");
    let mut kept = Vec::new();
    match store.read(&named, None).await {
        Ok(read) => {
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                kept.extend_from_slice(&chunk.unwrap());
            }
        }
        Err(StoreError::NotFound) => {
            panic!("the later run deleted the quarantined copy that the row names")
        }
        Err(e) => panic!("{e}"),
    }
    assert!(
        kept == bytes,
        "the quarantined copy is not the file's bytes"
    );
    assert!(
        matches!(store.read(&key, None).await, Err(StoreError::NotFound)),
        "the original object is still there"
    );
}
