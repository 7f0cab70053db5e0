//! tus 1.0.0 over the resumable-upload core: `/v3/participants/{userId}/uploads[/{uploadId}]`.
//! Only the protocol lives here (headers, status codes, metadata); every byte goes through
//! [`crate::files::FileService::append_upload`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AppState;
use super::error::ApiError;
use super::extract::{Access, ApiPath, Caller, RequestId, Target};
use super::openapi::{
    TusCreateHeaders, TusHeader, TusPatchHeaders, UploadPath, UserPath, UserUploadPath,
};
use crate::audit::Action;
use crate::auth::Principal;
use crate::files::resumable::{
    Append, Checksum, ChecksumAlgorithm, NewUpload, Progress, Requester,
};
use crate::keys::UploadId;
use crate::model::{FileId, FileName, Issuer, ResumableUpload};

pub(super) const VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,expiration,termination,checksum";
const OFFSET_STREAM: &str = "application/offset+octet-stream";

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// Every tus answer names the protocol version, refusals included.
fn tus(result: Result<Response, ApiError>) -> Response {
    let mut res = result.unwrap_or_else(IntoResponse::into_response);
    res.headers_mut()
        .insert(h("tus-resumable"), HeaderValue::from_static(VERSION));
    res
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The 412 for a request without `Tus-Resumable: 1.0.0`.
fn wrong_version(headers: &HeaderMap) -> Option<Response> {
    if text(headers, "tus-resumable") == Some(VERSION) {
        return None;
    }
    let mut res =
        ApiError::precondition_failed("Tus-Resumable: 1.0.0 is required.").into_response();
    res.headers_mut()
        .insert(h("tus-version"), HeaderValue::from_static(VERSION));
    Some(res)
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    text(headers, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number.")))
        })
        .transpose()
}

/// `Upload-Metadata`: `key base64value` pairs, comma separated; a key may come without a value.
fn metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = text(headers, "upload-metadata") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let mut it = pair.trim().splitn(2, ' ');
            let key = it.next().unwrap_or_default().to_owned();
            let value = match it.next() {
                Some(v) => String::from_utf8(STANDARD.decode(v.trim()).map_err(|_| {
                    ApiError::bad_request(format!("Upload-Metadata: {key} is not base64."))
                })?)
                .map_err(|_| {
                    ApiError::bad_request(format!("Upload-Metadata: {key} is not UTF-8."))
                })?,
                None => String::new(),
            };
            Ok((key, value))
        })
        .collect()
}

fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>, ApiError> {
    let Some(raw) = text(headers, "upload-checksum") else {
        return Ok(None);
    };
    let (algorithm, digest) = raw
        .split_once(' ')
        .ok_or_else(|| ApiError::bad_request("Upload-Checksum is `algorithm base64digest`."))?;
    let algorithm = match algorithm {
        "sha1" => ChecksumAlgorithm::Sha1,
        "sha256" => ChecksumAlgorithm::Sha256,
        _ => {
            return Err(ApiError::bad_request(
                "Upload-Checksum: the algorithm must be sha1 or sha256.",
            ));
        }
    };
    let digest = STANDARD
        .decode(digest.trim())
        .map_err(|_| ApiError::bad_request("Upload-Checksum: the digest is not base64."))?;
    Ok(Some(Checksum { algorithm, digest }))
}

fn expires(upload: &ResumableUpload) -> HeaderValue {
    let at = std::time::SystemTime::from(upload.expires_on);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).expect("an HTTP date is a header value")
}

fn upload_id(raw: &str) -> Result<UploadId, ApiError> {
    UploadId::parse(raw).ok_or_else(ApiError::not_found)
}

fn target(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    action: Action,
) -> Result<Target, ApiError> {
    Target::resolve_audited(
        state,
        (caller, request_id),
        user,
        None,
        Access::Write,
        action,
    )
    .map(|(t, _)| t)
}

/// The file an upload becomes: `fileId`, else the one `filename` (what Uppy and tus-js-client
/// send) gives by the naming rule ([`FileName::file_id`]); `filename` is the file's name.
fn new_upload(headers: &HeaderMap) -> Result<NewUpload, ApiError> {
    let meta = metadata(headers)?;
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| meta.iter().find(|(m, _)| m == k).map(|(_, v)| v.clone()))
    };
    // An empty `filename` (a key without a value) names nothing.
    let file_name = get(&["filename"])
        .filter(|n| !n.is_empty())
        .map(|n| FileName::parse(&n))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("filename {e}.")))?;
    let file_id = match (get(&["fileId"]), &file_name) {
        (Some(raw), _) => {
            FileId::parse(&raw).map_err(|e| ApiError::bad_request(format!("fileId {e}.")))?
        }
        (None, Some(name)) => name.file_id(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "Upload-Metadata must name the fileId or the filename.",
            ));
        }
    };
    let sha256 = get(&["sha256"]);
    if sha256
        .as_deref()
        .is_some_and(|s| STANDARD.decode(s).map_or(true, |d| d.len() != 32))
    {
        return Err(ApiError::bad_request(
            "sha256 must be the standard base64 of 32 bytes.",
        ));
    }
    let length = number(headers, "upload-length")?;
    let deferred = match text(headers, "upload-defer-length") {
        None => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::bad_request("Upload-Defer-Length can only be 1.")),
    };
    if length.is_some() == deferred {
        return Err(ApiError::bad_request(
            "Send Upload-Length, or Upload-Defer-Length: 1.",
        ));
    }
    Ok(NewUpload {
        file_id,
        file_name: file_name.map(FileName::into_string),
        mime_type: get(&["mimeType", "filetype", "contentType"]),
        sha256,
        length,
    })
}

#[utoipa::path(options, path = "/v3/participants/self/uploads", tag = "resumable", operation_id = "tusOptionsSelf",
    responses((status = 204, description = "The tus versions, extensions and limits this service supports")))]
pub async fn options_self(State(state): State<AppState>) -> Response {
    options_answer(&state)
}

#[utoipa::path(options, path = "/v3/participants/{userId}/uploads", tag = "resumable", operation_id = "tusOptions",
    params(UserPath),
    responses((status = 204, description = "The tus versions, extensions and limits this service supports"),
        (status = 400, description = "A malformed userId")))]
pub async fn options(State(state): State<AppState>, ApiPath(user): ApiPath<String>) -> Response {
    if let Err(e) = crate::model::UserId::parse(&user) {
        return tus(Err(ApiError::bad_request(format!("userId {e}."))));
    }
    options_answer(&state)
}

fn options_answer(state: &AppState) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let headers = res.headers_mut();
    headers.insert(h("tus-version"), HeaderValue::from_static(VERSION));
    headers.insert(h("tus-extension"), HeaderValue::from_static(EXTENSIONS));
    headers.insert(h("tus-max-size"), state.files.max_file_size().into());
    headers.insert(
        h("tus-checksum-algorithm"),
        HeaderValue::from_static("sha1,sha256"),
    );
    tus(Ok(res))
}

#[utoipa::path(post, path = "/v3/participants/self/uploads", tag = "resumable", operation_id = "tusCreateSelf",
    params(TusHeader, TusCreateHeaders),
    responses(
        (status = 403, description = "The token lacks the role: participant for self, worker for another participant"),
        (status = 201, description = "Created; `Location` names the upload, `Upload-Expires` says until when it may take"),
        (status = 400, description = "Bad metadata, fileId, length or checksum"),
        (status = 401, description = "No valid token"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0`"),
        (status = 413, description = "The length is over the file size limit or a quota"),
        (status = 415, description = "The type is not allowed"),
        (status = 429, description = "Too many open uploads")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn create_self(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create(&state, &caller, &request_id, "self", &headers, body).await
}

#[utoipa::path(post, path = "/v3/participants/{userId}/uploads", tag = "resumable", operation_id = "tusCreate",
    params(UserPath, TusHeader, TusCreateHeaders),
    responses(
        (status = 201, description = "Created; `Location` names the upload"),
        (status = 400, description = "Bad metadata, fileId, length or checksum"),
        (status = 401, description = "No valid token"),
        (status = 403, description = "The token lacks the worker role"),
        (status = 412, description = "No `Tus-Resumable: 1.0.0`"),
        (status = 413, description = "The length is over the file size limit or a quota"),
        (status = 415, description = "The type is not allowed"),
        (status = 429, description = "Too many open uploads")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn create_for(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiPath(user): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    create(&state, &caller, &request_id, &user, &headers, body).await
}

async fn create(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if let Some(res) = wrong_version(headers) {
        return tus(Ok(res));
    }
    let result = async {
        let target = target(state, caller, request_id, user, Action::UploadCreate)?;
        let new = new_upload(headers);
        let created = match new {
            Ok(new) => {
                let file = new.file_id.clone();
                let issuer = Issuer {
                    actor: target.actor.id.clone(),
                    role: target.actor.role,
                };
                let r = state
                    .files
                    .create_upload(&target.owner, &issuer, new)
                    .await
                    .map_err(ApiError::from);
                record(
                    state,
                    &target,
                    request_id,
                    Some(&file),
                    Action::UploadCreate,
                    &r,
                    0,
                );
                r?
            }
            Err(e) => {
                record::<()>(
                    state,
                    &target,
                    request_id,
                    None,
                    Action::UploadCreate,
                    &Err(e.clone()),
                    0,
                );
                return Err(e);
            }
        };
        let id = created.value.id.clone();
        let location = format!(
            "{}/v3/participants/{user}/uploads/{}",
            state.files.public_url(),
            id.as_str()
        );
        let mut res = StatusCode::CREATED.into_response();
        res.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|_| ApiError::bad_request("bad location"))?,
        );
        res.headers_mut()
            .insert(h("upload-expires"), expires(&created.value));
        // creation-with-upload: the body is the upload's first bytes. An upload of no bytes
        // is complete as soon as it exists.
        if text(headers, "content-type") == Some(OFFSET_STREAM) || created.value.length == Some(0) {
            let offset = match append(state, &target, request_id, &id, headers, 0, body).await {
                Ok(offset) => offset,
                Err(e) => {
                    // A refusal carries no Location: nothing of the upload may stay behind.
                    if let Err(e) = state.files.abandon_upload(&target.owner, &id).await {
                        tracing::warn!(error = %e, "a refused creation's upload was not removed; reconcile will");
                    }
                    return Err(e);
                }
            };
            res.headers_mut().insert(h("upload-offset"), offset.into());
        }
        Ok(res)
    }
    .await;
    tus(result)
}

/// Appends a body and audits it, and the commit when it completed the upload.
async fn append(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    id: &UploadId,
    headers: &HeaderMap,
    offset: u64,
    body: Body,
) -> Result<u64, ApiError> {
    let req = Append {
        offset,
        length: number(headers, "upload-length")?,
        content_length: number(headers, "content-length")?,
        checksum: checksum(headers)?,
    };
    let requester = Requester {
        request_id: request_id.0.clone(),
        actor: target.actor.id.clone(),
        role: target.actor.role,
    };
    let mut progress = Progress::default();
    // Boxed: the append's state machine is large, and every tus route awaits it.
    let result = Box::pin(state.files.append_upload(
        &target.owner,
        id,
        req,
        body.into_data_stream(),
        (describe, &requester),
        &mut progress,
    ))
    .await;
    // A client that left mid-body is told nothing: its line says so, with what was kept.
    let interrupted = matches!(result, Err(crate::files::FilesError::UploadCut));
    let result = result.map_err(ApiError::from);
    let (status, signature) = match &result {
        _ if interrupted => (super::capability::INTERRUPTED, None),
        Ok(_) => (success(Action::UploadAppend), None),
        Err(e) => (e.status.as_u16(), e.signature.as_deref()),
    };
    state.audit.record(
        &target
            .audit(
                request_id,
                progress.file_id.as_ref(),
                Action::UploadAppend,
                status,
                progress.kept,
            )
            .with_signature(signature),
    );
    // The commit's own line is written by the completion, which outlives the request.
    Ok(result?.offset)
}

/// How a refused completion is remembered: as its request was answered.
fn describe(e: crate::files::FilesError) -> crate::model::Refusal {
    ApiError::from(e).refusal()
}

fn record<T>(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    file: Option<&FileId>,
    action: Action,
    result: &Result<T, ApiError>,
    bytes: u64,
) {
    let (status, signature) = match result {
        Ok(_) => (success(action), None),
        Err(e) => (e.status.as_u16(), e.signature.as_deref()),
    };
    state.audit.record(
        &target
            .audit(request_id, file, action, status, bytes)
            .with_signature(signature),
    );
}

fn success(action: Action) -> u16 {
    match action {
        Action::UploadCreate | Action::Upload | Action::Replace => 201,
        Action::UploadAppend | Action::UploadTerminate => 204,
        _ => 200,
    }
}

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
        let target = target(state, caller, request_id, user, Action::UploadAppend)?;
        let id = upload_id(id)?;
        let mut row = state.files.upload_state(&target.owner, &id).await?;
        if let Some(crate::model::UploadOutcome::Refused(r)) = &row.value.outcome {
            return Err(crate::files::FilesError::UploadRefused(r.clone()).into());
        }
        if row.value.is_full() && row.value.outcome.is_none() {
            // Every byte is in but the completion failed (a backend or the scanner was down,
            // or the instance died): the client is told the truth only once it is committed or
            // refused, so it is tried again now.
            let length = row.value.offset;
            append(
                state,
                &target,
                request_id,
                &id,
                &HeaderMap::new(),
                length,
                Body::empty(),
            )
            .await?;
            row = state.files.upload_state(&target.owner, &id).await?;
        }
        let mut res = StatusCode::OK.into_response();
        let h2 = res.headers_mut();
        h2.insert(h("upload-offset"), row.value.offset.into());
        match row.value.length {
            Some(l) => h2.insert(h("upload-length"), l.into()),
            None => h2.insert(h("upload-defer-length"), HeaderValue::from_static("1")),
        };
        h2.insert(h("upload-expires"), expires(&row.value));
        h2.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }
    .await)
}

#[utoipa::path(patch, path = "/v3/participants/self/uploads/{uploadId}", tag = "resumable", operation_id = "tusPatchSelf",
    params(UploadPath, TusHeader, TusPatchHeaders),
    request_body(content = inline(super::openapi::Binary), content_type = "application/offset+octet-stream",
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
    request_body(content = inline(super::openapi::Binary), content_type = "application/offset+octet-stream",
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
        let target = target(state, caller, request_id, user, Action::UploadAppend)?;
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
        let target = target(state, caller, request_id, user, Action::UploadTerminate)?;
        let result = state
            .files
            .terminate_upload(&target.owner, &upload_id(id)?)
            .await
            .map_err(ApiError::from);
        record(
            state,
            &target,
            request_id,
            result.as_ref().ok(),
            Action::UploadTerminate,
            &result,
            0,
        );
        result?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await)
}
