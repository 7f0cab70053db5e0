//! The one place a request is told to be the draft's: a layer on the routes that hands a
//! request naming a served interop version to the draft's handlers, and every other request to
//! the route's own handler (tus, or the streaming upload and upload URL of a file).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{create_at_file, create_at_uploads, head, is_draft, options, patch, terminate};
use crate::http::AppState;
use crate::http::extract::{ApiPath, Caller, RequestId};

/// What the draft does at a route, by its method and path template.
enum Op {
    Options,
    Create,
    CreateAtFile,
    Head,
    Patch,
    Terminate,
}

impl Op {
    fn of(method: &Method, route: &str) -> Option<Self> {
        let uploads = matches!(
            route,
            "/v3/participants/self/uploads" | "/v3/participants/{userId}/uploads"
        );
        let upload = matches!(
            route,
            "/v3/participants/self/uploads/{uploadId}"
                | "/v3/participants/{userId}/uploads/{uploadId}"
        );
        let file = matches!(
            route,
            "/v3/participants/self/files/{fileId}" | "/v3/participants/{userId}/files/{fileId}"
        );
        Some(match *method {
            Method::OPTIONS if uploads => Self::Options,
            Method::POST if uploads => Self::Create,
            // The draft's target resource is the file: its creation is a PUT or, as the
            // draft's examples send it, a POST.
            Method::POST | Method::PUT if file => Self::CreateAtFile,
            Method::HEAD if upload => Self::Head,
            Method::PATCH if upload => Self::Patch,
            Method::DELETE if upload => Self::Terminate,
            _ => return None,
        })
    }
}

/// Serves a draft request at a route the draft shares; anything else goes on to the route.
pub(in crate::http) async fn dispatch(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !is_draft(req.headers()) {
        return next.run(req).await;
    }
    let op = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| Op::of(req.method(), route.as_str()));
    let Some(op) = op else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let params =
        match ApiPath::<HashMap<String, String>>::from_request_parts(&mut parts, &state).await {
            Ok(ApiPath(p)) => p,
            Err(e) => return e.into_response(),
        };
    let named = params.get("userId");
    if let Op::Options = op {
        // A malformed userId is the route's own 400, as without the draft.
        if named.is_some_and(|u| crate::model::UserId::parse(u).is_err()) {
            return next.run(Request::from_parts(parts, body)).await;
        }
        return options(&state, &parts.headers);
    }
    let user = named.map_or("self", String::as_str);
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(Caller(c)) => c,
        Err(e) => return e.into_response(),
    };
    let Ok(request_id) = RequestId::from_request_parts(&mut parts, &state).await;
    let (rid, headers) = (&request_id, &parts.headers);
    let param = |name: &str| params.get(name).map_or("", String::as_str);
    match op {
        Op::Options => unreachable!("answered above"),
        Op::Create => create_at_uploads(&state, &caller, rid, user, headers, body).await,
        Op::CreateAtFile => {
            let file = param("fileId");
            create_at_file(&state, &caller, rid, user, file, headers, body).await
        }
        Op::Head => head(&state, &caller, rid, user, param("uploadId"), headers).await,
        Op::Patch => patch(&state, &caller, rid, user, param("uploadId"), headers, body).await,
        Op::Terminate => terminate(&state, &caller, rid, user, param("uploadId"), headers).await,
    }
}
