//! One conformance suite for `FileIndex`, run on every implementation: SQLite and DynamoDB (on
//! `moto_server`). Writes are conditional on the version read; racing writers cannot both win.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::{aws_env, open_backends, unique_name};
use participant_files::auth::Role;
use participant_files::index::{FileIndex, FileQuota, IndexError, QuotaReached};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{
    AppId, Claim, FileId, FileRow, Issuer, Owner, PendingUpload, Refusal, ResumableUpload,
    ScanStatus, Staged, StagedPart, StoredFile, UploadOutcome, UserId, WriterLease, Writing,
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
            signature: None,
        }),
        file_name: Some(NAMED.into()),
    }
}

/// A name as clients send them: accents, quotes, an emoji, spaces.
const NAMED: &str = "R\u{f6}ntgen \"Befund\" 2026 \u{1f600}.pdf";

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
            lease: Some(participant_files::model::Lease {
                holder: "0123456789abcdef0123456789abcdef".into(),
                // The fencing token goes through the index and back.
                epoch: 7,
                until: ms(1_795_000_060_000),
                work: (),
            }),
            file_name: Some("my notes (1).txt".into()),
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
async fn file_names_are_kept_with_the_file_and_its_upload_url() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let o = owner("app", "names");
        let f = FileId::parse("Rontgen-1a2b3c4d.pdf").unwrap();
        let long = format!("{}a", "\u{e9}".repeat(127));
        let mut r = row(&o, f.as_str(), 3);
        r.current.as_mut().unwrap().file_name = Some(long.clone());
        let key = ObjectKey::new(&o, &UploadId::generate());
        r.pending = Some(PendingUpload {
            upload_id: key.upload_id(),
            key,
            mime_type: "application/pdf".into(),
            size: None,
            sha256: None,
            created_on: ms(1_795_000_000_001),
            expires_on: ms(1_795_003_600_000),
            issuer: None,
            lease: None,
            file_name: Some(NAMED.into()),
        });
        ix.put(&r, None).await.unwrap();
        let got = ix.get(&o, &f).await.unwrap().unwrap().value;
        let names = |r: &FileRow| {
            (
                r.current.as_ref().and_then(|c| c.file_name.clone()),
                r.pending.as_ref().and_then(|p| p.file_name.clone()),
            )
        };
        assert_eq!(names(&got), (Some(long), Some(NAMED.into())), "{}", s.name);
        let listed = ix.list(&o, None, 10).await.unwrap();
        assert_eq!(listed[0].value, r, "{}", s.name);
        // A version sent without a name has none: the earlier version's name does not stay.
        let mut unnamed = r.clone();
        unnamed.current.as_mut().unwrap().file_name = None;
        unnamed.pending = None;
        ix.put(&unnamed, Some(1)).await.unwrap();
        let got = ix.get(&o, &f).await.unwrap().unwrap().value;
        assert_eq!(names(&got), (None, None), "{}", s.name);
    }
}

#[tokio::test]
async fn a_sqlite_file_from_before_names_gains_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    let o = owner("old", "u1");
    let key = ObjectKey::new(&o, &UploadId::generate());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE files (app TEXT NOT NULL, participant TEXT NOT NULL, \
             file_id TEXT NOT NULL, version INTEGER NOT NULL, object_key TEXT, mime_type TEXT, \
             size INTEGER, sha256 TEXT, scan_status TEXT, created_on INTEGER, pending_key TEXT, \
             pending_mime_type TEXT, pending_size INTEGER, pending_sha256 TEXT, \
             pending_created_on INTEGER, pending_expires_on INTEGER, pending_issuer TEXT, \
             claims TEXT, scanned_on INTEGER, scan_engine TEXT, scan_signature TEXT, \
             pending_lease TEXT, PRIMARY KEY (app, participant, file_id)) WITHOUT ROWID;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO files (app, participant, file_id, version, object_key, mime_type, size, \
             scan_status, created_on) VALUES ('old', 'u1', 'a.txt', 1, ?1, 'text/plain', 3, \
             'clean', ?2)",
            rusqlite::params![key.as_str(), T0],
        )
        .unwrap();
    }
    let ix = participant_files::index::SqliteFileIndex::open(&path)
        .await
        .unwrap();
    let f = FileId::parse("a.txt").unwrap();
    let old = ix.get(&o, &f).await.unwrap().unwrap();
    let mut named = old.value.clone();
    assert_eq!(named.current.as_ref().unwrap().file_name, None);
    named.current.as_mut().unwrap().file_name = Some(NAMED.into());
    ix.put(&named, Some(old.version)).await.unwrap();
    assert_eq!(ix.get(&o, &f).await.unwrap().unwrap().value, named);
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
            lease: None,
            file_name: None,
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

/// The settler's query: every row holding an upload URL, paged, with its lease and the
/// evidence of an infected verdict round-tripping; rows without one are never returned.
#[tokio::test]
async fn pending_rows_page_through_every_upload_url_and_nothing_else() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let app = format!("pend-{}", uuid::Uuid::new_v4().simple());
        let mut want = Vec::new();
        for u in 0..3 {
            let o = owner(&app, &format!("u{u}"));
            for f in 0..9 {
                let mut r = row(&o, &format!("f{f}"), 1);
                if f % 3 == 0 {
                    // Only committed bytes: not pending.
                    ix.put(&r, None).await.unwrap();
                    continue;
                }
                if f % 3 == 1 {
                    r.current = None;
                }
                let key = ObjectKey::new(&o, &UploadId::generate());
                r.pending = Some(PendingUpload {
                    upload_id: key.upload_id(),
                    key,
                    mime_type: "text/plain".into(),
                    size: Some(5),
                    sha256: None,
                    created_on: ms(1_795_000_000_000),
                    expires_on: ms(1_795_003_600_000),
                    issuer: None,
                    lease: (f == 2).then(|| participant_files::model::Lease {
                        holder: "instance-a".into(),
                        epoch: 1,
                        until: ms(1_795_000_060_000),
                        work: (),
                    }),
                    file_name: None,
                });
                ix.put(&r, None).await.unwrap();
                want.push(r);
            }
        }
        // Settled since: its upload URL is gone, so it leaves the pending rows.
        let settled = &want[0];
        let mut now = ix
            .get(&settled.owner, &settled.file_id)
            .await
            .unwrap()
            .unwrap();
        now.value.pending = None;
        now.value.current = Some(stored(&settled.owner, 9));
        ix.put(&now.value, Some(now.version)).await.unwrap();
        let want: Vec<FileRow> = want.into_iter().skip(1).collect();
        let mut got: Vec<FileRow> = Vec::new();
        let mut after: Option<(Owner, FileId)> = None;
        loop {
            let page = ix
                .pending(after.as_ref().map(|(o, f)| (o, f)), 4)
                .await
                .unwrap();
            got.extend(
                page.iter()
                    .map(|r| r.value.clone())
                    .filter(|r| r.owner.app.as_str() == app),
            );
            if page.len() < 4 {
                break;
            }
            let last = page.last().unwrap();
            after = Some((last.value.owner.clone(), last.value.file_id.clone()));
        }
        let key = |r: &FileRow| (r.owner.participant.to_string(), r.file_id.to_string());
        got.sort_by_key(key);
        let mut want = want;
        want.sort_by_key(key);
        assert_eq!(got, want, "{}", s.name);

        // An infected verdict keeps its signature.
        let o = owner(&app, "u0");
        let mut r = row(&o, "infected", 1);
        let c = r.current.as_mut().unwrap();
        c.scan_status = ScanStatus::Infected;
        c.scan.as_mut().unwrap().signature = Some("Pf-Marker-1".into());
        c.key = c.key.quarantined();
        ix.put(&r, None).await.unwrap();
        let back = ix.get(&o, &r.file_id).await.unwrap().unwrap();
        assert_eq!(back.value, r, "{}", s.name);
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
            async fn list_app(
                &self,
                query: &participant_files::index::AppQuery,
                limit: usize,
            ) -> Result<Vec<participant_files::model::Versioned<FileRow>>, IndexError> {
                self.inner.list_app(query, limit).await
            }
            async fn pending(
                &self,
                after: Option<(&Owner, &FileId)>,
                limit: usize,
            ) -> Result<Vec<participant_files::model::Versioned<FileRow>>, IndexError> {
                self.inner.pending(after, limit).await
            }
            async fn check(&self) -> Result<(), IndexError> {
                self.inner.check().await
            }
            fn uploads(&self) -> &dyn participant_files::index::UploadIndex {
                self.inner.uploads()
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
    async fn put_within(
        &self,
        row: &FileRow,
        expected: Option<u64>,
        quota: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError> {
        let written = self.inner.put_within(row, expected, quota).await?;
        self.lost(written)
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
            keys: None,
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
            resumable: participant_files::files::resumable::ResumableSettings {
                ttl: std::time::Duration::from_hours(24),
                max_open: 10,
                max_open_per_app: 1000,
                scan_sessions: 16,
            },
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
            // The usage counters changed with each write that landed, once: one file, its bytes.
            assert_eq!(
                lossy.inner.counters(&o).await.unwrap(),
                Some(participant_files::index::Counters {
                    files: 1,
                    bytes: b"third version".len() as u64,
                    uploads: 0,
                }),
                "{what}"
            );
        }
    }
}

/// An index on which every conditional write loses its race.
struct AlwaysLoses {
    inner: Arc<dyn FileIndex>,
}

index_wrapper! {
    AlwaysLoses,
    async fn put_within(
        &self,
        _: &FileRow,
        _: Option<u64>,
        _: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError> {
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
    async fn put_within(
        &self,
        row: &FileRow,
        expected: Option<u64>,
        quota: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError> {
        if row.current.is_some() && row.claims.is_empty() {
            self.reached.notify_one();
            self.go.acquire().await.unwrap().forget();
        }
        self.inner.put_within(row, expected, quota).await
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
                    assert!(report.lines.is_empty(), "{what}: {report:?}");
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

// ---- The app-wide listing: every participant's committed files of one app, newest first ----

use participant_files::index::{AppPosition, AppQuery};

fn file_at(owner: &Owner, file: &str, created_ms: i64, size: u64) -> FileRow {
    let mut r = row(owner, file, size);
    r.current.as_mut().unwrap().created_on = ms(created_ms);
    r
}

fn app_query(app: &str) -> AppQuery {
    AppQuery {
        app: AppId::parse(app).unwrap(),
        file_id: None,
        start: None,
        end: None,
        after: None,
    }
}

/// `participant/fileId@millis` of each row, as the listing gives them.
fn names(rows: &[participant_files::model::Versioned<FileRow>]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let v = &r.value;
            format!(
                "{}/{}@{}",
                v.owner.participant,
                v.file_id,
                v.current.as_ref().unwrap().created_on.timestamp_millis()
            )
        })
        .collect()
}

/// The listing's order, stated independently of both indexes: newest first, then participant
/// and file ID descending.
fn expected_order(rows: &[FileRow], q: &AppQuery) -> Vec<String> {
    let mut matching: Vec<&FileRow> = rows.iter().filter(|r| q.matches(r)).collect();
    matching.sort_by(|a, b| AppPosition::of(b).cmp(&AppPosition::of(a)));
    matching
        .iter()
        .map(|v| {
            format!(
                "{}/{}@{}",
                v.owner.participant,
                v.file_id,
                v.current.as_ref().unwrap().created_on.timestamp_millis()
            )
        })
        .collect()
}

/// Writes rows straight through the index, a few at a time (moto takes ~330 writes/s).
async fn put_all(ix: &dyn FileIndex, rows: &[FileRow]) {
    use futures::StreamExt;
    futures::stream::iter(rows)
        .map(|r| async move { ix.put(r, None).await.unwrap() })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Every page of `q`, `size` at a time, as the service pages: from the last item's position.
async fn all_pages(ix: &dyn FileIndex, q: &AppQuery, size: usize) -> Vec<String> {
    let mut q = q.clone();
    let mut out = Vec::new();
    loop {
        let rows = ix.list_app(&q, size).await.unwrap();
        assert!(rows.len() <= size);
        out.extend(names(&rows));
        if rows.len() < size {
            return out;
        }
        q.after = AppPosition::of(&rows.last().unwrap().value);
    }
}

const T0: i64 = 1_795_000_000_000;

#[tokio::test]
async fn app_listing_by_time_range_and_file_id() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let (a, b, c) = (
            owner("la", "alice"),
            owner("la", "bob"),
            owner("la", "carol"),
        );
        let mut rows = vec![
            file_at(&a, "consent.pdf", T0, 1),
            file_at(&b, "consent.pdf", T0 + 1000, 2),
            file_at(&c, "consent.pdf", T0 + 2000, 3),
            file_at(&a, "photo.jpg", T0 + 1000, 4),
            // Three files committed in the same millisecond: a fixed order among them.
            file_at(&a, "x", T0 + 3000, 5),
            file_at(&b, "x", T0 + 3000, 6),
            file_at(&b, "y", T0 + 3000, 7),
            file_at(&c, "photo.jpg", T0 + 4000, 8),
        ];
        // A file with a replacement pending is listed, as its current version.
        let mut replacing = file_at(&c, "notes.txt", T0 + 500, 9);
        replacing.pending = Some(PendingUpload {
            upload_id: UploadId::generate(),
            key: ObjectKey::new(&c, &UploadId::generate()),
            mime_type: "text/plain".into(),
            size: None,
            sha256: None,
            created_on: ms(T0 + 5000),
            expires_on: ms(T0 + 3_600_000),
            issuer: None,
            lease: None,
            file_name: Some("notes \u{2013} v2.txt".into()),
        });
        let key = replacing.pending.as_ref().unwrap().key.clone();
        replacing.pending.as_mut().unwrap().upload_id = key.upload_id();
        rows.push(replacing.clone());
        put_all(ix, &rows).await;
        // Never listed: a row holding only an upload URL, one holding only a claim, and every
        // file of other apps (one with the same participant and file IDs).
        let mut pending_only = replacing.clone();
        pending_only.file_id = FileId::parse("pending-only").unwrap();
        pending_only.current = None;
        ix.put(&pending_only, None).await.unwrap();
        let mut claim_only = row(&a, "claimed", 0);
        claim_only.current = None;
        claim_only.claims = vec![Claim {
            key: ObjectKey::new(&a, &UploadId::generate()),
            since: ms(T0 + 2500),
        }];
        ix.put(&claim_only, None).await.unwrap();
        ix.put(
            &file_at(&owner("la-other", "alice"), "consent.pdf", T0 + 1500, 1),
            None,
        )
        .await
        .unwrap();
        ix.put(&file_at(&owner("l", "alice"), "x", T0 + 3000, 1), None)
            .await
            .unwrap();

        let all = ix.list_app(&app_query("la"), 100).await.unwrap();
        assert_eq!(
            names(&all),
            [
                "carol/photo.jpg@1795000004000",
                "bob/y@1795000003000",
                "bob/x@1795000003000",
                "alice/x@1795000003000",
                "carol/consent.pdf@1795000002000",
                "bob/consent.pdf@1795000001000",
                "alice/photo.jpg@1795000001000",
                "carol/notes.txt@1795000000500",
                "alice/consent.pdf@1795000000000",
            ],
            "{}",
            s.name
        );
        assert_eq!(
            all.iter()
                .find(|r| r.value.file_id.as_str() == "notes.txt")
                .unwrap()
                .value,
            replacing,
            "{}: rows come back whole",
            s.name
        );
        assert_eq!(
            names(&all),
            expected_order(&rows, &app_query("la")),
            "{}",
            s.name
        );

        let mut q = app_query("la");
        // startTime inclusive, endTime exclusive.
        q.start = Some(T0 + 1000);
        q.end = Some(T0 + 3000);
        assert_eq!(
            names(&ix.list_app(&q, 100).await.unwrap()),
            [
                "carol/consent.pdf@1795000002000",
                "bob/consent.pdf@1795000001000",
                "alice/photo.jpg@1795000001000",
            ],
            "{}",
            s.name
        );
        q.end = Some(T0 + 3001);
        assert_eq!(ix.list_app(&q, 100).await.unwrap().len(), 6, "{}", s.name);
        q.start = Some(T0 + 3000);
        assert_eq!(ix.list_app(&q, 100).await.unwrap().len(), 3, "{}", s.name);
        // An empty range, and one past every file.
        q.end = Some(T0 + 3000);
        assert!(ix.list_app(&q, 100).await.unwrap().is_empty(), "{}", s.name);
        q.start = Some(T0 + 5000);
        q.end = Some(T0 + 2000);
        assert!(ix.list_app(&q, 100).await.unwrap().is_empty(), "{}", s.name);
        q.end = None;
        assert!(ix.list_app(&q, 100).await.unwrap().is_empty(), "{}", s.name);

        // By file ID, alone and with a range.
        let mut q = app_query("la");
        q.file_id = Some(FileId::parse("consent.pdf").unwrap());
        assert_eq!(
            names(&ix.list_app(&q, 100).await.unwrap()),
            [
                "carol/consent.pdf@1795000002000",
                "bob/consent.pdf@1795000001000",
                "alice/consent.pdf@1795000000000",
            ],
            "{}",
            s.name
        );
        q.start = Some(T0 + 1);
        q.end = Some(T0 + 2000);
        assert_eq!(
            names(&ix.list_app(&q, 100).await.unwrap()),
            ["bob/consent.pdf@1795000001000"],
            "{}",
            s.name
        );
        q.file_id = Some(FileId::parse("x").unwrap());
        q.start = None;
        q.end = None;
        assert_eq!(
            names(&ix.list_app(&q, 100).await.unwrap()),
            ["bob/x@1795000003000", "alice/x@1795000003000"],
            "{}",
            s.name
        );
        q.file_id = Some(FileId::parse("pending-only").unwrap());
        assert!(ix.list_app(&q, 100).await.unwrap().is_empty(), "{}", s.name);

        // Paging from a position inside a run of equal times, by time and by file ID; the
        // position need not be a file.
        let mut q = app_query("la");
        q.after = Some(AppPosition {
            created_on: T0 + 3000,
            participant: UserId::parse("bob").unwrap(),
            file_id: FileId::parse("x").unwrap(),
        });
        assert_eq!(
            names(&ix.list_app(&q, 2).await.unwrap()),
            ["alice/x@1795000003000", "carol/consent.pdf@1795000002000"],
            "{}",
            s.name
        );
        q.after.as_mut().unwrap().file_id = FileId::parse("xa").unwrap();
        assert_eq!(
            names(&ix.list_app(&q, 1).await.unwrap()),
            ["bob/x@1795000003000"],
            "{}",
            s.name
        );
        q.file_id = Some(FileId::parse("x").unwrap());
        assert_eq!(
            names(&ix.list_app(&q, 5).await.unwrap()),
            ["bob/x@1795000003000", "alice/x@1795000003000"],
            "{}",
            s.name
        );
        assert!(
            ix.list_app(&app_query("nobody"), 5)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn app_listing_pages_through_a_thousand_files_in_three_apps() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let started = std::time::Instant::now();
        // 1,050 files: 500, 350 and 200 in three apps whose names are prefixes of each other,
        // the same participant and file IDs in each, and runs of equal times.
        let mut rows = Vec::new();
        for (app, n) in [("pg", 500), ("pg-2", 350), ("p", 200)] {
            for i in 0..n {
                let o = owner(app, &format!("u{:02}", i % 17));
                rows.push(file_at(
                    &o,
                    &format!("f{}-{i}", i % 7),
                    T0 + i64::from(i / 3) * 10,
                    1,
                ));
            }
        }
        put_all(ix, &rows).await;
        for (app, n) in [("pg", 500), ("pg-2", 350), ("p", 200)] {
            let q = app_query(app);
            let expected = expected_order(&rows, &q);
            assert_eq!(expected.len(), n);
            for size in [5, 37, 100] {
                assert_eq!(
                    all_pages(ix, &q, size).await,
                    expected,
                    "{} {app} {size}",
                    s.name
                );
            }
        }
        // Every page size from 5 to 100 over a time range, and over one file ID (with and
        // without a range), in the biggest app.
        let mut by_time = app_query("pg");
        by_time.start = Some(T0 + 300);
        by_time.end = Some(T0 + 1200);
        let mut by_file = app_query("pg");
        by_file.file_id = Some(FileId::parse("f3-10").unwrap()); // one file
        let mut by_file_range = app_query("pg");
        by_file_range.file_id = Some(FileId::parse("f3-3").unwrap());
        by_file_range.start = Some(T0);
        by_file_range.end = Some(T0 + 20);
        let sizes: Vec<usize> = if s.name == "sqlite" {
            (5..=100).collect()
        } else {
            // moto answers ~35 queries a second: a spread of sizes rather than every one.
            vec![5, 6, 11, 32, 57, 99, 100]
        };
        let expected_time = expected_order(&rows, &by_time);
        assert_eq!(expected_time.len(), 270);
        for size in sizes {
            assert_eq!(
                all_pages(ix, &by_time, size).await,
                expected_time,
                "{} {size}",
                s.name
            );
        }
        for q in [by_file, by_file_range] {
            let expected = expected_order(&rows, &q);
            assert_eq!(expected.len(), 1);
            assert_eq!(all_pages(ix, &q, 5).await, expected, "{}", s.name);
        }
        let mut by_file_many = app_query("pg");
        by_file_many.file_id = Some(FileId::parse("f0-0").unwrap());
        for i in 0..40 {
            let o = owner("pg", &format!("v{i}"));
            ix.put(&file_at(&o, "f0-0", T0 + i64::from(i % 4), 1), None)
                .await
                .unwrap();
        }
        let all_rows: Vec<FileRow> = {
            let mut v = rows.clone();
            v.extend((0..40).map(|i| {
                file_at(
                    &owner("pg", &format!("v{i}")),
                    "f0-0",
                    T0 + i64::from(i % 4),
                    1,
                )
            }));
            v
        };
        let expected = expected_order(&all_rows, &by_file_many);
        assert_eq!(expected.len(), 41);
        for size in [5, 7, 40, 41, 100] {
            assert_eq!(
                all_pages(ix, &by_file_many, size).await,
                expected,
                "{} {size}",
                s.name
            );
        }
        eprintln!("{}: {:?}", s.name, started.elapsed());
    }
}

#[tokio::test]
async fn app_listing_paging_holds_while_files_come_and_go() {
    for s in subjects().await {
        let ix = s.index.as_ref();
        let mut rows = Vec::new();
        for i in 0..150i64 {
            let o = owner("busy", &format!("p{}", i % 9));
            rows.push(file_at(&o, &format!("f{i}"), T0 + (i / 2) * 100, 1));
        }
        put_all(ix, &rows).await;
        let mut q = app_query("busy");
        let mut seen: Vec<String> = Vec::new();
        let mut gone: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut touched: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut round = 0i64;
        loop {
            let page = ix.list_app(&q, 10).await.unwrap();
            for r in &page {
                let id = format!("{}/{}", r.value.owner.participant, r.value.file_id);
                assert!(
                    !gone.contains(&id),
                    "{}: {id} was deleted before this page",
                    s.name
                );
                // Served as the row reads now: never an older copy.
                let now = ix
                    .get(&r.value.owner, &r.value.file_id)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(now, *r, "{}", s.name);
            }
            seen.extend(
                page.iter()
                    .map(|r| format!("{}/{}", r.value.owner.participant, r.value.file_id)),
            );
            if page.len() < 10 {
                break;
            }
            q.after = AppPosition::of(&page.last().unwrap().value);
            // Between pages: new uploads (newest, and one back-dated into the part not read
            // yet), a delete ahead of the cursor and one behind it, and a replace ahead of it.
            round += 1;
            let o = owner("busy", &format!("p{}", round % 9));
            let fresh = format!("new-{round}");
            ix.put(&file_at(&o, &fresh, T0 + 1_000_000 + round, 1), None)
                .await
                .unwrap();
            touched.insert(format!("{}/{fresh}", o.participant));
            let back = format!("back-{round}");
            ix.put(&file_at(&o, &back, T0 + 50, 1), None).await.unwrap();
            touched.insert(format!("{}/{back}", o.participant));
            for victim in [149 - round * 3, round * 3 - 2, 148 - round * 3] {
                if !(0..150).contains(&victim) {
                    continue;
                }
                let r = &rows[usize::try_from(victim).unwrap()];
                let id = format!("{}/{}", r.owner.participant, r.file_id);
                if touched.contains(&id) {
                    continue;
                }
                let cur = ix.get(&r.owner, &r.file_id).await.unwrap().unwrap();
                touched.insert(id.clone());
                if victim % 2 == 0 {
                    // Replaced: new bytes, new time; the old position must not serve it with
                    // its old metadata.
                    let mut new = r.clone();
                    new.current = Some(stored(&r.owner, 777));
                    new.current.as_mut().unwrap().created_on = ms(T0 + 2_000_000 + round);
                    ix.put(&new, Some(cur.version)).await.unwrap();
                } else {
                    ix.delete(&r.owner, &r.file_id, cur.version).await.unwrap();
                    gone.insert(id);
                }
            }
        }
        let mut counts = std::collections::HashMap::new();
        for id in &seen {
            *counts.entry(id.clone()).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|n| *n == 1),
            "{}: repeated: {:?}",
            s.name,
            counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        // Every file that existed throughout, untouched, was listed exactly once.
        let steady: Vec<String> = rows
            .iter()
            .map(|r| format!("{}/{}", r.owner.participant, r.file_id))
            .filter(|id| !touched.contains(id))
            .collect();
        assert!(steady.len() > 100, "{}", s.name);
        for id in &steady {
            assert!(counts.contains_key(id), "{}: {id} was skipped", s.name);
        }
        assert!(!gone.is_empty());
        // After the last page: no deleted file, and replaced ones with their new metadata.
        let after = ix.list_app(&app_query("busy"), 100).await.unwrap();
        let mut q = app_query("busy");
        let mut everything = after.clone();
        while everything.len() % 100 == 0 && !everything.is_empty() {
            q.after = AppPosition::of(&everything.last().unwrap().value);
            let more = ix.list_app(&q, 100).await.unwrap();
            if more.is_empty() {
                break;
            }
            everything.extend(more);
        }
        for r in &everything {
            let id = format!("{}/{}", r.value.owner.participant, r.value.file_id);
            assert!(!gone.contains(&id), "{}: deleted {id} listed", s.name);
            let now = ix
                .get(&r.value.owner, &r.value.file_id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(now, *r, "{}", s.name);
        }
    }
}

#[tokio::test]
async fn sqlite_app_listing_reads_its_indexes_and_migrates_an_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    // An index file as the version before the listing wrote it: the table, no listing indexes.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE files (app TEXT NOT NULL, participant TEXT NOT NULL, \
             file_id TEXT NOT NULL, version INTEGER NOT NULL, object_key TEXT, mime_type TEXT, \
             size INTEGER, sha256 TEXT, scan_status TEXT, created_on INTEGER, pending_key TEXT, \
             pending_mime_type TEXT, pending_size INTEGER, pending_sha256 TEXT, \
             pending_created_on INTEGER, pending_expires_on INTEGER, pending_issuer TEXT, \
             claims TEXT, PRIMARY KEY (app, participant, file_id)) WITHOUT ROWID;",
        )
        .unwrap();
        let o = owner("old", "u1");
        let key = ObjectKey::new(&o, &UploadId::generate());
        conn.execute(
            "INSERT INTO files (app, participant, file_id, version, object_key, mime_type, size, \
             scan_status, created_on) VALUES ('old', 'u1', 'a.txt', 1, ?1, 'text/plain', 3, \
             'clean', ?2)",
            rusqlite::params![key.as_str(), T0],
        )
        .unwrap();
    }
    let ix = participant_files::index::SqliteFileIndex::open(&path)
        .await
        .unwrap();
    assert_eq!(
        names(&ix.list_app(&app_query("old"), 5).await.unwrap()),
        ["u1/a.txt@1795000000000"]
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (by_file, index) in [
        (false, "files_by_app_time"),
        (true, "files_by_app_file_time"),
    ] {
        let plan = query_plan(&conn, &participant_files::index::list_app_sql(by_file));
        // One search of the listing's index, in its order: no scan, no sort.
        assert!(
            plan.starts_with(&format!("SEARCH files USING INDEX {index} (app=?")),
            "{plan}"
        );
        assert!(
            !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"),
            "{plan}"
        );
        if by_file {
            assert!(plan.contains("file_id=?"), "{plan}");
        }
        assert!(plan.contains("created_on>?"), "{plan}");
    }
    // The settler's poll reads only the partial index of pending rows.
    let plan = query_plan(&conn, &participant_files::index::pending_sql());
    assert!(plan.contains("USING INDEX files_pending"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    // `usage` counts the unexpired upload URLs from its covering index alone: no table row is
    // read, so a POST costs the same however many files the participant has.
    let plan = query_plan(&conn, participant_files::index::PENDING_USAGE);
    assert!(
        plan.starts_with("SEARCH files USING COVERING INDEX files_pending_usage (app=? AND participant=? AND pending_expires_on>?)"),
        "{plan}"
    );
}

/// SQLite's plan for `sql`, its steps joined by `; `.
fn query_plan(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let plan: Vec<String> = stmt
        .query_map(
            rusqlite::params_from_iter(std::iter::repeat_n(
                rusqlite::types::Value::Null,
                stmt.parameter_count(),
            )),
            |r| r.get::<_, String>(3),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    plan.join("; ")
}

/// DynamoDB's global secondary indexes lag behind the table. moto's do not, so the lag is made
/// by hand: items whose index keys name another position than the row holds (a file replaced
/// since its entry was written) or another row altogether (a file deleted since). Neither may be
/// served; the row's own, current entry is.
#[tokio::test]
async fn dynamodb_app_listing_never_serves_a_stale_index_entry() {
    use aws_sdk_dynamodb::types::AttributeValue;
    aws_env();
    let table = unique_name("pf");
    let (_data, backends) = open_backends(&["--index", &format!("dynamodb://{table}")]).await;
    let ix = backends.index.as_ref();
    let o = owner("stale", "u1");
    let fresh = file_at(&o, "fresh.txt", T0 + 30, 3);
    ix.put(&fresh, None).await.unwrap();
    ix.put(&file_at(&o, "replaced.txt", T0 + 20, 3), None)
        .await
        .unwrap();
    ix.put(&file_at(&o, "deleted.txt", T0 + 5, 3), None)
        .await
        .unwrap();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let set = |file: &'static str, time_key: String| {
        let client = client.clone();
        let table = table.clone();
        async move {
            client
                .update_item()
                .table_name(&table)
                .key("pk", AttributeValue::S("stale#u1".into()))
                .key("fileId", AttributeValue::S(file.into()))
                .update_expression("SET gsiTime = :t")
                .expression_attribute_values(":t", AttributeValue::S(time_key))
                .send()
                .await
                .unwrap();
        }
    };
    // The entry of "replaced.txt" still at its old time; the row says T0 + 20.
    set("replaced.txt", format!("{:015}#u1#replaced.txt", T0 + 10)).await;
    // The entry of "deleted.txt" names a row that is gone.
    set("deleted.txt", format!("{:015}#u1#gone.txt", T0 + 5)).await;
    let listed = ix.list_app(&app_query("stale"), 10).await.unwrap();
    assert_eq!(names(&listed), ["u1/fresh.txt@1795000000030"]);
    assert_eq!(listed[0].value, fresh);
    // A page that is short of stale entries is filled from further down.
    let listed = ix.list_app(&app_query("stale"), 1).await.unwrap();
    assert_eq!(names(&listed), ["u1/fresh.txt@1795000000030"]);
    let mut q = app_query("stale");
    q.end = Some(T0 + 11);
    assert!(ix.list_app(&q, 5).await.unwrap().is_empty());
}

fn resumable(owner: &Owner, file: &str, expires_on: DateTime<Utc>) -> ResumableUpload {
    let id = UploadId::generate();
    ResumableUpload {
        owner: owner.clone(),
        id: id.clone(),
        file_id: FileId::parse(file).unwrap(),
        issuer: "alice:participant".into(),
        mime_type: Some("image/jpeg".into()),
        file_name: Some("IMG 0001 (1).jpg".into()),
        sha256: None,
        length: Some(12 << 20),
        offset: 0,
        hash: Some("a-saved-hash-state".into()),
        created_on: ms(1_795_000_000_123),
        expires_on,
        staged: Staged {
            key: ObjectKey::new(owner, &id),
            multipart: Some("mp-1".into()),
            part_size: 5 << 20,
            parts: vec![StagedPart {
                number: 1,
                etag: "\"e1\"".into(),
                size: 5 << 20,
            }],
            tail: 3,
            fence: 1,
        },
        writer: Some(WriterLease {
            holder: "instance-a".into(),
            epoch: 1,
            until: ms(1_795_000_060_000),
            work: Writing { completing: false },
        }),
        outcome: None,
    }
}

#[tokio::test]
async fn resumable_uploads_are_kept_beside_the_files_and_never_taken_for_them() {
    for subject in subjects().await {
        let (ix, name) = (subject.index.as_ref(), subject.name);
        let uploads = ix.uploads();
        let (alice, bob) = (owner("study", "alice"), owner("study", "bob"));
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);

        let mut open = resumable(&alice, "scan.bin", now + hour);
        assert_eq!(uploads.put_upload(&open, None).await.unwrap(), 1, "{name}");
        assert!(
            matches!(
                uploads.put_upload(&open, None).await,
                Err(IndexError::Conflict)
            ),
            "{name}: a second create of one upload"
        );
        let got = uploads.get_upload(&alice, &open.id).await.unwrap().unwrap();
        assert_eq!(
            (got.value.clone(), got.version),
            (open.clone(), 1),
            "{name}"
        );
        assert!(
            uploads.get_upload(&bob, &open.id).await.unwrap().is_none(),
            "{name}: another participant's upload"
        );

        // The offset moves only by a write on the version read; a writer that read before
        // loses.
        open.offset = 5 << 20;
        assert_eq!(uploads.put_upload(&open, Some(1)).await.unwrap(), 2);
        assert!(matches!(
            uploads.put_upload(&open, Some(1)).await,
            Err(IndexError::Conflict)
        ));

        let expired = resumable(&alice, "old.bin", now - chrono::Duration::seconds(1));
        let mut done = resumable(&alice, "done.bin", now + hour);
        done.outcome = Some(UploadOutcome::Refused(Refusal {
            status: 422,
            kind: "InfectedFileException".into(),
            message: "infected".into(),
            signature: Some("Eicar-Test-Signature".into()),
        }));
        let bobs = resumable(&bob, "b.bin", now + hour);
        for u in [&expired, &done, &bobs] {
            uploads.put_upload(u, None).await.unwrap();
        }
        assert_eq!(
            uploads.open_uploads(&alice, now).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(uploads.open_uploads(&bob, now).await.unwrap(), 1, "{name}");
        let stale: Vec<_> = uploads
            .expired_uploads(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.value.id)
            .collect();
        assert_eq!(stale, vec![expired.id.clone()], "{name}");

        // Erase reads every upload of one owner, a page at a time, in upload ID order.
        let mut alices = vec![open.id.clone(), expired.id.clone(), done.id.clone()];
        alices.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let first = uploads.uploads_of(&alice, None, 2).await.unwrap();
        let rest = uploads
            .uploads_of(&alice, Some(&first[1].value.id), 2)
            .await
            .unwrap();
        let paged: Vec<_> = first
            .iter()
            .chain(&rest)
            .map(|u| u.value.id.clone())
            .collect();
        assert_eq!(paged, alices, "{name}");
        let bobs_ids: Vec<_> = uploads
            .uploads_of(&bob, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.value.id)
            .collect();
        assert_eq!(bobs_ids, vec![bobs.id.clone()], "{name}");

        // File rows are what they were: no listing, scan or usage sees an upload.
        ix.put(&row(&alice, "photo.jpg", 10), None).await.unwrap();
        let listed = ix.list(&alice, None, 100).await.unwrap();
        assert_eq!(listed.len(), 1, "{name}");
        let scanned = ix.scan(None, 2).await.unwrap();
        assert_eq!(
            scanned
                .iter()
                .map(|r| r.value.file_id.as_str())
                .collect::<Vec<_>>(),
            vec!["photo.jpg"],
            "{name}"
        );
        assert_eq!(ix.usage(&alice, now).await.unwrap().files, 1, "{name}");

        assert!(matches!(
            uploads.delete_upload(&alice, &open.id, 1).await,
            Err(IndexError::Conflict)
        ));
        uploads.delete_upload(&alice, &open.id, 2).await.unwrap();
        assert!(
            uploads
                .get_upload(&alice, &open.id)
                .await
                .unwrap()
                .is_none()
        );
    }
}
