//! Operations: `/healthz`, `/readyz`, `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::response::ErrorBody;
use super::state::{AppState, BrokerHealth};
use crate::Error;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Ready when a model is loaded and (if checked) the broker answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "`{ready, model, version}`", body = serde_json::Value),
              (status = 503, body = ErrorBody)))]
pub(super) async fn ready(State(state): State<AppState>) -> Response {
    let info = state.model.info();
    let broker_ok = state.broker.as_ref().is_none_or(BrokerHealth::reachable);
    match info {
        Some(info) if broker_ok => (
            StatusCode::OK,
            Json(serde_json::json!({"ready": true, "model": info.name, "version": info.version})),
        )
            .into_response(),
        info => {
            let mut missing = Vec::new();
            if info.is_none() {
                missing.push("no model is loaded");
            }
            if !broker_ok {
                missing.push("the Kafka broker is unreachable");
            }
            Error::Unready(missing.join("; ")).into_response()
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub(super) async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.model_version.set(state.model.info().map_or(0, |i| i64::from(i.version)));
    state.metrics.queue_depth.set(state.model.queue_depth() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
