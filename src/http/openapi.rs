//! The OpenAPI 3.1 document, generated from the route table and the handlers' annotations.
//!
//! The annotations say which statuses each route answers; the modifiers here add what is the same
//! everywhere (Bridge's error body for every 4xx/5xx, the request ID, `Retry-After`), the links
//! that chain an upload, and the limits that come from the configuration. Every constraint the
//! handlers enforce on a parameter or body field is a schema here, so that a generated client or
//! a fuzzer learns it from the document.

use std::sync::OnceLock;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{Modify, OpenApi};

mod modifiers;
mod params;
mod schemas;

use modifiers::{Common, Links, Security, operations_mut};
pub use params::*;
pub use schemas::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "participant-files",
        description = "Files that belong to one study participant, behind Bridge's Participant \
            Files API. Identifiers (`userId`, `fileId`, the token's `sub` and `app`) are 1 to 255 \
            of `A-Z a-z 0-9 . _ -`, not `.` or `..`; `self` is reserved. Every refusal has \
            Bridge's error shape `{statusCode, message, type}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(BridgeError, ErrorType)),
    modifiers(&Security),
    tags((name = "self", description = "The caller's own files (role participant)"),
        (name = "participants", description = "A participant's files, for researchers (read) and workers (read and write) of the same app"),
        (name = "capability", description = "Upload and download URLs: the URL is the credential"),
        (name = "resumable", description = "Resumable uploads (tus 1.0.0, and the IETF draft at the same URLs): create, resume, append, terminate"),
        (name = "service", description = "Health, readiness, metrics, this document"))
)]
pub struct ApiDoc;

/// The document as the route table makes it, before the configured limits go in.
fn base() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, mut api) = super::routes().split_for_parts();
        // The router's modifiers ran on the bare ApiDoc; these need the routes' operations.
        Common.modify(&mut api);
        Links.modify(&mut api);
        super::draft::openapi::document(&mut api);
        api
    })
}

/// The document for a service whose file size limit is `max_file_size`: `size` may not exceed
/// it, so a client learns the limit and a fuzzer does not take a 413 for a bug.
pub fn document(max_file_size: u64) -> String {
    let mut api = base().clone();
    if let Some(RefOr::T(Schema::Object(request))) = api
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("UploadRequest"))
        && let Some(RefOr::T(Schema::Object(size))) = request.properties.get_mut("size")
    {
        size.maximum = Some(utoipa::Number::UInt(
            usize::try_from(max_file_size).unwrap_or(usize::MAX),
        ));
    }
    // A tus length or offset past the limit is refused too (413, or 409 for an offset).
    for op in operations_mut(&mut api) {
        for p in op.parameters.iter_mut().flatten() {
            if let RefOr::T(p) = p
                && matches!(p.name.as_str(), "Upload-Length" | "Upload-Offset")
                && let Some(RefOr::T(Schema::Object(schema))) = p.schema.as_mut()
            {
                schema.maximum = Some(utoipa::Number::UInt(
                    usize::try_from(max_file_size).unwrap_or(usize::MAX),
                ));
            }
        }
    }
    api.to_pretty_json().expect("the document serialises")
}
