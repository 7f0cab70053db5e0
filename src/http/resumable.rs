//! What every resumable-upload protocol (tus 1.0, the IETF draft) does the same way on the
//! upload core: whose upload it is, creation and appends with their audit lines, and a
//! completion that failed for a backend tried again before an offset is told.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use super::error::ApiError;
use super::extract::{Access, RequestId, Target};
use crate::audit::Action;
use crate::auth::Principal;
use crate::files::FilesError;
use crate::files::resumable::{Append, Appended, NewUpload, Progress, Requester};
use crate::keys::UploadId;
use crate::model::{FileId, Issuer, ResumableUpload, UploadOutcome, Versioned};

/// A refused append, with what a protocol needs to say about it beyond the error.
#[derive(Debug)]
pub(super) struct Failed {
    pub api: ApiError,
    pub why: Why,
}

/// The refusals a protocol answers in a shape of its own (the draft's problem types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// The request's offset is not the upload's, which is this.
    Offset(u64),
    /// A length that contradicts the upload's (set already, or bytes past it).
    Length,
    /// The client left mid-body.
    Cut,
    Other,
}

impl From<Failed> for ApiError {
    fn from(f: Failed) -> Self {
        f.api
    }
}

impl From<ApiError> for Failed {
    fn from(api: ApiError) -> Self {
        Self {
            api,
            why: Why::Other,
        }
    }
}

pub(super) fn upload_id(raw: &str) -> Result<UploadId, ApiError> {
    UploadId::parse(raw).ok_or_else(ApiError::not_found)
}

/// The HTTP date an upload expires at.
pub(super) fn expires(upload: &ResumableUpload) -> HeaderValue {
    let at = std::time::SystemTime::from(upload.expires_on);
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).expect("an HTTP date is a header value")
}

/// The upload's URL, which both protocols answer at.
pub(super) fn location(state: &AppState, user: &str, id: &UploadId) -> HeaderValue {
    let url = format!(
        "{}/v3/participants/{user}/uploads/{}",
        state.files.public_url(),
        id.as_str()
    );
    HeaderValue::from_str(&url).expect("a URL of checked parts is a header value")
}

pub(super) fn target(
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

/// Creates an upload and audits the creation (also a refused one).
pub(super) async fn create(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    new: Result<NewUpload, ApiError>,
) -> Result<Versioned<ResumableUpload>, ApiError> {
    let new = match new {
        Ok(new) => new,
        Err(e) => {
            record::<()>(
                state,
                target,
                request_id,
                None,
                Action::UploadCreate,
                &Err(e.clone()),
            );
            return Err(e);
        }
    };
    let file = new.file_id.clone();
    let issuer = Issuer {
        actor: target.actor.id.clone(),
        role: target.actor.role,
    };
    let created = state
        .files
        .create_upload(&target.owner, &issuer, new)
        .await
        .map_err(ApiError::from);
    record(
        state,
        target,
        request_id,
        Some(&file),
        Action::UploadCreate,
        &created,
    );
    created
}

/// Removes an upload whose creation request was refused: that client has no URL for it.
pub(super) async fn abandon(state: &AppState, target: &Target, id: &UploadId) {
    if let Err(e) = state.files.abandon_upload(&target.owner, id).await {
        tracing::warn!(error = %e, "a refused creation's upload was not removed; reconcile will");
    }
}

/// Appends a body and audits it (the commit's own line is written by the completion, which
/// outlives the request).
pub(super) async fn append(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    id: &UploadId,
    req: Append,
    body: Body,
) -> Result<Appended, Failed> {
    let requester = Requester {
        request_id: request_id.0.clone(),
        actor: target.actor.id.clone(),
        role: target.actor.role,
    };
    let mut progress = Progress::default();
    // Boxed: the append's state machine is large, and every resumable route awaits it.
    let result = Box::pin(state.files.append_upload(
        &target.owner,
        id,
        req,
        body.into_data_stream(),
        (describe, &requester),
        &mut progress,
    ))
    .await;
    let why = match &result {
        Err(FilesError::OffsetMismatch(at)) => Why::Offset(*at),
        Err(FilesError::LengthFixed | FilesError::PastLength) => Why::Length,
        Err(FilesError::UploadCut) => Why::Cut,
        _ => Why::Other,
    };
    let result = result.map_err(ApiError::from);
    // A client that left mid-body is told nothing: its line says so, with what was kept.
    let (status, signature) = match &result {
        _ if why == Why::Cut => (super::capability::INTERRUPTED, None),
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
    result.map_err(|api| Failed { api, why })
}

/// The upload as it stands for a client asking where it is. A refused one answers its refusal;
/// one whose every byte is in but whose completion failed (a backend or the scanner was down,
/// or the instance died) is completed now: a client is told it is full only once it is
/// committed or refused.
pub(super) async fn settled(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    id: &UploadId,
) -> Result<Versioned<ResumableUpload>, ApiError> {
    let mut row = state.files.upload_state(&target.owner, id).await?;
    if let Some(UploadOutcome::Refused(r)) = &row.value.outcome {
        return Err(FilesError::UploadRefused(r.clone()).into());
    }
    if row.value.is_full() && row.value.outcome.is_none() {
        let req = Append {
            offset: row.value.offset,
            ..Append::default()
        };
        append(state, target, request_id, id, req, Body::empty()).await?;
        row = state.files.upload_state(&target.owner, id).await?;
    }
    Ok(row)
}

/// Terminates an upload and audits it.
pub(super) async fn terminate(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    id: &str,
) -> Result<(), ApiError> {
    let result = state
        .files
        .terminate_upload(&target.owner, &upload_id(id)?)
        .await
        .map_err(ApiError::from);
    record(
        state,
        target,
        request_id,
        result.as_ref().ok(),
        Action::UploadTerminate,
        &result,
    );
    result.map(|_| ())
}

/// How a refused completion is remembered: as its request was answered.
fn describe(e: FilesError) -> crate::model::Refusal {
    ApiError::from(e).refusal()
}

fn record<T>(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    file: Option<&FileId>,
    action: Action,
    result: &Result<T, ApiError>,
) {
    let (status, signature) = match result {
        Ok(_) => (success(action), None),
        Err(e) => (e.status.as_u16(), e.signature.as_deref()),
    };
    state.audit.record(
        &target
            .audit(request_id, file, action, status, 0)
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

/// A header's text, trimmed.
pub(super) fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(super) fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    text(headers, name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a whole number.")))
        })
        .transpose()
}
