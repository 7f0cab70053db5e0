//! Per-participant encryption (`PF_ENCRYPTION`): the master key, and the keys it wraps.
//!
//! Files will be encrypted in the age format (<https://age-encryption.org/v1>), each participant's
//! under an age X25519 identity of their own, stored only wrapped by the master key. Why age and
//! not the AWS Encryption SDK's message format, and what is done so far: README, "Encryption".

pub mod dynamo_keys;
pub mod keystore;
pub mod master;
pub mod sqlite_keys;

pub use dynamo_keys::DynamoKeys;
pub use keystore::{DataKey, KeyStore, KeyStoreError, StoredKey, WrappedKeys};
pub use master::{EncryptionSetting, MasterKey, MasterKeyError};
pub use sqlite_keys::SqliteKeys;

/// `participant-files keys ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new master key to standard output: `participant-files keys new > master.key`
    /// (the file is made readable by its owner only; a terminal is refused).
    New,
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

/// The SQLite key store's file in the data dir.
pub const SQLITE_FILE: &str = "keys.sqlite";
