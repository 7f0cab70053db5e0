//! Per-participant encryption (`PF_ENCRYPTION`): the master key, and the keys it wraps.
//!
//! Files will be encrypted in the age format (<https://age-encryption.org/v1>), each participant's
//! under an age X25519 identity of their own, stored only wrapped by the master key. Why age and
//! not the AWS Encryption SDK's message format, and what is done so far: README, "Encryption".

pub mod age_file;
mod decrypt;
pub mod dynamo_keys;
pub mod export;
pub mod keystore;
pub mod master;
pub mod rotate;
pub mod sqlite_keys;
pub mod store;

pub use dynamo_keys::DynamoKeys;
pub use keystore::{DataKey, KeyPage, KeyStore, KeyStoreError, StoredKey, WrappedKeys};
pub use master::{EncryptionSetting, MasterKey, MasterKeyError};
pub use sqlite_keys::SqliteKeys;
pub use store::EncryptedBlobStore;

/// `participant-files keys ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new master key to standard output: `participant-files keys new > master.key`
    /// (the file is made readable by its owner only; a terminal is refused).
    New,
    /// Write a participant's age identity (`AGE-SECRET-KEY-1...`) to standard output, for
    /// decrypting their stored files with `age -d -i`; a terminal is refused, a file made
    /// readable by its owner only. Fails once the participant is erased.
    Identity(Box<export::IdentityArgs>),
    /// Rewrap every participant's key under the master key `PF_ENCRYPTION` names, from the one
    /// `PF_ENCRYPTION_PREVIOUS` names; objects are not touched. Safe while instances serve with
    /// both set; run it again to finish an interrupted rotation.
    Rotate(Box<crate::config::ServeArgs>),
}

/// `setup`'s part when `PF_ENCRYPTION` is set: the key store beside the index (a DynamoDB table
/// of its own, `{table}-keys`, or `keys.sqlite` in the data dir).
pub async fn setup(config: &crate::config::Config) -> anyhow::Result<Vec<String>> {
    use crate::config::IndexLocation;
    match &config.index {
        IndexLocation::DynamoDb { table } => {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let keys = DynamoKeys::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                DynamoKeys::table_for(table),
            );
            Ok(keys.setup().await?)
        }
        IndexLocation::Sqlite => {
            std::fs::create_dir_all(&config.data_dir)?;
            let path = config.data_dir.join(SQLITE_FILE);
            SqliteKeys::open(&path).await?;
            Ok(vec![format!(
                "the key store {} is ready (never back it up)",
                path.display()
            )])
        }
    }
}

/// The key store `config` names (beside its index), under `master`; `sdk` is the AWS
/// configuration when the index is DynamoDB.
pub async fn open(
    config: &crate::config::Config,
    master: &MasterKey,
    sdk: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<KeyStore> {
    use crate::config::IndexLocation;
    use anyhow::Context;
    let store: std::sync::Arc<dyn WrappedKeys> = match (&config.index, sdk) {
        (IndexLocation::DynamoDb { table }, Some(sdk)) => std::sync::Arc::new(DynamoKeys::new(
            aws_sdk_dynamodb::Client::new(sdk),
            DynamoKeys::table_for(table),
        )),
        (IndexLocation::DynamoDb { .. }, None) => anyhow::bail!("DynamoDB needs the AWS settings"),
        (IndexLocation::Sqlite, _) => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create the data dir {}", config.data_dir.display())
            })?;
            std::sync::Arc::new(
                SqliteKeys::open(&config.data_dir.join(SQLITE_FILE))
                    .await
                    .context("cannot open the key store")?,
            )
        }
    };
    let keys = KeyStore::new(master, store);
    Ok(match &config.previous_master_key {
        Some(previous) => keys.with_previous(previous),
        None => keys,
    })
}

/// The key store for a maintenance command (`keys identity`, `keys rotate`): `PF_ENCRYPTION`
/// must be set; the AWS settings are loaded when the index is DynamoDB.
pub async fn open_for_command(config: &crate::config::Config) -> anyhow::Result<KeyStore> {
    use anyhow::Context;
    let master = config
        .master_key
        .as_ref()
        .context("PF_ENCRYPTION is not set: files are not encrypted, there are no keys")?;
    let sdk = match config.index {
        crate::config::IndexLocation::DynamoDb { .. } => Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await,
        ),
        crate::config::IndexLocation::Sqlite => None,
    };
    open(config, master, sdk.as_ref()).await
}

/// The SQLite key store's file in the data dir.
pub const SQLITE_FILE: &str = "keys.sqlite";
