//! DynamoDB read capacity per POST of an upload URL as one participant's files grow, on moto
//! with `ReturnConsumedCapacity` (issue 26: it must not grow with the files). Counted through
//! the service's own `FileService::upload_url`, over an index whose client asks every read
//! for its consumed capacity.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use participant_files::auth::Role;
use participant_files::files::{Actor, FileService};
use participant_files::index::{DynamoFileIndex, FileIndex};
use participant_files::model::{FileId, FileRow, Owner, ScanStatus, StoredFile};

/// The participant's committed files at each step, as in the `usage` case.
const SIZES: [u32; 4] = [0, 1_000, 10_000, 30_000];
/// The upload URLs asked for at each step (the same file IDs each time, so that the
/// participant's pending uploads are the same at every step).
const POSTS: u32 = 20;

/// Sums the read capacity that every read reports.
#[derive(Debug, Clone, Default)]
struct ReadCapacity(Arc<Mutex<f64>>);

impl ReadCapacity {
    fn add(&self, c: Option<&ConsumedCapacity>) {
        let units = c.and_then(|c| c.read_capacity_units.or(c.capacity_units));
        *self.0.lock().unwrap() += units.unwrap_or(0.0);
    }

    fn take(&self) -> f64 {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for ReadCapacity {
    fn name(&self) -> &'static str {
        "ReadCapacity"
    }

    fn modify_before_serialization(
        &self,
        ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = ctx.input_mut();
        let total = Some(ReturnConsumedCapacity::Total);
        if let Some(i) = input.downcast_mut::<GetItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<QueryInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<BatchGetItemInput>() {
            i.return_consumed_capacity = total;
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(out) = ctx.output_or_error() else {
            return Ok(());
        };
        if let Some(o) = out.downcast_ref::<GetItemOutput>() {
            self.add(o.consumed_capacity());
        } else if let Some(o) = out.downcast_ref::<QueryOutput>() {
            self.add(o.consumed_capacity());
        } else if let Some(o) = out.downcast_ref::<BatchGetItemOutput>() {
            for c in o.consumed_capacity() {
                self.add(Some(c));
            }
        }
        Ok(())
    }
}

fn committed(owner: &Owner, i: u32) -> FileRow {
    FileRow {
        owner: owner.clone(),
        file_id: FileId::parse(&format!("old{i:05}")).unwrap(),
        current: Some(StoredFile {
            key: participant_files::keys::ObjectKey::new(
                owner,
                &participant_files::keys::UploadId::generate(),
            ),
            mime_type: "text/plain".into(),
            size: 1000,
            sha256: None,
            scan_status: ScanStatus::Clean,
            created_on: chrono::Utc::now(),
            scan: None,
            file_name: None,
        }),
        pending: None,
        claims: Vec::new(),
    }
}

/// Adds committed files `from..to` of `owner` in batches (`DynamoFileIndex::import`: one
/// transaction a row takes moto longer than a bench can wait), then recounts the counters.
async fn fill(index: &DynamoFileIndex, owner: &Owner, from: u32, to: u32) {
    let rows: Vec<FileRow> = (from..to).map(|i| committed(owner, i)).collect();
    index.import(&rows).await.unwrap();
}

async fn service(index: Arc<dyn FileIndex>, data: &std::path::Path) -> FileService {
    use participant_files::config::Mode;
    let store = participant_files::store::LocalBlobStore::open(&data.join("blobs"), true)
        .await
        .unwrap();
    FileService::new(
        participant_files::files::Parts {
            index,
            store: Arc::new(store),
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
                    &participant_files::config::AuditTarget::File(data.join("audit.log")),
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
            limits: participant_files::limits::LimitSettings {
                max_files_per_participant: Some(1_000_000),
                ..participant_files::limits::LimitSettings::default()
            },
            resumable: participant_files::files::resumable::ResumableSettings {
                ttl: std::time::Duration::from_hours(24),
                max_open: 10,
                max_open_per_app: 1000,
                scan_sessions: 16,
            },
        },
    )
}

pub async fn capacity(push: &mut impl FnMut(String, String)) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let reads = ReadCapacity::default();
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .interceptor(reads.clone())
        .build();
    let table = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let dynamo = DynamoFileIndex::new(aws_sdk_dynamodb::Client::from_conf(conf), table);
    dynamo.setup().await.unwrap();
    let dynamo = Arc::new(dynamo);
    let index: Arc<dyn FileIndex> = dynamo.clone();
    let data = tempfile::tempdir().unwrap();
    let files = service(Arc::clone(&index), data.path()).await;
    let owner = Owner {
        app: participant_files::model::AppId::parse("bench").unwrap(),
        participant: participant_files::model::UserId::parse("bench").unwrap(),
    };
    let actor = Actor {
        id: owner.participant.clone(),
        role: Role::Participant,
    };
    let declared = participant_files::pipeline::Declared {
        mime_type: Some("text/plain".into()),
        ..Default::default()
    };
    let post_all = || async {
        for i in 0..POSTS {
            let id = FileId::parse(&format!("n{i:02}")).unwrap();
            files
                .upload_url(&owner, &id, &declared, &actor)
                .await
                .unwrap();
        }
    };
    // The upload URLs exist before the first figure: every step then asks for the same ones.
    post_all().await;
    let mut had = 0;
    for n in SIZES {
        fill(&dynamo, &owner, had, n).await;
        had = n;
        reads.take();
        post_all().await;
        let per_post = reads.take() / f64::from(POSTS);
        push(
            format!("usage (DynamoDB, moto): read capacity per POST, {n} committed files"),
            format!("{per_post:.2} RCU (ReturnConsumedCapacity, mean of {POSTS}; target: flat)"),
        );
    }
}
