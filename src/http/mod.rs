//! The HTTP edge: every route in one table, and the middleware around them.

mod capability;
pub mod error;
mod extract;
mod files;
mod service;
pub mod shapes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use axum::routing::{any, get, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::audit::AuditLog;
use crate::auth::TokenVerifier;
use crate::files::FileService;
use crate::scan::Scanner;
use error::ApiError;

/// What every handler shares.
pub struct App {
    pub files: FileService,
    pub verifier: TokenVerifier,
    pub audit: AuditLog,
    pub scanner: Option<Arc<dyn Scanner>>,
    /// Background clean-ups (multipart aborts) that a shutdown waits for.
    pub cleanup: tokio_util::task::TaskTracker,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Put on a response by [`ApiError`] when a backend failed, for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct BackendFailed(pub &'static str);

/// Records an upload's outcome: bytes committed, and the scanner's verdict and latency.
pub(crate) fn observe_upload(state: &App, result: &Result<crate::files::Committed, ApiError>) {
    let m = &state.metrics;
    match result {
        Ok(c) => {
            m.bytes_in.inc_by(c.file.size);
            if let Some(t) = c.scan_time {
                m.scan_verdicts.with_label_values(&["clean"]).inc();
                m.scan_seconds.observe(t.as_secs_f64());
            }
        }
        Err(e) if e.kind == "InfectedFileException" => {
            m.scan_verdicts.with_label_values(&["infected"]).inc();
        }
        Err(e) if e.backend == Some("clamd") => {
            m.scan_verdicts.with_label_values(&["error"]).inc();
        }
        Err(_) => {}
    }
}

/// Counts every request by route template, method and status, with its latency.
async fn track(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    if let Some(BackendFailed(backend)) = response.extensions().get::<BackendFailed>() {
        m.backend_errors.with_label_values(&[backend]).inc();
    }
    response
}

pub type AppState = Arc<App>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route table.
pub fn router(state: AppState) -> Router {
    let files_of = "/v3/participants/{user_id}/files";
    Router::new()
        .route(files_of, get(files::list).delete(files::erase))
        .route(&format!("{files_of}/"), any(files::malformed_file_id))
        .route(
            &format!("{files_of}/{{file_id}}"),
            get(files::get)
                .post(files::post)
                .put(files::put)
                .delete(files::delete),
        )
        .route(
            &format!("{files_of}/{{file_id}}/{{*rest}}"),
            any(files::malformed_file_id),
        )
        .route("/v3/uploads/{token}", put(capability::upload))
        .route("/v3/downloads/{token}", get(capability::download))
        .route("/health", get(service::health))
        .route("/ready", get(service::ready))
        .route("/metrics", get(service::metrics))
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            track,
        ))
        .with_state(state)
        // Nothing here is to be cached, sniffed or leaked as a referrer: a 302's Location and
        // every download are capability URLs.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(
            // Only the route template is logged: paths hold participant IDs and capability
            // tokens, and neither belongs in a diagnostic log.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), route, request_id = id)
                })
                .on_request(())
                .on_response(|res: &Response<_>, latency: Duration, _: &Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "response"
                    );
                }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
