//! The OpenAPI 3.1 document, generated from the route table and the handlers' annotations.
//!
//! The annotations say which statuses each route answers; the modifiers here add what is the same
//! everywhere (Bridge's error body for every 4xx/5xx, the request ID, `Retry-After`), the links
//! that chain an upload, and the limits that come from the configuration. Every constraint the
//! handlers enforce on a parameter or body field is a schema here, so that a generated client or
//! a fuzzer learns it from the document.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Object, RefOr, Required};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The contract's identifiers: 1 to 255 of `A-Z a-z 0-9 . _ -` (`model::validate_ident`).
pub const IDENT_PATTERN: &str = "^[A-Za-z0-9._-]{1,255}$";

/// Standard padded base64 of 32 bytes. The 43rd character carries 2 bits that must be zero
/// (the decoder refuses trailing bits), hence its own class.
pub const SHA256_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// An RFC 6838 restricted name, as the type and the subtype of a media type.
const MEDIA_NAME: &str = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
/// A parameter name or value (RFC 6838 characters; no quoted strings).
const MEDIA_TOKEN: &str = "[A-Za-z0-9!#$&^_.+-]+";

/// The media-type syntax `mimeType` must have: `type/subtype`, then `; name=value` parameters.
/// `files::media_type_syntax` checks exactly this.
pub fn media_type_pattern() -> String {
    format!("^{MEDIA_NAME}/{MEDIA_NAME}(; ?{MEDIA_TOKEN}={MEDIA_TOKEN})*$")
}

/// JSON Schema's `not`, which utoipa's schema types do not model: it goes in through the
/// extensions map, which is written flat into the schema object. (Its builder would prefix the
/// key with `x-`; the map itself takes any key.)
fn not_one_of(values: &[&str]) -> Extensions {
    let mut extensions = Extensions::default();
    extensions.insert("not".to_owned(), json!({ "enum": values }));
    extensions
}

fn ident(description: &str, example: &str, reserved: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(IDENT_PATTERN))
        .min_length(Some(1))
        .max_length(Some(255))
        .description(Some(description))
        .examples([example])
        .extensions(Some(not_one_of(reserved)))
        .build()
}

/// `{fileId}`: an identifier, not `.`, `..` or `self`.
pub fn file_id_schema() -> Object {
    ident(
        "1 to 255 of `A-Z a-z 0-9 . _ -`; not `.`, `..` or `self` (reserved). Anything else is 400.",
        "notes.txt",
        &[".", "..", "self"],
    )
}

/// `{userId}`: an identifier, not `.` or `..`. `self` is not refused here: it is the static
/// segment of the participant's own routes, which the router prefers, so a request for `self`
/// is answered by those.
pub fn user_id_schema() -> Object {
    ident(
        "A participant of the caller's app: 1 to 255 of `A-Z a-z 0-9 . _ -`, not `.` or `..`. \
         `self` is reserved: `/v3/participants/self/...` are the caller's own files (the routes \
         tagged `self`).",
        "alice",
        &[".", ".."],
    )
}

/// `offsetKey`: the last fileId of the previous page; empty means the first page.
pub fn offset_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9._-]{0,255}$"))
        .max_length(Some(255))
        .description(Some(
            "The last fileId of the previous page (`nextPageOffsetKey`); it need not exist. \
             Empty or absent: the first page. Not `.`, `..` or `self`.",
        ))
        .examples(["notes.txt"])
        .extensions(Some(not_one_of(&[".", "..", "self"])))
        .build()
}

/// `offsetKey` of the app-wide listing: opaque, as the previous page gave it.
pub fn app_offset_key_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_-]*$"))
        .max_length(Some(super::listing::MAX_OFFSET_KEY))
        .description(Some(
            "Opaque: the previous page's `nextPageOffsetKey`, sent back as it came (it holds the \
             sort position of that page's last file, so paging neither repeats nor skips a file \
             while others are added or deleted). Empty or absent: the first page. Anything this \
             service did not give out is 400.",
        ))
        .examples(["eyJ0IjoxNzk1NzMwNDAwMDAwLCJ1IjoiYWxpY2UiLCJmIjoibm90ZXMudHh0In0"])
        .build()
}

/// `startTime` / `endTime` of the app-wide listing.
pub fn time_schema(description: &str, example: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
        .description(Some(description))
        .examples([example])
        .build()
}

fn start_time_schema() -> Object {
    time_schema(
        "Only files whose `createdOn` is at or after this (inclusive): an ISO 8601 (RFC 3339) \
         date and time with a time zone. Anything else is 400.",
        "2026-11-26T00:00:00.000Z",
    )
}

fn end_time_schema() -> Object {
    time_schema(
        "Only files whose `createdOn` is before this (exclusive): an ISO 8601 (RFC 3339) date and \
         time with a time zone. Anything else is 400. Not after `startTime`: an empty page.",
        "2026-12-03T00:00:00.000Z",
    )
}

/// `fileId` of the app-wide listing: the same identifier across participants.
fn file_filter_schema() -> Object {
    let mut schema = file_id_schema();
    schema.description = Some(
        "Only files with this fileId, of every participant: 1 to 255 of `A-Z a-z 0-9 . _ -`; not \
         `.`, `..` or `self`. Anything else is 400."
            .to_owned(),
    );
    schema
}

/// `pageSize`: 5 to 100, default 50.
pub fn page_size_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(5))
        .maximum(Some(100))
        .default(Some(json!(50)))
        .description(Some(
            "5 to 100, default 50; anything else is 400 \"pageSize must be from 5-100 records\".",
        ))
        .examples([20])
        .build()
}

/// A SHA-256 as S3 writes its checksums.
pub fn sha256_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(SHA256_PATTERN))
        .min_length(Some(44))
        .max_length(Some(44))
        .description(Some(
            "Standard padded base64 of the 32-byte SHA-256 (as S3's checksums).",
        ))
        .examples(["hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0="])
        .build()
}

/// The same schema, also allowing `null` (which the service takes as absent).
fn or_null(mut schema: Object, of: Type) -> Object {
    schema.schema_type = SchemaType::Array(vec![of, Type::Null]);
    schema
}

/// The optional `sha256` of an upload request (null is the same as absent).
pub fn optional_sha256_schema() -> Object {
    or_null(sha256_schema(), Type::String)
}

/// The `mimeType` of an upload request.
pub fn media_type_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(media_type_pattern()))
        .description(Some(
            "The file's media type, `type/subtype` with optional `; name=value` parameters \
             (RFC 6838 names, no wildcards). The upload must be sent with this Content-Type.",
        ))
        .examples(["text/plain"])
        .build()
}

/// The optional `size` of an upload request: a whole number of bytes, at most the configured
/// `PF_MAX_FILE_SIZE` (the served document says the value; see [`document`]).
pub fn size_schema() -> Object {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .description(Some(
            "The exact size in bytes, when known; at most the service's file size limit \
             (PF_MAX_FILE_SIZE): more is 413.",
        ))
        .examples([16])
        .build();
    or_null(schema, Type::Integer)
}

/// A character of a file name: no control character (Unicode Cc), no path separator; no lone
/// surrogate, which no JSON text can carry.
const NAME_CHAR: &str = "[^\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff/\\\\]";

/// The pattern of a `fileName` as sent (`model::FileName::parse`): any path part, then 1 to
/// 255 characters that are not `.` or `..`.
pub fn file_name_pattern() -> String {
    let first = NAME_CHAR.replacen("[^", "[^.", 1);
    format!(
        "^(?:[^\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff]*[/\\\\])?\
         (?:{first}{NAME_CHAR}{{0,254}}|\\.{first}{NAME_CHAR}{{0,253}}|\\.\\.{NAME_CHAR}{{1,253}})$"
    )
}

/// The optional `fileName` of an upload request.
pub fn file_name_schema() -> Object {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(file_name_pattern()))
        .description(Some(
            "The file's name (our addition), kept as the file's `fileName` once the upload \
             arrives: normalized to NFC, without any path part (up to the last `/` or `\\`). \
             A control character, a name longer than 255 characters, or one that names no file \
             (empty, `.`, `..`) is 400. It names the download; the fileId stays the path's.",
        ))
        .examples(["R\u{f6}ntgen Befund (1).pdf"])
        .build();
    or_null(schema, Type::String)
}

/// The capability token of an upload or download URL.
pub fn token_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The signed capability token: the last segment of an `uploadUrl` or `downloadUrl`. \
             The URL is the credential; expired, altered, used or other-purpose tokens are 403.",
        ))
        .examples(["eyJ2IjoxfQ.c2lnbmF0dXJl"])
        .build()
}

/// A body of raw bytes (`format: binary`, so that tools send and expect bytes, not a JSON array
/// of numbers as they would for `Vec<u8>`).
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl ToSchema for Binary {}

/// Bridge's error shape.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"statusCode": 404, "message": "ParticipantFile not found.", "type": "EntityNotFoundException"}))]
pub struct BridgeError {
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    status_code: u16,
    message: String,
    #[serde(rename = "type")]
    kind: ErrorType,
}

/// Bridge's exception names, one per kind of refusal. A closed list: schemathesis checks every
/// error body against it, and `tests/openapi.rs` that every name the service sends is here.
#[derive(Serialize, ToSchema)]
#[allow(dead_code, reason = "documentation only")]
#[allow(clippy::enum_variant_names, reason = "Bridge's names, as sent")]
enum ErrorType {
    BadRequestException,
    InvalidEntityException,
    NotAuthenticatedException,
    UnauthorizedException,
    EntityNotFoundException,
    ConcurrentModificationException,
    EntityTooLargeException,
    UnsupportedMediaTypeException,
    InfectedFileException,
    TooManyRequestsException,
    ServiceUnavailableException,
    EntityGoneException,
    PreconditionFailedException,
    ChecksumMismatchException,
}

/// The body of a POST that asks for an upload URL.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UploadRequest,
    example = json!({"mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0="}))]
pub struct UploadRequestDoc {
    #[schema(schema_with = media_type_schema)]
    mime_type: String,
    #[schema(schema_with = size_schema)]
    size: Option<u64>,
    #[schema(schema_with = optional_sha256_schema)]
    sha256: Option<String>,
    #[schema(schema_with = file_name_schema)]
    file_name: Option<String>,
}

/// `{userId}` of the researcher and worker routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct UserPath {
    #[param(schema_with = user_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    user_id: String,
}

/// `{userId}` and `{fileId}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct UserFilePath {
    #[param(schema_with = user_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    user_id: String,
    #[param(schema_with = file_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    file_id: String,
}

fn tus_version_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["1.0.0"]))
        .description(Some(
            "The tus version; anything else (or none) is 412 naming `Tus-Version`.",
        ))
        .build()
}

fn offset_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .examples([0])
        .build()
}

fn defer_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["1"]))
        .build()
}

fn metadata_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "tus metadata: `key base64value` pairs, comma separated. `fileId` (an identifier) or \
             `filename` (the file's name, as tus-js-client and Uppy send it) is required. \
             `filename` becomes the file's `fileName` (NFC, path part dropped; a control \
             character or more than 255 characters is 400); without `fileId`, the fileId is \
             derived from it by the naming rule (the name itself when it is a valid fileId, else \
             a slug of it and 8 hex digits of its SHA-256), so the same name replaces the same \
             file. `mimeType` (or `filetype`, `contentType`) and `sha256` (standard base64 of \
             the whole file's SHA-256) are optional.",
        ))
        .examples(["fileId bm90ZXMudHh0,mimeType dGV4dC9wbGFpbg=="])
        .build()
}

fn checksum_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^(sha1|sha256) [A-Za-z0-9+/]*={0,2}$"))
        .description(Some(
            "The checksum of this request's body; a mismatch is 460 and none of it is kept.",
        ))
        .build()
}

/// Headers whose absence is refused; their schemas come from `schema_with`, which leaves
/// `required` unset.
const REQUIRED_HEADERS: [&str; 2] = ["Tus-Resumable", "Upload-Offset"];

/// The header every tus request but OPTIONS carries.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusHeader {
    #[param(rename = "Tus-Resumable", schema_with = tus_version_schema)]
    #[allow(dead_code, reason = "documentation only")]
    version: String,
}

/// The headers of a tus creation: the length (or that it is deferred) and the metadata.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusCreateHeaders {
    /// The upload's length in bytes; send it or `Upload-Defer-Length: 1`, not both.
    #[param(rename = "Upload-Length", schema_with = offset_schema)]
    #[allow(dead_code, reason = "documentation only")]
    length: Option<u64>,
    /// `1`: the length comes with a later PATCH.
    #[param(rename = "Upload-Defer-Length", schema_with = defer_schema)]
    #[allow(dead_code, reason = "documentation only")]
    defer: Option<String>,
    #[param(rename = "Upload-Metadata", schema_with = metadata_schema)]
    #[allow(dead_code, reason = "documentation only")]
    metadata: String,
}

/// The headers of a tus PATCH.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusPatchHeaders {
    /// Where the body starts; it must be the upload's offset (409 otherwise).
    #[param(rename = "Upload-Offset", schema_with = offset_schema)]
    #[allow(dead_code, reason = "documentation only")]
    offset: u64,
    /// The length, when the creation deferred it; it never changes once set.
    #[param(rename = "Upload-Length", schema_with = offset_schema)]
    #[allow(dead_code, reason = "documentation only")]
    length: Option<u64>,
    #[param(rename = "Upload-Checksum", schema_with = checksum_schema)]
    #[allow(dead_code, reason = "documentation only")]
    checksum: Option<String>,
}

/// `{uploadId}`: 32 lowercase hex digits, as the creation's `Location` names it.
fn upload_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9a-f]{32}$"))
        .description(Some(
            "The upload, as the `Location` of its creation names it; anything else is 404.",
        ))
        .examples(["0f8e3a5c2b6d4e7f9a1b3c5d7e9f1a2b"])
        .build()
}

/// `{uploadId}` of the participant's own resumable uploads.
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct UploadPath {
    #[param(schema_with = upload_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    upload_id: String,
}

/// `{userId}` and `{uploadId}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct UserUploadPath {
    #[param(schema_with = user_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    user_id: String,
    #[param(schema_with = upload_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    upload_id: String,
}

/// `{fileId}` of the participant's own routes.
#[derive(IntoParams)]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub struct FilePath {
    #[param(schema_with = file_id_schema)]
    #[allow(dead_code, reason = "documentation only")]
    file_id: String,
}

/// The query of a list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListQuery {
    #[param(schema_with = offset_key_schema)]
    #[allow(dead_code, reason = "documentation only")]
    offset_key: Option<String>,
    #[param(schema_with = page_size_schema)]
    #[allow(dead_code, reason = "documentation only")]
    page_size: Option<u32>,
}

/// The query of the app-wide listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct AppListQuery {
    #[param(schema_with = start_time_schema)]
    #[allow(dead_code, reason = "documentation only")]
    start_time: Option<String>,
    #[param(schema_with = end_time_schema)]
    #[allow(dead_code, reason = "documentation only")]
    end_time: Option<String>,
    #[param(schema_with = file_filter_schema)]
    #[allow(dead_code, reason = "documentation only")]
    file_id: Option<String>,
    #[param(schema_with = app_offset_key_schema)]
    #[allow(dead_code, reason = "documentation only")]
    offset_key: Option<String>,
    #[param(schema_with = page_size_schema)]
    #[allow(dead_code, reason = "documentation only")]
    page_size: Option<u32>,
}

/// The headers of a PUT through the service that say what the body is: its checksum, its name.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ChecksumHeader {
    /// The SHA-256 the body must have (standard base64, as S3's header); a mismatch is 400 and
    /// nothing is kept.
    #[param(rename = "x-amz-checksum-sha256", schema_with = sha256_schema)]
    #[allow(dead_code, reason = "documentation only")]
    checksum: Option<String>,
    /// The file's name, kept as its `fileName` (RFC 6266): `attachment; filename*=UTF-8''` and
    /// the percent-encoded UTF-8 name, or `attachment; filename="name"`; `filename*` wins when
    /// both come. The name is taken as `fileName` is (NFC, path part dropped); one that cannot
    /// be read, holds a control character, names no file or is longer than 255 characters is
    /// 400. The fileId stays the path's.
    #[param(
        rename = "Content-Disposition",
        example = "attachment; filename*=UTF-8''R%C3%B6ntgen%20Befund.pdf"
    )]
    #[allow(dead_code, reason = "documentation only")]
    disposition: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    #[param(schema_with = token_schema)]
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
fn error_example(status: u16) -> (&'static str, &'static str) {
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

fn operations_mut(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
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
struct Common;

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
struct Links;

const FROM_UPLOAD_URL: &str = "$response.body#/uploadUrl#regex:/v3/uploads/([^/?#]+)$";
const FROM_DOWNLOAD_URL: &str = "$response.header.Location#regex:/v3/downloads/([^/?#]+)$";

fn link(
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
