//! CORS for browser clients: preflights get the CORS answer on top of the route's own OPTIONS.
//!
//! tower-http's `CorsLayer` answers every OPTIONS itself, also one that is no preflight, which
//! hid tus discovery (`OPTIONS .../uploads`: 204 with `Tus-Version`, `Tus-Extension`,
//! `Tus-Max-Size`) behind a bare 200. Here an OPTIONS is a preflight only when it carries
//! `Origin` and `Access-Control-Request-Method` (Fetch, "CORS-preflight request"); every request
//! goes to its route, and the CORS headers are added to what the route answered.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// Request headers a page may send: the files API, tus 1.0, the IETF resumable-upload draft,
/// and what a resumed download sends (`Range` needs no preflight only for simple values).
pub const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-disposition",
    "bridge-session",
    "x-request-id",
    "x-http-method-override",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "tus-resumable",
    "upload-length",
    "upload-defer-length",
    "upload-offset",
    "upload-metadata",
    "upload-checksum",
    "upload-complete",
    "upload-incomplete",
    "upload-draft-interop-version",
    "upload-limit",
    "repr-digest",
    "want-repr-digest",
    "x-file-id",
];

/// Response headers a page may read beyond the CORS-safelisted ones: what a resumed download
/// compares and continues from, the request ID an error report names, and the upload
/// protocols' headers.
pub const EXPOSED_HEADERS: &[&str] = &[
    "location",
    "etag",
    "content-range",
    "content-disposition",
    "content-length",
    "accept-ranges",
    "retry-after",
    "x-request-id",
    "upload-offset",
    "upload-length",
    "upload-expires",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tus-checksum-algorithm",
    "upload-complete",
    "upload-incomplete",
    "upload-draft-interop-version",
    "upload-limit",
    "repr-digest",
    "want-repr-digest",
    "x-file-id",
    "accept-patch",
];

const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "3600";

/// The origins CORS answers for, and the header lists as header values.
pub struct Cors {
    origins: Vec<HeaderValue>,
    allowed: HeaderValue,
    exposed: HeaderValue,
}

impl Cors {
    /// `None` without origins: then no CORS header is ever sent.
    pub fn new(origins: &[String]) -> Option<Arc<Self>> {
        let origins: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        if origins.is_empty() {
            return None;
        }
        let list = |names: &[&str]| HeaderValue::from_str(&names.join(", ")).expect("ASCII names");
        Some(Arc::new(Self {
            origins,
            allowed: list(ALLOWED_HEADERS),
            exposed: list(EXPOSED_HEADERS),
        }))
    }

    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.origins.contains(origin).then(|| origin.clone())
    }
}

/// The middleware: the route answers, then the CORS headers for an allowed origin are added.
pub async fn middleware(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let origin = cors.allowed_origin(req.headers());
    let preflight = origin.is_some()
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = next.run(req).await;
    if preflight && !res.status().is_success() {
        // A path without an OPTIONS of its own (405), or none at all (404): the preflight still
        // succeeds, so that the request it announces reaches the route and the page can read
        // that answer. The route's headers stay (a tus path's `Tus-Resumable`), its body goes.
        let (mut parts, _) = res.into_parts();
        parts.status = StatusCode::NO_CONTENT;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        res = Response::from_parts(parts, Body::empty());
    }
    let h = res.headers_mut();
    // The answer depends on these request headers: a shared cache must not mix them up.
    h.append(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = origin else {
        return res;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if preflight {
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, cors.allowed.clone());
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
    } else {
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, cors.exposed.clone());
    }
    res
}
