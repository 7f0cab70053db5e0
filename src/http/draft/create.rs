//! Draft upload creation: at the target resource (`PUT`/`POST .../files/{fileId}`, whose final
//! answer is the streaming upload's 201 ParticipantFile) and at `.../uploads` (tus-js-client's
//! draft modes). With the whole body it is one request; with `Upload-Complete: ?0` it answers
//! 201 with the upload's URL, for appends.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Interop, h, meta, problem, want_digest};
use crate::audit::Action;
use crate::auth::Principal;
use crate::files::resumable::Append;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Access, RequestId, Target};
use crate::http::files::body_length;
use crate::http::resumable::{self, Failed, number};
use crate::http::shapes::ParticipantFile;
use crate::model::FileId;

/// Creation at `/v3/participants/{user}/uploads`.
pub(in crate::http) async fn create_at_uploads(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    create(state, (caller, request_id), user, None, headers, body).await
}

/// Creation at the target resource, `/v3/participants/{user}/files/{fileId}`.
pub(in crate::http) async fn create_at_file(
    state: &AppState,
    caller: &Principal,
    request_id: &RequestId,
    user: &str,
    raw_file: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    create(
        state,
        (caller, request_id),
        user,
        Some(raw_file),
        headers,
        body,
    )
    .await
}

async fn create(
    state: &AppState,
    (caller, request_id): (&Principal, &RequestId),
    user: &str,
    raw_file: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let v = Interop::of(headers).expect("dispatched on is_draft");
    let target = Target::resolve_audited(
        state,
        (caller, request_id),
        user,
        raw_file,
        Access::Write,
        Action::UploadCreate,
    );
    let (target, file) = match target {
        Ok(t) => t,
        Err(e) => return problem::plain(e),
    };
    match created(state, &target, request_id, (v, user, file), headers, body).await {
        Ok(res) => res,
        Err(Refused::Lengths(api)) => problem::inconsistent(v, api),
        Err(Refused::Other(failed)) => problem::answer(v, failed, Some(0)),
    }
}

enum Refused {
    Lengths(ApiError),
    Other(Failed),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Self::Other(e.into())
    }
}

async fn created(
    state: &AppState,
    target: &Target,
    request_id: &RequestId,
    (v, user, file): (Interop, &str, Option<FileId>),
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refused> {
    let complete = v.complete(headers)?;
    let content_length = body_length(&body);
    let declared = number(headers, "upload-length")?;
    let inconsistent = || {
        Refused::Lengths(ApiError::bad_request(
            "Upload-Length and the content disagree.",
        ))
    };
    // With the whole body the length is the body's; Upload-Length, when also sent, must agree.
    let length = match (complete, declared, content_length) {
        (true, Some(d), Some(c)) if d != c => return Err(inconsistent()),
        (false, Some(d), Some(c)) if c > d => return Err(inconsistent()),
        (true, d, c) => d.or(c),
        (false, d, _) => d,
    };
    let new = meta::new_upload(headers, file, length);
    let row = resumable::create(state, target, request_id, new).await?;
    let id = row.value.id.clone();
    let mut res = StatusCode::CREATED.into_response();
    let mut offset = 0;
    let mut done = false;
    // An upload of no bytes is complete as soon as it exists, as in tus.
    if complete || content_length != Some(0) || row.value.length == Some(0) {
        let req = Append {
            offset: 0,
            content_length,
            ends: complete,
            ..Append::default()
        };
        let appended = match resumable::append(state, target, request_id, &id, req, body).await {
            Ok(a) => a,
            Err(e) => {
                // Without a 104 (which hyper cannot send) the client never learnt the URL:
                // nothing of the upload may stay behind.
                resumable::abandon(state, target, &id).await;
                return Err(Refused::Other(e));
            }
        };
        offset = appended.offset;
        if let Some(c) = appended.committed {
            done = true;
            res = (
                StatusCode::CREATED,
                Json(ParticipantFile::stored(
                    &target.owner,
                    &appended.file_id,
                    &c.file,
                )),
            )
                .into_response();
        } else if complete {
            resumable::abandon(state, target, &id).await;
            return Err(inconsistent());
        }
    }
    let headers = res.headers_mut();
    headers.insert(header::LOCATION, resumable::location(state, user, &id));
    headers.insert(h("upload-offset"), offset.into());
    headers.insert(h("x-file-id"), file_id_header(&row.value.file_id));
    v.mark(headers, done);
    if !done {
        v.limits(state, headers, state.files.upload_ttl());
        want_digest(headers);
    }
    Ok(res)
}

/// The fileId the upload becomes (minted, or taken from a name), percent-encoded where it is
/// not ASCII.
fn file_id_header(id: &FileId) -> HeaderValue {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    let text = percent_encoding::utf8_percent_encode(&id.to_string(), SET).to_string();
    HeaderValue::from_str(&text).expect("percent-encoded text is a header value")
}
