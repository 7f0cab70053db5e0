//! The IETF draft in the OpenAPI document: it shares its operations with tus and the streaming
//! upload (same paths and methods), so it is documented on them: what changes when
//! `Upload-Draft-Interop-Version` names 3 to 8, and its problem details. Its headers are not
//! declared as parameters: OpenAPI cannot say "these or `Tus-Resumable`", and declaring both
//! sets on one operation tells generated clients and fuzzers to mix the protocols.

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};

/// Creation: the target resource (PUT/POST of a file) and the tus creation URL.
const CREATION: [&str; 6] = [
    "uploadSelfFile",
    "uploadParticipantFile",
    "requestSelfUpload",
    "requestParticipantUpload",
    "tusCreateSelf",
    "tusCreate",
];
/// The upload URL and the creation URL's OPTIONS.
const UPLOAD_URL: [&str; 8] = [
    "tusHeadSelf",
    "tusHead",
    "tusPatchSelf",
    "tusPatch",
    "tusTerminateSelf",
    "tusTerminate",
    "tusOptionsSelf",
    "tusOptions",
];

const CREATION_NOTE: &str = "\n\n**IETF draft** (`Upload-Draft-Interop-Version` 3 to 8; README, \
    \"Resumable uploads without tus\"): a resumable creation. With `Upload-Complete: ?1` (version \
    3: no `Upload-Incomplete: ?1`) and the whole body: 201 ParticipantFile with `Location`, \
    `Upload-Offset` and `Upload-Complete: ?1`; with `Upload-Complete: ?0`: 201 with the upload's \
    `Location`, `Upload-Offset`, `Upload-Limit` (6+) and `X-File-Id`, for PATCHes. fileId: the \
    path, else `X-File-Id`, else `Content-Disposition`'s filename, else `Upload-Metadata`, else \
    minted; mimeType: `Content-Type`; sha256: `Repr-Digest: sha-256=:…:`. Refusals are \
    `application/problem+json` (400 `inconsistent-upload-length` from version 7). No 104 is sent.";

const URL_NOTE: &str = "\n\n**IETF draft** (`Upload-Draft-Interop-Version` 3 to 8, in place of \
    `Tus-Resumable`): HEAD answers 204 with `Upload-Offset`, `Upload-Complete`, `Upload-Length` \
    and `Upload-Limit` (6+); PATCH takes `Upload-Offset`, `Upload-Complete` and (6+) \
    `Content-Type: application/partial-upload`, answers 204 `Upload-Complete: ?0`, or 201 \
    ParticipantFile once complete; a wrong offset is 409 `mismatching-upload-offset` (6+, with \
    `expected-offset` and `provided-offset`), bytes after completion 400 `completed-upload` \
    (6+); DELETE answers 204; OPTIONS gives `Upload-Limit`. Refusals are \
    `application/problem+json`.";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// The draft's notes and problem details on the operations it shares.
pub(in crate::http) fn document(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let ops = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.options.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            let id = op.operation_id.clone().unwrap_or_default();
            if CREATION.contains(&id.as_str()) {
                describe(op, CREATION_NOTE);
            } else if UPLOAD_URL.contains(&id.as_str()) {
                describe(op, URL_NOTE);
            }
        }
    }
}

fn describe(op: &mut Operation, note: &str) {
    let text = op.description.get_or_insert_with(String::new);
    text.push_str(note);
    // Refusals to a draft client: problem details beside Bridge's shape, with the same message.
    for (status, response) in &mut op.responses.responses {
        let Ok(code) = status.parse::<u16>() else {
            continue;
        };
        if code < 400 {
            continue;
        }
        if let RefOr::T(r) = response {
            let message = r
                .content
                .get("application/json")
                .and_then(|c| match c {
                    RefOr::T(c) => c.example.as_ref(),
                    RefOr::Ref(_) => None,
                })
                .and_then(|e| e.get("message"))
                .cloned()
                .unwrap_or_default();
            r.content.insert(
                "application/problem+json".to_owned(),
                RefOr::T(
                    ContentBuilder::new()
                        .schema(Some(problem_schema()))
                        .example(Some(example(code, &message)))
                        .build(),
                ),
            );
        }
    }
}

fn problem_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", string())
        .property("title", string())
        .property("status", ObjectBuilder::new().schema_type(Type::Integer))
        .property("detail", string())
}

/// A refusal as a draft client sees it; a 409 is the draft's mismatching offset.
fn example(code: u16, message: &serde_json::Value) -> serde_json::Value {
    let title = axum::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    if code == 409 {
        return json!({
            "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
            "title": "offset from request does not match offset of resource",
            "status": 409,
            "detail": "The upload's offset is 100; send the bytes from there.",
            "expected-offset": 100,
            "provided-offset": 50,
        });
    }
    json!({"type": "about:blank", "title": title, "status": code, "detail": message})
}
