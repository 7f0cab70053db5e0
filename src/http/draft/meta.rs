//! A draft client's metadata from plain headers, for the upload it creates. Precedence (the
//! README's table): fileId from the path, else `X-File-Id`, else `Content-Disposition`'s
//! filename by the name rule, else tus-style `Upload-Metadata` (`fileId`, then `filename`: what
//! tus-js-client's draft modes send), else minted; mimeType from `Content-Type`, else
//! `Upload-Metadata`; sha256 from `Repr-Digest: sha-256=:…:`, else `Upload-Metadata`.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::PARTIAL_UPLOAD;
use crate::files::resumable::NewUpload;
use crate::http::error::ApiError;
use crate::http::resumable::text;
use crate::model::{FileId, FileName, disposition};

/// What the creation request says the upload is; `path`: the target resource's fileId.
pub(super) fn new_upload(
    headers: &HeaderMap,
    path: Option<FileId>,
    length: Option<u64>,
) -> Result<NewUpload, ApiError> {
    let meta = crate::http::tus::metadata(headers)?;
    let get = |keys: &[&str]| {
        keys.iter().find_map(|k| {
            meta.iter()
                .find(|(m, v)| m == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        })
    };
    let file_name = match headers.get(axum::http::header::CONTENT_DISPOSITION) {
        Some(v) => disposition::file_name(v.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("{e}.")))?,
        None => get(&["filename"]),
    }
    .map(|n| FileName::parse(&n))
    .transpose()
    .map_err(|e| ApiError::bad_request(format!("The filename {e}.")))?;
    let explicit = text(headers, "x-file-id")
        .map(str::to_owned)
        .or_else(|| get(&["fileId"]));
    let file_id = match (path, explicit, &file_name) {
        (Some(id), _, _) => id,
        (None, Some(raw), _) => {
            FileId::parse(&raw).map_err(|e| ApiError::bad_request(format!("fileId {e}.")))?
        }
        (None, None, Some(name)) => name.file_id(),
        (None, None, None) => {
            FileId::parse(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a fileId")
        }
    };
    let mime_type = match crate::http::files::content_type(headers)? {
        Some(t) if !is_framing(&t) => Some(t),
        _ => get(&["mimeType", "filetype", "contentType"]),
    };
    let sha256 = match repr_digest(headers)? {
        Some(d) => Some(d),
        None => get(&["sha256"]),
    };
    Ok(NewUpload {
        file_id,
        file_name: file_name.map(FileName::into_string),
        mime_type,
        sha256,
        length,
    })
}

/// A media type that frames an append rather than naming the file's type.
fn is_framing(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(PARTIAL_UPLOAD)
        || essence.eq_ignore_ascii_case("application/offset+octet-stream")
}

/// RFC 9530 `Repr-Digest`: the `sha-256` member, as standard base64 of its 32 bytes; other
/// algorithms are not checked here and are ignored.
pub(super) fn repr_digest(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = text(headers, "repr-digest") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Repr-Digest: sha-256 must be :base64 of 32 bytes:.");
    for member in raw.split(',') {
        let Some((key, value)) = member.split_once('=') else {
            continue;
        };
        if key.trim() != "sha-256" {
            continue;
        }
        let value = value.split(';').next().unwrap_or_default().trim();
        let inner = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(bad)?;
        let bytes = STANDARD.decode(inner).map_err(|_| bad())?;
        if bytes.len() != 32 {
            return Err(bad());
        }
        return Ok(Some(STANDARD.encode(bytes)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_file_id_comes_by_precedence() {
        let path = FileId::parse("from-path").unwrap();
        let all = with(&[
            ("x-file-id", "from-header"),
            (
                "content-disposition",
                "attachment; filename=\"From Name.txt\"",
            ),
        ]);
        let id = |h: &HeaderMap, p: Option<FileId>| new_upload(h, p, None).unwrap().file_id;
        assert_eq!(id(&all, Some(path.clone())), path);
        assert_eq!(id(&all, None).to_string(), "from-header");
        let named = with(&[("content-disposition", "attachment; filename=\"notes.txt\"")]);
        assert_eq!(id(&named, None).to_string(), "notes.txt");
        assert_eq!(id(&with(&[]), None).to_string().len(), 36, "a minted UUID");
    }

    #[test]
    fn repr_digest_gives_the_sha256_and_partial_upload_is_no_type() {
        let digest = STANDARD.encode([7u8; 32]);
        let h = with(&[
            (
                "repr-digest",
                &format!("sha-512=:AAAA:, sha-256=:{digest}:"),
            ),
            ("content-type", "application/partial-upload"),
        ]);
        let new = new_upload(&h, None, Some(3)).unwrap();
        assert_eq!(new.sha256.as_deref(), Some(digest.as_str()));
        assert_eq!(new.mime_type, None);
        assert!(new_upload(&with(&[("repr-digest", "sha-256=:AAAA:")]), None, None).is_err());
    }
}
