//! Conformance of the usage counters, on SQLite and DynamoDB (`moto_server`): exact after
//! racing writes, replaces, deletes, erase and expiry; racing upload creations never pass a
//! limit, nor racing commits a file or byte quota; a counter corrupted by hand is repaired by
//! `reconcile`, and a participant without counters is counted once.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{aws_env, open_backends, unique_name};
use participant_files::backends::Backends;
use participant_files::index::{
    Counters, FileIndex, FileQuota, IndexError, LimitReached, OpenLimits, QuotaReached,
};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{
    AppId, FileId, FileRow, Owner, PendingUpload, ResumableUpload, ScanStatus, Staged, StoredFile,
    UploadOutcome, UserId,
};
use tempfile::TempDir;

struct Subject {
    name: &'static str,
    backends: Backends,
    /// The DynamoDB table, to corrupt a counter by hand.
    table: Option<String>,
    data: TempDir,
}

async fn subjects() -> Vec<Subject> {
    let (data, sqlite) = open_backends(&[]).await;
    aws_env();
    let table = unique_name("pf");
    let (dynamo_data, dynamo) = open_backends(&["--index", &format!("dynamodb://{table}")]).await;
    vec![
        Subject {
            name: "sqlite",
            backends: sqlite,
            table: None,
            data,
        },
        Subject {
            name: "dynamodb",
            backends: dynamo,
            table: Some(table),
            data: dynamo_data,
        },
    ]
}

fn owner(app: &str, user: &str) -> Owner {
    Owner {
        app: AppId::parse(app).unwrap(),
        participant: UserId::parse(user).unwrap(),
    }
}

fn file(owner: &Owner, id: &str, size: u64) -> FileRow {
    FileRow {
        owner: owner.clone(),
        file_id: FileId::parse(id).unwrap(),
        current: Some(StoredFile {
            key: ObjectKey::new(owner, &UploadId::generate()),
            mime_type: "text/plain".into(),
            size,
            sha256: None,
            scan_status: ScanStatus::Unscanned,
            created_on: Utc::now(),
            scan: None,
            file_name: None,
        }),
        pending: None,
        claims: Vec::new(),
    }
}

fn pending(owner: &Owner, expires_on: DateTime<Utc>) -> PendingUpload {
    PendingUpload {
        upload_id: UploadId::generate(),
        key: ObjectKey::new(owner, &UploadId::generate()),
        mime_type: "text/plain".into(),
        size: None,
        sha256: None,
        created_on: Utc::now(),
        expires_on,
        issuer: None,
        lease: None,
        file_name: None,
    }
}

fn upload(owner: &Owner, expires_on: DateTime<Utc>) -> ResumableUpload {
    let id = UploadId::generate();
    ResumableUpload {
        owner: owner.clone(),
        id: id.clone(),
        file_id: FileId::parse("up").unwrap(),
        issuer: "alice:participant".into(),
        mime_type: None,
        file_name: None,
        sha256: None,
        length: Some(10),
        offset: 0,
        hash: None,
        created_on: Utc::now(),
        expires_on,
        staged: Staged {
            key: ObjectKey::new(owner, &id),
            multipart: None,
            part_size: 5 << 20,
            parts: Vec::new(),
            tail: 0,
            fence: 0,
        },
        writer: None,
        outcome: None,
    }
}

/// The counters as the rows say, read the slow way.
async fn counted(ix: &dyn FileIndex, o: &Owner) -> Counters {
    let mut c = Counters::default();
    let mut after: Option<FileId> = None;
    loop {
        let rows = ix.list(o, after.as_ref(), 100).await.unwrap();
        for r in &rows {
            if let Some(f) = &r.value.current {
                c.files += 1;
                c.bytes += f.size;
            }
        }
        if rows.len() < 100 {
            break;
        }
        after = rows.last().map(|r| r.value.file_id.clone());
    }
    let uploads = ix.uploads().uploads_of(o, None, 1000).await.unwrap();
    c.uploads = uploads.iter().filter(|u| u.value.outcome.is_none()).count() as u64;
    c
}

async fn assert_exact(s: &Subject, o: &Owner, when: &str) {
    let ix = s.backends.index.as_ref();
    let stored = ix.counters(o).await.unwrap();
    assert_eq!(stored, Some(counted(ix, o).await), "{} {when}", s.name);
    let usage = ix.usage(o, Utc::now()).await.unwrap();
    let c = stored.unwrap();
    assert_eq!(
        (usage.files, usage.bytes),
        (c.files, c.bytes),
        "{} {when}",
        s.name
    );
}

/// Writes `row` over whatever is there, reading again after a lost race, like the service.
async fn put_retrying(ix: &dyn FileIndex, row: &FileRow) {
    loop {
        let at = ix.get(&row.owner, &row.file_id).await.unwrap();
        match ix.put(row, at.map(|r| r.version)).await {
            Ok(_) => return,
            Err(IndexError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_are_exact_after_racing_uploads_replaces_deletes_erase_and_expiry() {
    for s in subjects().await {
        let ix: Arc<dyn FileIndex> = Arc::clone(&s.backends.index);
        let o = owner("app", &unique_name("p"));
        // Racing uploads of 20 files, and 40 racing replaces of 5 of them.
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let (ix, o) = (Arc::clone(&ix), o.clone());
            tasks.push(tokio::spawn(async move {
                put_retrying(ix.as_ref(), &file(&o, &format!("f{i}"), 100 + i)).await;
            }));
        }
        for t in tasks.drain(..) {
            t.await.unwrap();
        }
        assert_exact(&s, &o, "after racing uploads").await;
        for i in 0..40u64 {
            let (ix, o) = (Arc::clone(&ix), o.clone());
            tasks.push(tokio::spawn(async move {
                put_retrying(ix.as_ref(), &file(&o, &format!("f{}", i % 5), 1000 + i)).await;
            }));
        }
        for t in tasks.drain(..) {
            t.await.unwrap();
        }
        assert_exact(&s, &o, "after racing replaces").await;
        // Upload URLs: rows without bytes count no file; an expired one no URL.
        let mut fresh = file(&o, "pending", 0);
        fresh.current = None;
        fresh.pending = Some(pending(&o, Utc::now() + Duration::hours(1)));
        ix.put(&fresh, None).await.unwrap();
        let mut stale = file(&o, "stale", 0);
        stale.current = None;
        stale.pending = Some(pending(&o, Utc::now() - Duration::seconds(1)));
        ix.put(&stale, None).await.unwrap();
        let mut replacing = ix
            .get(&o, &FileId::parse("f7").unwrap())
            .await
            .unwrap()
            .unwrap();
        replacing.value.pending = Some(pending(&o, Utc::now() + Duration::hours(1)));
        ix.put(&replacing.value, Some(replacing.version))
            .await
            .unwrap();
        let usage = ix.usage(&o, Utc::now()).await.unwrap();
        assert_eq!((usage.pending, usage.pending_new), (2, 1), "{}", s.name);
        assert_exact(&s, &o, "with upload URLs").await;
        // Deletes: a racing pair on each of three files (one wins, one conflicts).
        for i in 10..13 {
            let id = FileId::parse(&format!("f{i}")).unwrap();
            let at = ix.get(&o, &id).await.unwrap().unwrap();
            let (a, b) = tokio::join!(
                ix.delete(&o, &id, at.version),
                ix.delete(&o, &id, at.version)
            );
            assert!(a.is_ok() != b.is_ok(), "{}: {a:?} {b:?}", s.name);
        }
        assert_exact(&s, &o, "after racing deletes").await;
        // Erase: every row goes.
        for r in ix.list(&o, None, 1000).await.unwrap() {
            ix.delete(&o, &r.value.file_id, r.version).await.unwrap();
        }
        assert_exact(&s, &o, "after erase").await;
        assert_eq!(
            ix.counters(&o).await.unwrap(),
            Some(Counters::default()),
            "{}",
            s.name
        );
    }
}

/// Writes `row` over whatever is there within `quota`, reading again after a lost race.
async fn put_within_retrying(
    ix: &dyn FileIndex,
    row: &FileRow,
    quota: FileQuota,
) -> Result<u64, QuotaReached> {
    loop {
        let at = ix.get(&row.owner, &row.file_id).await.unwrap();
        match ix.put_within(row, at.map(|r| r.version), quota).await {
            Ok(written) => return written,
            Err(IndexError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Races `rows` in, each within `quota`; the outcomes in order.
async fn race(
    ix: &Arc<dyn FileIndex>,
    rows: Vec<FileRow>,
    quota: FileQuota,
) -> Vec<Result<u64, QuotaReached>> {
    let tasks: Vec<_> = rows
        .into_iter()
        .map(|row| {
            let ix = Arc::clone(ix);
            tokio::spawn(async move { put_within_retrying(ix.as_ref(), &row, quota).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_never_pass_the_file_and_byte_quotas() {
    for s in subjects().await {
        let ix: Arc<dyn FileIndex> = Arc::clone(&s.backends.index);
        // 12 new files racing for a quota of 5 files.
        let o = owner("app", &unique_name("p"));
        let files = FileQuota {
            files: Some(5),
            bytes: None,
        };
        let rows = (0..12).map(|i| file(&o, &format!("f{i}"), 10)).collect();
        let outcomes = race(&ix, rows, files).await;
        let landed = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(landed, 5, "{}: {outcomes:?}", s.name);
        assert!(
            outcomes
                .iter()
                .all(|o| o.is_ok() || *o == Err(QuotaReached::Files)),
            "{}: {outcomes:?}",
            s.name
        );
        assert_exact(&s, &o, "after racing commits at a file quota").await;
        // A replace adds no file: it lands at the quota.
        let first = outcomes.iter().position(Result::is_ok).unwrap();
        let replace = file(&o, &format!("f{first}"), 12);
        let replaced = put_within_retrying(ix.as_ref(), &replace, files).await;
        assert!(replaced.is_ok(), "{}: {replaced:?}", s.name);

        // 10 files of 30 bytes racing for a quota of 100 bytes.
        let o = owner("app", &unique_name("p"));
        let bytes = FileQuota {
            files: None,
            bytes: Some(100),
        };
        let rows: Vec<FileRow> = (0..10).map(|i| file(&o, &format!("f{i}"), 30)).collect();
        let outcomes = race(&ix, rows, bytes).await;
        let landed: Vec<usize> = (0..outcomes.len())
            .filter(|i| outcomes[*i].is_ok())
            .collect();
        assert_eq!(landed.len(), 3, "{}: {outcomes:?}", s.name);
        assert_exact(&s, &o, "after racing commits at a byte quota").await;
        assert_eq!(
            ix.counters(&o).await.unwrap().map(|c| c.bytes),
            Some(90),
            "{}",
            s.name
        );
        // A replace is held to what it adds: 90 - 30 + 40 fits; then 100 - 40 + 41 does not.
        let grown = format!("f{}", landed[0]);
        assert!(
            put_within_retrying(ix.as_ref(), &file(&o, &grown, 40), bytes)
                .await
                .is_ok(),
            "{}",
            s.name
        );
        assert_eq!(
            put_within_retrying(ix.as_ref(), &file(&o, &grown, 41), bytes).await,
            Err(QuotaReached::Bytes),
            "{}",
            s.name
        );
        // A write that shrinks usage lands even past a quota (one lowered since).
        let lowered = FileQuota {
            files: Some(1),
            bytes: Some(10),
        };
        assert!(
            put_within_retrying(ix.as_ref(), &file(&o, &grown, 5), lowered)
                .await
                .is_ok(),
            "{}",
            s.name
        );
        assert_exact(&s, &o, "after replaces at a byte quota").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creations_never_pass_the_open_upload_limits() {
    for s in subjects().await {
        let ix: Arc<dyn FileIndex> = Arc::clone(&s.backends.index);
        let app = unique_name("a");
        let (a, b) = (owner(&app, "anna"), owner(&app, "ben"));
        let limits = OpenLimits {
            per_participant: 10,
            per_app: 14,
        };
        // An expired upload not swept yet holds no slot of its participant, but one of the
        // app until it is swept.
        let expired = upload(&a, Utc::now() - Duration::seconds(1));
        ix.uploads().put_upload(&expired, None).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let ix = Arc::clone(&ix);
            let o = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let u = upload(&o, Utc::now() + Duration::hours(1));
                ix.uploads()
                    .create_upload(&u, limits, Utc::now())
                    .await
                    .unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let created = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(created, 13, "{}: {outcomes:?}", s.name);
        assert!(outcomes.contains(&Err(LimitReached::App)), "{}", s.name);
        assert_exact(&s, &a, "after racing creations").await;
        assert_exact(&s, &b, "after racing creations").await;
        // An upload that ends (completed or terminated) frees its slot.
        let open = ix.uploads().uploads_of(&a, None, 100).await.unwrap();
        let mut done = open
            .iter()
            .find(|u| u.value.outcome.is_none() && u.value.id != expired.id)
            .unwrap()
            .clone();
        done.value.outcome = Some(UploadOutcome::Committed);
        ix.uploads()
            .put_upload(&done.value, Some(done.version))
            .await
            .unwrap();
        let gone = open.iter().find(|u| u.value.id == expired.id).unwrap();
        ix.uploads()
            .delete_upload(&a, &gone.value.id, gone.version)
            .await
            .unwrap();
        assert_exact(&s, &a, "after an end and a sweep").await;
        let again = upload(&a, Utc::now() + Duration::hours(1));
        assert!(
            ix.uploads()
                .create_upload(&again, limits, Utc::now())
                .await
                .unwrap()
                .is_ok(),
            "{}",
            s.name
        );
    }
}

/// Sets the participant's stored file counter to `files` behind the index's back.
async fn corrupt(s: &Subject, o: &Owner, files: i64) {
    match &s.table {
        None => {
            let conn = rusqlite::Connection::open(s.data.path().join("index.sqlite")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            conn.execute(
                "UPDATE usage SET files = ?1 WHERE app = ?2 AND participant = ?3",
                rusqlite::params![files, o.app.as_str(), o.participant.as_str()],
            )
            .unwrap();
        }
        Some(table) => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            aws_sdk_dynamodb::Client::new(&sdk)
                .update_item()
                .table_name(table)
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!(
                        "{}#{}",
                        o.app, o.participant
                    )),
                )
                .key(
                    "fileId",
                    aws_sdk_dynamodb::types::AttributeValue::S("#usage".into()),
                )
                .update_expression("SET usageFiles = :f")
                .expression_attribute_values(
                    ":f",
                    aws_sdk_dynamodb::types::AttributeValue::N(files.to_string()),
                )
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_repairs_a_counter_corrupted_by_hand_and_it_never_underflows() {
    for s in subjects().await {
        let ix = s.backends.index.as_ref();
        let o = owner("app", &unique_name("p"));
        for i in 0..3u64 {
            ix.put(&file(&o, &format!("f{i}"), 10), None).await.unwrap();
        }
        corrupt(&s, &o, 0).await;
        // A delete from a counter of zero leaves zero, not 2^64 - 1.
        let f0 = ix
            .get(&o, &FileId::parse("f0").unwrap())
            .await
            .unwrap()
            .unwrap();
        ix.delete(&o, &f0.value.file_id, f0.version).await.unwrap();
        assert_eq!(
            ix.usage(&o, Utc::now()).await.unwrap().files,
            0,
            "{}",
            s.name
        );
        corrupt(&s, &o, 7).await;
        // A counter left after every row of its participant went: no row leads to it.
        let gone = owner("app", &unique_name("gone"));
        ix.put(&file(&gone, "only", 10), None).await.unwrap();
        let only = ix
            .get(&gone, &FileId::parse("only").unwrap())
            .await
            .unwrap()
            .unwrap();
        ix.delete(&gone, &only.value.file_id, only.version)
            .await
            .unwrap();
        corrupt(&s, &gone, 4).await;
        let report =
            participant_files::reconcile::run(&s.backends, std::time::Duration::from_hours(1))
                .await
                .unwrap();
        for who in [&o, &gone] {
            assert!(
                report
                    .lines
                    .iter()
                    .any(|l| l.starts_with("usage counter repaired")
                        && l.contains(who.participant.as_str())),
                "{}: {report:?}",
                s.name
            );
        }
        // Only those two drifted (the other participants here were recounted exact).
        assert_eq!(report.usage_repaired, 2, "{}: {report:?}", s.name);
        let prom = s.data.path().join("reconcile.prom");
        report.write_metrics(&prom).unwrap();
        let prom = std::fs::read_to_string(prom).unwrap();
        assert!(
            prom.lines().any(|l| l == "pf_reconcile_usage_repaired 2"),
            "{prom}"
        );
        assert_exact(&s, &o, "after reconcile").await;
        assert_exact(&s, &gone, "after reconcile").await;
        assert_eq!(
            ix.counters(&gone).await.unwrap(),
            Some(Counters::default()),
            "{}",
            s.name
        );
        assert_eq!(
            ix.usage(&o, Utc::now()).await.unwrap().files,
            2,
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn a_participant_without_counters_is_counted_once_then_kept() {
    let (data, backends) = open_backends(&[]).await;
    let ix = backends.index.as_ref();
    let o = owner("app", "older");
    for i in 0..3u64 {
        ix.put(&file(&o, &format!("f{i}"), 5), None).await.unwrap();
    }
    // As an index file written before counters has it.
    let conn = rusqlite::Connection::open(data.path().join("index.sqlite")).unwrap();
    conn.execute("DELETE FROM usage", []).unwrap();
    assert_eq!(ix.counters(&o).await.unwrap(), None);
    assert_eq!(ix.usage(&o, Utc::now()).await.unwrap().files, 3);
    ix.put(&file(&o, "f3", 5), None).await.unwrap();
    assert_eq!(
        ix.counters(&o).await.unwrap(),
        Some(Counters {
            files: 4,
            bytes: 20,
            uploads: 0
        })
    );
}
