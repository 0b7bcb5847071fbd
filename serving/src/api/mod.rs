//! The REST API (axum).
//!
//! | route | |
//! |---|---|
//! | `POST /v1/predict` | role `predictor`: `{"text": "..."}` or `{"texts": [...]}` → labels + probabilities |
//! | `GET /v1/models/current` | role `viewer`: the model being served |
//! | `GET /v1/models`, `/v1/models/{name}`, `/v1/models/{name}/versions/{version}` | role `viewer`: the registry |
//! | `POST /v1/models/{name}/promote`, `/v1/models/{name}/rollback` | role `admin`: move an alias |
//! | `GET /v1/dead-letters` | role `viewer`: the newest dead letters and their counts by reason and hour |
//! | `GET /v1/predictions` | role `viewer`: the newest logged predictions, filtered |
//! | `GET /v1/drift/windows` | role `viewer`: the drift monitor's kept windows of a model version |
//! | `GET /v1/audit` | role `viewer`: the audit log, newest first, paged (`limit`, `offset`) |
//! | `GET /v1/runs`, `/v1/runs/{run_id}`, `/v1/runs/{run_id}/metrics/{key}` | role `viewer`: tracking |
//! | `GET /v1/search/runs` | role `viewer`: runs filtered, sorted and paged on the server |
//! | `GET /v1/datasets`, `/v1/datasets/{dataset}/versions[/{version}[/rows]]` | role `viewer`: data versions, a page of a version's rows |
//! | `GET /v1/datasets/{dataset}/diff?from=&to=` | role `viewer`: two versions compared row by row |
//! | `/ui/...` | the web UI ([`crate::ui`]): HTML pages, a session cookie instead of a bearer token |
//! | `GET /openapi.json` | the OpenAPI 3.1 document, generated from these handlers ([`openapi`]) |
//! | `POST /oauth/token` | OAuth2 password or client_credentials grant → bearer JWT |
//! | `GET /.well-known/jwks.json` | the public keys tokens are signed with |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | a model is loaded and the broker answers |
//! | `GET /metrics` | Prometheus exposition |
//!
//! Errors are JSON `{"error": "...", "error_type": "..."}` with the status of [`Error::status`];
//! a route's role is checked by [`require`] before its handler runs (401 without or with a bad
//! token, 403 with a valid token lacking the role).
//!
//! This module is the router only; the handlers live by concern ([`predict`], `token`, `ops`,
//! `manage` for the registry, runs and data versions), over the shared [`state`] and the one
//! HTTP error mapping in `response`. [`openapi`] documents them; nothing below imports the router.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use schemas::auth::Role;

use crate::metrics::Metrics;

pub mod dead;
pub mod drift;
pub mod manage;
pub mod openapi;
mod ops;
pub mod predict;
pub mod predictions;
mod query;
mod response;
pub mod search;
pub mod state;
pub mod token;

pub use response::ErrorBody;
pub use state::{AppState, BrokerHealth, Limits, limit};
pub use token::require;

use response::ErrorType;

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;

pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let role = |role: Role| middleware::from_fn_with_state((state.auth.clone(), role), require);
    let viewer = Router::new()
        .route("/v1/models/current", get(predict::current_model))
        .route("/v1/models", get(manage::list_models))
        .route("/v1/models/{name}", get(manage::get_model))
        .route("/v1/models/{name}/versions/{version}", get(manage::get_version))
        .route("/v1/runs", get(manage::list_runs))
        .route("/v1/runs/{run_id}", get(manage::get_run))
        .route("/v1/runs/{run_id}/metrics/{key}", get(manage::metric_history))
        .route("/v1/search/runs", get(search::search_runs))
        .route("/v1/datasets", get(manage::list_datasets))
        .route("/v1/datasets/{dataset}/versions", get(manage::list_data_versions))
        .route("/v1/datasets/{dataset}/versions/{version}", get(manage::get_data_version))
        .route("/v1/datasets/{dataset}/versions/{version}/rows", get(manage::version_rows))
        .route("/v1/datasets/{dataset}/diff", get(manage::data_diff))
        .route("/v1/lineage/models/{name}/{version}", get(manage::model_lineage))
        .route("/v1/lineage/predictions/{id}", get(manage::prediction_lineage))
        .route("/v1/audit", get(manage::audit))
        .route("/v1/drift/windows", get(drift::windows))
        .route("/v1/predictions", get(predictions::recent))
        .route("/v1/dead-letters", get(dead::dead_letters))
        .route_layer(role(Role::Viewer));
    let admin = Router::new()
        .route("/v1/models/{name}/promote", post(manage::promote))
        .route("/v1/models/{name}/rollback", post(manage::rollback))
        .route_layer(role(Role::Admin));
    Router::new()
        .route("/v1/predict", post(predict::predict).route_layer(role(Role::Predictor)))
        .merge(viewer)
        .merge(admin)
        .route("/oauth/token", post(token::token))
        .route("/.well-known/jwks.json", get(token::jwks))
        .route_layer(middleware::from_fn_with_state(state.limits.clone(), limit))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::ready))
        .route("/metrics", get(ops::render_metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(crate::ui::router(state.clone()))
        // A path no route matches (`/v1/lineage/predictions/` with an empty id): the JSON
        // error shape, like every other refusal.
        .fallback(|| async { crate::Error::NotFound("no such route".into()).into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(metrics, track))
        .with_state(state)
}

async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    // Route patterns (`/v1/models/{name}`), never raw paths: the label set stays bounded.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.duration.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, response.status().as_str()]).inc();
    if let Some(ErrorType(error_type)) = response.extensions().get::<ErrorType>() {
        metrics.errors.with_label_values(&[error_type]).inc();
    }
    response
}

/// A router with only `GET /metrics`, rendering `registry` (for processes without the API).
pub fn metrics_router(registry: prometheus::Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut buf = Vec::new();
                prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf)
                    .expect("text encoding never fails");
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf)
            }
        }),
    )
}

/// Serves `router` on `listener` — a `tokio::net::TcpListener`, or a [`crate::tls::TlsListener`]
/// — until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
