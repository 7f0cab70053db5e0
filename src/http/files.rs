//! Handlers for `/v3/participants/{userId}/files[/{fileId}]`: list, download URL, upload URL,
//! upload through the service, delete, and erase-all.

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
use super::openapi::{BridgeError, FilePath, UploadRequestDoc, UserPath};
use super::shapes::{self, ParticipantFile, RequestParams, StatusMessage};
use super::{AppState, observe_upload};
use crate::audit::Action;
use crate::metrics::InFlight;
use crate::model::FileId;
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
    let (status, bytes) = match &result {
        Ok((_, bytes)) => (success_status(action), *bytes),
        Err(e) => (e.status.as_u16(), 0),
    };
    state
        .audit
        .record(&target.audit(request_id, file, action, status, bytes));
    result.map(|(t, _)| t)
}

fn success_status(action: Action) -> u16 {
    match action {
        Action::Read => 302,
        Action::UploadUrl | Action::Upload | Action::Replace => 201,
        Action::List | Action::Download | Action::DownloadHead | Action::Delete | Action::Erase => {
            200
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    offset_key: Option<String>,
    page_size: Option<String>,
}

fn page_size(raw: Option<&str>) -> Result<usize, ApiError> {
    let bad = || ApiError::bad_request("pageSize must be from 5-100 records");
    match raw {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (5..=100).contains(&n) => Ok(n),
            _ => Err(bad()),
        },
    }
}

/// The caller's (`self`) or a participant's files, a page at a time in file ID order.
#[utoipa::path(get, path = "/v3/participants/{user_id}/files", tag = "files",
    params(UserPath, ("offsetKey" = Option<String>, Query, description = "The last fileId of the previous page"),
        ("pageSize" = Option<u32>, Query, description = "5 to 100, default 50")),
    responses((status = 200, body = shapes::Page), (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(user_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<shapes::Page>, ApiError> {
    let (target, _) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
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
            let line = target.audit(&request_id, None, Action::List, e.status.as_u16(), 0);
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
    let page = audited(&state, &target, &request_id, None, Action::List, result)?;
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
            kind: "RequestParams",
        },
        kind: "ForwardCursorPagedResourceList",
    }))
}

/// A download URL for the file: 302 to it, with the ParticipantFile as the body.
#[utoipa::path(get, path = "/v3/participants/{user_id}/files/{file_id}", tag = "files",
    params(FilePath),
    responses((status = 302, body = ParticipantFile, headers(("Location" = String, description = "The download URL"))),
        (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 404, body = BridgeError), (status = 429, body = BridgeError), (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (target, file) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
        Some(&raw_file),
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
        &state,
        &target,
        &request_id,
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
}

/// Checks a declared SHA-256: standard padded base64 of 32 bytes, as S3 checksums are written.
fn sha256_value(s: &str) -> Option<String> {
    let raw = STANDARD.decode(s).ok()?;
    (raw.len() == 32).then(|| s.to_owned())
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
            if sniff::essence(&s).is_none() {
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
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
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
    Ok(Declared {
        mime_type: Some(mime_type),
        size,
        length: None,
        sha256,
    })
}

/// An upload URL for a new file or a replacement; the current file stays until it is used.
#[utoipa::path(post, path = "/v3/participants/{user_id}/files/{file_id}", tag = "files",
    params(FilePath), request_body = UploadRequestDoc,
    responses((status = 201, body = ParticipantFile), (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 413, body = BridgeError), (status = 415, body = BridgeError), (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn post(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, file) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
        Some(&raw_file),
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
        &state,
        &target,
        &request_id,
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

/// Uploads the body through the service's pipeline (sniffed, counted, hashed, scanned), as a
/// new file or a replacement.
#[utoipa::path(put, path = "/v3/participants/{user_id}/files/{file_id}", tag = "files",
    params(FilePath,
        ("x-amz-checksum-sha256" = Option<String>, Header, description = "Base64 SHA-256 the body must have")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ParticipantFile), (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 408, body = BridgeError), (status = 413, body = BridgeError), (status = 415, body = BridgeError),
        (status = 422, description = "Infected", body = BridgeError), (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, file) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
        Some(&raw_file),
        Access::Write,
        Action::Upload,
    )?;
    let file = file.expect("asked for with the path's fileId");
    let result = async {
        check_content_length(&headers, state.files.max_file_size())?;
        let sha256 = match headers.get("x-amz-checksum-sha256") {
            None => None,
            Some(v) => Some(v.to_str().ok().and_then(sha256_value).ok_or_else(|| {
                ApiError::bad_request(
                    "x-amz-checksum-sha256 must be the standard base64 of a SHA-256 digest.",
                )
            })?),
        };
        let declared = Declared {
            mime_type: content_type(&headers)?,
            size: None,
            length: body_length(&body),
            sha256,
        };
        let _in_flight = InFlight::start(&state.metrics.uploads_in_flight);
        let committed = state
            .files
            .upload(&target.owner, &file, body.into_data_stream(), &declared)
            .await
            .map_err(ApiError::from);
        observe_upload(&state, &committed);
        let committed = committed?;
        let size = committed.file.size;
        Ok((committed, size))
    }
    .await;
    let action = match &result {
        Ok((c, _)) if c.replaced => Action::Replace,
        _ => Action::Upload,
    };
    let committed = audited(&state, &target, &request_id, Some(&file), action, result)?;
    let body = ParticipantFile::stored(&target.owner, &file, &committed.file);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Deletes the file (its bytes, then its row), or cancels an upload that has not arrived.
#[utoipa::path(delete, path = "/v3/participants/{user_id}/files/{file_id}", tag = "files",
    params(FilePath),
    responses((status = 200, body = StatusMessage), (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 404, body = BridgeError), (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user_id, raw_file)): ApiPath<(String, String)>,
) -> Result<Json<StatusMessage>, ApiError> {
    let (target, file) = Target::resolve_audited(
        &state,
        (&caller, &request_id),
        &user_id,
        Some(&raw_file),
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
        &state,
        &target,
        &request_id,
        Some(&file),
        Action::Delete,
        result,
    )?;
    Ok(Json(StatusMessage::new("Participant file deleted.")))
}

/// Erases every file of a participant (account deletion); workers only.
#[utoipa::path(delete, path = "/v3/participants/{user_id}/files", tag = "files",
    params(UserPath),
    responses((status = 200, body = StatusMessage), (status = 400, body = BridgeError), (status = 401, description = "Missing, malformed, badly signed or expired token", body = BridgeError),
        (status = 403, description = "The token lacks the role", body = BridgeError),
        (status = 503, body = BridgeError)),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(user_id): ApiPath<String>,
) -> Result<Json<StatusMessage>, ApiError> {
    if user_id == "self" {
        let e = ApiError::forbidden(
            "Erasing all files is for workers, at /v3/participants/{userId}/files.",
        );
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
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{}",
            br#"{"mimeType":""}"#,
            br#"{"mimeType":"jpeg"}"#,
            br#"{"mimeType":5}"#,
            br#"{"mimeType":"image/jpeg","size":-1}"#,
            br#"{"mimeType":"image/jpeg","size":"3"}"#,
            br#"{"mimeType":"image/jpeg","sha256":"abc"}"#,
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
