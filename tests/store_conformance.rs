//! One conformance suite for `BlobStore`, run on every implementation: the local folder and
//! S3 (on s3s-fs). Plus what only S3 does: multipart uploads, aborts, encryption headers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{aws_env, noise, open_backends, s3_multipart_leftovers, unique_name};
use futures::TryStreamExt;
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{AppId, Owner, Staged, UserId};
use participant_files::store::{BlobStore, StoreError};
use tempfile::TempDir;

struct Subject {
    name: &'static str,
    store: Arc<dyn BlobStore>,
    bucket: Option<String>,
    data: TempDir,
}

async fn subjects() -> Vec<Subject> {
    let (data, local) = open_backends(&[]).await;
    aws_env();
    let bucket = unique_name("pf");
    let (s3_data, s3) = open_backends(&[
        "--store",
        &format!("s3://{bucket}/conformance"),
        "--s3-force-path-style",
        "true",
        "--s3-part-size",
        "5MiB",
        "--s3-single-put-max",
        "64MiB",
    ])
    .await;
    vec![
        Subject {
            name: "local",
            store: local.store,
            bucket: None,
            data,
        },
        Subject {
            name: "s3",
            store: s3.store,
            bucket: Some(bucket),
            data: s3_data,
        },
    ]
}

fn key() -> ObjectKey {
    let owner = Owner {
        app: AppId::parse("app").unwrap(),
        participant: UserId::parse("u1").unwrap(),
    };
    ObjectKey::new(&owner, &UploadId::generate())
}

/// Writes `bytes` in chunks of `chunk`, telling the store the length ahead (as a request with a
/// Content-Length does).
async fn write(store: &dyn BlobStore, key: &ObjectKey, bytes: &[u8], chunk: usize) {
    write_as(store, key, bytes, chunk, Some(bytes.len() as u64)).await;
}

/// Writes `bytes` in chunks of `chunk`, with the length told ahead or not (a chunked request).
async fn write_as(
    store: &dyn BlobStore,
    key: &ObjectKey,
    bytes: &[u8],
    chunk: usize,
    length: Option<u64>,
) {
    let mut w = store.create(key, length).await.unwrap();
    for c in bytes.chunks(chunk.max(1)) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    w.commit().await.unwrap();
}

async fn read_all(
    store: &dyn BlobStore,
    key: &ObjectKey,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let read = store.read(key, range).await.unwrap();
    read.body
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn write_read_list_delete() {
    for s in subjects().await {
        let store = s.store.as_ref();
        let k = key();
        let bytes = noise(100_000, 1);
        write(store, &k, &bytes, 7_000).await;
        assert_eq!(store.size(&k).await.unwrap(), Some(100_000), "{}", s.name);
        assert_eq!(read_all(store, &k, None).await, bytes, "{}", s.name);
        assert_eq!(
            read_all(store, &k, Some(10..20)).await,
            bytes[10..20],
            "{}",
            s.name
        );
        assert_eq!(
            read_all(store, &k, Some(99_990..100_000)).await,
            bytes[99_990..],
            "{}",
            s.name
        );
        let read = store.read(&k, Some(5..6)).await.unwrap();
        assert_eq!(read.object_size, 100_000, "{}", s.name);
        let listed = store.list().await.unwrap();
        assert_eq!(
            listed.iter().map(|o| &o.key).collect::<Vec<_>>(),
            vec![&k],
            "{}",
            s.name
        );
        store.delete(&k).await.unwrap();
        assert_eq!(store.size(&k).await.unwrap(), None, "{}", s.name);
        assert!(
            matches!(store.read(&k, None).await, Err(StoreError::NotFound)),
            "{}",
            s.name
        );
        // Deleting what is not there is not an error.
        store.delete(&k).await.unwrap();
        assert!(store.list().await.unwrap().is_empty(), "{}", s.name);
        store.check().await.unwrap();
    }
}

#[tokio::test]
async fn empty_and_multi_part_objects() {
    for s in subjects().await {
        let store = s.store.as_ref();
        let empty = key();
        write(store, &empty, b"", 1).await;
        assert_eq!(store.size(&empty).await.unwrap(), Some(0), "{}", s.name);
        assert!(read_all(store, &empty, None).await.is_empty(), "{}", s.name);
        // 12 MiB in 64 KiB chunks. On S3 with the length unknown: three parts of 5, 5 and
        // 2 MiB; with it known: one streaming PutObject.
        let bytes = noise(12 * 1024 * 1024, 2);
        for length in [None, Some(bytes.len() as u64)] {
            let big = key();
            write_as(store, &big, &bytes, 64 * 1024, length).await;
            assert_eq!(
                read_all(store, &big, None).await,
                bytes,
                "{} {length:?}",
                s.name
            );
            let mid = 5 * 1024 * 1024 - 10..5 * 1024 * 1024 + 10;
            assert_eq!(
                read_all(store, &big, Some(mid.clone())).await,
                bytes[usize::try_from(mid.start).unwrap()..usize::try_from(mid.end).unwrap()],
                "{} {length:?}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn nothing_is_visible_before_commit_and_nothing_is_kept_without_it() {
    for s in subjects().await {
        let store = s.store.as_ref();
        for (len, length) in [
            (1_000, None),
            (6 * 1024 * 1024, None),
            (1_000, Some(1_000)),
            (6 * 1024 * 1024, Some(6 * 1024 * 1024)),
        ] {
            let k = key();
            let mut w = store.create(&k, length).await.unwrap();
            // Every byte written, in several chunks: still nothing to see before commit.
            let bytes = noise(len, 3);
            for c in bytes.chunks(256 * 1024) {
                w.write(Bytes::copy_from_slice(c)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(store.size(&k).await.unwrap(), None, "{} {len}", s.name);
            drop(w);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(store.size(&k).await.unwrap(), None, "{} {len}", s.name);
        }
        assert!(store.list().await.unwrap().is_empty(), "{}", s.name);
        if let Some(bucket) = &s.bucket {
            // The dropped multipart upload is aborted in the background.
            let dir = aws_env().s3_dir;
            let mut left = s3_multipart_leftovers(&dir, bucket);
            for _ in 0..100 {
                if left.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                left = s3_multipart_leftovers(&dir, bucket);
            }
            assert!(left.is_empty(), "multipart uploads left: {left:?}");
        }
    }
}

/// Records the encryption headers of every request the S3 client sends.
#[derive(Debug, Default, Clone)]
struct SeenHeaders(Arc<Mutex<Vec<Seen>>>);

/// A request's method and query, and its SSE and SSE-KMS key headers.
type Seen = (String, Option<String>, Option<String>);

impl aws_sdk_s3::config::Intercept for SeenHeaders {
    fn name(&self) -> &'static str {
        "SeenHeaders"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = context.request();
        let header = |name: &str| req.headers().get(name).map(str::to_owned);
        let query = req.uri().split('?').nth(1).unwrap_or("").to_owned();
        self.0.lock().unwrap().push((
            format!("{} {query}", req.method()),
            header("x-amz-server-side-encryption"),
            header("x-amz-server-side-encryption-aws-kms-key-id"),
        ));
        Ok(())
    }
}

async fn recording_store(
    encryption: participant_files::store::Encryption,
) -> (participant_files::store::S3BlobStore, SeenHeaders) {
    aws_env();
    let bucket = unique_name("pf");
    // Create the bucket through the service's own setup.
    let _ = open_backends(&[
        "--store",
        &format!("s3://{bucket}"),
        "--s3-force-path-style",
        "true",
    ])
    .await;
    let seen = SeenHeaders::default();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .interceptor(seen.clone())
        .build();
    let store = participant_files::store::S3BlobStore::new(
        aws_sdk_s3::Client::from_conf(conf),
        participant_files::store::S3Settings {
            bucket,
            prefix: String::new(),
            part_size: 5 * 1024 * 1024,
            parts_in_flight: 2,
            single_put_max: 64 * 1024 * 1024,
            encryption,
        },
        participant_files::budget::MemoryBudget::new(
            64 * 1024 * 1024,
            std::time::Duration::from_secs(30),
        ),
        tokio_util::task::TaskTracker::new(),
    );
    (store, seen)
}

#[tokio::test]
async fn every_object_written_asks_for_encryption_at_rest() {
    use participant_files::store::Encryption;
    let (store, seen) = recording_store(Encryption::S3Managed).await;
    write(&store, &key(), &noise(1000, 4), 1000).await;
    write_as(
        &store,
        &key(),
        &noise(6 * 1024 * 1024, 5),
        1024 * 1024,
        None,
    )
    .await;
    write(&store, &key(), &noise(6 * 1024 * 1024, 6), 1024 * 1024).await;
    let log = seen.0.lock().unwrap().clone();
    let writes: Vec<_> = log
        .iter()
        .filter(|(m, _, _)| {
            m.starts_with("PUT") && !m.contains("partNumber")
                || m.starts_with("POST") && m.contains("uploads")
        })
        .collect();
    assert_eq!(
        writes.len(),
        3,
        "a buffered PutObject, a CreateMultipartUpload, a streaming PutObject: {log:?}"
    );
    for (what, sse, _) in writes {
        assert_eq!(sse.as_deref(), Some("AES256"), "{what}");
    }

    let (store, seen) = recording_store(Encryption::Kms(Some("alias/pf-test".into()))).await;
    let k = key();
    let mut w = store.create(&k, None).await.unwrap();
    w.write(Bytes::from(noise(10, 6))).await.unwrap();
    // Whatever the S3 test server does with KMS, the request must have asked for it.
    let _ = w.commit().await;
    let log = seen.0.lock().unwrap().clone();
    let put = log
        .iter()
        .find(|(m, _, _)| m.starts_with("PUT"))
        .expect("a PutObject was sent");
    assert_eq!(put.1.as_deref(), Some("aws:kms"));
    assert_eq!(put.2.as_deref(), Some("alias/pf-test"));
}

/// Every file under `dir` whose name holds `needle`.
fn files_named(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_named(&path, needle));
        } else if entry.file_name().to_string_lossy().contains(needle) {
            out.push(path);
        }
    }
    out
}

async fn append(store: &dyn BlobStore, staged: &Staged, bytes: &[u8]) -> Staged {
    append_as(store, staged, staged.fence + 1, bytes).await
}

/// Appends as the writer whose lease has `fence`.
async fn append_as(store: &dyn BlobStore, staged: &Staged, fence: u64, bytes: &[u8]) -> Staged {
    let mut w = store.stage(staged, fence).await.unwrap();
    for c in bytes.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    w.sync().await.unwrap()
}

/// Nothing of the upload `id` is left in the store: no staged file, multipart upload or tail.
fn assert_no_staged_leftovers(s: &Subject, id: &str) {
    match &s.bucket {
        None => assert!(
            files_named(&s.data.path().join("resumable"), id).is_empty(),
            "local: staged file left"
        ),
        Some(bucket) => {
            let dir = aws_env().s3_dir;
            assert!(
                s3_multipart_leftovers(&dir, bucket).is_empty(),
                "s3: multipart upload left"
            );
            let left: Vec<_> = files_named(&dir.join(bucket), id)
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(".tail-"))
                .collect();
            assert!(left.is_empty(), "s3: tails left: {left:?}");
        }
    }
}

#[tokio::test]
async fn staged_bytes_survive_cut_requests_and_become_the_object_in_place() {
    for s in subjects().await {
        let store = s.store.as_ref();
        let k = key();
        let id = k.upload_id().as_str().to_owned();
        let staged = store.begin_resumable(&k, 64 << 20).await.unwrap();
        let whole = noise(14 << 20, 7);

        // 3 MiB, durable: less than a part, so on S3 a tail.
        let first = append(store, &staged, &whole[..3 << 20]).await;
        // A request cut off after 6 MiB, never synced (on S3 it uploaded a part that the
        // index never recorded): the next append starts from the recorded bytes again.
        let mut cut = store.stage(&first, first.fence + 1).await.unwrap();
        cut.write(Bytes::from(noise(6 << 20, 8))).await.unwrap();
        drop(cut);
        let second = append(store, &first, &whole[3 << 20..13 << 20]).await;
        let third = append(store, &second, &whole[13 << 20..]).await;
        assert_eq!(
            store.size(&k).await.unwrap(),
            None,
            "{}: visible before the finish",
            s.name
        );

        store.finish_staged(&third).await.unwrap();
        // A finish whose answer was lost, sent again: nothing changes.
        store.finish_staged(&third).await.unwrap();
        assert!(
            read_all(store, &k, None).await == whole,
            "{}: the object differs",
            s.name
        );
        assert_no_staged_leftovers(&s, &id);

        // Dropping what was staged leaves the finished object: it is its claim's now.
        store.drop_staged(&third).await.unwrap();
        assert_eq!(
            store.size(&k).await.unwrap(),
            Some(whole.len() as u64),
            "{}",
            s.name
        );
        store.delete(&k).await.unwrap();
    }
}

#[tokio::test]
async fn a_writer_whose_lease_was_taken_over_cannot_change_what_is_finished() {
    // Stores shared by instances only: on the local store one process's requests take turns.
    for s in subjects().await.into_iter().filter(|s| s.bucket.is_some()) {
        let store = s.store.as_ref();
        let k = key();
        let staged = store.begin_resumable(&k, 64 << 20).await.unwrap();
        let first = append_as(store, &staged, 1, &noise(1 << 20, 41)).await;
        // A writer with lease 2 opens the upload, then stalls (a paused instance)...
        let mut zombie = store.stage(&first, 2).await.unwrap();
        zombie.write(Bytes::from(noise(1 << 20, 42))).await.unwrap();
        // ...while lease 3 takes it over and makes the rest durable, as the index records.
        let rest = noise(1 << 20, 43);
        let recorded = append_as(store, &first, 3, &rest).await;
        // The stalled writer wakes and makes its bytes durable at the same offset.
        let stale = zombie.sync().await.unwrap();
        assert_eq!(stale.tail, recorded.tail);
        store.finish_staged(&recorded).await.unwrap();
        let mut whole = noise(1 << 20, 41);
        whole.extend_from_slice(&rest);
        assert!(
            read_all(store, &k, None).await == whole,
            "{}: the finished object holds the stalled writer's bytes",
            s.name
        );
        store.delete(&k).await.unwrap();
        assert_no_staged_leftovers(&s, k.upload_id().as_str());
    }
}

#[tokio::test]
async fn unfinished_staged_bytes_leave_nothing_once_dropped() {
    for s in subjects().await {
        let store = s.store.as_ref();
        let k = key();
        let id = k.upload_id().as_str().to_owned();
        let staged = store.begin_resumable(&k, 64 << 20).await.unwrap();
        // A part and a tail on S3.
        let staged = append(store, &staged, &noise(9 << 20, 3)).await;
        store.drop_staged(&staged).await.unwrap();
        // What was dropped drops again without complaint.
        store.drop_staged(&staged.dropped()).await.unwrap();
        assert_eq!(store.size(&k).await.unwrap(), None, "{}", s.name);
        assert_no_staged_leftovers(&s, &id);
    }
}

#[tokio::test]
async fn an_empty_staged_upload_finishes_as_an_empty_object() {
    for s in subjects().await {
        let store = s.store.as_ref();
        let k = key();
        let staged = store.begin_resumable(&k, 0).await.unwrap();
        store.finish_staged(&staged).await.unwrap();
        assert_eq!(store.size(&k).await.unwrap(), Some(0), "{}", s.name);
        store.drop_staged(&staged).await.unwrap();
        store.delete(&k).await.unwrap();
    }
}
