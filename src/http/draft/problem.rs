//! Refusals to a draft client as problem details (RFC 9457), with the draft's problem types in
//! the versions that define them; the status, `Retry-After` and metrics are the tus answer's.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Interop, h};
use crate::http::error::ApiError;
use crate::http::resumable::{Failed, Why};

const TYPES: &str = "https://iana.org/assignments/http-problem-types#";

/// What a draft client is told about a refusal; `provided`: the offset its request named.
pub(super) fn answer(v: Interop, failed: Failed, provided: Option<u64>) -> Response {
    let Failed { api, why } = failed;
    match why {
        Why::Offset(expected) => {
            let mut res = typed(
                v.0 >= 6,
                api,
                "mismatching-upload-offset",
                "offset from request does not match offset of resource",
                &[
                    ("expected-offset", json!(expected)),
                    ("provided-offset", json!(provided)),
                ],
            );
            res.headers_mut()
                .insert(h("upload-offset"), expected.into());
            v.mark(res.headers_mut(), false);
            res
        }
        Why::Length => inconsistent(v, api),
        _ => plain(api),
    }
}

/// Lengths that contradict each other (its own type from version 7, else a plain 400).
pub(super) fn inconsistent(v: Interop, api: ApiError) -> Response {
    let api = ApiError {
        status: StatusCode::BAD_REQUEST,
        ..api
    };
    let mut res = typed(
        v.0 >= 7,
        api,
        "inconsistent-upload-length",
        "inconsistent length values for upload",
        &[],
    );
    v.mark(res.headers_mut(), false);
    res
}

/// Bytes for an upload whose file is committed (its own type in versions 6 to 8).
pub(super) fn completed(v: Interop) -> Response {
    let api = ApiError::bad_request("The upload is complete; it takes no more bytes.");
    let mut res = typed(
        v.0 >= 6,
        api,
        "completed-upload",
        "upload is already completed",
        &[],
    );
    v.mark(res.headers_mut(), true);
    res
}

fn typed(
    known: bool,
    api: ApiError,
    kind: &str,
    title: &str,
    members: &[(&str, Value)],
) -> Response {
    if !known {
        return plain(api);
    }
    let mut body = json!({
        "type": format!("{TYPES}{kind}"),
        "title": title,
        "status": api.status.as_u16(),
        "detail": api.message,
    });
    for (k, val) in members {
        body[*k] = val.clone();
    }
    with_body(api, &body)
}

/// Any other refusal: `about:blank`, the status's phrase, and the message tus clients get.
pub(super) fn plain(api: ApiError) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": api.status.canonical_reason().unwrap_or("Error"),
        "status": api.status.as_u16(),
        "detail": api.message,
    });
    with_body(api, &body)
}

/// The tus answer's status, headers and extensions, with the problem as its body.
fn with_body(api: ApiError, body: &Value) -> Response {
    let (mut parts, _) = api.into_response().into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}
