//! Schemas of the contract's values: identifiers, sizes, hashes, media types, names, tokens.

use serde_json::json;
use utoipa::ToSchema;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Object, RefOr};

/// The contract's identifiers: 1 to 255 of `A-Z a-z 0-9 . _ -` (`model::validate_ident`).
pub const IDENT_PATTERN: &str = "^[A-Za-z0-9._-]{1,255}$";

/// Standard padded base64 of 32 bytes. The 43rd character carries 2 bits that must be zero
/// (the decoder refuses trailing bits), hence its own class.
pub const SHA256_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// An RFC 6838 restricted name, as the type and the subtype of a media type.
pub(super) const MEDIA_NAME: &str = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";
/// A parameter name or value (RFC 6838 characters; no quoted strings).
pub(super) const MEDIA_TOKEN: &str = "[A-Za-z0-9!#$&^_.+-]+";

/// The media-type syntax `mimeType` must have: `type/subtype`, then `; name=value` parameters.
/// `files::media_type_syntax` checks exactly this.
pub fn media_type_pattern() -> String {
    format!("^{MEDIA_NAME}/{MEDIA_NAME}(; ?{MEDIA_TOKEN}={MEDIA_TOKEN})*$")
}

/// JSON Schema's `not`, which utoipa's schema types do not model: it goes in through the
/// extensions map, which is written flat into the schema object. (Its builder would prefix the
/// key with `x-`; the map itself takes any key.)
pub(super) fn not_one_of(values: &[&str]) -> Extensions {
    let mut extensions = Extensions::default();
    extensions.insert("not".to_owned(), json!({ "enum": values }));
    extensions
}

pub(super) fn ident(description: &str, example: &str, reserved: &[&str]) -> Object {
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
        .max_length(Some(crate::http::listing::MAX_OFFSET_KEY))
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

pub(super) fn start_time_schema() -> Object {
    time_schema(
        "Only files whose `createdOn` is at or after this (inclusive): an ISO 8601 (RFC 3339) \
         date and time with a time zone. Anything else is 400.",
        "2026-11-26T00:00:00.000Z",
    )
}

pub(super) fn end_time_schema() -> Object {
    time_schema(
        "Only files whose `createdOn` is before this (exclusive): an ISO 8601 (RFC 3339) date and \
         time with a time zone. Anything else is 400. Not after `startTime`: an empty page.",
        "2026-12-03T00:00:00.000Z",
    )
}

/// `fileId` of the app-wide listing: the same identifier across participants.
pub(super) fn file_filter_schema() -> Object {
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
pub(super) fn or_null(mut schema: Object, of: Type) -> Object {
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
pub(super) const NAME_CHAR: &str = "[^\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff/\\\\]";

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
