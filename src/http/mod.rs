//! The HTTP edge: every route in one table, and the middleware around them.

mod capability;
mod cors;
mod draft;
pub mod error;
mod extract;
mod files;
mod listing;
mod openapi;
mod resumable;
mod service;
pub mod shapes;
mod tus;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, AuditLog};
use crate::auth::TokenVerifier;
use crate::files::FileService;
use crate::scan::Scanner;
use error::ApiError;

/// What every handler shares.
pub struct App {
    pub files: FileService,
    pub verifier: TokenVerifier,
    pub audit: Arc<AuditLog>,
    pub scanner: Option<Arc<dyn Scanner>>,
    /// Background clean-ups (multipart aborts) that a shutdown waits for.
    pub cleanup: tokio_util::task::TaskTracker,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The listener's deadlines and cap, for [`crate::serve`].
    pub connections: crate::server::ConnectionLimits,
    /// How often the settler polls pending uploads, and how many arrivals it streams at once.
    pub settle: (std::time::Duration, usize),
    /// Browser origins that CORS answers for (tus clients in a web app); empty: none.
    pub cors_origins: Vec<String>,
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
    let method = method_label(req.method());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    if let Some(BackendFailed(backend)) = response.extensions().get::<BackendFailed>() {
        m.backend_errors.with_label_values(&[backend]).inc();
    }
    response
}

/// A request's method as a metric label or log field: one of the methods the service knows,
/// else `other`. A client can invent any number of methods, and each label value would be a
/// new series kept until a restart.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub type AppState = Arc<App>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route table. Every route is registered with its documentation, so the OpenAPI document
/// cannot miss one (`tests/openapi.rs` checks both ways).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        // The participant's own routes are paths of their own, so that a client generated from
        // the document can reach them; the router prefers the static `self` segment to `{userId}`.
        .routes(routes!(files::list_self, files::erase_self))
        .routes(routes!(
            files::get_self,
            files::post_self,
            files::put_self,
            files::delete_self
        ))
        // A path of three segments: it cannot be taken for `{userId}` = `files`, whose routes
        // have four or more.
        .routes(routes!(listing::list_app))
        .routes(routes!(files::list, files::erase))
        .routes(routes!(files::get, files::post, files::put, files::delete))
        .routes(routes!(tus::options_self, tus::create_self))
        .routes(routes!(
            tus::head_self,
            tus::patch_self,
            tus::terminate_self
        ))
        .routes(routes!(tus::options, tus::create_for))
        .routes(routes!(tus::head_for, tus::patch_for, tus::terminate_for))
        .routes(routes!(capability::upload))
        .routes(routes!(capability::download))
        .routes(routes!(service::health))
        .routes(routes!(service::ready))
        .routes(routes!(service::metrics))
        .routes(routes!(service::openapi))
}

/// The OpenAPI document, as served at `/openapi.json` by a service with this file size limit.
pub fn openapi_document(max_file_size: u64) -> String {
    openapi::document(max_file_size)
}

/// Anything no route takes: a malformed `{fileId}` (empty, or holding a `/`) is 400 for a
/// signed-in caller; everything else 404.
/// The refusal is audited like any other on a participant's files.
async fn fallback(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Result<extract::Caller, ApiError>,
    request_id: extract::RequestId,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    if files::is_malformed_file_path(uri.path()) {
        return match caller {
            Ok(extract::Caller(caller)) => {
                let e = ApiError::bad_request(
                    "fileId must be 1 to 255 characters of A-Z, a-z, 0-9, '.', '_' and '-'.",
                );
                let action = match method {
                    axum::http::Method::POST => audit::Action::UploadUrl,
                    axum::http::Method::PUT => audit::Action::Upload,
                    axum::http::Method::DELETE => audit::Action::Delete,
                    _ => audit::Action::Read,
                };
                // `/v3/participants/{userId}/files/...`: the third segment names the participant.
                let user = uri.path().split('/').nth(3).unwrap_or_default();
                extract::audit_refusal(&state, &caller, &request_id, user, None, action, &e);
                e
            }
            Err(e) => e,
        };
    }
    ApiError::no_route()
}

/// A method the path does not take: 405, which on a tus path names the protocol version as
/// every tus answer does.
async fn method_not_allowed(path: Option<MatchedPath>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut res = ApiError::method_not_allowed().into_response();
    let tus_path = path.is_some_and(|p| {
        let p = p.as_str();
        p.starts_with("/v3/participants/") && p.contains("/uploads")
    });
    if tus_path {
        res.headers_mut().insert(
            HeaderName::from_static("tus-resumable"),
            HeaderValue::from_static(tus::VERSION),
        );
    }
    res
}

/// The service: routes, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    // Whether a request is the IETF draft's is decided here, once, for every route it shares.
    let mut router = router
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            draft::dispatch,
        ))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed);
    // Inside `track`, so that a preflight is counted with the status it got.
    if let Some(cors) = cors::Cors::new(&state.cors_origins) {
        router = router.layer(axum::middleware::from_fn_with_state(cors, cors::middleware));
    }
    router
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
                    tracing::info_span!(
                        "request",
                        method = method_label(req.method()),
                        route,
                        request_id = id
                    )
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
        .layer(axum::middleware::map_request(drop_odd_request_id))
}

/// A client's `X-Request-Id` is kept when it is a plain token (up to 128 of `A-Z a-z 0-9 . _ -`),
/// else replaced by a fresh one: it goes into every log and audit line.
async fn drop_odd_request_id(mut req: axum::extract::Request) -> axum::extract::Request {
    let plain = req.headers().get(&REQUEST_ID).is_none_or(|v| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    });
    if !plain {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}
