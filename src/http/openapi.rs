//! The OpenAPI 3.1 document, generated from the route table and the handlers' annotations.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Bridge's error shape.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeError {
    status_code: u16,
    message: String,
    /// `BadRequestException`, `NotAuthenticatedException`, `EntityNotFoundException`, ...
    #[serde(rename = "type")]
    kind: String,
}

/// The body of a POST that asks for an upload URL.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequestDoc {
    /// The file's media type; the upload must be sent with it.
    mime_type: String,
    /// The exact size in bytes, when known.
    size: Option<u64>,
    /// Standard base64 of the SHA-256, when known.
    sha256: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// `self` for the caller's own files, or a participant of the caller's app (researcher,
    /// worker).
    #[allow(dead_code, reason = "documentation only")]
    user_id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// `self`, or a participant of the caller's app (researcher, worker).
    #[allow(dead_code, reason = "documentation only")]
    user_id: String,
    /// 1 to 255 of `A-Z a-z 0-9 . _ -`, not `.`, `..` or `self`.
    #[allow(dead_code, reason = "documentation only")]
    file_id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The signed capability token (the URL is the credential).
    #[allow(dead_code, reason = "documentation only")]
    token: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bridge_session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Bridge-Session"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "participant-files",
        description = "Files that belong to one study participant, behind Bridge's Participant Files API."
    ),
    modifiers(&Security),
    tags((name = "files", description = "A participant's files"),
        (name = "capability", description = "Upload and download URLs"),
        (name = "service", description = "Health, readiness, metrics, this document"))
)]
pub struct ApiDoc;

/// The document, built once from the same route table the service serves.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, api) = super::routes().split_for_parts();
        api.to_pretty_json().expect("the document serialises")
    })
}
