//! Request extractors: the verified caller, the request ID, and the target participant.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::audit::{Action, AuditEvent, Refusal};
use crate::auth::{Principal, Role};
use crate::files::Actor;
use crate::model::{FileId, Owner, UserId};

/// The caller, from `Authorization: Bearer <JWT>` or Bridge's `Bridge-Session: <JWT>`.
pub struct Caller(pub Principal);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("bridge-session")?.to_str().ok().map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::not_authenticated)?;
        match state.verifier.verify(token) {
            Ok(p) => Ok(Self(p)),
            Err(e) => {
                tracing::info!(reason = %e, "token refused");
                Err(ApiError::not_authenticated())
            }
        }
    }
}

/// The request ID that tower-http's request-id layer set or took over from the client.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        ))
    }
}

/// What a route does with the target participant's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Whose files a request is about, and in which capacity the caller acts.
pub struct Target {
    pub owner: Owner,
    pub actor: Actor,
}

impl Target {
    /// Resolves `{userId}` for the caller. `self` is the caller's own files (role participant);
    /// any other ID is a participant of the caller's app, for researchers (read) and workers
    /// (read and write). Nobody reaches another app.
    pub fn resolve(caller: &Principal, user_id: &str, access: Access) -> Result<Self, ApiError> {
        if user_id == "self" {
            if !caller.has(Role::Participant) {
                return Err(ApiError::forbidden(
                    "The self routes are for participants; use /v3/participants/{userId}/files.",
                ));
            }
            return Ok(Self {
                owner: Owner {
                    app: caller.app.clone(),
                    participant: caller.subject.clone(),
                },
                actor: Actor {
                    id: caller.subject.clone(),
                    role: Role::Participant,
                },
            });
        }
        let participant =
            UserId::parse(user_id).map_err(|e| ApiError::bad_request(format!("userId {e}.")))?;
        let role = match access {
            _ if caller.has(Role::Worker) => Role::Worker,
            Access::Read if caller.has(Role::Researcher) => Role::Researcher,
            Access::Read => {
                return Err(ApiError::forbidden(
                    "Reading another participant's files needs the researcher or worker role.",
                ));
            }
            Access::Write => {
                return Err(ApiError::forbidden(
                    "Changing another participant's files needs the worker role.",
                ));
            }
        };
        Ok(Self {
            owner: Owner {
                app: caller.app.clone(),
                participant,
            },
            actor: Actor {
                id: caller.subject.clone(),
                role,
            },
        })
    }

    /// [`Target::resolve`], then the `{fileId}` when the route has one; a refusal on the way
    /// (403 for a role, 400 for an identifier) gets its audit line here, with what is known.
    pub fn resolve_audited(
        state: &AppState,
        request: (&Principal, &RequestId),
        user_id: &str,
        raw_file: Option<&str>,
        access: Access,
        action: Action,
    ) -> Result<(Self, Option<FileId>), ApiError> {
        let (caller, request_id) = request;
        let resolved = Self::resolve(caller, user_id, access).and_then(|target| {
            let file = raw_file.map(file_id).transpose()?;
            Ok((target, file))
        });
        if let Err(e) = &resolved {
            audit_refusal(state, caller, request_id, user_id, raw_file, action, e);
        }
        resolved
    }

    /// An audit line for an access to this target.
    #[must_use]
    pub fn audit(
        &self,
        request_id: &RequestId,
        file_id: Option<&FileId>,
        action: Action,
        status: u16,
        bytes: u64,
    ) -> AuditEvent {
        AuditEvent::new(
            &request_id.0,
            &self.owner,
            &self.actor.id,
            self.actor.role,
            file_id,
            action,
            status,
            bytes,
        )
    }
}

/// The audit line of a request refused before its target was established.
pub fn audit_refusal(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user_id: &str,
    raw_file: Option<&str>,
    action: Action,
    error: &ApiError,
) {
    let participant = if user_id == "self" {
        Some(caller.subject.clone())
    } else {
        UserId::parse(user_id).ok()
    };
    let file = raw_file.and_then(|f| FileId::parse(f).ok());
    let role = [Role::Worker, Role::Researcher, Role::Participant]
        .into_iter()
        .find(|r| caller.has(*r))
        .map_or("none", Role::as_str);
    state.audit.record(&AuditEvent::refused(&Refusal {
        request_id: &request_id.0,
        app: &caller.app,
        actor: &caller.subject,
        role,
        participant: participant.as_ref(),
        file_id: file.as_ref(),
        action,
        status: error.status.as_u16(),
    }));
}

/// Parses a `{fileId}` path segment (already percent-decoded by the router).
pub fn file_id(raw: &str) -> Result<FileId, ApiError> {
    FileId::parse(raw).map_err(|e| ApiError::bad_request(format!("fileId {e}.")))
}

/// axum's `Path`, answering a malformed path in Bridge's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// axum's `Query`, answering a malformed query in Bridge's error shape.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
