//! `ApiError`: every failure a route can answer with, in Bridge's error shape, with an
//! exhaustive mapping from the domain errors. 5xx bodies name the backend, never internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    /// Seconds for a `Retry-After` header (503 when busy, 429).
    pub retry_after: Option<u64>,
    /// The backend whose failure this is, for the metrics.
    pub backend: Option<&'static str>,
    /// The signature an infected file was found with, for the audit line.
    pub signature: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    status_code: u16,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            retry_after: None,
            backend: None,
            signature: None,
        }
    }

    /// A problem with the request body (Bridge: `InvalidEntityException`).
    pub fn invalid_entity(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidEntityException", message)
    }

    /// A protocol precondition (tus: the `Tus-Resumable` header) is not met.
    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            message,
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaTypeException",
            message,
        )
    }

    /// A problem with the path, query or headers (Bridge: `BadRequestException`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    pub fn not_authenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NotAuthenticatedException",
            "Not signed in.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "UnauthorizedException", message)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "EntityNotFoundException",
            "ParticipantFile not found.",
        )
    }

    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "EntityNotFoundException",
            "No such resource.",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadRequestException",
            "This method is not allowed on this resource.",
        )
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "EntityTooLargeException",
            format!("File is larger than the limit of {limit} bytes."),
        )
    }

    pub fn range_not_satisfiable() -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BadRequestException",
            "Requested range not satisfiable.",
        )
    }

    /// A stored file that fails decryption (tampered, or its key erased): logged and counted
    /// where it was found; retrying cannot help.
    pub fn unreadable() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BridgeServiceException",
            "The stored file cannot be read: it failed its integrity check.",
        )
    }

    /// A feature this deployment's settings rule out (Bridge: `NotImplementedException`).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplementedException",
            message,
        )
    }

    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            format!("The {what} is unavailable. Try again later."),
        )
    }
}

/// A Bridge error type read back from the index, as one of the names this service answers.
fn known_kind(kind: &str) -> &'static str {
    const KINDS: [&str; 5] = [
        "BadRequestException",
        "EntityTooLargeException",
        "InfectedFileException",
        "InvalidEntityException",
        "UnsupportedMediaTypeException",
    ];
    KINDS
        .into_iter()
        .find(|k| *k == kind)
        .unwrap_or("BadRequestException")
}

impl ApiError {
    /// How a refused completion is remembered, for a client that asks again.
    #[must_use]
    pub fn refusal(&self) -> crate::model::Refusal {
        crate::model::Refusal {
            status: self.status.as_u16(),
            kind: self.kind.to_owned(),
            message: self.message.clone(),
            signature: self.signature.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            status_code: self.status.as_u16(),
            message: &self.message,
            kind: self.kind,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(backend) = self.backend {
            response
                .extensions_mut()
                .insert(super::BackendFailed(backend));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

mod from;
