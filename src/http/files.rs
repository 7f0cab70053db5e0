//! Handlers for `/v3/participants/{userId}/files[/{fileId}]`: list, download URL, upload URL,
//! upload through the service, delete, and erase-all.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{Access, ApiPath, ApiQuery, Caller, RequestId, Target, audit_refusal};
use super::openapi::{
    Binary, ChecksumHeader, FilePath, ListQuery, UploadRequestDoc, UserFilePath, UserPath,
};
use super::shapes::{self, ParticipantFile, RequestParams, StatusMessage};
use super::{AppState, observe_upload};
use crate::audit::Action;
use crate::auth::Principal;
use crate::metrics::InFlight;
use crate::model::{FileId, FileName, disposition};
use crate::pipeline::Declared;
use crate::sniff;

/// The largest JSON body a POST may send.
const MAX_JSON_BODY: usize = 64 * 1024;

const DEFAULT_PAGE_SIZE: usize = 50;

/// Writes the audit line for a finished access and passes the result on.
fn audited<T>(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    file: Option<&FileId>,
    action: Action,
    result: Result<(T, u64), ApiError>,
) -> Result<T, ApiError> {
    let (status, bytes, signature) = match &result {
        Ok((_, bytes)) => (success_status(action), *bytes, None),
        Err(e) => (e.status.as_u16(), 0, e.signature.as_deref()),
    };
    state.audit.record(
        &target
            .audit(request_id, file, action, status, bytes)
            .with_signature(signature),
    );
    result.map(|(t, _)| t)
}

fn success_status(action: Action) -> u16 {
    match action {
        Action::Read => 302,
        Action::UploadUrl | Action::Upload | Action::Replace | Action::UploadCreate => 201,
        Action::UploadAppend | Action::UploadTerminate => 204,
        Action::List
        | Action::ListApp
        | Action::Download
        | Action::DownloadHead
        | Action::Delete
        | Action::Erase
        | Action::Rescan => 200,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    offset_key: Option<String>,
    page_size: Option<String>,
}

pub(super) fn page_size(raw: Option<&str>) -> Result<usize, ApiError> {
    let bad = || ApiError::bad_request("pageSize must be from 5-100 records");
    match raw {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (5..=100).contains(&n) => Ok(n),
            _ => Err(bad()),
        },
    }
}

/// The caller's own files, a page at a time in fileId order (metadata only, no URLs).
#[utoipa::path(get, path = "/v3/participants/self/files", tag = "self", operation_id = "listSelfFiles",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the caller's files", body = shapes::Page,
            example = json!({"items": [{"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"}], "hasNext": false, "requestParams": {"offsetKey": null, "pageSize": 50, "type": "RequestParams"}, "type": "ForwardCursorPagedResourceList"})),
        (status = 400, description = "A malformed offsetKey or pageSize", example = json!({"statusCode": 400, "message": "pageSize must be from 5-100 records", "type": "BadRequestException"})),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the participant role"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn list_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<shapes::Page>, ApiError> {
    list_files(&state, &caller, &request_id, "self", params).await
}

/// A participant's files, a page at a time in fileId order (metadata only, no URLs).
#[utoipa::path(get, path = "/v3/participants/{userId}/files", tag = "participants", operation_id = "listParticipantFiles",
    params(UserPath, ListQuery),
    responses(
        (status = 200, description = "A page of the participant's files (empty for a participant the app does not have)", body = shapes::Page,
            example = json!({"items": [{"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"}], "hasNext": false, "requestParams": {"offsetKey": null, "pageSize": 50, "type": "RequestParams"}, "type": "ForwardCursorPagedResourceList"})),
        (status = 400, description = "A malformed userId, offsetKey or pageSize", example = json!({"statusCode": 400, "message": "pageSize must be from 5-100 records", "type": "BadRequestException"})),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token holds neither the researcher nor the worker role"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<shapes::Page>, ApiError> {
    list_files(&state, &caller, &request_id, &user_id, params).await
}

async fn list_files(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    params: ListParams,
) -> Result<Json<shapes::Page>, ApiError> {
    let (target, _) = Target::resolve_audited(
        state,
        (caller, request_id),
        user_id,
        None,
        Access::Read,
        Action::List,
    )?;
    let query = page_size(params.page_size.as_deref()).and_then(|size| {
        let offset = params
            .offset_key
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| FileId::parse(s).map_err(|e| ApiError::bad_request(format!("offsetKey {e}."))))
            .transpose()?;
        Ok((size, offset))
    });
    let (size, offset) = match query {
        Ok(q) => q,
        Err(e) => {
            let line = target.audit(request_id, None, Action::List, e.status.as_u16(), 0);
            state.audit.record(&line);
            return Err(e);
        }
    };
    let result = state
        .files
        .list(&target.owner, offset.as_ref(), size)
        .await
        .map_err(ApiError::from)
        .map(|page| (page, 0));
    let page = audited(state, &target, request_id, None, Action::List, result)?;
    Ok(Json(shapes::Page {
        items: page
            .items
            .iter()
            .map(|(id, f)| ParticipantFile::stored(&target.owner, id, f))
            .collect(),
        has_next: page.next.is_some(),
        next_page_offset_key: page.next.map(|id| id.to_string()),
        request_params: RequestParams {
            offset_key: offset.map(|o| o.to_string()),
            page_size: size,
            start_time: None,
            end_time: None,
            file_id: None,
            kind: "RequestParams",
        },
        kind: "ForwardCursorPagedResourceList",
    }))
}

/// A download URL for one of the caller's own files: 302 to it, with the ParticipantFile as the
/// body.
#[utoipa::path(get, path = "/v3/participants/self/files/{fileId}", tag = "self", operation_id = "getSelfFile",
    params(FilePath),
    responses(
        (status = 302, description = "`Location` is the download URL (also `downloadUrl` in the body)", body = ParticipantFile,
            headers(("Location" = String, description = "The download URL, valid until `expiresOn`")),
            example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "downloadUrl": "http://127.0.0.1:8080/v3/downloads/eyJ2IjoxfQ.c2lnbmF0dXJl", "expiresOn": "2026-11-26T23:00:00.000Z", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed fileId"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the participant role"),
        (status = 404, description = "No such file (or its first upload has not arrived)"),
        (status = 422, description = "A rescan found the file infected (`InfectedFileException`, naming the signature): it is never served again"),
        (status = 429, description = "The participant's download budget is spent (`Retry-After`)"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn get_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(raw_file): ApiPath<String>,
) -> Result<Response, ApiError> {
    get_file(&state, &caller, &request_id, "self", &raw_file).await
}

/// A download URL for a participant's file: 302 to it, with the ParticipantFile as the body.
#[utoipa::path(get, path = "/v3/participants/{userId}/files/{fileId}", tag = "participants", operation_id = "getParticipantFile",
    params(UserFilePath),
    responses(
        (status = 302, description = "`Location` is the download URL (also `downloadUrl` in the body)", body = ParticipantFile,
            headers(("Location" = String, description = "The download URL, valid until `expiresOn`")),
            example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "downloadUrl": "http://127.0.0.1:8080/v3/downloads/eyJ2IjoxfQ.c2lnbmF0dXJl", "expiresOn": "2026-11-26T23:00:00.000Z", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed userId or fileId"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token holds neither the researcher nor the worker role"),
        (status = 404, description = "No such file (or its first upload has not arrived)"),
        (status = 422, description = "A rescan found the file infected (`InfectedFileException`, naming the signature): it is never served again"),
        (status = 429, description = "The participant's download budget is spent (`Retry-After`)"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    get_file(&state, &caller, &request_id, &user_id, &raw_file).await
}

async fn get_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: &str,
) -> Result<Response, ApiError> {
    let (target, file) = Target::resolve_audited(
        state,
        (caller, request_id),
        user_id,
        Some(raw_file),
        Access::Read,
        Action::Read,
    )?;
    let file = file.expect("asked for with the path's fileId");
    let result = state
        .files
        .download_url(&target.owner, &file, &target.actor)
        .await
        .map_err(ApiError::from)
        .map(|r| (r, 0));
    let (stored, url) = audited(
        state,
        &target,
        request_id,
        Some(&file),
        Action::Read,
        result,
    )?;
    let location = url.url.clone();
    let body = ParticipantFile::stored(&target.owner, &file, &stored).with_download(url);
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadRequest {
    mime_type: Option<serde_json::Value>,
    size: Option<serde_json::Value>,
    sha256: Option<serde_json::Value>,
    file_name: Option<serde_json::Value>,
}

/// Checks a declared SHA-256: standard padded base64 of 32 bytes, as S3 checksums are written.
fn sha256_value(s: &str) -> Option<String> {
    let raw = STANDARD.decode(s).ok()?;
    (raw.len() == 32).then(|| s.to_owned())
}

/// Whether `s` has the media-type syntax the document gives `mimeType`
/// (`openapi::media_type_pattern`): RFC 6838 names as type and subtype, no wildcards, then
/// `; name=value` parameters. A stored type is sent back as a Content-Type and signed into
/// upload URLs, so nothing looser is taken.
fn media_type_syntax(s: &str) -> bool {
    fn name_char(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c)
    }
    fn name(s: &str) -> bool {
        let b = s.as_bytes();
        (1..=127).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|&c| name_char(c))
    }
    fn token(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(name_char)
    }
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or_default();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    name(top)
        && name(sub)
        && parts.all(|p| {
            let p = p.strip_prefix(' ').unwrap_or(p);
            p.split_once('=').is_some_and(|(k, v)| token(k) && token(v))
        })
}

/// A JSON number that is a whole, non-negative count: `16`, and also `16.0`, which JSON Schema's
/// `integer` (the document's type for `size`) allows and some encoders write.
fn whole_number(n: &serde_json::Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    // 2^64 as f64: every whole f64 below it converts exactly.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked: whole, non-negative and below 2^64"
    )]
    (f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0).then_some(f as u64)
}

fn parse_upload_request(body: &[u8]) -> Result<Declared, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid_entity("The request body is not valid JSON."))?;
    if !value.is_object() {
        return Err(ApiError::invalid_entity(
            "The request body must be a JSON object.",
        ));
    }
    let req: UploadRequest = serde_json::from_value(value)
        .map_err(|_| ApiError::invalid_entity("The request body is not valid."))?;
    let mime_type = match req.mime_type {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
            // The type travels inside the upload URL's token; a longer one could make a URL
            // that is refused when used, so it is refused here.
            if s.len() > crate::capability::MAX_MIME_TYPE_LEN {
                return Err(ApiError::invalid_entity(format!(
                    "mimeType must be at most {} characters.",
                    crate::capability::MAX_MIME_TYPE_LEN
                )));
            }
            if !media_type_syntax(&s) || sniff::essence(&s).is_none() {
                return Err(ApiError::invalid_entity(
                    "mimeType is not a valid media type.",
                ));
            }
            s
        }
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::invalid_entity("mimeType is required."));
        }
        Some(_) => {
            return Err(ApiError::invalid_entity(
                "mimeType is not a valid media type.",
            ));
        }
    };
    let size = match req.size {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) if whole_number(&n).is_some() => whole_number(&n),
        Some(_) => {
            return Err(ApiError::invalid_entity(
                "size must be a whole number of bytes.",
            ));
        }
    };
    let sha256 = match req.sha256 {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if sha256_value(&s).is_some() => Some(s),
        Some(_) => {
            return Err(ApiError::invalid_entity(
                "sha256 must be the standard base64 of a SHA-256 digest.",
            ));
        }
    };
    let file_name = match req.file_name {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(
            FileName::parse(&s)
                .map_err(|e| ApiError::invalid_entity(format!("fileName {e}.")))?
                .into_string(),
        ),
        Some(_) => return Err(ApiError::invalid_entity("fileName must be a string.")),
    };
    Ok(Declared {
        mime_type: Some(mime_type),
        size,
        length: None,
        sha256,
        file_name,
    })
}

/// An upload URL for a new file of the caller's, or a replacement; the current file stays until
/// the upload arrives.
#[utoipa::path(post, path = "/v3/participants/self/files/{fileId}", tag = "self", operation_id = "requestSelfUpload",
    params(FilePath),
    request_body(content = UploadRequestDoc, description = "What the upload will be; it must then be sent with `mimeType` as its Content-Type",
        example = json!({"mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0="})),
    responses(
        (status = 201, description = "The pending upload and its `uploadUrl` (one upload, until `expiresOn`)", body = ParticipantFile, example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "uploadUrl": "http://127.0.0.1:8080/v3/uploads/eyJ2IjoxfQ.c2lnbmF0dXJl", "expiresOn": "2026-11-26T23:00:00.000Z", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed fileId (BadRequestException) or body (InvalidEntityException)", example = json!({"statusCode": 400, "message": "mimeType is not a valid media type.", "type": "InvalidEntityException"})),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the participant role"),
        (status = 413, description = "The declared size is over the file size limit, or a quota is spent"),
        (status = 429, description = "The participant holds too many unused upload URLs (`PF_MAX_PENDING_PER_PARTICIPANT`)"),
        (status = 415, description = "mimeType is outside the allowed types (PF_ALLOWED_TYPES)"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn post_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(raw_file): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    post_file(
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

/// An upload URL for a new file of a participant, or a replacement (workers).
#[utoipa::path(post, path = "/v3/participants/{userId}/files/{fileId}", tag = "participants", operation_id = "requestParticipantUpload",
    params(UserFilePath),
    request_body(content = UploadRequestDoc, description = "What the upload will be; it must then be sent with `mimeType` as its Content-Type",
        example = json!({"mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0="})),
    responses(
        (status = 201, description = "The pending upload and its `uploadUrl` (one upload, until `expiresOn`)", body = ParticipantFile, example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "uploadUrl": "http://127.0.0.1:8080/v3/uploads/eyJ2IjoxfQ.c2lnbmF0dXJl", "expiresOn": "2026-11-26T23:00:00.000Z", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed userId or fileId (BadRequestException) or body (InvalidEntityException)", example = json!({"statusCode": 400, "message": "mimeType is not a valid media type.", "type": "InvalidEntityException"})),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the worker role"),
        (status = 413, description = "The declared size is over the file size limit, or a quota is spent"),
        (status = 429, description = "The participant holds too many unused upload URLs (`PF_MAX_PENDING_PER_PARTICIPANT`)"),
        (status = 415, description = "mimeType is outside the allowed types (PF_ALLOWED_TYPES)"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn post(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    post_file(
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

async fn post_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The IETF draft's creation, as its examples send it (the target resource is the file).
    if super::draft::is_draft(headers) {
        let res = super::draft::create_at_file(
            state, caller, request_id, user_id, raw_file, headers, body,
        );
        return Ok(res.await);
    }
    let (target, file) = Target::resolve_audited(
        state,
        (caller, request_id),
        user_id,
        Some(raw_file),
        Access::Write,
        Action::UploadUrl,
    )?;
    let file = file.expect("asked for with the path's fileId");
    let result = async {
        let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|_| {
                ApiError::invalid_entity("The request body is too large or incomplete.")
            })?;
        let declared = parse_upload_request(&bytes)?;
        let (pending, url) = state
            .files
            .upload_url(&target.owner, &file, &declared, &target.actor)
            .await?;
        Ok((
            ParticipantFile::pending(&target.owner, &file, &pending, url),
            0,
        ))
    }
    .await;
    let body = audited(
        state,
        &target,
        request_id,
        Some(&file),
        Action::UploadUrl,
        result,
    )?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

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
    if super::draft::is_draft(headers) {
        let res = super::draft::create_at_file(
            state, caller, request_id, user_id, raw_file, headers, body,
        );
        return Ok(res.await);
    }
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

/// Deletes one of the caller's files (its bytes, then its row), or cancels an upload that has not
/// arrived.
#[utoipa::path(delete, path = "/v3/participants/self/files/{fileId}", tag = "self", operation_id = "deleteSelfFile",
    params(FilePath),
    responses(
        (status = 200, description = "Deleted (or its upload cancelled)", body = StatusMessage, example = json!({"message": "Participant file deleted.", "type": "StatusMessage"})),
        (status = 400, description = "A malformed path"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the participant role"),
        (status = 404, description = "No such file"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn delete_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(raw_file): ApiPath<String>,
) -> Result<Json<StatusMessage>, ApiError> {
    delete_file(&state, &caller, &request_id, "self", &raw_file).await
}

/// Deletes a participant's file (workers), or cancels an upload that has not arrived.
#[utoipa::path(delete, path = "/v3/participants/{userId}/files/{fileId}", tag = "participants", operation_id = "deleteParticipantFile",
    params(UserFilePath),
    responses(
        (status = 200, description = "Deleted (or its upload cancelled)", body = StatusMessage, example = json!({"message": "Participant file deleted.", "type": "StatusMessage"})),
        (status = 400, description = "A malformed path"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the worker role"),
        (status = 404, description = "No such file"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
) -> Result<Json<StatusMessage>, ApiError> {
    delete_file(&state, &caller, &request_id, &user_id, &raw_file).await
}

async fn delete_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: &str,
) -> Result<Json<StatusMessage>, ApiError> {
    let (target, file) = Target::resolve_audited(
        state,
        (caller, request_id),
        user_id,
        Some(raw_file),
        Access::Write,
        Action::Delete,
    )?;
    let file = file.expect("asked for with the path's fileId");
    let result = state
        .files
        .delete(&target.owner, &file)
        .await
        .map_err(ApiError::from)
        .map(|d| ((), d.map_or(0, |f| f.size)));
    audited(
        state,
        &target,
        request_id,
        Some(&file),
        Action::Delete,
        result,
    )?;
    Ok(Json(StatusMessage::new("Participant file deleted.")))
}

/// Not a route for participants: erasing all files is for workers, at
/// `/v3/participants/{userId}/files`. Registered so that this path answers 403 for DELETE, as it
/// did when `self` was only a value of `{userId}`, rather than 405.
#[utoipa::path(delete, path = "/v3/participants/self/files", tag = "self", operation_id = "eraseSelfFiles",
    responses(
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "Always, for a signed-in caller: erasing all files is for workers, at `/v3/participants/{userId}/files`",
            example = json!({"statusCode": 403, "message": "Erasing all files is for workers, at /v3/participants/{userId}/files.", "type": "UnauthorizedException"}))),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn erase_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
) -> ApiError {
    // Refused, and audited like every other refusal on a participant's files.
    let e = erase_refused();
    audit_refusal(
        &state,
        &caller,
        &request_id,
        "self",
        None,
        Action::Erase,
        &e,
    );
    e
}

fn erase_refused() -> ApiError {
    ApiError::forbidden("Erasing all files is for workers, at /v3/participants/{userId}/files.")
}

/// Erases every file of a participant (account deletion, right to erasure); workers only.
#[utoipa::path(delete, path = "/v3/participants/{userId}/files", tag = "participants", operation_id = "eraseParticipantFiles",
    params(UserPath),
    responses(
        (status = 200, description = "Every file of the participant erased, pending uploads cancelled; `count` files deleted", body = StatusMessage,
            example = json!({"message": "3 participant files deleted.", "count": 3, "type": "StatusMessage"})),
        (status = 400, description = "A malformed userId"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the worker role"),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<StatusMessage>, ApiError> {
    if user_id == "self" {
        let e = erase_refused();
        audit_refusal(
            &state,
            &caller,
            &request_id,
            &user_id,
            None,
            Action::Erase,
            &e,
        );
        return Err(e);
    }
    let (target, _) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
        None,
        Access::Write,
        Action::Erase,
    )?;
    let result = state
        .files
        .erase(&target.owner)
        .await
        .map_err(ApiError::from)
        .map(|n| (n, 0));
    let count = audited(&state, &target, &request_id, None, Action::Erase, result)?;
    let mut message = StatusMessage::new(format!("{count} participant files deleted."));
    message.count = Some(count);
    Ok(Json(message))
}

/// `/v3/participants/{userId}/files/...` with an empty `{fileId}` or one holding a `/`
/// (a path no route matched).
pub fn is_malformed_file_path(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("v3"),
            Some("participants"),
            Some(_),
            Some("files")
        )
    ) && parts.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_bounds() {
        assert_eq!(page_size(None), Ok(50));
        assert_eq!(page_size(Some("5")), Ok(5));
        assert_eq!(page_size(Some("100")), Ok(100));
        for bad in ["4", "101", "-1", "ten", "", "5.0"] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn media_type_syntax_is_the_documented_pattern() {
        for ok in [
            "text/plain",
            "image/jpeg",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "text/plain; charset=utf-8",
            "text/plain;charset=utf-8",
            "a/b; x=1; y=2",
            "Application/Octet-Stream",
            "x!#$&^_.+-/y",
        ] {
            assert!(media_type_syntax(ok), "{ok}");
            assert!(sniff::essence(ok).is_some(), "{ok} does not parse");
        }
        for bad in [
            "",
            "text",
            "text/",
            "/plain",
            " text/plain",
            "text/plain ",
            "*/*",
            "text/*",
            "text/plain; charset",
            "text/plain;  charset=utf-8",
            "text/plain; charset=\"utf-8\"",
            "text/pl ain",
            "-text/plain",
            "a/b/c",
            "t\u{e9}xt/plain",
            &format!("{}/plain", "a".repeat(128)),
        ] {
            assert!(!media_type_syntax(bad), "{bad}");
        }
        assert!(media_type_syntax(&format!("{}/plain", "a".repeat(127))));
    }

    #[test]
    fn upload_request_validation() {
        let ok = parse_upload_request(br#"{"mimeType":"image/jpeg","size":3}"#).unwrap();
        assert_eq!(ok.mime_type.as_deref(), Some("image/jpeg"));
        assert_eq!(ok.size, Some(3));
        let sha = STANDARD.encode([7u8; 32]);
        let with_sha = parse_upload_request(
            format!(r#"{{"mimeType":"text/plain","sha256":"{sha}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(with_sha.sha256, Some(sha));
        // JSON Schema's `integer` takes 3.0; so does the service (schemathesis found the 400).
        let float = parse_upload_request(br#"{"mimeType":"text/plain","size":13187.0}"#).unwrap();
        assert_eq!(float.size, Some(13187));
        let named = parse_upload_request(
            r#"{"mimeType":"text/plain","fileName":"a/Ro\u0308ntgen.pdf"}"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(named.file_name.as_deref(), Some("R\u{f6}ntgen.pdf"));
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{}",
            br#"{"mimeType":""}"#,
            br#"{"mimeType":"jpeg"}"#,
            br#"{"mimeType":" text/plain"}"#,
            br#"{"mimeType":"text/*"}"#,
            br#"{"mimeType":5}"#,
            br#"{"mimeType":"image/jpeg","size":-1}"#,
            br#"{"mimeType":"image/jpeg","size":"3"}"#,
            br#"{"mimeType":"image/jpeg","size":3.5}"#,
            br#"{"mimeType":"image/jpeg","size":-1.0}"#,
            br#"{"mimeType":"image/jpeg","size":1e30}"#,
            br#"{"mimeType":"image/jpeg","sha256":"abc"}"#,
            br#"{"mimeType":"image/jpeg","fileName":"a\u0007.txt"}"#,
            br#"{"mimeType":"image/jpeg","fileName":""}"#,
            br#"{"mimeType":"image/jpeg","fileName":5}"#,
            format!(r#"{{"mimeType":"image/jpeg; x={}"}}"#, "a".repeat(3000)).as_bytes(),
        ] {
            let err = parse_upload_request(bad).unwrap_err();
            assert_eq!(
                err.kind,
                "InvalidEntityException",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
