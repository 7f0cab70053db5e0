//! tus 1.0.0 over the resumable-upload core: `/v3/participants/{userId}/uploads[/{uploadId}]`.
//! Only the protocol lives here (headers, status codes, metadata); every byte goes through
//! [`crate::files::FileService::append_upload`], through the adapter both protocols share
//! ([`super::resumable`]). A request that names `Upload-Draft-Interop-Version` is the IETF
//! draft's ([`super::draft`]), at the same URLs.

mod resume;

pub use resume::*;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiPath, Caller, RequestId, Target};
use super::openapi::{TusCreateHeaders, TusHeader, UserPath};
use super::resumable::{self, number, text};
use crate::audit::Action;
use crate::auth::Principal;
use crate::files::resumable::{Append, Checksum, ChecksumAlgorithm, NewUpload};
use crate::keys::UploadId;
use crate::model::{FileId, FileName};

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

/// `Upload-Metadata`: `key base64value` pairs, comma separated; a key may come without a value.
pub(super) fn metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, ApiError> {
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
        let target = resumable::target(state, caller, request_id, user, Action::UploadCreate)?;
        let created = resumable::create(state, &target, request_id, new_upload(headers)).await?;
        let id = created.value.id.clone();
        let mut res = StatusCode::CREATED.into_response();
        res.headers_mut()
            .insert(header::LOCATION, resumable::location(state, user, &id));
        res.headers_mut()
            .insert(h("upload-expires"), resumable::expires(&created.value));
        // creation-with-upload: the body is the upload's first bytes. An upload of no bytes
        // is complete as soon as it exists.
        if text(headers, "content-type") == Some(OFFSET_STREAM) || created.value.length == Some(0) {
            let offset = match append(state, &target, request_id, &id, headers, 0, body).await {
                Ok(offset) => offset,
                Err(e) => {
                    // A refusal carries no Location: nothing of the upload may stay behind.
                    resumable::abandon(state, &target, &id).await;
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

/// Appends a body (tus headers) through the shared adapter; returns the new offset.
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
        ..Append::default()
    };
    Ok(resumable::append(state, target, request_id, id, req, body)
        .await?
        .offset)
}
