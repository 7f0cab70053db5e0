//! What is the same on every route: security schemes, Bridge's error bodies, request IDs, links.

use super::params::REQUIRED_HEADERS;
use serde_json::json;
use utoipa::Modify;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Required};

pub(super) struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <JWT>`: claims `sub`, `app`, `roles`, `exp`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bridge_session",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Bridge-Session",
                "Bridge's header, holding the same JWT.",
            ))),
        );
    }
}

/// Bridge's exception name and an example message for each status a route documents.
pub(super) fn error_example(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => (
            "BadRequestException",
            "fileId must be 1 to 255 characters of A-Z, a-z, 0-9, '.', '_' and '-'.",
        ),
        401 => ("NotAuthenticatedException", "Not signed in."),
        403 => (
            "UnauthorizedException",
            "Changing another participant's files needs the worker role.",
        ),
        404 => ("EntityNotFoundException", "ParticipantFile not found."),
        408 => (
            "BadRequestException",
            "The request body stopped arriving; the upload was given up.",
        ),
        409 => (
            "ConcurrentModificationException",
            "The file was changed by another request. Try again.",
        ),
        413 => (
            "EntityTooLargeException",
            "File is larger than the limit of 268435456 bytes.",
        ),
        415 => (
            "UnsupportedMediaTypeException",
            "Unsupported media type: the content is image/png, not the declared text/plain.",
        ),
        410 => (
            "EntityGoneException",
            "The upload expired; start a new one.",
        ),
        412 => (
            "PreconditionFailedException",
            "Tus-Resumable: 1.0.0 is required.",
        ),
        416 => ("BadRequestException", "Requested range not satisfiable."),
        423 => (
            "ConcurrentModificationException",
            "Another request is appending to this upload. Try again shortly.",
        ),
        460 => (
            "ChecksumMismatchException",
            "The request body does not match its Upload-Checksum; none of it was kept.",
        ),
        422 => (
            "InfectedFileException",
            "The file is infected (Eicar-Test-Signature.UNOFFICIAL) and was not stored.",
        ),
        429 => (
            "TooManyRequestsException",
            "The participant's download budget for this hour is spent. Try again later.",
        ),
        _ => (
            "ServiceUnavailableException",
            "The sqlite file index is unavailable. Try again later.",
        ),
    }
}

pub(super) fn operations_mut(
    openapi: &mut utoipa::openapi::OpenApi,
) -> impl Iterator<Item = &mut Operation> {
    openapi.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.head.as_mut(),
            item.patch.as_mut(),
            item.options.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// What every operation shares: Bridge's error body on every refusal, the request ID, and
/// `Retry-After` where a client is told to come back.
pub(super) struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for op in operations_mut(openapi) {
            // utoipa leaves `required` unset for a parameter whose schema comes from `schema_with`;
            // a path parameter always is.
            for p in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = p
                    && (p.parameter_in == ParameterIn::Path
                        || (p.parameter_in == ParameterIn::Header
                            && REQUIRED_HEADERS.contains(&p.name.as_str())))
                {
                    p.required = Required::True;
                }
            }
            op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(
                ParameterBuilder::new()
                    .name("X-Request-Id")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "Kept, echoed and written to the logs and audit line when it is a plain \
                         token (up to 128 of `A-Z a-z 0-9 . _ -`); anything else is replaced by a \
                         fresh UUID, never refused.",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .example(Some(json!("trace-7")))
                    .build(),
            ));
            for (status, response) in &mut op.responses.responses {
                let RefOr::T(response) = response else {
                    continue;
                };
                response.headers.insert(
                    "X-Request-Id".to_owned(),
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("The request's ID (the client's, or a fresh UUID)."))
                        .build()
                        .into(),
                );
                let code: u16 = status.parse().unwrap_or(0);
                if code < 400 {
                    continue;
                }
                if matches!(code, 429 | 503) {
                    response.headers.insert(
                        "Retry-After".to_owned(),
                        HeaderBuilder::new()
                            .schema(Some(
                                ObjectBuilder::new()
                                    .schema_type(Type::Integer)
                                    .minimum(Some(1)),
                            ))
                            .description(Some(
                                "Seconds to wait, when the service knows (a spent budget, too many \
                                 uploads at once).",
                            ))
                            .build()
                            .into(),
                    );
                }
                if response.content.is_empty() {
                    let (kind, message) = error_example(code);
                    let mut content = Content::new(Some(RefOr::Ref(
                        utoipa::openapi::Ref::from_schema_name("BridgeError"),
                    )));
                    content.example =
                        Some(json!({"statusCode": code, "message": message, "type": kind}));
                    response
                        .content
                        .insert("application/json".to_owned(), content.into());
                }
            }
        }
    }
}

/// Links from one operation's answer to the next, so that a client (or schemathesis' stateful
/// phase) can follow an upload from its POST to its URL, the file, its download and its delete.
/// `#regex:` is schemathesis' extension of runtime expressions: it takes the capability token
/// out of a URL; other tools read the expression as a plain string.
pub(super) struct Links;

pub(super) const FROM_UPLOAD_URL: &str = "$response.body#/uploadUrl#regex:/v3/uploads/([^/?#]+)$";
pub(super) const FROM_DOWNLOAD_URL: &str =
    "$response.header.Location#regex:/v3/downloads/([^/?#]+)$";

pub(super) fn link(
    operation_id: &str,
    description: &str,
    params: &[(&str, &str)],
) -> RefOr<utoipa::openapi::link::Link> {
    let mut b = LinkBuilder::new()
        .operation_id(operation_id)
        .description(description);
    for (name, expr) in params {
        b = b.parameter(*name, *expr);
    }
    RefOr::T(b.build())
}

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let same_file = [
            ("path.userId", "$response.body#/userId"),
            ("path.fileId", "$response.body#/fileId"),
        ];
        let to_file = |verb: &str| {
            (
                format!("{verb}TheFile"),
                link(
                    match verb {
                        "Get" => "getParticipantFile",
                        _ => "deleteParticipantFile",
                    },
                    "The file this answer is about (userId and fileId of the body).",
                    &same_file,
                ),
            )
        };
        for op in operations_mut(openapi) {
            let id = op.operation_id.clone().unwrap_or_default();
            let mut add =
                |status: &str, links: Vec<(String, RefOr<utoipa::openapi::link::Link>)>| {
                    if let Some(RefOr::T(r)) = op.responses.responses.get_mut(status) {
                        r.links.extend(links);
                    }
                };
            match id.as_str() {
                "requestSelfUpload" | "requestParticipantUpload" => add(
                    "201",
                    vec![(
                        "UploadToTheUrl".to_owned(),
                        link(
                            "uploadWithUrl",
                            "PUT the bytes to `uploadUrl`, with the declared mimeType as \
                             Content-Type.",
                            &[
                                ("path.token", FROM_UPLOAD_URL),
                                ("header.Content-Type", "$response.body#/mimeType"),
                            ],
                        ),
                    )],
                ),
                "uploadWithUrl" | "uploadSelfFile" | "uploadParticipantFile" => {
                    add("201", vec![to_file("Get"), to_file("Delete")]);
                }
                "getSelfFile" | "getParticipantFile" => add(
                    "302",
                    vec![
                        (
                            "DownloadFromTheUrl".to_owned(),
                            link(
                                "downloadWithUrl",
                                "GET the bytes from `Location` (= `downloadUrl`).",
                                &[("path.token", FROM_DOWNLOAD_URL)],
                            ),
                        ),
                        to_file("Delete"),
                    ],
                ),
                "deleteSelfFile" | "deleteParticipantFile" => add("200", Vec::new()),
                _ => {}
            }
        }
    }
}
