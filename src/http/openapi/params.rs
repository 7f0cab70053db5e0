//! Bodies and parameters as the handlers' annotations name them: paths, queries, headers.

use super::schemas::{
    app_offset_key_schema, end_time_schema, file_filter_schema, file_id_schema, file_name_schema,
    media_type_schema, offset_key_schema, optional_sha256_schema, page_size_schema, sha256_schema,
    size_schema, start_time_schema, token_schema, user_id_schema,
};
use serde::Serialize;
use utoipa::openapi::Object;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

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
pub(super) enum ErrorType {
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
    /// A stored file that fails its integrity check on download (`PF_ENCRYPTION`).
    BridgeServiceException,
    /// A feature this deployment's settings rule out (resumable uploads with `PF_ENCRYPTION`).
    NotImplementedException,
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

pub(super) fn tus_version_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["1.0.0"]))
        .description(Some(
            "The tus version; anything else (or none) is 412 naming `Tus-Version`.",
        ))
        .build()
}

pub(super) fn offset_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .examples([0])
        .build()
}

pub(super) fn defer_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["1"]))
        .build()
}

pub(super) fn metadata_schema() -> Object {
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

pub(super) fn checksum_schema() -> Object {
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
pub(super) const REQUIRED_HEADERS: [&str; 2] = ["Tus-Resumable", "Upload-Offset"];

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
pub(super) fn upload_id_schema() -> Object {
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
