//! The IETF draft in the OpenAPI document: it shares its operations with tus and the streaming
//! upload (same paths and methods), so it is documented on them: its request headers, what
//! changes when `Upload-Draft-Interop-Version` names 3 to 8, and its problem details.

use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Required};

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

const URL_NOTE: &str = "\n\n**IETF draft** (`Upload-Draft-Interop-Version` 3 to 8, no \
    `Tus-Resumable`): HEAD answers 204 with `Upload-Offset`, `Upload-Complete`, `Upload-Length` \
    and `Upload-Limit` (6+); PATCH takes `Upload-Offset`, `Upload-Complete` and (6+) \
    `Content-Type: application/partial-upload`, answers 204 `Upload-Complete: ?0`, or 201 \
    ParticipantFile once complete; a wrong offset is 409 `mismatching-upload-offset` (6+, with \
    `expected-offset` and `provided-offset`), bytes after completion 400 `completed-upload` \
    (6+); DELETE answers 204; OPTIONS gives `Upload-Limit`. Refusals are \
    `application/problem+json`.";

fn header(
    name: &str,
    schema: ObjectBuilder,
    description: &str,
) -> RefOr<utoipa::openapi::path::Parameter> {
    RefOr::T(
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .schema(Some(schema.build()))
            .description(Some(description))
            .build(),
    )
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn headers(creation: bool) -> Vec<RefOr<utoipa::openapi::path::Parameter>> {
    let flag = || string().enum_values(Some(["?0", "?1"]));
    let mut out = vec![
        header(
            "Upload-Draft-Interop-Version",
            ObjectBuilder::new().schema_type(Type::Integer),
            "3 to 8: the request is the IETF draft's, answered in that version; other values \
             are ignored.",
        ),
        header(
            "Upload-Complete",
            flag(),
            "Draft 4+: `?1` when this request's content ends the upload.",
        ),
        header(
            "Upload-Incomplete",
            flag(),
            "Draft 3: `?1` when more content follows.",
        ),
    ];
    if creation {
        out.push(header(
            "Repr-Digest",
            string().pattern(Some(r"sha-256=:[A-Za-z0-9+/]{43}=:")),
            "RFC 9530: the whole file's SHA-256, checked at completion.",
        ));
        out.push(header(
            "X-File-Id",
            string(),
            "The fileId, when the path does not name it.",
        ));
    }
    out
}

/// The draft's headers, notes and problem details on the operations it shares.
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
                describe(op, CREATION_NOTE, true);
            } else if UPLOAD_URL.contains(&id.as_str()) {
                describe(op, URL_NOTE, false);
            }
        }
    }
}

fn describe(op: &mut Operation, note: &str, creation: bool) {
    let text = op.description.get_or_insert_with(String::new);
    text.push_str(note);
    let params = op.parameters.get_or_insert_with(Vec::new);
    for p in params.iter_mut() {
        // A draft request carries no Tus-Resumable.
        if let RefOr::T(p) = p
            && p.name == "Tus-Resumable"
        {
            p.required = Required::False;
            p.description = Some(
                "`1.0.0`; required (else 412) unless `Upload-Draft-Interop-Version` names 3 to 8."
                    .to_owned(),
            );
        }
    }
    params.extend(headers(creation));
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
