//! PUT through the service: the body streams through the pipeline into a committed file.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::audited;
use super::post::sha256_value;
use crate::audit::Action;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::{Access, ApiPath, Caller, RequestId, Target};
use crate::http::openapi::{Binary, ChecksumHeader, FilePath, UserFilePath};
use crate::http::shapes::ParticipantFile;
use crate::http::{AppState, observe_upload};
use crate::metrics::InFlight;
use crate::model::{FileId, FileName, disposition};
use crate::pipeline::Declared;
use crate::sniff;

/// A Content-Length over the limit is refused before the body is read.
pub fn check_content_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::too_large(limit)),
        _ => Ok(()),
    }
}

/// The body's length as the HTTP framing fixes it (a Content-Length), when it does.
pub fn body_length(body: &Body) -> Option<u64> {
    axum::body::HttpBody::size_hint(body).exact()
}

/// The media type a PUT declares in Content-Type, if any.
pub fn content_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Content-Type is not a valid media type."))?;
            if sniff::essence(s).is_none() {
                return Err(ApiError::bad_request(
                    "Content-Type is not a valid media type.",
                ));
            }
            Ok(Some(s.to_owned()))
        }
    }
}

/// The name a PUT gives its file in `Content-Disposition` (`filename*`, else `filename`).
fn declared_name(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(header) = headers.get(header::CONTENT_DISPOSITION) else {
        return Ok(None);
    };
    let name = disposition::file_name(header.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    name.map(|n| FileName::parse(&n).map(FileName::into_string))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("Content-Disposition: the filename {e}.")))
}

/// Uploads the body through the service's pipeline (sniffed, counted, hashed, scanned) as a new
/// file of the caller's or a replacement.
#[utoipa::path(put, path = "/v3/participants/self/files/{fileId}", tag = "self", operation_id = "uploadSelfFile",
    params(FilePath, ChecksumHeader),
    request_body(content = inline(Binary), content_type = "application/octet-stream",
        description = "The file's bytes. Content-Type is the declared media type (any `type/subtype`; sniffed, and refused with 415 when the content contradicts it or it is not allowed); without one, the sniffed type is stored.",
        example = "Hello from alice"),
    responses(
        (status = 201, description = "The stored file, on create and on replace", body = ParticipantFile, example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed fileId, Content-Type or x-amz-checksum-sha256, or a body that does not match the checksum"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the participant role"),
        (status = 408, description = "The body stopped arriving; nothing was kept"),
        (status = 409, description = "The upload was stopped before it was stored: the participant's files were erased, or `reconcile` found it abandoned"),
        (status = 413, description = "Over the file size limit (Content-Length or the body) or a quota; nothing was kept"),
        (status = 415, description = "The content contradicts the Content-Type, or the type is not allowed"),
        (status = 422, description = "The scanner found a virus (named in the message); nothing was kept"),
        (status = 503, description = "The index, the store or the scanner is unavailable, or too many uploads are in flight (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn put_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(raw_file): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_file(
        &state,
        &caller,
        &request_id,
        "self",
        &raw_file,
        &headers,
        body,
    )
    .await
}

/// Uploads the body through the service's pipeline as a new file of a participant or a
/// replacement (workers).
#[utoipa::path(put, path = "/v3/participants/{userId}/files/{fileId}", tag = "participants", operation_id = "uploadParticipantFile",
    params(UserFilePath, ChecksumHeader),
    request_body(content = inline(Binary), content_type = "application/octet-stream",
        description = "The file's bytes. Content-Type is the declared media type (any `type/subtype`; sniffed, and refused with 415 when the content contradicts it or it is not allowed); without one, the sniffed type is stored.",
        example = "Hello from alice"),
    responses(
        (status = 201, description = "The stored file, on create and on replace", body = ParticipantFile, example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed userId, fileId, Content-Type or x-amz-checksum-sha256, or a body that does not match the checksum"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the worker role"),
        (status = 408, description = "The body stopped arriving; nothing was kept"),
        (status = 409, description = "The upload was stopped before it was stored: the participant's files were erased, or `reconcile` found it abandoned"),
        (status = 413, description = "Over the file size limit (Content-Length or the body) or a quota; nothing was kept"),
        (status = 415, description = "The content contradicts the Content-Type, or the type is not allowed"),
        (status = 422, description = "The scanner found a virus (named in the message); nothing was kept"),
        (status = 503, description = "The index, the store or the scanner is unavailable, or too many uploads are in flight (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_file(
        &state,
        &caller,
        &request_id,
        &user_id,
        &raw_file,
        &headers,
        body,
    )
    .await
}

async fn put_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, file) = Target::resolve_audited(
        state,
        (caller, request_id),
        user_id,
        Some(raw_file),
        Access::Write,
        Action::Upload,
    )?;
    let file = file.expect("asked for with the path's fileId");
    // The upload and its audit line run on a task of their own: a client that leaves after its
    // last byte stops neither the commit nor the audit line that records it.
    let body = crate::detached::run(&state.cleanup, {
        let (state, request_id, headers) = (
            Arc::clone(state),
            RequestId(request_id.0.clone()),
            headers.clone(),
        );
        async move {
            let result = upload_body(&state, &target, &file, &headers, body).await;
            let action = match &result {
                Ok((c, _)) if c.replaced => Action::Replace,
                _ => Action::Upload,
            };
            audited(&state, &target, &request_id, Some(&file), action, result)
                .map(|committed| ParticipantFile::stored(&target.owner, &file, &committed.file))
        }
    })
    .await
    .map_err(crate::files::FilesError::from)??;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn upload_body(
    state: &AppState,
    target: &Target,
    file: &FileId,
    headers: &HeaderMap,
    body: Body,
) -> Result<(crate::files::Committed, u64), ApiError> {
    check_content_length(headers, state.files.max_file_size())?;
    let sha256 = match headers.get("x-amz-checksum-sha256") {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(sha256_value).ok_or_else(|| {
            ApiError::bad_request(
                "x-amz-checksum-sha256 must be the standard base64 of a SHA-256 digest.",
            )
        })?),
    };
    let declared = Declared {
        mime_type: content_type(headers)?,
        size: None,
        length: body_length(&body),
        sha256,
        file_name: declared_name(headers)?,
    };
    let _in_flight = InFlight::start(&state.metrics.uploads_in_flight);
    let committed = state
        .files
        .upload(&target.owner, file, body.into_data_stream(), &declared)
        .await
        .map_err(ApiError::from);
    observe_upload(state, &committed);
    let committed = committed?;
    let size = committed.file.size;
    Ok((committed, size))
}
