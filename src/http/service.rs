//! Service routes: liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use super::AppState;

/// Liveness.
#[utoipa::path(get, path = "/health", tag = "service", operation_id = "health",
    responses((status = 200, description = "Alive", body = serde_json::Value, example = json!({"status": "ok"}))))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the index and the store answer, else 503 naming the one that failed. The scanners'
/// states (as last probed in the background) are reported but do not make the instance unready:
/// uploads fail closed by themselves.
#[utoipa::path(get, path = "/ready", tag = "service", operation_id = "ready",
    responses(
        (status = 200, description = "Index and store answer", body = serde_json::Value,
            example = json!({"status": "ready", "checks": {"index": {"backend": "sqlite", "status": "ok"}, "store": {"backend": "local", "status": "ok"}, "scanner": {"status": "not configured"}}})),
        (status = 503, description = "Bridge's error shape naming what failed, with the same `checks`", body = serde_json::Value,
            example = json!({"statusCode": 503, "message": "Not ready: the sqlite file index unavailable.", "type": "ServiceUnavailableException", "checks": {"index": {"backend": "sqlite", "status": "unavailable"}, "store": {"backend": "local", "status": "ok"}, "scanner": {"status": "not configured"}}}))))]
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
    // Each scanner's state as last probed; the scanner as a whole is up while one of them
    // answers, and unknown only until the first probes end.
    let scanner = match &state.scanner {
        None => json!({"status": "not configured"}),
        Some(s) => {
            let probed = s.states().await;
            let status = if probed.iter().any(|(_, up)| *up == Some(true)) {
                "ok"
            } else if probed.iter().any(|(_, up)| up.is_none()) {
                "unknown"
            } else {
                "unavailable"
            };
            json!({
                "status": status,
                "scanners": probed
                    .iter()
                    .map(|(name, up)| json!({"name": name, "status": probe_status(*up)}))
                    .collect::<Vec<_>>(),
            })
        }
    };
    let checks = json!({
        "index": {"backend": index_name, "status": if index.is_ok() { "ok" } else { "unavailable" }},
        "store": {"backend": store_name, "status": if store.is_ok() { "ok" } else { "unavailable" }},
        "scanner": scanner,
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

fn probe_status(up: Option<bool>) -> &'static str {
    match up {
        Some(true) => "ok",
        Some(false) => "unavailable",
        None => "unknown",
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String,
        example = "# TYPE pf_upload_bytes_total counter\npf_upload_bytes_total 16\n")))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    if let Some(scanner) = &state.scanner {
        // A scanner not probed yet has no sample rather than a 0 that would look like an outage.
        for (name, up) in scanner.states().await {
            if let Some(up) = up {
                state
                    .metrics
                    .scanner_up
                    .with_label_values(&[name.as_str()])
                    .set(i64::from(up));
            }
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// This document, with this instance's file size limit in it.
#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = serde_json::Value,
        example = json!({"openapi": "3.1.0", "info": {"title": "participant-files", "version": "0.1.0"}, "paths": {}}))))]
pub async fn openapi(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::document(state.files.max_file_size()),
    )
}
