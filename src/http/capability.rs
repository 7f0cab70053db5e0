//! Handlers for capability URLs: `PUT /v3/uploads/{token}` and `GET /v3/downloads/{token}`.
//! The URL is the credential, so nothing here reads a bearer token.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{ApiPath, RequestId};
use super::files::{body_length, check_content_length, content_type};
use super::openapi::{Binary, TokenPath};
use super::shapes::ParticipantFile;
use super::{AppState, observe_upload};
use crate::audit::{Action, AuditEvent};
use crate::capability::Grant;
use crate::metrics::InFlight;

fn audit(
    state: &AppState,
    grant: &Grant,
    request_id: &RequestId,
    action: Action,
    (status, signature): (u16, Option<&str>),
    bytes: u64,
) {
    state.audit.record(
        &AuditEvent::new(
            &request_id.0,
            &grant.owner,
            &grant.actor,
            grant.role,
            Some(&grant.file_id),
            action,
            status,
            bytes,
        )
        .with_signature(signature),
    );
}

/// Uploads through an upload URL: commits at most once, with the signed Content-Type.
#[utoipa::path(put, path = "/v3/uploads/{token}", tag = "capability", operation_id = "uploadWithUrl",
    params(TokenPath),
    request_body(content = inline(Binary), content_type = "application/octet-stream",
        description = "The file's bytes, sent with the Content-Type the POST declared as `mimeType` (compared by media type, ignoring case and parameters). Another Content-Type, or none, is 403.",
        example = "Hello from alice"),
    responses(
        (status = 201, description = "The stored file", body = ParticipantFile,
            example = json!({"fileId": "notes.txt", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "text/plain", "size": 16, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"})),
        (status = 400, description = "A malformed Content-Type, or a body that does not match the declared size or sha256"),
        (status = 403, description = "The URL expired, was altered, was used or replaced, or is for downloads; or the Content-Type is not the declared one",
            example = json!({"statusCode": 403, "message": "This URL is not valid: it has expired, was altered, or is for another use.", "type": "UnauthorizedException"})),
        (status = 408, description = "The body stopped arriving; nothing was kept"),
        (status = 409, description = "The upload was stopped before it was stored: the participant's files were erased, or `reconcile` found it abandoned"),
        (status = 413, description = "Over the file size limit or a quota; nothing was kept"),
        (status = 415, description = "The content contradicts the declared type, or the type is not allowed"),
        (status = 422, description = "The scanner found a virus (named in the message); nothing was kept"),
        (status = 503, description = "The index, the store or the scanner is unavailable, or too many uploads are in flight (`Retry-After`)")))]
pub async fn upload(
    State(state): State<AppState>,
    request_id: RequestId,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let grant = state.files.verify_upload_grant(&token)?;
    // On a task of its own, like an upload through the API: a client that leaves after its last
    // byte stops neither the commit nor its audit line.
    let task = {
        let state = std::sync::Arc::clone(&state);
        async move {
            let result = upload_granted(&state, &grant, &headers, body).await;
            let (action, status, bytes) = match &result {
                Ok(c) if c.replaced => (Action::Replace, (201, None), c.file.size),
                Ok(c) => (Action::Upload, (201, None), c.file.size),
                Err(e) => (
                    Action::Upload,
                    (e.status.as_u16(), e.signature.as_deref()),
                    0,
                ),
            };
            audit(&state, &grant, &request_id, action, status, bytes);
            result.map(|c| ParticipantFile::stored(&grant.owner, &grant.file_id, &c.file))
        }
    };
    let body = crate::detached::run(&state.cleanup, task)
        .await
        .map_err(crate::files::FilesError::from)??;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn upload_granted(
    state: &AppState,
    grant: &Grant,
    headers: &HeaderMap,
    body: Body,
) -> Result<crate::files::Committed, ApiError> {
    let declared_type = content_type(headers)?;
    state
        .files
        .check_upload_grant(grant, declared_type.as_deref())
        .await?;
    check_content_length(headers, state.files.max_file_size())?;
    let _in_flight = InFlight::start(&state.metrics.uploads_in_flight);
    let length = body_length(&body);
    let committed = state
        .files
        .upload_granted(grant, body.into_data_stream(), length)
        .await
        .map_err(ApiError::from);
    observe_upload(state, &committed);
    committed
}

/// The single byte range a `Range` header asks for: `None` for the whole object (no header,
/// or several ranges, which are answered whole as RFC 9110 allows).
fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<std::ops::RangeInclusive<u64>>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let Ok(text) = value.to_str() else {
        return Ok(None);
    };
    let Ok(parsed) = http_range_header::parse_range_header(text) else {
        // A Range header that does not parse is ignored (RFC 9110 14.2); one that parses but
        // lies outside the object is refused below.
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(ranges.into_iter().next()),
        Ok(_) => Ok(None),
        Err(_) => Err(ApiError::range_not_satisfiable()),
    }
}

/// Downloads through a download URL: the bytes of the object it was issued for, or one range.
#[utoipa::path(get, path = "/v3/downloads/{token}", tag = "capability", operation_id = "downloadWithUrl",
    params(TokenPath,
        ("Range" = Option<String>, Header, description = "One byte range, like `bytes=0-1023`. A Range that does not parse, or asks for several ranges, is answered with the whole file (RFC 9110).", example = "bytes=0-1023")),
    responses(
        (status = 200, description = "The whole file, with its stored media type as Content-Type", content_type = "*/*", body = inline(Binary),
            headers(("Content-Length" = u64), ("ETag" = String, description = "The upload's ID"), ("Accept-Ranges" = String, description = "`bytes`"),
                ("Content-Disposition" = String, description = "`attachment; filename=\"{ASCII fallback}\"; filename*=UTF-8''{percent-encoded UTF-8}` (RFC 6266) with the file's `fileName`, or its fileId when it has none")), example = "Hello from alice"),
        (status = 206, description = "The range, with the stored media type as Content-Type", content_type = "*/*", body = inline(Binary),
            headers(("Content-Range" = String, description = "`bytes start-end/size`"), ("Content-Length" = u64), ("ETag" = String), ("Accept-Ranges" = String),
                ("Content-Disposition" = String)), example = "Hello"),
        (status = 403, description = "The URL expired, was altered, or is for uploads",
            example = json!({"statusCode": 403, "message": "This URL is not valid: it has expired, was altered, or is for another use.", "type": "UnauthorizedException"})),
        (status = 404, description = "The file was replaced or deleted since the URL was issued"),
        (status = 422, description = "A rescan found the file infected since the URL was issued (`InfectedFileException`)"),
        (status = 416, description = "The range lies outside the file", headers(("Content-Range" = String, description = "`bytes */size`"))),
        (status = 503, description = "The index or the store is unavailable, or too many requests change the file at once (`Retry-After`)")))]
pub async fn download(
    State(state): State<AppState>,
    method: Method,
    request_id: RequestId,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = state.files.verify_download_grant(&token)?;
    // A HEAD serves no bytes: its own audit action, no budget, no read from the store.
    let head = method == Method::HEAD;
    let action = if head {
        Action::DownloadHead
    } else {
        Action::Download
    };
    let opened = async {
        let file = state.files.granted_file(&grant).await?;
        let etag = format!("\"{}\"", file.key.upload_id().as_str());
        let range = if if_range_holds(&headers, &etag) {
            requested_range(&headers, file.size).map_err(|e| (e, Some(file.size)))?
        } else {
            None
        };
        let length = range
            .as_ref()
            .map_or(file.size, |r| r.end() - r.start() + 1);
        let read = if head {
            None
        } else {
            // Charged before a byte goes out, and what is not served given back on the way.
            state.files.charge_download(&grant.owner, length)?;
            match state
                .files
                .read(&file, range.clone().map(|r| *r.start()..*r.end() + 1))
                .await
            {
                Ok(read) => Some(read),
                Err(e) => {
                    state.files.refund_download(&grant.owner, length);
                    return Err(e.into());
                }
            }
        };
        Ok::<_, (ApiError, Option<u64>)>((file, etag, range, length, read))
    }
    .await;
    let (file, etag, range, length, read) = match opened {
        Ok(o) => o,
        Err((e, size)) => {
            audit(
                &state,
                &grant,
                &request_id,
                action,
                (e.status.as_u16(), e.signature.as_deref()),
                0,
            );
            let mut response = e.into_response();
            if let Some(size) = size {
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
            }
            return Ok(response);
        }
    };
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = match read {
        None => {
            audit(
                &state,
                &grant,
                &request_id,
                action,
                (status.as_u16(), None),
                0,
            );
            Body::empty()
        }
        Some(read) => {
            state.metrics.bytes_out.inc_by(length);
            // Audited once the body ends, with the bytes that went out.
            Body::from_stream(Served {
                inner: read.body,
                state: Arc::clone(&state),
                grant: grant.clone(),
                request_id: request_id.clone(),
                status: status.as_u16(),
                length,
                unsent: length,
            })
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    let content_type = HeaderValue::from_str(&file.mime_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    let name = file.file_name.as_deref().unwrap_or(grant.file_id.as_str());
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&crate::model::disposition::attachment(name))
            .expect("an attachment header is visible ASCII"),
    );
    if let Some(r) = range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start(), r.end(), file.size))
                .expect("ascii"),
        );
    }
    Ok(response)
}

/// RFC 9110 13.1.5: a Range counts only when `If-Range` is absent or names the current
/// representation by a strong entity tag (strong comparison). A weak or another entity tag, or
/// a date (this service sends no Last-Modified to compare it with), asks for the whole file.
fn if_range_holds(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => v.as_bytes() == etag.as_bytes(),
    }
}

/// The audit status of a download or upload that its client left before the end: nginx's
/// "client closed request", as no HTTP status says it.
pub(crate) const INTERRUPTED: u16 = 499;

/// A download's bytes on their way out. On drop, the part of the charge that was not served
/// (the client left early) goes back to the participant's budget, and the audit line records
/// the bytes that went out ([`INTERRUPTED`] when not all of them did).
struct Served {
    inner: futures::stream::BoxStream<'static, Result<bytes::Bytes, crate::store::StoreError>>,
    state: AppState,
    grant: Grant,
    request_id: RequestId,
    status: u16,
    length: u64,
    unsent: u64,
}

impl futures::Stream for Served {
    type Item = Result<bytes::Bytes, crate::store::StoreError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.unsent = self.unsent.saturating_sub(chunk.len() as u64);
        }
        polled
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.state
            .files
            .refund_download(&self.grant.owner, self.unsent);
        let status = if self.unsent == 0 {
            self.status
        } else {
            INTERRUPTED
        };
        audit(
            &self.state,
            &self.grant,
            &self.request_id,
            Action::Download,
            (status, None),
            self.length - self.unsent,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_range_compares_strongly() {
        let etag = "\"abc\"";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_RANGE, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(if_range_holds(&HeaderMap::new(), etag));
        assert!(if_range_holds(&with("\"abc\""), etag));
        for other in [
            "W/\"abc\"",
            "\"abd\"",
            "abc",
            "Tue, 01 Dec 2026 00:00:00 GMT",
            "",
        ] {
            assert!(!if_range_holds(&with(other), etag), "{other}");
        }
    }
}
