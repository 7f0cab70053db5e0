//! DELETE of one file, and erase of every file of a participant.

use axum::Json;
use axum::extract::State;

use super::audited;
use crate::audit::Action;
use crate::auth::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Access, ApiPath, Caller, RequestId, Target, audit_refusal};
use crate::http::openapi::{FilePath, UserFilePath, UserPath};
use crate::http::shapes::StatusMessage;

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
        .map_err(ApiError::from);
    // The audit line says whether the participant's key went with the files.
    let (status, key_destroyed) = match &result {
        Ok(erased) => (200, erased.key_destroyed),
        Err(e) => (e.status.as_u16(), None),
    };
    state.audit.record(
        &target
            .audit(&request_id, None, Action::Erase, status, 0)
            .with_key_destroyed(key_destroyed),
    );
    let count = result?.files;
    let mut message = StatusMessage::new(format!("{count} participant files deleted."));
    message.count = Some(count);
    Ok(Json(message))
}
