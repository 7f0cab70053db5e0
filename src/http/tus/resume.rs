//! tus 1.0.0 on an upload's URL: offset (HEAD), append (PATCH) and termination (DELETE); a
//! request naming `Upload-Draft-Interop-Version` never gets here (`http/draft/route.rs`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{OFFSET_STREAM, append, h, tus, wrong_version};
use crate::audit::Action;
use crate::auth::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, Caller, RequestId};
use crate::http::openapi::{TusHeader, TusPatchHeaders, UploadPath, UserUploadPath};
use crate::http::resumable::{self, number, text, upload_id};

#[utoipa::path(head, path = "/v3/participants/self/uploads/{uploadId}", tag = "resumable", operation_id = "tusHeadSelf",
    params(UploadPath, TusHeader),
    responses(
        (status = 400, description = "A malformed userId or header"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 200, description = "`Upload-Offset` (durable bytes), `Upload-Length` when known, `Upload-Expires`"),
        (status = 404, description = "No such upload of the caller's"),
        (status = 410, description = "The upload expired")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn head_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    head(&state, &caller, &request_id, "self", &id, &headers).await
}

#[utoipa::path(head, path = "/v3/participants/{userId}/uploads/{uploadId}", tag = "resumable", operation_id = "tusHead",
    params(UserUploadPath, TusHeader),
    responses(
        (status = 400, description = "A malformed userId or header"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 200, description = "`Upload-Offset` (durable bytes), `Upload-Length` when known, `Upload-Expires`"),
        (status = 404, description = "No such upload of that participant's"),
        (status = 410, description = "The upload expired")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn head_for(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    head(&state, &caller, &request_id, &user, &id, &headers).await
}

async fn head(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    headers: &HeaderMap,
) -> Response {
    if let Some(res) = wrong_version(headers) {
        return tus(Ok(res));
    }
    tus(async {
        let target = resumable::target(state, caller, request_id, user, Action::UploadAppend)?;
        let row = resumable::settled(state, &target, request_id, &upload_id(id)?).await?;
        let mut res = StatusCode::OK.into_response();
        let h2 = res.headers_mut();
        h2.insert(h("upload-offset"), row.value.offset.into());
        match row.value.length {
            Some(l) => h2.insert(h("upload-length"), l.into()),
            None => h2.insert(h("upload-defer-length"), HeaderValue::from_static("1")),
        };
        h2.insert(h("upload-expires"), resumable::expires(&row.value));
        h2.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }
    .await)
}

#[utoipa::path(patch, path = "/v3/participants/self/uploads/{uploadId}", tag = "resumable", operation_id = "tusPatchSelf",
    params(UploadPath, TusHeader, TusPatchHeaders),
    request_body(content = inline(crate::http::openapi::Binary), content_type = "application/offset+octet-stream",
        description = "The next bytes of the upload, from `Upload-Offset`.", example = "Hello from alice"),
    responses(
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 204, description = "Appended; `Upload-Offset` is the new offset (the file is committed when it reached `Upload-Length`)"),
        (status = 400, description = "A bad header, or the completed file failed a check"),
        (status = 404, description = "No such upload of the caller's"),
        (status = 409, description = "`Upload-Offset` is not the upload's offset"),
        (status = 410, description = "The upload expired"),
        (status = 413, description = "Bytes past `Upload-Length`"),
        (status = 415, description = "Not `application/offset+octet-stream`, or the file's type is not allowed"),
        (status = 422, description = "The completed file is infected"),
        (status = 423, description = "Another request is appending"),
        (status = 460, description = "`Upload-Checksum` does not match"),
        (status = 503, description = "A backend or the scanner is unavailable")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn patch_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    patch(&state, &caller, &request_id, "self", &id, &headers, body).await
}

#[utoipa::path(patch, path = "/v3/participants/{userId}/uploads/{uploadId}", tag = "resumable", operation_id = "tusPatch",
    params(UserUploadPath, TusHeader, TusPatchHeaders),
    request_body(content = inline(crate::http::openapi::Binary), content_type = "application/offset+octet-stream",
        description = "The next bytes of the upload, from `Upload-Offset`.", example = "Hello from alice"),
    responses(
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 204, description = "Appended; `Upload-Offset` is the new offset"),
        (status = 400, description = "A bad header, or the completed file failed a check"),
        (status = 404, description = "No such upload of that participant's"),
        (status = 409, description = "`Upload-Offset` is not the upload's offset"),
        (status = 410, description = "The upload expired"),
        (status = 413, description = "Bytes past `Upload-Length`"),
        (status = 415, description = "Not `application/offset+octet-stream`, or the file's type is not allowed"),
        (status = 422, description = "The completed file is infected"),
        (status = 423, description = "Another request is appending"),
        (status = 460, description = "`Upload-Checksum` does not match"),
        (status = 503, description = "A backend or the scanner is unavailable")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn patch_for(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    patch(&state, &caller, &request_id, &user, &id, &headers, body).await
}

async fn patch(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if let Some(res) = wrong_version(headers) {
        return tus(Ok(res));
    }
    tus(async {
        let target = resumable::target(state, caller, request_id, user, Action::UploadAppend)?;
        if text(headers, "content-type") != Some(OFFSET_STREAM) {
            return Err(ApiError::unsupported_media_type(
                "A PATCH carries Content-Type: application/offset+octet-stream.",
            ));
        }
        let offset = number(headers, "upload-offset")?
            .ok_or_else(|| ApiError::bad_request("Upload-Offset is required."))?;
        let id = upload_id(id)?;
        let new_offset = append(state, &target, request_id, &id, headers, offset, body).await?;
        let mut res = StatusCode::NO_CONTENT.into_response();
        res.headers_mut()
            .insert(h("upload-offset"), new_offset.into());
        Ok(res)
    }
    .await)
}

#[utoipa::path(delete, path = "/v3/participants/self/uploads/{uploadId}", tag = "resumable", operation_id = "tusTerminateSelf",
    params(UploadPath, TusHeader),
    responses(
        (status = 400, description = "A malformed userId or header"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 204, description = "Terminated: every stored byte of the upload removed"),
        (status = 404, description = "No such upload of the caller's"),
        (status = 410, description = "The upload expired")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn terminate_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    terminate(&state, &caller, &request_id, "self", &id, &headers).await
}

#[utoipa::path(delete, path = "/v3/participants/{userId}/uploads/{uploadId}", tag = "resumable", operation_id = "tusTerminate",
    params(UserUploadPath, TusHeader),
    responses(
        (status = 400, description = "A malformed userId or header"),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0` (the answer names `Tus-Version`)"),
        (status = 204, description = "Terminated: every stored byte of the upload removed"),
        (status = 404, description = "No such upload of that participant's"),
        (status = 410, description = "The upload expired")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn terminate_for(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath((user, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    terminate(&state, &caller, &request_id, &user, &id, &headers).await
}

async fn terminate(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    id: &str,
    headers: &HeaderMap,
) -> Response {
    if let Some(res) = wrong_version(headers) {
        return tus(Ok(res));
    }
    tus(async {
        let target = resumable::target(state, caller, request_id, user, Action::UploadTerminate)?;
        resumable::terminate(state, &target, request_id, id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await)
}
