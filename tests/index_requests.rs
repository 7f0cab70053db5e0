//! What each write of the DynamoDB index (on `moto_server`) sends: a write that changes no
//! usage counter is one conditional write, as before the counters; one that does is at most a
//! refused write (which returns the old row) and one transaction, and the counters stay exact.

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use chrono::{Duration, Utc};
use common::{aws_env, open_backends, unique_name};
use participant_files::index::{Counters, DynamoFileIndex, FileIndex, IndexError};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{
    AppId, Claim, FileId, FileRow, Owner, ResumableUpload, ScanStatus, Staged, StoredFile,
    UploadOutcome, UserId,
};

/// Records the DynamoDB operation of every request sent (its `X-Amz-Target`).
#[derive(Debug, Clone, Default)]
struct Sent(Arc<Mutex<Vec<String>>>);

impl Sent {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Sent {
    fn name(&self) -> &'static str {
        "Sent"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default();
        let op = target.rsplit('.').next().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push(op);
        Ok(())
    }
}

fn stored(owner: &Owner, size: u64) -> StoredFile {
    StoredFile {
        key: ObjectKey::new(owner, &UploadId::generate()),
        mime_type: "text/plain".into(),
        size,
        sha256: None,
        scan_status: ScanStatus::Unscanned,
        created_on: Utc::now(),
        scan: None,
        file_name: None,
    }
}

fn claim(owner: &Owner) -> Claim {
    Claim {
        key: ObjectKey::new(owner, &UploadId::generate()),
        since: Utc::now() - Duration::seconds(1),
    }
}

fn upload(owner: &Owner) -> ResumableUpload {
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
        expires_on: Utc::now() + Duration::hours(1),
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

/// An index on a table of its own whose requests `Sent` records, and a participant.
async fn recorded() -> (tempfile::TempDir, DynamoFileIndex, Sent, Owner) {
    aws_env();
    let table = unique_name("pf");
    let (data, _backends) = open_backends(&["--index", &format!("dynamodb://{table}")]).await;
    let sent = Sent::default();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(sent.clone())
        .build();
    let ix = DynamoFileIndex::new(aws_sdk_dynamodb::Client::from_conf(conf), table);
    let o = Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse("alice").unwrap(),
    };
    (data, ix, sent, o)
}

#[tokio::test]
async fn an_upload_row_goes_in_one_delete_and_an_open_one_with_its_counter() {
    let (_data, ix, sent, o) = recorded().await;
    let up_ix = ix.uploads();
    let mut ended = upload(&o);
    let v = up_ix.put_upload(&ended, None).await.unwrap();
    ended.outcome = Some(UploadOutcome::Committed);
    let v = up_ix.put_upload(&ended, Some(v)).await.unwrap();
    let open = upload(&o);
    let w = up_ix.put_upload(&open, None).await.unwrap();
    assert_eq!(ix.counters(&o).await.unwrap().map(|c| c.uploads), Some(1));
    sent.take();
    assert!(matches!(
        up_ix.delete_upload(&o, &ended.id, v - 1).await,
        Err(IndexError::Conflict)
    ));
    assert_eq!(sent.take(), ["DeleteItem"], "a delete that lost the race");
    up_ix.delete_upload(&o, &ended.id, v).await.unwrap();
    assert_eq!(sent.take(), ["DeleteItem"], "an ended upload's row goes");
    up_ix.delete_upload(&o, &open.id, w).await.unwrap();
    assert_eq!(
        sent.take(),
        ["DeleteItem", "TransactWriteItems"],
        "an open upload's row goes with its counter"
    );
    assert_eq!(ix.counters(&o).await.unwrap().map(|c| c.uploads), Some(0));
    assert!(up_ix.get_upload(&o, &ended.id).await.unwrap().is_none());
    assert!(up_ix.get_upload(&o, &open.id).await.unwrap().is_none());
}

#[tokio::test]
async fn upload_writes_are_one_write_each() {
    let (_data, ix, sent, o) = recorded().await;
    let mut up = upload(&o);
    let up_ix = ix.uploads();
    let v = up_ix.put_upload(&up, None).await.unwrap();
    sent.take();
    up.offset = 5;
    let v = up_ix.put_upload(&up, Some(v)).await.unwrap();
    assert_eq!(sent.take(), ["PutItem"], "a PATCH's write");
    assert_eq!(ix.counters(&o).await.unwrap().map(|c| c.uploads), Some(1));
    sent.take();
    up.outcome = Some(UploadOutcome::Committed);
    let v = up_ix.put_upload(&up, Some(v)).await.unwrap();
    assert_eq!(
        sent.take(),
        ["TransactWriteItems"],
        "the end of an open upload"
    );
    assert_eq!(ix.counters(&o).await.unwrap().map(|c| c.uploads), Some(0));
    sent.take();
    assert!(up_ix.put_upload(&up, Some(v - 1)).await.is_err());
    up_ix.put_upload(&up, Some(v)).await.unwrap();
    assert_eq!(ix.counters(&o).await.unwrap().map(|c| c.uploads), Some(0));
}

#[tokio::test]
async fn writes_that_change_no_counter_are_one_conditional_write() {
    let (_data, ix, sent, o) = recorded().await;
    // A committed file elsewhere, so the participant has counters.
    let mut other = FileRow {
        owner: o.clone(),
        file_id: FileId::parse("other").unwrap(),
        current: Some(stored(&o, 7)),
        pending: None,
        claims: Vec::new(),
    };
    ix.put(&other, None).await.unwrap();
    other.current = Some(stored(&o, 9));
    ix.put(&other, Some(1)).await.unwrap();
    sent.take();

    // An upload claims a new file, a second claims it too, the first commits, the second
    // commits over it with as many bytes, the file's row goes: the service's writes of a PUT.
    let mut row = FileRow {
        owner: o.clone(),
        file_id: FileId::parse("race").unwrap(),
        current: None,
        pending: None,
        claims: vec![claim(&o)],
    };
    let v = ix.put(&row, None).await.unwrap();
    assert_eq!(sent.take(), ["PutItem"], "a first claim");
    row.claims.push(claim(&o));
    let v = ix.put(&row, Some(v)).await.unwrap();
    assert_eq!(sent.take(), ["PutItem"], "a second claim");
    assert!(ix.put(&row, Some(v - 1)).await.is_err());
    assert_eq!(sent.take(), ["PutItem"], "a write that lost the race");
    row.claims.remove(0);
    row.current = Some(stored(&o, 100));
    let v = ix.put(&row, Some(v)).await.unwrap();
    let commit = sent.take();
    assert!(
        commit.len() <= 2 && commit.last().map(String::as_str) == Some("TransactWriteItems"),
        "a commit: {commit:?}"
    );
    row.claims.clear();
    row.current = Some(stored(&o, 100));
    let v = ix.put(&row, Some(v)).await.unwrap();
    assert_eq!(sent.take(), ["PutItem"], "a replacement with as many bytes");
    assert_eq!(
        ix.counters(&o).await.unwrap(),
        Some(Counters {
            files: 2,
            bytes: 109,
            uploads: 0
        })
    );
    sent.take();
    row.current = None;
    row.claims.push(claim(&o));
    let v = ix.put(&row, Some(v)).await.unwrap();
    assert_eq!(sent.take(), ["PutItem", "TransactWriteItems"], "an erase");
    ix.delete(&o, &row.file_id, v).await.unwrap();
    assert_eq!(sent.take(), ["DeleteItem"], "a row that holds no file goes");
    assert_eq!(
        ix.counters(&o).await.unwrap(),
        Some(Counters {
            files: 1,
            bytes: 9,
            uploads: 0
        })
    );
}
