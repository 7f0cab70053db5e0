//! One conformance suite for `FileIndex`, run on every implementation: SQLite and DynamoDB (on
//! `moto_server`). Writes are conditional on the version read; racing writers cannot both win.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{aws_env, open_backends, unique_name};
use participant_files::index::{FileIndex, IndexError};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{
    AppId, FileId, FileRow, Owner, PendingUpload, ScanStatus, StoredFile, UserId,
};
use tempfile::TempDir;

struct Subject {
    name: &'static str,
    index: Arc<dyn FileIndex>,
    _data: TempDir,
}

async fn subjects() -> Vec<Subject> {
    let (data, sqlite) = open_backends(&[]).await;
    aws_env();
    let (dynamo_data, dynamo) =
        open_backends(&["--index", &format!("dynamodb://{}", unique_name("pf"))]).await;
    vec![
        Subject {
            name: "sqlite",
            index: sqlite.index,
            _data: data,
        },
        Subject {
            name: "dynamodb",
            index: dynamo.index,
            _data: dynamo_data,
        },
    ]
}

fn owner(app: &str, user: &str) -> Owner {
    Owner {
        app: AppId::parse(app).unwrap(),
        participant: UserId::parse(user).unwrap(),
    }
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

fn stored(owner: &Owner, size: u64) -> StoredFile {
    StoredFile {
        key: ObjectKey::new(owner, &UploadId::generate()),
        mime_type: "image/jpeg".into(),
        size,
        sha256: Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into()),
        scan_status: ScanStatus::Unscanned,
        created_on: ms(1_795_000_000_123),
    }
}

fn row(owner: &Owner, file: &str, size: u64) -> FileRow {
    FileRow {
        owner: owner.clone(),
        file_id: FileId::parse(file).unwrap(),
        current: Some(stored(owner, size)),
        pending: None,
    }
}

#[tokio::test]
async fn conditional_put_get_and_delete() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let o = owner("app", "u1");
        let f = FileId::parse("a.jpg").unwrap();
        assert_eq!(ix.get(&o, &f).await.unwrap(), None, "{}", s.name);
        let r1 = row(&o, "a.jpg", 1);
        assert_eq!(ix.put(&r1, None).await.unwrap(), 1, "{}", s.name);
        let got = ix.get(&o, &f).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (r1.clone(), 1), "{}", s.name);
        // Creating again, or writing over a version that is not the stored one, is a conflict.
        assert!(
            matches!(ix.put(&r1, None).await, Err(IndexError::Conflict)),
            "{}",
            s.name
        );
        assert!(
            matches!(ix.put(&r1, Some(7)).await, Err(IndexError::Conflict)),
            "{}",
            s.name
        );
        let mut r2 = row(&o, "a.jpg", 2);
        r2.pending = Some(PendingUpload {
            upload_id: UploadId::generate(),
            key: ObjectKey::new(&o, &UploadId::generate()),
            mime_type: "application/pdf".into(),
            size: Some(10),
            sha256: None,
            created_on: ms(1_795_000_000_001),
            expires_on: ms(1_795_003_600_000),
        });
        // The pending upload's ID is the one its key carries.
        let key = r2.pending.as_ref().unwrap().key.clone();
        r2.pending.as_mut().unwrap().upload_id = key.upload_id();
        assert_eq!(ix.put(&r2, Some(1)).await.unwrap(), 2, "{}", s.name);
        assert_eq!(
            ix.get(&o, &f).await.unwrap().unwrap().value,
            r2,
            "{}",
            s.name
        );
        assert!(
            matches!(ix.delete(&o, &f, 1).await, Err(IndexError::Conflict)),
            "{}",
            s.name
        );
        ix.delete(&o, &f, 2).await.unwrap();
        assert_eq!(ix.get(&o, &f).await.unwrap(), None, "{}", s.name);
        assert!(
            matches!(ix.delete(&o, &f, 2).await, Err(IndexError::Conflict)),
            "{}",
            s.name
        );
        ix.check().await.unwrap();
    }
}

#[tokio::test]
async fn a_writer_that_read_before_another_wrote_loses() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let o = owner("app", "u1");
        let f = FileId::parse("race").unwrap();
        ix.put(&row(&o, "race", 0), None).await.unwrap();
        // Both read version 1; the second switches first; the first, still holding version 1,
        // must fail and read again.
        let first = ix.get(&o, &f).await.unwrap().unwrap();
        let second = ix.get(&o, &f).await.unwrap().unwrap();
        assert_eq!(
            ix.put(&row(&o, "race", 2), Some(second.version))
                .await
                .unwrap(),
            2
        );
        assert!(
            matches!(
                ix.put(&row(&o, "race", 1), Some(first.version)).await,
                Err(IndexError::Conflict)
            ),
            "{}",
            s.name
        );
        assert!(
            matches!(
                ix.delete(&o, &f, first.version).await,
                Err(IndexError::Conflict)
            ),
            "{}",
            s.name
        );
        assert_eq!(
            ix.get(&o, &f)
                .await
                .unwrap()
                .unwrap()
                .value
                .current
                .unwrap()
                .size,
            2,
            "{}",
            s.name
        );
        let again = ix.get(&o, &f).await.unwrap().unwrap();
        assert_eq!(
            ix.put(&row(&o, "race", 1), Some(again.version))
                .await
                .unwrap(),
            3,
            "{}",
            s.name
        );
        // Two racing creations: exactly one wins.
        let fresh = row(&o, "new", 5);
        let (a, b) = tokio::join!(ix.put(&fresh, None), ix.put(&fresh, None));
        assert_eq!(
            [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "{}: {a:?} {b:?}",
            s.name
        );
    }
}

#[tokio::test]
async fn list_pages_in_file_id_order_within_one_owner() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let o = owner("app", "u1");
        let ids = ["a", "B", "b.1", "b-2", "c_3", "z", "0"];
        for id in ids {
            ix.put(&row(&o, id, 1), None).await.unwrap();
        }
        // Rows of the same participant ID in another app, and of another participant, stay out.
        ix.put(&row(&owner("other", "u1"), "m", 1), None)
            .await
            .unwrap();
        ix.put(&row(&owner("app", "u2"), "m", 1), None)
            .await
            .unwrap();
        ix.put(&row(&owner("app", "u1x"), "m", 1), None)
            .await
            .unwrap();
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable(); // byte order: "0" < "B" < "a" < "b-2" < "b.1" < "c_3" < "z"
        let all: Vec<String> = ix
            .list(&o, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.value.file_id.to_string())
            .collect();
        assert_eq!(all, sorted, "{}", s.name);
        let page: Vec<String> = ix
            .list(&o, Some(&FileId::parse("B").unwrap()), 3)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.value.file_id.to_string())
            .collect();
        assert_eq!(page, ["a", "b-2", "b.1"], "{}", s.name);
        // The offset need not exist.
        let page: Vec<String> = ix
            .list(&o, Some(&FileId::parse("b.0").unwrap()), 2)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.value.file_id.to_string())
            .collect();
        assert_eq!(page, ["b.1", "c_3"], "{}", s.name);
        assert!(
            ix.list(&o, Some(&FileId::parse("zz").unwrap()), 5)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            s.name
        );

        // A scan sees every row of every owner, page by page.
        let mut seen = Vec::new();
        let mut after: Option<(Owner, FileId)> = None;
        loop {
            let rows = ix
                .scan(after.as_ref().map(|(o, f)| (o, f)), 3)
                .await
                .unwrap();
            let n = rows.len();
            if let Some(last) = rows.last() {
                after = Some((last.value.owner.clone(), last.value.file_id.clone()));
            }
            seen.extend(rows.into_iter().map(|r| {
                format!(
                    "{}/{}/{}",
                    r.value.owner.app, r.value.owner.participant, r.value.file_id
                )
            }));
            if n < 3 {
                break;
            }
        }
        seen.sort();
        let mut expected: Vec<String> = ids.iter().map(|id| format!("app/u1/{id}")).collect();
        expected.extend([
            "app/u1x/m".to_owned(),
            "app/u2/m".to_owned(),
            "other/u1/m".to_owned(),
        ]);
        expected.sort();
        assert_eq!(seen, expected, "{}", s.name);
    }
}
