//! One conformance suite for `FileIndex`, run on every implementation: SQLite and DynamoDB (on
//! `moto_server`). Writes are conditional on the version read; racing writers cannot both win.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{aws_env, open_backends, unique_name};
use participant_files::auth::Role;
use participant_files::index::{FileIndex, IndexError};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{
    AppId, Claim, FileId, FileRow, Issuer, Owner, PendingUpload, ScanStatus, StoredFile, UserId,
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
        scan: Some(participant_files::model::ScanEvidence {
            scanned_on: ms(1_795_000_000_100),
            engine: "ClamAV 1.4.6/27480/Tue Dec  1 09:00:00 2026".into(),
        }),
    }
}

fn row(owner: &Owner, file: &str, size: u64) -> FileRow {
    FileRow {
        owner: owner.clone(),
        file_id: FileId::parse(file).unwrap(),
        current: Some(stored(owner, size)),
        pending: None,
        claims: Vec::new(),
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
            issuer: Some(Issuer {
                actor: UserId::parse("worker-1").unwrap(),
                role: Role::Worker,
            }),
        });
        r2.claims = (0..2)
            .map(|i| Claim {
                key: ObjectKey::new(&o, &UploadId::generate()),
                since: ms(1_795_000_000_100 + i),
            })
            .collect();
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

#[tokio::test]
async fn usage_counts_files_bytes_and_open_upload_urls() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let o = owner("app", "quota");
        ix.put(&row(&o, "a", 10), None).await.unwrap();
        ix.put(&row(&o, "b", 32), None).await.unwrap();
        let pending = |expires_on| PendingUpload {
            upload_id: UploadId::generate(),
            key: ObjectKey::new(&o, &UploadId::generate()),
            mime_type: "text/plain".into(),
            size: None,
            sha256: None,
            created_on: ms(1_795_000_000_000),
            expires_on,
            issuer: None,
        };
        let now = ms(1_795_000_500_000);
        // A replacement of "b" with a live URL, a new file with a live URL, and an expired one.
        let mut b = ix
            .get(&o, &FileId::parse("b").unwrap())
            .await
            .unwrap()
            .unwrap();
        b.value.pending = Some(pending(ms(1_795_003_600_000)));
        ix.put(&b.value, Some(b.version)).await.unwrap();
        let mut c = row(&o, "c", 0);
        c.current = None;
        c.pending = Some(pending(ms(1_795_003_600_000)));
        ix.put(&c, None).await.unwrap();
        let mut d = row(&o, "d", 0);
        d.current = None;
        d.pending = Some(pending(ms(1_795_000_000_001)));
        ix.put(&d, None).await.unwrap();
        ix.put(&row(&owner("app", "other"), "a", 1000), None)
            .await
            .unwrap();
        assert_eq!(
            ix.usage(&o, now).await.unwrap(),
            participant_files::index::Usage {
                files: 2,
                bytes: 42,
                pending: 2,
                pending_new: 1,
            },
            "{}",
            s.name
        );
    }
}

/// Implements `FileIndex` for a test wrapper: reads go to its `inner` index, and the writes
/// (how the wrapper misbehaves) are given.
macro_rules! index_wrapper {
    ($name:ty, $($writes:tt)*) => {
        #[async_trait::async_trait]
        impl FileIndex for $name {
            fn name(&self) -> &'static str {
                self.inner.name()
            }
            async fn get(
                &self,
                owner: &Owner,
                file: &FileId,
            ) -> Result<Option<participant_files::model::Versioned<FileRow>>, IndexError> {
                self.inner.get(owner, file).await
            }
            async fn list(
                &self,
                owner: &Owner,
                after: Option<&FileId>,
                limit: usize,
            ) -> Result<Vec<participant_files::model::Versioned<FileRow>>, IndexError> {
                self.inner.list(owner, after, limit).await
            }
            async fn scan(
                &self,
                after: Option<(&Owner, &FileId)>,
                limit: usize,
            ) -> Result<Vec<participant_files::model::Versioned<FileRow>>, IndexError> {
                self.inner.scan(after, limit).await
            }
            async fn check(&self) -> Result<(), IndexError> {
                self.inner.check().await
            }
            $($writes)*
        }
    };
}

/// An index whose next writes land but whose answers are lost: the caller is told of a
/// conflict (as the AWS SDK's retry of an applied conditional write is) or of an error after
/// which the write may or may not have happened.
struct LostAnswers {
    inner: Arc<dyn FileIndex>,
    lose: std::sync::atomic::AtomicUsize,
    as_conflict: bool,
}

index_wrapper! {
    LostAnswers,
    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError> {
        let version = self.inner.put(row, expected).await?;
        self.lost(version)
    }
    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        self.inner.delete(owner, file, expected).await?;
        self.lost(())
    }
}

impl LostAnswers {
    fn lost<T>(&self, ok: T) -> Result<T, IndexError> {
        use std::sync::atomic::Ordering;
        if self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Ok(ok);
        }
        if self.as_conflict {
            return Err(IndexError::Conflict);
        }
        Err(IndexError::Backend {
            backend: "test",
            message: "the answer was lost".into(),
            definite: false,
            source: None,
        })
    }
}

fn file_service(
    index: Arc<dyn FileIndex>,
    store: Arc<dyn participant_files::store::BlobStore>,
    data: &TempDir,
) -> participant_files::files::FileService {
    use participant_files::config::Mode;
    participant_files::files::FileService::new(
        participant_files::files::Parts {
            index,
            store,
            scanner: None,
            signer: participant_files::capability::UrlSigner::new(
                b"0123456789abcdef0123456789abcdef",
            ),
            budget: participant_files::budget::MemoryBudget::new(
                64 * 1024 * 1024,
                std::time::Duration::from_secs(10),
            ),
            tasks: tokio_util::task::TaskTracker::new(),
            audit: Arc::new(
                participant_files::audit::AuditLog::open(
                    &participant_files::config::AuditTarget::File(data.path().join("audit.log")),
                )
                .unwrap(),
            ),
        },
        participant_files::files::Settings {
            public_url: "http://127.0.0.1:9".into(),
            url_ttl: std::time::Duration::from_hours(1),
            rules: participant_files::pipeline::Rules {
                max_size: 1024 * 1024,
                allowed: participant_files::sniff::AllowedTypes::any(),
                client_timeout: std::time::Duration::from_secs(30),
            },
            upload_mode: Mode::Streaming,
            download_mode: Mode::Streaming,
            limits: participant_files::limits::LimitSettings::default(),
        },
    )
}

fn body(bytes: &'static [u8]) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter([Ok(bytes::Bytes::from_static(bytes))])
}

async fn read_all(files: &participant_files::files::FileService, f: &StoredFile) -> Vec<u8> {
    use futures::TryStreamExt;
    let read = files.read(f, None).await.unwrap();
    read.body
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_recognised_as_done() {
    use participant_files::files::Actor;
    use participant_files::pipeline::Declared;
    aws_env();
    for index_flag in [
        "sqlite".to_owned(),
        format!("dynamodb://{}", unique_name("pf")),
    ] {
        for as_conflict in [true, false] {
            let (data, backends) = open_backends(&["--index", &index_flag]).await;
            let lossy = Arc::new(LostAnswers {
                inner: backends.index,
                lose: 0.into(),
                as_conflict,
            });
            let files = file_service(lossy.clone(), backends.store.clone(), &data);
            let o = owner("app", "lost");
            let f = FileId::parse("photo.jpg").unwrap();
            let what = format!("{index_flag}, answers lost as a conflict: {as_conflict}");
            let declared = Declared {
                mime_type: Some("text/plain".into()),
                ..Declared::default()
            };

            // Create, then replace, with every write's answer lost (the claim and the switch).
            for content in [&b"first version"[..], b"second version"] {
                lossy.lose.store(2, std::sync::atomic::Ordering::SeqCst);
                let committed = files
                    .upload(&o, &f, body(content), &declared)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let current = files.get(&o, &f).await.unwrap();
                assert_eq!(current.key, committed.file.key, "{what}");
                assert_eq!(read_all(&files, &current).await, content, "{what}");
                // The replaced object is gone; the row's one is there: nothing else is kept.
                let objects = backends.store.list().await.unwrap();
                assert_eq!(
                    objects.iter().map(|o| &o.key).collect::<Vec<_>>(),
                    [&current.key],
                    "{what}"
                );
                let row = lossy.get(&o, &f).await.unwrap().unwrap().value;
                assert!(row.claims.is_empty(), "{what}: {:?}", row.claims);
            }

            // An upload URL, and its capability upload, with their answers lost too.
            let actor = Actor {
                id: UserId::parse("lost").unwrap(),
                role: Role::Participant,
            };
            lossy.lose.store(1, std::sync::atomic::Ordering::SeqCst);
            let (pending, url) = files
                .upload_url(&o, &f, &declared, &actor)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let row = lossy.get(&o, &f).await.unwrap().unwrap().value;
            assert_eq!(row.pending.unwrap().upload_id, pending.upload_id, "{what}");
            let token = url.url.rsplit('/').next().unwrap();
            let grant = files.verify_upload_grant(token).unwrap();
            lossy.lose.store(2, std::sync::atomic::Ordering::SeqCst);
            let committed = files
                .upload_granted(&grant, body(b"third version"), None)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let current = files.get(&o, &f).await.unwrap();
            assert_eq!(current.key, committed.file.key, "{what}");
            assert_eq!(read_all(&files, &current).await, b"third version", "{what}");
            assert_eq!(backends.store.list().await.unwrap().len(), 1, "{what}");
        }
    }
}

/// An index on which every conditional write loses its race.
struct AlwaysLoses {
    inner: Arc<dyn FileIndex>,
}

index_wrapper! {
    AlwaysLoses,
    async fn put(&self, _: &FileRow, _: Option<u64>) -> Result<u64, IndexError> {
        Err(IndexError::Conflict)
    }
    async fn delete(&self, _: &Owner, _: &FileId, _: u64) -> Result<(), IndexError> {
        Err(IndexError::Conflict)
    }
}

#[tokio::test]
async fn endless_contention_ends_in_a_503_that_says_to_try_again() {
    use participant_files::files::FilesError;
    use participant_files::http::error::ApiError;
    let (data, backends) = open_backends(&[]).await;
    let files = file_service(
        Arc::new(AlwaysLoses {
            inner: backends.index,
        }),
        backends.store.clone(),
        &data,
    );
    let o = owner("app", "busy");
    let declared = participant_files::pipeline::Declared {
        mime_type: Some("text/plain".into()),
        ..Default::default()
    };
    let err = files
        .upload(&o, &FileId::parse("f").unwrap(), body(b"x"), &declared)
        .await
        .unwrap_err();
    assert!(matches!(err, FilesError::Contended), "{err:?}");
    let api = ApiError::from(err);
    assert_eq!(api.status.as_u16(), 503);
    assert_eq!(api.kind, "ServiceUnavailableException");
    assert!(api.retry_after.is_some());
    // Nothing was stored for the upload that could not be recorded.
    assert!(backends.store.list().await.unwrap().is_empty());
}

/// An index that holds back the write that makes an upload the file (the only write here with
/// no claim left in the row) until told to go on.
struct HeldSwitch {
    inner: Arc<dyn FileIndex>,
    reached: tokio::sync::Notify,
    go: tokio::sync::Semaphore,
}

index_wrapper! {
    HeldSwitch,
    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError> {
        if row.current.is_some() && row.claims.is_empty() {
            self.reached.notify_one();
            self.go.acquire().await.unwrap().forget();
        }
        self.inner.put(row, expected).await
    }
    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        self.inner.delete(owner, file, expected).await
    }
}

#[tokio::test]
async fn reconcile_never_deletes_an_object_that_is_about_to_become_the_file() {
    use participant_files::files::FilesError;
    aws_env();
    for index in ["sqlite", "dynamodb"] {
        for min_age in ["1h", "0s"] {
            // A fresh table each time: the store below is fresh too.
            let index_flag = match index {
                "sqlite" => "sqlite".to_owned(),
                _ => format!("dynamodb://{}", unique_name("pf")),
            };
            let what = format!("{index_flag}, reconcile --min-age {min_age}");
            let (data, backends) = open_backends(&["--index", &index_flag]).await;
            let held = Arc::new(HeldSwitch {
                inner: backends.index.clone(),
                reached: tokio::sync::Notify::new(),
                go: tokio::sync::Semaphore::new(0),
            });
            let files = file_service(held.clone(), backends.store.clone(), &data);
            let o = owner("app", "slow");
            let f = FileId::parse("scan.bin").unwrap();
            let upload = tokio::spawn({
                let (files, o, f) = (files.clone(), o.clone(), f.clone());
                async move {
                    let declared = participant_files::pipeline::Declared {
                        mime_type: Some("text/plain".into()),
                        ..Default::default()
                    };
                    files.upload(&o, &f, body(b"finally here"), &declared).await
                }
            });
            // The object is committed in the store; its row is not switched yet.
            held.reached.notified().await;
            assert_eq!(backends.store.list().await.unwrap().len(), 1, "{what}");
            let age = if min_age == "1h" {
                std::time::Duration::from_hours(1)
            } else {
                std::time::Duration::ZERO
            };
            let report = participant_files::reconcile::run(&backends, age)
                .await
                .unwrap();
            held.go.add_permits(1);
            let result = upload.await.unwrap();
            match result {
                Ok(committed) => {
                    assert_eq!(min_age, "1h", "{what}: {report:?}");
                    assert!(report.is_empty(), "{what}: {report:?}");
                    let current = files.get(&o, &f).await.unwrap();
                    assert_eq!(current.key, committed.file.key, "{what}");
                    assert_eq!(read_all(&files, &current).await, b"finally here", "{what}");
                }
                Err(e) => {
                    // Revoked as abandoned: the upload cannot commit, and leaves nothing.
                    assert_eq!(min_age, "0s", "{what}: {e}");
                    assert!(matches!(e, FilesError::ClaimRevoked), "{what}: {e:?}");
                    let now = files.get(&o, &f).await;
                    assert!(matches!(now, Err(FilesError::NotFound)), "{what}: {now:?}");
                }
            }
            // Whatever happened, no row names a missing object, and no object lacks a row.
            let objects = backends.store.list().await.unwrap();
            let row = backends.index.get(&o, &f).await.unwrap();
            let named: Vec<_> = row.iter().filter_map(|r| r.value.current.clone()).collect();
            assert_eq!(
                objects.iter().map(|o| &o.key).collect::<Vec<_>>(),
                named.iter().map(|c| &c.key).collect::<Vec<_>>(),
                "{what}"
            );
        }
    }
}
