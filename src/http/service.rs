//! Service routes: liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, description = "Alive")))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the index and the store answer, else 503 naming the one that failed. The scanner's
/// state is reported but does not make the instance unready: uploads fail closed by themselves.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Index and store answer"), (status = 503, description = "Names what failed")))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (index, store) = tokio::join!(state.files.index().check(), state.files.store().check());
    let index_name = state.files.index().name();
    let store_name = state.files.store().name();
    let mut failed = Vec::new();
    if let Err(e) = &index {
        tracing::warn!(error = %e, "readiness: index check failed");
        failed.push(format!("the {index_name} file index"));
    }
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: store check failed");
        failed.push(format!("the {store_name} file store"));
    }
    let scanner = match &state.scanner {
        None => "not configured",
        Some(s) => match s.check().await {
            Ok(()) => "ok",
            Err(_) => "unavailable",
        },
    };
    let checks = json!({
        "index": {"backend": index_name, "status": if index.is_ok() { "ok" } else { "unavailable" }},
        "store": {"backend": store_name, "status": if store.is_ok() { "ok" } else { "unavailable" }},
        "scanner": {"status": scanner},
    });
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "statusCode": 503,
                "message": format!("Not ready: {} unavailable.", failed.join(" and ")),
                "type": "ServiceUnavailableException",
                "checks": checks,
            })),
        )
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, content_type = "application/json")))]
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
}
