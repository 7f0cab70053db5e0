//! POST of an upload URL: the JSON body's checks, then the pending upload.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{MAX_JSON_BODY, audited};
use crate::audit::Action;
use crate::auth::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Access, ApiPath, Caller, RequestId, Target};
use crate::http::openapi::{FilePath, UploadRequestDoc, UserFilePath};
use crate::http::shapes::ParticipantFile;
use crate::model::FileName;
use crate::pipeline::Declared;
use crate::sniff;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadRequest {
    mime_type: Option<serde_json::Value>,
    size: Option<serde_json::Value>,
    sha256: Option<serde_json::Value>,
    file_name: Option<serde_json::Value>,
}

/// Checks a declared SHA-256: standard padded base64 of 32 bytes, as S3 checksums are written.
pub(super) fn sha256_value(s: &str) -> Option<String> {
    let raw = STANDARD.decode(s).ok()?;
    (raw.len() == 32).then(|| s.to_owned())
}

/// Whether `s` has the media-type syntax the document gives `mimeType`
/// (`openapi::media_type_pattern`): RFC 6838 names as type and subtype, no wildcards, then
/// `; name=value` parameters. A stored type is sent back as a Content-Type and signed into
/// upload URLs, so nothing looser is taken.
pub(super) fn media_type_syntax(s: &str) -> bool {
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

pub(super) fn parse_upload_request(body: &[u8]) -> Result<Declared, ApiError> {
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
    body: Body,
) -> Result<Response, ApiError> {
    post_file(&state, &caller, &request_id, "self", &raw_file, body).await
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
    body: Body,
) -> Result<Response, ApiError> {
    post_file(&state, &caller, &request_id, &user_id, &raw_file, body).await
}

async fn post_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: &str,
    body: Body,
) -> Result<Response, ApiError> {
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
