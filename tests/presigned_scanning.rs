//! Presigned uploads with a scanner (S3 and DynamoDB emulators, a real clamd): an arrival is
//! never served before the settler has streamed it from the store to clamd and got a clean
//! verdict; an infected one is deleted; with clamd down it waits; two instances scan it once.

mod common;

use std::time::{Duration, Instant};

use common::fake_clamd::{Behaviour, FakeClamd};
use common::relay::Relay;
use common::{TestApp, eicar, json, noise};
use participant_files::index::FileIndex;
use participant_files::model::{AppId, FileId, FileRow, Owner, UserId};
use reqwest::StatusCode;
use serde_json::json;

fn clamd() -> String {
    std::env::var("PF_TEST_CLAMD").expect(
        "PF_TEST_CLAMD is not set: run the suite with scripts/test, which installs and starts clamd on loopback",
    )
}

/// Asks for an upload URL and sends `bytes` straight to S3 with it; returns the URL.
async fn presigned_put(app: &TestApp, token: &str, file: &str, bytes: Vec<u8>) -> String {
    let posted = json(
        app.post_file(
            token,
            "self",
            file,
            &json!({"mimeType": "application/octet-stream"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let url = posted["uploadUrl"].as_str().unwrap();
    assert!(
        url.starts_with(&std::env::var("AWS_ENDPOINT_URL_S3").unwrap()),
        "{url}"
    );
    put_to(app, url, bytes).await;
    url.to_owned()
}

/// Sends `bytes` to an upload URL.
async fn put_to(app: &TestApp, url: &str, bytes: Vec<u8>) {
    let res = app
        .client
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Waits until `check` holds, asking every 100 ms, for at most `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_infected_arrival_is_never_served_and_a_clean_one_carries_its_evidence() {
    let app = TestApp::start_presigned(&[
        "--clamd",
        &clamd(),
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "1s",
    ])
    .await;
    let t = app.token("alice", "study");
    let v1 = noise(4000, 1);
    presigned_put(&app, &t, "photo.bin", v1.clone()).await;
    // Arrived, not yet scanned: not a file, whatever the order of requests and settler.
    wait_for(Duration::from_secs(30), "the clean arrival", || async {
        app.listed(&t, "self", "photo.bin").await.is_some()
    })
    .await;
    let file = app.listed(&t, "self", "photo.bin").await.unwrap();
    assert_eq!(file["scanStatus"], "clean", "{file}");
    assert_eq!(file["size"], 4000);
    assert!(
        file["scanEngine"].as_str().unwrap().starts_with("ClamAV "),
        "{file}"
    );
    assert!(file["scannedOn"].is_string(), "{file}");
    assert_eq!(app.download(&t, "self", "photo.bin").await, v1);

    // EICAR at the end of 24 MiB, so that the scan takes a while: before, during and after it
    // the previous version is what GET, list and the download serve.
    let mut bad = noise(24 << 20, 2);
    bad.extend(eicar());
    presigned_put(&app, &t, "photo.bin", bad).await;
    let start = Instant::now();
    let refused = loop {
        assert_eq!(app.download(&t, "self", "photo.bin").await, v1);
        let now = app.listed(&t, "self", "photo.bin").await.unwrap();
        assert_eq!(now["size"], 4000, "{now}");
        let refusal = app
            .audit()
            .into_iter()
            .find(|l| l["status"] == 422 && l["fileId"] == "photo.bin" && l["action"] == "upload");
        if let Some(line) = refusal {
            break line;
        }
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "the infected arrival was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        refused["signature"], "Eicar-Test-Signature.UNOFFICIAL",
        "{refused}"
    );
    assert_eq!(app.download(&t, "self", "photo.bin").await, v1);
    // The infected object is gone; the file's own object is the only one.
    wait_for(
        Duration::from_secs(10),
        "the infected object to go",
        || async { app.stored_files().len() == 1 },
    )
    .await;
    // And nothing is pending any more: the next pass finds nothing to take.
    let rows = common::index_of(&app).await;
    let owner = participant_files::model::Owner {
        app: participant_files::model::AppId::parse("study").unwrap(),
        participant: participant_files::model::UserId::parse("alice").unwrap(),
    };
    let row = rows
        .get(
            &owner,
            &participant_files::model::FileId::parse("photo.bin").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(row.value.pending.is_none(), "{row:?}");
}

#[tokio::test]
async fn arrivals_wait_while_the_scanner_is_down_and_are_scanned_when_it_is_back() {
    let mut relay = Relay::start().await;
    let app = TestApp::start_presigned(&[
        "--clamd",
        &relay.address(),
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "500ms",
    ])
    .await;
    let t = app.token("bob", "study");
    relay.down().await;
    let bytes = noise(10_000, 3);
    presigned_put(&app, &t, "scan-me.bin", bytes.clone()).await;
    // The settler tries and defers it, again and again; it is never committed unscanned.
    wait_for(Duration::from_secs(30), "a deferred arrival", || async {
        app.metric("pf_arrivals_total{outcome=\"deferred\"}").await >= 2
    })
    .await;
    assert!(app.listed(&t, "self", "scan-me.bin").await.is_none());
    let res = app.get_file(&t, "self", "scan-me.bin").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.metric("pf_arrivals_total{outcome=\"settled\"}").await,
        0
    );

    relay.up().await;
    // A scanner that refused is passed over for 30 s before it is tried again.
    wait_for(
        Duration::from_secs(90),
        "the arrival once clamd is back",
        || async { app.listed(&t, "self", "scan-me.bin").await.is_some() },
    )
    .await;
    let file = app.listed(&t, "self", "scan-me.bin").await.unwrap();
    assert_eq!(file["scanStatus"], "clean", "{file}");
    assert_eq!(app.download(&t, "self", "scan-me.bin").await, bytes);
}

#[tokio::test]
async fn two_instances_scan_each_arrival_once() {
    let a = TestApp::start_presigned(&[
        "--clamd",
        &clamd(),
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "100ms",
    ])
    .await;
    let b = a.start_beside(&[]).await;
    let t = a.token("carol", "study");
    let n = 8;
    for i in 0..n {
        presigned_put(&a, &t, &format!("f{i}.bin"), noise(6 << 20, 10 + i)).await;
    }
    wait_for(Duration::from_mins(1), "every arrival", || async {
        let page = json(a.list(&t, "self", "").await, StatusCode::OK).await;
        page["items"].as_array().unwrap().len() == usize::try_from(n).unwrap()
    })
    .await;
    // Both instances poll, many times while an arrival of 6 MiB is scanned; the lease gives
    // each arrival to one of them.
    let settled_a = a.metric("pf_arrivals_total{outcome=\"settled\"}").await;
    let settled_b = b.metric("pf_arrivals_total{outcome=\"settled\"}").await;
    assert_eq!(
        settled_a + settled_b,
        n,
        "instance a settled {settled_a}, b {settled_b}"
    );
    for i in 0..n {
        assert_eq!(
            b.download(&t, "self", &format!("f{i}.bin")).await,
            noise(6 << 20, 10 + i)
        );
    }
}

/// Whether the fresh object a settle copies the arrival into (the row's claim) is whole on the
/// S3 server's disk.
fn copied(app: &TestApp, row: &FileRow, len: usize) -> bool {
    let Some(claim) = row.claims.first() else {
        return false;
    };
    let mut stored = Vec::new();
    common::walk_files(
        &common::aws_env()
            .s3_dir
            .join(app.bucket.as_deref().unwrap()),
        &mut stored,
    );
    stored.iter().any(|p| {
        p.to_string_lossy().ends_with(claim.key.as_str())
            && std::fs::metadata(p).is_ok_and(|m| m.len() == len as u64)
    })
}

/// Ends the settle lease on the file's arrival, as time ends the lease of a holder that stopped
/// renewing it (a paused or hung instance), without waiting the minute it lasts.
async fn run_out_lease(index: &dyn FileIndex, owner: &Owner, file: &FileId) {
    loop {
        let mut row = index.get(owner, file).await.unwrap().unwrap();
        let pending = row.value.pending.as_mut().expect("the arrival is pending");
        let lease = pending.lease.as_mut().expect("the arrival is leased");
        lease.until = chrono::Utc::now() - chrono::Duration::seconds(1);
        // The settle writes its claim into the row meanwhile: then again.
        if index.put(&row.value, Some(row.version)).await.is_ok() {
            return;
        }
    }
}

/// #22: "instance a settled 5, b 4". An instance that stalls mid-settle past its lease, and
/// wakes once another instance took the arrival over, must land nothing: the lease's fencing
/// token (its epoch) keeps its commit out, and its settle counts as lost, not settled.
#[tokio::test]
async fn a_settle_whose_lease_was_taken_over_lands_nothing() {
    let (open_a, gate_a) = tokio::sync::watch::channel(false);
    let (open_b, gate_b) = tokio::sync::watch::channel(false);
    let clamd_a = FakeClamd::start(Behaviour::AnswersWhenOpen(gate_a, "stream: OK")).await;
    let clamd_b = FakeClamd::start(Behaviour::AnswersWhenOpen(gate_b, "stream: OK")).await;
    // One settle at a time: while a stalls in this one, its settler takes nothing else.
    let a = TestApp::start_presigned(&[
        "--clamd",
        &clamd_a.address,
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "100ms",
        "--settle-concurrency",
        "1",
    ])
    .await;
    let t = a.token("erin", "study");
    let bytes = noise(1 << 20, 21);
    presigned_put(&a, &t, "late.bin", bytes.clone()).await;
    let index = common::index_of(&a).await;
    let owner = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("erin").unwrap(),
    };
    let file = FileId::parse("late.bin").unwrap();
    let row = || async { index.get(&owner, &file).await.unwrap().unwrap().value };
    // a has streamed the arrival to its scanner and copied it: all it waits for is the verdict.
    wait_for(
        Duration::from_secs(30),
        "a's settle to wait for its verdict",
        || async { clamd_a.streams_read() == 1 && copied(&a, &row().await, bytes.len()) },
    )
    .await;
    let a_epoch = row().await.pending.unwrap().lease.unwrap().epoch;
    // a stalls past its lease; b takes the arrival over and scans it in turn.
    run_out_lease(index.as_ref(), &owner, &file).await;
    let b = a.start_beside_replacing("--clamd", &clamd_b.address).await;
    wait_for(
        Duration::from_secs(30),
        "b to take the arrival over",
        || async { clamd_b.streams_read() == 1 },
    )
    .await;
    let b_lease = row().await.pending.unwrap().lease.unwrap();
    assert!(b_lease.epoch > a_epoch, "{b_lease:?} after epoch {a_epoch}");
    // a wakes with a clean verdict and everything a commit needs, but not the lease.
    open_a.send(true).unwrap();
    let outcome = |o: &str| format!("pf_arrivals_total{{outcome=\"{o}\"}}");
    wait_for(Duration::from_secs(30), "a's settle to end", || async {
        let mut ended = 0;
        for o in ["settled", "deferred", "lost"] {
            ended += a.metric(&outcome(o)).await;
        }
        ended == 1
    })
    .await;
    let (settled_a, lost_a) = (
        a.metric(&outcome("settled")).await,
        a.metric(&outcome("lost")).await,
    );
    assert_eq!(
        (settled_a, lost_a),
        (0, 1),
        "instance a, whose lease b took over, settled {settled_a} and lost {lost_a}"
    );
    assert!(
        a.listed(&t, "self", "late.bin").await.is_none(),
        "a committed the arrival under a lease b had taken over"
    );
    // b's settle, under the live lease, is the one that lands, and the one audited.
    open_b.send(true).unwrap();
    wait_for(
        Duration::from_secs(30),
        "b to settle the arrival",
        || async { b.listed(&t, "self", "late.bin").await.is_some() },
    )
    .await;
    assert_eq!(b.download(&t, "self", "late.bin").await, bytes);
    assert_eq!(b.metric(&outcome("settled")).await, 1);
    let audited = |app: &TestApp| {
        app.audit()
            .into_iter()
            .filter(|l| l["fileId"] == "late.bin" && l["action"] == "upload")
            .count()
    };
    wait_for(Duration::from_secs(10), "b's audit line", || async {
        audited(&b) == 1
    })
    .await;
    assert_eq!(audited(&a), 0, "a audited a settle it did not make");
}

#[tokio::test]
async fn bytes_sent_to_the_url_again_during_the_scan_are_scanned_before_they_count() {
    let relay = Relay::start().await;
    let app = TestApp::start_presigned(&[
        "--clamd",
        &relay.address(),
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "200ms",
    ])
    .await;
    let t = app.token("dana", "study");
    // The scan of the first bytes starts, then waits at the relay with most of them unread.
    relay.hold(true);
    let before = relay.accepted();
    let clean = noise(16 << 20, 4);
    let url = presigned_put(&app, &t, "swap.bin", clean).await;
    let index = common::index_of(&app).await;
    let owner = participant_files::model::Owner {
        app: participant_files::model::AppId::parse("study").unwrap(),
        participant: participant_files::model::UserId::parse("dana").unwrap(),
    };
    let file = participant_files::model::FileId::parse("swap.bin").unwrap();
    wait_for(Duration::from_secs(30), "the scan to start", || async {
        let leased = index
            .get(&owner, &file)
            .await
            .unwrap()
            .is_some_and(|r| r.value.pending.is_some_and(|p| p.lease.is_some()));
        leased && relay.accepted() > before
    })
    .await;
    // The URL is still good: other bytes, infected, replace the object under the scan.
    let mut bad = noise(16 << 20, 5);
    bad.extend(eicar());
    put_to(&app, &url, bad.clone()).await;
    relay.hold(false);
    // The bytes that were scanned are no longer under the URL, and the ones that are were not
    // scanned: no version of the file may be made of either.
    let start = Instant::now();
    let refused = loop {
        if let Some(file) = app.listed(&t, "self", "swap.bin").await {
            let served = app.download(&t, "self", "swap.bin").await;
            panic!(
                "a file was made of bytes that were replaced under the scan ({} bytes served, the infected ones: {}): {file}",
                served.len(),
                served == bad
            );
        }
        if let Some(line) = app
            .audit()
            .into_iter()
            .find(|l| l["status"] == 422 && l["fileId"] == "swap.bin" && l["action"] == "upload")
        {
            break line;
        }
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "the infected bytes were not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused["signature"], "Eicar-Test-Signature.UNOFFICIAL");
    // The first bytes are gone from under the URL, so no version of the file was ever made.
    assert!(app.listed(&t, "self", "swap.bin").await.is_none());
    assert_eq!(
        app.get_file(&t, "self", "swap.bin").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_new_upload_url_settles_the_arrival_whose_slot_it_takes() {
    // The settler would come in an hour: the new POST must not wait for it, nor drop the
    // arrival unseen.
    let app = TestApp::start_presigned(&[
        "--clamd",
        &clamd(),
        "--upload-mode",
        "presigned",
        "--settle-interval",
        "1h",
    ])
    .await;
    let t = app.token("nora", "study");
    let v1 = noise(4000, 5);
    presigned_put(&app, &t, "first.bin", v1.clone()).await;
    let mut infected = noise(3000, 6);
    infected.extend(eicar());
    presigned_put(&app, &t, "bad.bin", infected).await;
    for file in ["first.bin", "bad.bin"] {
        let res = app
            .post_file(
                &t,
                "self",
                file,
                &json!({"mimeType": "application/octet-stream"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    // The clean arrival became the file; the infected one was refused, and both are audited.
    assert_eq!(app.download(&t, "self", "first.bin").await, v1);
    assert!(app.listed(&t, "self", "bad.bin").await.is_none());
    let settled: Vec<(String, u64)> = app
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "upload")
        .map(|l| {
            (
                l["fileId"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        settled.contains(&("first.bin".to_owned(), 201)),
        "{settled:?}"
    );
    assert!(
        settled.contains(&("bad.bin".to_owned(), 422)),
        "{settled:?}"
    );
}
