//! participant-files: stores files that belong to one study participant, behind Sage Bionetworks
//! Bridge's Participant Files API.
//!
//! Where things live:
//! - [`config`]: the command line and `PF_*` variables; [`secrets`]: generated secrets.
//! - [`auth`]: bearer JWTs; [`capability`]: signed upload and download URLs.
//! - [`model`]: identifiers and rows; [`keys`]: object keys, built only there.
//! - [`files`]: what each route does, over the [`index`], the [`store`] and the [`scan`]ner.
//! - [`pipeline`]: the one pass over an upload body; [`sniff`]: content types.
//! - [`http`]: routes, errors and JSON shapes; [`audit`]: the audit log.

pub mod audit;
pub mod auth;
pub mod capability;
pub mod config;
pub mod files;
pub mod http;
pub mod index;
pub mod keys;
pub mod model;
pub mod pipeline;
pub mod scan;
pub mod secrets;
pub mod sniff;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::TokenVerifier;
use crate::capability::UrlSigner;
use crate::config::{Config, IndexLocation, StoreLocation};
use crate::files::FileService;
use crate::index::{FileIndex, SqliteFileIndex};
use crate::pipeline::Rules;
use crate::store::{BlobStore, LocalBlobStore};

/// Builds the application from its configuration: opens (and on the embedded default, creates)
/// the data dir, the index, the store and the secrets.
pub async fn build(config: &Config) -> anyhow::Result<http::AppState> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data dir {} (PF_DATA_DIR)",
            config.data_dir.display()
        )
    })?;
    let jwt_secret =
        secrets::load_or_create(config.jwt_secret.as_deref(), &config.data_dir, "jwt-secret")
            .context("cannot read or create the JWT secret in the data dir")?;
    let url_secret =
        secrets::load_or_create(config.url_secret.as_deref(), &config.data_dir, "url-secret")
            .context("cannot read or create the URL secret in the data dir")?;
    let index: Arc<dyn FileIndex> = match &config.index {
        IndexLocation::Sqlite => Arc::new(
            SqliteFileIndex::open(&config.data_dir.join("index.sqlite"))
                .await
                .context("cannot open the SQLite index")?,
        ),
        IndexLocation::DynamoDb { .. } => anyhow::bail!("the DynamoDB index is not available yet"),
    };
    let store: Arc<dyn BlobStore> = match &config.store {
        StoreLocation::Local => Arc::new(
            LocalBlobStore::open(&config.data_dir.join("blobs"))
                .await
                .context("cannot open the local blob store")?,
        ),
        StoreLocation::S3 { .. } => anyhow::bail!("the S3 store is not available yet"),
    };
    let files = FileService::new(
        index,
        store,
        None,
        UrlSigner::new(&url_secret),
        config.public_url.clone(),
        config.url_ttl,
        Rules {
            max_size: config.max_file_size,
            allowed: config.allowed_types.clone(),
        },
    );
    let audit = AuditLog::open(&config.audit_log).context("cannot open the audit log")?;
    Ok(Arc::new(http::App {
        files,
        verifier: TokenVerifier::hs256(&jwt_secret),
        audit,
        scanner: None,
    }))
}

/// Serves the application on `listener` until `shutdown` completes.
pub async fn serve(
    state: http::AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
