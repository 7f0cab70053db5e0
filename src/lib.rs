//! participant-files: stores files that belong to one study participant, behind Sage Bionetworks
//! Bridge's Participant Files API.
//!
//! Where things live:
//! - [`config`]: the command line and `PF_*` variables; [`secrets`]: generated secrets.
//! - [`auth`]: bearer JWTs; [`capability`]: sealed upload and download URLs.
//! - [`model`]: identifiers and rows; [`keys`]: object keys, built only there; [`lease`]: the
//!   one lease (with a fencing token) for work one instance at a time may do.
//! - [`files`]: what each route does, over the [`index`], the [`store`] and the [`scan`]ner.
//! - [`pipeline`]: the one pass over an upload body; [`sniff`]: content types.
//! - [`backends`]: opens the configured index and store; [`setup`] and [`reconcile`]: the
//!   maintenance commands.
//! - [`server`]: the listener and its connections; [`http`]: routes, errors and JSON shapes.
//! - [`audit`]: the audit log; [`logging`]: the diagnostic log.

pub mod audit;
pub mod auth;
pub mod backends;
pub mod budget;
pub mod capability;
pub mod client;
pub mod config;
pub mod detached;
pub mod encryption;
pub mod files;
pub mod http;
pub mod index;
pub mod keys;
pub mod lease;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod reconcile;
pub mod rescan;
pub mod retry;
pub mod scan;
pub mod secrets;
pub mod server;
pub mod setup;
pub mod sniff;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::auth::TokenVerifier;
use crate::capability::UrlSigner;
use crate::config::Config;
use crate::files::{FileService, Parts, Settings};
use crate::pipeline::Rules;
use crate::scan::{Scanner, ScannerPool};

/// Builds the application from its configuration: opens the index and the store (on the
/// embedded default creating the data dir, the schema and the secrets).
pub async fn build(config: &Config) -> anyhow::Result<http::AppState> {
    let backends = backends::open_to_serve(config).await?;
    let expected = auth::Expected {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
    };
    let verifier = if config.jwt_public_keys.is_empty() {
        let jwt_secret =
            secrets::load_or_create(config.jwt_secret.as_deref(), &config.data_dir, "jwt-secret")
                .context("cannot read or create the JWT secret in the data dir")?;
        TokenVerifier::hs256(&jwt_secret, expected)
    } else {
        TokenVerifier::public_keys(&config.jwt_public_keys, expected)
            .context("PF_JWT_PUBLIC_KEY_FILE")?
    };
    let url_secret =
        secrets::load_or_create(config.url_secret.as_deref(), &config.data_dir, "url-secret")
            .context("cannot read or create the URL secret in the data dir")?;
    let scanner: Option<Arc<dyn Scanner>> = (!config.clamd.is_empty()).then(|| {
        Arc::new(ScannerPool::new(&config.clamd, config.scan_timeout)) as Arc<dyn Scanner>
    });
    let cleanup = backends.cleanup.clone();
    let metrics = Arc::new(metrics::Metrics::new(backends.budget.clone()));
    if let Some(failures) = &backends.decrypt_failures {
        metrics.register(failures);
    }
    let audit = Arc::new(AuditLog::open(&config.audit_log).context("cannot open the audit log")?);
    let files = FileService::new(
        Parts {
            index: backends.index,
            store: backends.store,
            scanner: scanner.clone(),
            signer: UrlSigner::new(&url_secret),
            budget: backends.budget,
            tasks: cleanup.clone(),
            audit: Arc::clone(&audit),
            keys: backends.keys,
        },
        Settings {
            public_url: config.public_url.clone(),
            url_ttl: config.url_ttl,
            rules: Rules {
                max_size: config.max_file_size,
                allowed: config.allowed_types.clone(),
                client_timeout: config.client_timeout,
            },
            upload_mode: config.upload_mode,
            download_mode: config.download_mode,
            limits: config.limits,
            resumable: config.resumable,
        },
    );
    Ok(Arc::new(http::App {
        connections: config.connections,
        files,
        verifier,
        audit,
        scanner,
        cleanup,
        metrics,
        settle: (config.settle_interval, config.settle_concurrency),
        cors_origins: config.cors_origins.clone(),
    }))
}

/// Serves the application on `listener` until `shutdown` completes. Then no new connection is
/// taken and requests in flight have `deadline` to finish; uploads still receiving after that
/// are stopped (temp files removed, multipart uploads aborted, nothing committed). Connections
/// are held to the limits in the state's [`server::ConnectionLimits`].
pub async fn serve(
    state: http::AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadline: std::time::Duration,
) -> std::io::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let connections = tokio_util::task::TaskTracker::new();
    let settler_stop = tokio_util::sync::CancellationToken::new();
    let settler = tokio::spawn(files::settler::run(
        state.files.clone(),
        state.settle.0,
        state.settle.1,
        settler_stop.clone(),
        {
            let metrics = Arc::clone(&state.metrics);
            Arc::new(move |outcome| {
                let label = match outcome {
                    files::settler::ArrivalOutcome::Settled => "settled",
                    files::settler::ArrivalOutcome::Deferred => "deferred",
                    files::settler::ArrivalOutcome::Lost => "lost",
                };
                metrics.arrivals.with_label_values(&[label]).inc();
            })
        },
    ));
    server::accept(
        http::router(Arc::clone(&state)),
        listener,
        state.connections,
        shutdown,
        stop,
        connections.clone(),
    )
    .await;
    tracing::info!(
        deadline_s = deadline.as_secs_f64(),
        "shutting down: requests in flight may finish"
    );
    connections.close();
    // Arrivals being scanned stop and give their lease back: another instance, or this one
    // after a restart, takes them again.
    settler_stop.cancel();
    let _ = settler.await;
    if tokio::time::timeout(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline passed: stopping uploads still in flight");
        state.files.cancel_uploads();
        if tokio::time::timeout(std::time::Duration::from_secs(10), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still open; closing them");
        }
    }
    // Aborts of multipart uploads run in the background; they must reach S3 before exit.
    state.cleanup.close();
    if tokio::time::timeout(std::time::Duration::from_secs(10), state.cleanup.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "some multipart uploads could not be aborted; the bucket's lifecycle rule will"
        );
    }
    Ok(())
}
