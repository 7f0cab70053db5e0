//! Draft requests to an upload's URL: offset retrieval (HEAD), append (PATCH) and
//! cancellation (DELETE), on the same upload as tus, whichever protocol created it.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{Interop, PARTIAL_UPLOAD, h, problem};
use crate::audit::Action;
use crate::auth::Principal;
use crate::files::resumable::Append;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::RequestId;
use crate::http::files::body_length;
use crate::http::resumable::{self, number, text, upload_id};
use crate::http::shapes::ParticipantFile;
use crate::model::{ResumableUpload, UploadOutcome};

fn version(headers: &HeaderMap) -> Interop {
    Interop::of(headers).expect("dispatched on is_draft")
}

/// How long the upload may still take, for `Upload-Limit`.
fn left(upload: &ResumableUpload) -> std::time::Duration {
    (upload.expires_on - Utc::now())
        .to_std()
        .unwrap_or_default()
}

pub(in crate::http) async fn head(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    headers: &HeaderMap,
) -> Response {
    let v = version(headers);
    let result = async {
        let target = resumable::target(state, caller, request_id, user, Action::UploadAppend)?;
        resumable::settled(state, &target, request_id, &upload_id(id)?).await
    }
    .await;
    let row = match result {
        Ok(row) => row.value,
        Err(e) => return problem::plain(e),
    };
    let mut res = StatusCode::NO_CONTENT.into_response();
    let out = res.headers_mut();
    out.insert(h("upload-offset"), row.offset.into());
    v.mark(out, row.outcome == Some(UploadOutcome::Committed));
    if let Some(length) = row.length
        && v.has_length_and_partial_type()
    {
        out.insert(h("upload-length"), length.into());
    }
    v.limits(state, out, left(&row));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(in crate::http) async fn patch(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let v = version(headers);
    let offset = match number(headers, "upload-offset") {
        Ok(Some(offset)) => offset,
        Ok(None) => return problem::plain(ApiError::bad_request("Upload-Offset is required.")),
        Err(e) => return problem::plain(e),
    };
    match appended(
        state,
        (caller, request_id),
        (v, user, id),
        offset,
        headers,
        body,
    )
    .await
    {
        Ok(res) | Err(res) => res,
    }
}

async fn appended(
    state: &AppState,
    (caller, request_id): (&Principal, &RequestId),
    (v, user, id): (Interop, &str, &str),
    offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let plain = problem::plain;
    let target =
        resumable::target(state, caller, request_id, user, Action::UploadAppend).map_err(plain)?;
    if v.has_length_and_partial_type()
        && text(headers, "content-type").is_some_and(|t| {
            !t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(PARTIAL_UPLOAD)
        })
    {
        return Err(plain(ApiError::unsupported_media_type(
            "An append carries Content-Type: application/partial-upload.",
        )));
    }
    let complete = v.complete(headers).map_err(plain)?;
    let id = upload_id(id).map_err(plain)?;
    let content_length = body_length(&body);
    let row = state
        .files
        .upload_state(&target.owner, &id)
        .await
        .map_err(|e| plain(e.into()))?;
    let committed = row.value.outcome == Some(UploadOutcome::Committed);
    // A client that lost the final answer may send an empty completing append again: it is
    // told the upload is complete. Bytes for a completed upload are refused.
    if committed && (!complete || content_length != Some(0)) {
        return Err(problem::completed(v));
    }
    let declared = number(headers, "upload-length").map_err(plain)?;
    let length = match (complete, content_length) {
        (true, Some(n)) => offset.checked_add(n),
        _ => declared,
    };
    if declared.is_some() && length != declared {
        return Err(problem::inconsistent(
            v,
            ApiError::bad_request("Upload-Length and the content disagree."),
        ));
    }
    let req = Append {
        offset,
        length,
        content_length,
        checksum: None,
        sha256: super::meta::repr_digest(headers).map_err(plain)?,
        ends: complete,
    };
    let appended = resumable::append(state, &target, request_id, &id, req, body)
        .await
        .map_err(|f| problem::answer(v, f, Some(offset)))?;
    let mut res = match appended.committed {
        Some(c) => (
            StatusCode::CREATED,
            Json(ParticipantFile::stored(
                &target.owner,
                &appended.file_id,
                &c.file,
            )),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    let done = committed || res.status() == StatusCode::CREATED;
    if complete && !done {
        // The client said this was the end, but the upload's length is further on.
        return Err(problem::inconsistent(
            v,
            ApiError::bad_request("The upload's length is past this request's end."),
        ));
    }
    res.headers_mut()
        .insert(h("upload-offset"), appended.offset.into());
    v.mark(res.headers_mut(), done);
    Ok(res)
}

pub(in crate::http) async fn terminate(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    _headers: &HeaderMap,
) -> Response {
    let result = async {
        let target = resumable::target(state, caller, request_id, user, Action::UploadTerminate)?;
        resumable::terminate(state, &target, request_id, id).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem::plain(e),
    }
}
