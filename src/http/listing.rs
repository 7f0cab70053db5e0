//! `GET /v3/participants/files`: every participant's files of the caller's app, newest first.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, Caller, RequestId, audit_refusal};
use super::files::page_size;
use super::openapi::AppListQuery;
use super::shapes::{self, ParticipantFile, RequestParams};
use crate::audit::{Action, AuditEvent, Refusal};
use crate::auth::{Principal, Role};
use crate::index::{AppPosition, AppQuery};
use crate::model::{FileId, UserId};

/// The longest `offsetKey` this service hands out is well below this (two identifiers of 255
/// characters and a number, as base64 of JSON); anything longer is not one of its keys.
pub const MAX_OFFSET_KEY: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppListParams {
    start_time: Option<String>,
    end_time: Option<String>,
    file_id: Option<String>,
    offset_key: Option<String>,
    page_size: Option<String>,
}

/// What an `offsetKey` carries: the sort position of the previous page's last file. Positions
/// do not move when other files come or go, so paging neither repeats nor skips a file that
/// stays put.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetKey {
    /// `createdOn`, epoch milliseconds.
    t: i64,
    /// The participant.
    u: String,
    /// The file ID.
    f: String,
}

/// base64url (no padding) of a small JSON object: opaque to clients, whose only use for it is
/// to send it back.
#[must_use]
pub fn encode_offset_key(p: &AppPosition) -> String {
    let key = OffsetKey {
        t: p.created_on,
        u: p.participant.to_string(),
        f: p.file_id.to_string(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&key).expect("an offset key serialises"))
}

/// The position an `offsetKey` names, or `None` when it is not one this service could have
/// given out.
#[must_use]
pub fn decode_offset_key(s: &str) -> Option<AppPosition> {
    if s.len() > MAX_OFFSET_KEY {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(s).ok()?;
    let key: OffsetKey = serde_json::from_slice(&raw).ok()?;
    Some(AppPosition {
        created_on: key.t,
        participant: UserId::parse(&key.u).ok()?,
        file_id: FileId::parse(&key.f).ok()?,
    })
}

/// An ISO 8601 (RFC 3339) time as the smallest whole millisecond at or after it: `createdOn`
/// is kept in milliseconds, so `createdOn >= t` is `createdOn >= ceil(t)` for both bounds
/// (`startTime` inclusive, `endTime` exclusive).
fn bound(name: &str, raw: &str) -> Result<i64, ApiError> {
    let t = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name} must be an ISO 8601 date and time with a time zone, like \
                 2026-11-26T22:00:00.000Z."
            ))
        })?
        .with_timezone(&Utc);
    let ms = t.timestamp_millis();
    Ok(if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
        ms
    } else {
        ms.saturating_add(1)
    })
}

/// The query as asked, checked.
struct Asked {
    query: AppQuery,
    page_size: usize,
}

fn parse(caller: &Principal, params: &AppListParams) -> Result<Asked, ApiError> {
    let page_size = page_size(params.page_size.as_deref())?;
    let start = params
        .start_time
        .as_deref()
        .map(|s| bound("startTime", s))
        .transpose()?;
    let end = params
        .end_time
        .as_deref()
        .map(|s| bound("endTime", s))
        .transpose()?;
    let file_id = params
        .file_id
        .as_deref()
        .map(|f| FileId::parse(f).map_err(|e| ApiError::bad_request(format!("fileId {e}."))))
        .transpose()?;
    let after = match params.offset_key.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(decode_offset_key(s).ok_or_else(|| {
            ApiError::bad_request(
                "offsetKey is not one this service gave out: send back a nextPageOffsetKey as it came.",
            )
        })?),
    };
    Ok(Asked {
        query: AppQuery {
            app: caller.app.clone(),
            file_id,
            start,
            end,
            after,
        },
        page_size,
    })
}

/// The role the caller lists as: worker, else researcher; participants may not.
fn lister(caller: &Principal) -> Result<Role, ApiError> {
    if caller.has(Role::Worker) {
        Ok(Role::Worker)
    } else if caller.has(Role::Researcher) {
        Ok(Role::Researcher)
    } else {
        Err(ApiError::forbidden(
            "Listing the files of every participant needs the researcher or worker role.",
        ))
    }
}

/// Every participant's files of the caller's app, newest `createdOn` first (metadata only, no
/// URLs). Files with the same `createdOn` come in a fixed order (participant, then fileId, both
/// descending).
#[utoipa::path(get, path = "/v3/participants/files", tag = "participants", operation_id = "listAppFiles",
    params(AppListQuery),
    responses(
        (status = 200, description = "A page of the app's files, newest first. `nextPageOffsetKey` (with `hasNext`) whenever the page is full; an empty page when nothing matches (also when `startTime` is not before `endTime`).", body = shapes::Page,
            example = json!({"items": [{"fileId": "consent-form.pdf", "userId": "bob", "appId": "my-study", "createdOn": "2026-11-27T09:30:00.000Z", "mimeType": "application/pdf", "size": 52311, "sha256": "Tc0J3vwXhN0aSGRSNmCHn3Nvl1yEsdgYxqtlQHkmKNQ=", "scanStatus": "clean", "type": "ParticipantFile"}, {"fileId": "consent-form.pdf", "userId": "alice", "appId": "my-study", "createdOn": "2026-11-26T22:00:00.000Z", "mimeType": "application/pdf", "size": 49120, "sha256": "hRQMckPZYT37p9WJrKfg7dw/k4lvIqzc73+ezzhtgz0=", "scanStatus": "clean", "type": "ParticipantFile"}], "nextPageOffsetKey": "eyJ0IjoxNzk1NzI3NjAwMDAwLCJ1IjoiYWxpY2UiLCJmIjoiY29uc2VudC1mb3JtLnBkZiJ9", "hasNext": true, "requestParams": {"offsetKey": null, "pageSize": 5, "startTime": "2026-11-26T00:00:00.000Z", "endTime": "2026-12-03T00:00:00.000Z", "fileId": "consent-form.pdf", "type": "RequestParams"}, "type": "ForwardCursorPagedResourceList"})),
        (status = 400, description = "A malformed startTime, endTime, fileId, offsetKey or pageSize", example = json!({"statusCode": 400, "message": "pageSize must be from 5-100 records", "type": "BadRequestException"})),
        (status = 401, description = "No token, or a malformed, badly signed or expired one"),
        (status = 403, description = "The token holds neither the researcher nor the worker role", example = json!({"statusCode": 403, "message": "Listing the files of every participant needs the researcher or worker role.", "type": "UnauthorizedException"})),
        (status = 503, description = "The index is unavailable")),
    security(("bearer" = []), ("bridge_session" = [])))]
pub async fn list_app(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request_id: RequestId,
    ApiQuery(params): ApiQuery<AppListParams>,
) -> Result<Json<shapes::Page>, ApiError> {
    let role = match lister(&caller) {
        Ok(role) => role,
        Err(e) => {
            audit_refusal(&state, &caller, &request_id, "", None, Action::ListApp, &e);
            return Err(e);
        }
    };
    let filter = params
        .file_id
        .as_deref()
        .and_then(|f| FileId::parse(f).ok());
    let line = |status: u16, count: Option<u64>| {
        let mut event = AuditEvent::refused(&Refusal {
            request_id: &request_id.0,
            app: &caller.app,
            actor: &caller.subject,
            role: role.as_str(),
            participant: None,
            file_id: filter.as_ref(),
            action: Action::ListApp,
            status,
        });
        event.count = count;
        state.audit.record(&event);
    };
    let asked = match parse(&caller, &params) {
        Ok(a) => a,
        Err(e) => {
            line(e.status.as_u16(), None);
            return Err(e);
        }
    };
    let page = match state.files.list_app(&asked.query, asked.page_size).await {
        Ok(page) => page,
        Err(e) => {
            let e = ApiError::from(e);
            line(e.status.as_u16(), None);
            return Err(e);
        }
    };
    line(200, Some(page.items.len() as u64));
    Ok(Json(shapes::Page {
        items: page
            .items
            .iter()
            .map(|(owner, id, f)| ParticipantFile::stored(owner, id, f))
            .collect(),
        has_next: page.next.is_some(),
        next_page_offset_key: page.next.as_ref().map(encode_offset_key),
        request_params: RequestParams {
            offset_key: params.offset_key.filter(|s| !s.is_empty()),
            page_size: asked.page_size,
            start_time: params.start_time,
            end_time: params.end_time,
            file_id: params.file_id,
            kind: "RequestParams",
        },
        kind: "ForwardCursorPagedResourceList",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_round_trip_and_garbage_is_refused() {
        let p = AppPosition {
            created_on: 1_795_000_000_123,
            participant: UserId::parse("alice").unwrap(),
            file_id: FileId::parse("consent-form.pdf").unwrap(),
        };
        let key = encode_offset_key(&p);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode_offset_key(&key), Some(p));
        for bad in [
            "x",
            "not base64!",
            "e30", // {}
            &URL_SAFE_NO_PAD.encode(r#"{"t":1,"u":"a/b","f":"x"}"#),
            &URL_SAFE_NO_PAD.encode(r#"{"t":1,"u":"a","f":"self"}"#),
            &URL_SAFE_NO_PAD.encode(r#"{"t":1,"u":"a","f":"x","z":2}"#),
            &URL_SAFE_NO_PAD.encode(r#"{"t":"1","u":"a","f":"x"}"#),
            &"A".repeat(MAX_OFFSET_KEY + 4),
        ] {
            assert_eq!(decode_offset_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_bounds_round_up_to_whole_milliseconds() {
        assert_eq!(
            bound("startTime", "2026-11-26T22:00:00.000Z").unwrap(),
            1_795_730_400_000
        );
        assert_eq!(
            bound("startTime", "2026-11-26T22:00:00.0001Z").unwrap(),
            1_795_730_400_001
        );
        assert_eq!(
            bound("startTime", "2026-11-26T23:00:00+01:00").unwrap(),
            1_795_730_400_000
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-11-26T22:00:00",
            "1795730400000",
        ] {
            assert!(bound("startTime", bad).is_err(), "{bad}");
        }
    }
}
