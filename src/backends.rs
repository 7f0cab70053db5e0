//! Opens the configured index and store: the embedded ones in the data dir, or DynamoDB and S3
//! through the AWS SDK's standard environment (endpoints, region, credentials).

use std::sync::Arc;

use anyhow::Context;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};

use tokio_util::task::TaskTracker;

use crate::budget::MemoryBudget;
use crate::config::{Config, IndexLocation, StoreLocation};
use crate::encryption::{EncryptedBlobStore, KeyStore};
use crate::index::{DynamoFileIndex, FileIndex, SqliteFileIndex};
use crate::store::{BlobStore, LocalBlobStore, S3BlobStore, S3Settings};

pub struct Backends {
    pub index: Arc<dyn FileIndex>,
    /// Buffer memory shared by every upload (`PF_MAX_BUFFER_MEMORY`).
    pub budget: MemoryBudget,
    /// Background clean-ups the store starts (multipart aborts), for a shutdown to wait for.
    pub cleanup: TaskTracker,
    pub store: Arc<dyn BlobStore>,
    /// Present when the index is DynamoDB, for `setup`.
    pub dynamo: Option<Arc<DynamoFileIndex>>,
    /// Present when the store is S3, for `setup`.
    pub s3: Option<Arc<S3BlobStore>>,
    /// The participants' keys, with `PF_ENCRYPTION` (then `store` encrypts and decrypts).
    pub keys: Option<KeyStore>,
    /// Reads stopped by a ciphertext that failed authentication, with `PF_ENCRYPTION`.
    pub decrypt_failures: Option<prometheus::IntCounter>,
}

async fn aws() -> anyhow::Result<aws_config::SdkConfig> {
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if sdk.region().is_none() {
        anyhow::bail!(
            "no AWS region: set AWS_REGION (the S3 store and the DynamoDB index need one)"
        );
    }
    Ok(sdk)
}

/// Opens the index and the store that `config` names, for a maintenance command that may run
/// beside the service. The embedded ones are created when missing; on AWS nothing is created
/// (that is `setup`'s job).
pub async fn open(config: &Config) -> anyhow::Result<Backends> {
    open_as(config, false).await
}

/// Opens the backends for the service itself, which also clears what a crash left half-written
/// in the local store's temp folder.
pub async fn open_to_serve(config: &Config) -> anyhow::Result<Backends> {
    open_as(config, true).await
}

async fn open_as(config: &Config, serving: bool) -> anyhow::Result<Backends> {
    let needs_aws = matches!(config.store, StoreLocation::S3 { .. })
        || matches!(config.index, IndexLocation::DynamoDb { .. });
    let sdk = if needs_aws { Some(aws().await?) } else { None };
    let budget = MemoryBudget::new(config.max_buffer_memory, config.buffer_wait);
    let cleanup = TaskTracker::new();
    let (index, dynamo): (Arc<dyn FileIndex>, _) = match &config.index {
        IndexLocation::Sqlite => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data dir {} (PF_DATA_DIR)",
                    config.data_dir.display()
                )
            })?;
            let index = SqliteFileIndex::open(&config.data_dir.join("index.sqlite"))
                .await
                .context("cannot open the SQLite index")?;
            (Arc::new(index), None)
        }
        IndexLocation::DynamoDb { table } => {
            let client = aws_sdk_dynamodb::Client::new(sdk.as_ref().expect("loaded above"));
            let index = Arc::new(DynamoFileIndex::new(client, table.clone()));
            (Arc::clone(&index) as Arc<dyn FileIndex>, Some(index))
        }
    };
    let (store, s3): (Arc<dyn BlobStore>, _) = match &config.store {
        StoreLocation::Local => {
            let store = LocalBlobStore::open(&config.data_dir.join("blobs"), serving)
                .await
                .context("cannot open the local blob store")?;
            (Arc::new(store), None)
        }
        StoreLocation::S3 { bucket, prefix } => {
            let s3_config = aws_sdk_s3::config::Builder::from(sdk.as_ref().expect("loaded above"))
                .force_path_style(config.s3.force_path_style)
                // Checksums only where S3 requires them: a default CRC32 on presigned PUTs would
                // make the URLs demand a header that Bridge clients do not send.
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build();
            let store = Arc::new(S3BlobStore::new(
                aws_sdk_s3::Client::from_conf(s3_config),
                S3Settings {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    part_size: usize::try_from(config.s3.part_size).unwrap_or(usize::MAX),
                    parts_in_flight: usize::from(config.s3.parts_in_flight),
                    single_put_max: config.s3.single_put_max,
                    encryption: config.s3.encryption.clone(),
                },
                budget.clone(),
                cleanup.clone(),
            ));
            if serving {
                crate::lifecycle::warn_at_start(&store, config.resumable.ttl).await;
            }
            (Arc::clone(&store) as Arc<dyn BlobStore>, Some(store))
        }
    };
    let (store, keys, decrypt_failures) = match &config.master_key {
        None => (store, None, None),
        Some(master) => {
            let keys = crate::encryption::open(config, master, sdk.as_ref()).await?;
            let encrypted = EncryptedBlobStore::new(store, keys.clone());
            let failures = encrypted.failures();
            (
                Arc::new(encrypted) as Arc<dyn BlobStore>,
                Some(keys),
                Some(failures),
            )
        }
    };
    Ok(Backends {
        index,
        budget,
        cleanup,
        store,
        dynamo,
        s3,
        keys,
        decrypt_failures,
    })
}
