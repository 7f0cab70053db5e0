//! Handlers for `/v3/participants/{userId}/files[/{fileId}]`: list, download URL, upload URL,
//! upload through the service, delete, and erase-all.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{Access, ApiPath, ApiQuery, Caller, RequestId, Target};
use super::openapi::{FilePath, ListQuery, UserFilePath, UserPath};
use super::shapes::{self, ParticipantFile, RequestParams};
use crate::audit::Action;
use crate::auth::Principal;
use crate::model::FileId;

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

mod delete;
mod post;
mod put;
#[cfg(test)]
mod tests;

pub use delete::*;
pub use post::*;
pub use put::*;

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
