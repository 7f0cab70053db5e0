//! The IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload), every
//! interop version from 3 to 8, on the same upload core and URLs as tus: each client is answered
//! in its own version (README, "Resumable uploads without tus").

mod create;
mod meta;
pub(super) mod openapi;
mod problem;
mod resume;
mod route;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::resumable::text;

use create::{create_at_file, create_at_uploads};
use resume::{head, patch, terminate};
pub(super) use route::dispatch;

/// The request header every draft client sends.
pub const INTEROP_HEADER: &str = "upload-draft-interop-version";
/// The interop versions served: draft-01 (3) to the editor's copy (8).
pub const OLDEST: u8 = 3;
pub const LATEST: u8 = 8;
/// The draft's media type for an append (interop version 6 on).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// A draft request's interop version, one of [`OLDEST`]..=[`LATEST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Interop(u8);

impl Interop {
    /// The version a request names, when it is one served here.
    fn of(headers: &HeaderMap) -> Option<Self> {
        text(headers, INTEROP_HEADER)?
            .parse::<u8>()
            .ok()
            .filter(|v| (OLDEST..=LATEST).contains(v))
            .map(Self)
    }

    /// The draft's answer to "is this the last of the upload": `Upload-Incomplete: ?1` says no
    /// in version 3 (its absence: yes); `Upload-Complete` (required) from version 4.
    fn complete(self, headers: &HeaderMap) -> Result<bool, ApiError> {
        let (name, yes) = if self.0 == 3 {
            ("upload-incomplete", false)
        } else {
            ("upload-complete", true)
        };
        match text(headers, name).map(sf_boolean) {
            Some(Some(flag)) => Ok(flag == yes),
            None if self.0 == 3 => Ok(true),
            None => Err(ApiError::bad_request("Upload-Complete is required.")),
            Some(None) => Err(ApiError::bad_request(format!(
                "{name} is a structured boolean: ?0 or ?1."
            ))),
        }
    }

    /// Says whether the upload is complete, in this version's header.
    fn mark(self, headers: &mut HeaderMap, complete: bool) {
        let flag = |b: bool| HeaderValue::from_static(if b { "?1" } else { "?0" });
        if self.0 == 3 {
            headers.insert(h("upload-incomplete"), flag(!complete));
        } else {
            headers.insert(h("upload-complete"), flag(complete));
        }
    }

    /// `Upload-Limit` (version 6 on; its `expires` became `max-age` in version 7), from the same
    /// settings as tus's `Tus-Max-Size`; `left`: how long the upload may still take.
    fn limits(self, state: &AppState, headers: &mut HeaderMap, left: Duration) {
        if self.0 < 6 {
            return;
        }
        let max = state.files.max_file_size();
        let age = if self.0 == 6 { "expires" } else { "max-age" };
        let value = format!(
            "max-size={max}, max-append-size={max}, {age}={}",
            left.as_secs()
        );
        headers.insert(
            h("upload-limit"),
            HeaderValue::from_str(&value).expect("numbers are a header value"),
        );
    }

    /// Whether `Upload-Length` and `Content-Type: application/partial-upload` exist yet.
    fn has_length_and_partial_type(self) -> bool {
        self.0 >= 6
    }
}

/// A draft request: it names an interop version served here. One naming another version is
/// served as if it named none (the draft forbids a 104 then, and the plain meaning stands).
fn is_draft(headers: &HeaderMap) -> bool {
    Interop::of(headers).is_some()
}

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// RFC 8941 Boolean, parameters ignored.
fn sf_boolean(raw: &str) -> Option<bool> {
    match raw.split(';').next().map(str::trim) {
        Some("?1") => Some(true),
        Some("?0") => Some(false),
        _ => None,
    }
}

/// `OPTIONS` of the creation URL: the limits an upload created there gets (version 6 on).
fn options(state: &AppState, headers: &HeaderMap) -> Response {
    let v = Interop::of(headers).expect("dispatched on is_draft");
    let mut res = StatusCode::NO_CONTENT.into_response();
    v.limits(state, res.headers_mut(), state.files.upload_ttl());
    want_digest(res.headers_mut());
    res
}

/// RFC 9530: the whole file's SHA-256 is welcome (`Repr-Digest`), and checked at completion.
fn want_digest(headers: &mut HeaderMap) {
    headers.insert(
        h("want-repr-digest"),
        HeaderValue::from_static("sha-256=10"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (h(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn versions_outside_three_to_eight_are_not_the_draft() {
        for v in ["2", "9", "x", ""] {
            assert!(!is_draft(&with(&[(INTEROP_HEADER, v)])), "{v}");
        }
        for v in ["3", "5", "8"] {
            assert!(is_draft(&with(&[(INTEROP_HEADER, v)])), "{v}");
        }
    }

    #[test]
    fn completeness_is_read_in_each_version() {
        let v3 = Interop(3);
        assert!(v3.complete(&with(&[])).unwrap());
        assert!(!v3.complete(&with(&[("upload-incomplete", "?1")])).unwrap());
        let v8 = Interop(8);
        assert!(v8.complete(&with(&[])).is_err());
        assert!(v8.complete(&with(&[("upload-complete", "?1")])).unwrap());
        assert!(!v8.complete(&with(&[("upload-complete", "?0")])).unwrap());
        assert!(v8.complete(&with(&[("upload-complete", "true")])).is_err());
    }
}
