//! The REST API (axum).
//!
//! | route | |
//! |---|---|
//! | `POST /v1/predict` | role `predictor`: `{"text": "..."}` or `{"texts": [...]}` → labels + probabilities |
//! | `GET /v1/models/current` | role `viewer`: the model being served |
//! | `GET /v1/models`, `/v1/models/{name}`, `/v1/models/{name}/versions/{version}` | role `viewer`: the registry |
//! | `POST /v1/models/{name}/promote`, `/v1/models/{name}/rollback` | role `admin`: move an alias |
//! | `GET /v1/runs`, `/v1/runs/{run_id}`, `/v1/runs/{run_id}/metrics/{key}` | role `viewer`: tracking |
//! | `GET /v1/datasets`, `/v1/datasets/{dataset}/versions[/{version}]` | role `viewer`: data versions |
//! | `GET /openapi.json` | the OpenAPI 3.1 document, generated from these handlers ([`crate::openapi`]) |
//! | `POST /oauth/token` | OAuth2 password or client_credentials grant → bearer JWT |
//! | `GET /.well-known/jwks.json` | the public keys tokens are signed with |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | a model is loaded and the broker answers |
//! | `GET /metrics` | Prometheus exposition |
//!
//! Errors are JSON `{"error": "...", "error_type": "..."}` with the status of [`Error::status`];
//! a route's role is checked by [`require`] before its handler runs (401 without or with a bad
//! token, 403 with a valid token lacking the role).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use schemas::auth::{Authenticator, Role};

use crate::handle::ModelHandle;
use crate::metrics::Metrics;
use crate::predlog::PredictionLog;
use crate::{Error, Result};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub model: ModelHandle,
    pub metrics: Metrics,
    pub predlog: Option<PredictionLog>,
    /// Largest number of texts per request.
    pub max_texts: usize,
    pub auth: Arc<crate::auth::JwtAuth>,
    pub limits: Limits,
    /// Whether `/readyz` also requires the broker to answer (`None`: not checked).
    pub broker: Option<BrokerHealth>,
    /// Runs, the registry, aliases and their audit trail.
    pub store: Arc<dyn metastore::MetadataStore>,
    /// The data versions.
    pub snapshots: Arc<stream::store::SnapshotStore>,
    /// Where promotions are announced (`None`: only the store moves; followers poll it).
    pub control: Option<Arc<ingest::control::ControlProducer>>,
}

/// Whether the Kafka broker answered a metadata request recently: a background probe, every
/// [`BrokerHealth::INTERVAL`], so `/readyz` never waits on the broker.
#[derive(Debug, Clone)]
pub struct BrokerHealth(Arc<std::sync::atomic::AtomicBool>);

impl BrokerHealth {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

    /// Starts probing `kafka` now and every interval until `cancel`.
    pub fn probe(
        kafka: &schemas::config::KafkaConfig,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<BrokerHealth> {
        let client = Arc::new(ingest::kafka::metadata_client(kafka)?);
        let ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ok.clone();
        tokio::spawn(async move {
            loop {
                let c = client.clone();
                let reachable = tokio::task::spawn_blocking(move || {
                    rdkafka::consumer::Consumer::fetch_metadata(
                        c.as_ref(),
                        None,
                        std::time::Duration::from_secs(2),
                    )
                    .is_ok()
                })
                .await
                .unwrap_or(false);
                flag.store(reachable, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Self::INTERVAL) => {}
                }
            }
        });
        Ok(BrokerHealth(ok))
    }

    pub fn reachable(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Bounded concurrency and a per-request deadline for the API routes.
#[derive(Debug, Clone)]
pub struct Limits {
    permits: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

impl Limits {
    pub fn new(max_concurrent: usize, timeout: std::time::Duration) -> Limits {
        Limits { permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))), timeout }
    }

    pub fn from_config(serve: &schemas::config::ServeConfig) -> Limits {
        Limits::new(serve.max_concurrent_requests, std::time::Duration::from_millis(serve.request_timeout_ms))
    }
}

/// 429 at once when `limits` are all taken (never an unbounded queue), 503 `timeout` past the
/// deadline (the handler's future is dropped, so its work is abandoned).
pub async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire() else {
        return Error::Overloaded.into_response();
    };
    let path = req.uri().path().to_string();
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path, timeout_ms = limits.timeout.as_millis() as u64, "request timed out");
            Error::Timeout.into_response()
        }
    }
}

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;

pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let role = |role: Role| middleware::from_fn_with_state((state.auth.clone(), role), require);
    use crate::manage;
    let viewer = Router::new()
        .route("/v1/models/current", get(current_model))
        .route("/v1/models", get(manage::list_models))
        .route("/v1/models/{name}", get(manage::get_model))
        .route("/v1/models/{name}/versions/{version}", get(manage::get_version))
        .route("/v1/runs", get(manage::list_runs))
        .route("/v1/runs/{run_id}", get(manage::get_run))
        .route("/v1/runs/{run_id}/metrics/{key}", get(manage::metric_history))
        .route("/v1/datasets", get(manage::list_datasets))
        .route("/v1/datasets/{dataset}/versions", get(manage::list_data_versions))
        .route("/v1/datasets/{dataset}/versions/{version}", get(manage::get_data_version))
        .route_layer(role(Role::Viewer));
    let admin = Router::new()
        .route("/v1/models/{name}/promote", post(manage::promote))
        .route("/v1/models/{name}/rollback", post(manage::rollback))
        .route_layer(role(Role::Admin));
    Router::new()
        .route("/v1/predict", post(predict).route_layer(role(Role::Predictor)))
        .merge(viewer)
        .merge(admin)
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .route_layer(middleware::from_fn_with_state(state.limits.clone(), limit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(crate::openapi::document))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(metrics, track))
        .with_state(state)
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status();
        let message = match status {
            // Internal details stay in the logs.
            StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %self, "request failed");
                "internal error".to_string()
            }
            _ => self.to_string(),
        };
        let mut response =
            (status, Json(serde_json::json!({ "error": message, "error_type": error_type }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorType(error_type));
        response
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// Stable, for programs: `bad_request`, `unauthenticated`, `forbidden`, `not_found`, `too_large`,
    /// `overloaded`, `timeout`, `not_ready`, ...
    pub error_type: String,
}

/// The `error_type` of an error response, for the errors counter.
#[derive(Debug, Clone, Copy)]
struct ErrorType(&'static str);

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

/// One text (`text`) or a batch (`texts`), with optional caller ids.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    /// Caller ids, echoed back and written to the prediction log.
    ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PredictionOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// `None` when the cleaning plan drops the text (e.g. empty after cleaning).
    label: Option<String>,
    /// Label → probability.
    probabilities: BTreeMap<String, f32>,
    /// Why there is no label (`empty_after_cleaning`).
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

/// Predictions in request order, with the model version that made them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PredictResponse {
    model: String,
    version: u32,
    predictions: Vec<PredictionOut>,
    latency_ms: f64,
}

/// Classifies one text or a batch with the served model.
#[utoipa::path(post, path = "/v1/predict", tag = "predict", request_body = PredictRequest,
    security(("oauth2" = ["predictor"])),
    responses((status = 200, body = PredictResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn predict(State(state): State<AppState>, body: Bytes) -> Result<Json<PredictResponse>> {
    let started = Instant::now();
    let req: PredictRequest = json_body(&body)?;
    let texts = match (req.text, req.texts) {
        (Some(t), None) => vec![t],
        (None, Some(ts)) => ts,
        _ => return Err(Error::BadRequest("give exactly one of `text` or `texts`".into())),
    };
    if texts.is_empty() {
        return Err(Error::BadRequest("`texts` is empty".into()));
    }
    if texts.len() > state.max_texts {
        return Err(Error::TooLarge(format!(
            "{} texts, at most {} per request",
            texts.len(),
            state.max_texts
        )));
    }
    if let Some(ids) = &req.ids
        && ids.len() != texts.len()
    {
        return Err(Error::BadRequest("`ids` must have one id per text".into()));
    }
    let answer = state.model.predict_raw(texts).await?;
    state.metrics.batch_size.with_label_values(&["rest"]).observe(answer.batch_texts as f64);
    let latency_us = started.elapsed().as_micros() as u64;
    let ids = req.ids.unwrap_or_default();
    let mut log = Vec::new();
    let model = &answer.model;
    let predictions = answer
        .predictions
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let id = ids.get(i).cloned();
            match p {
                Some(p) => {
                    log.push(p.log_entry(model, "rest", id.clone(), latency_us));
                    PredictionOut {
                        id,
                        probabilities: model.by_label(&p.probabilities),
                        label: Some(p.label),
                        skipped: None,
                    }
                }
                None => PredictionOut {
                    id,
                    label: None,
                    probabilities: BTreeMap::new(),
                    skipped: Some("empty_after_cleaning"),
                },
            }
        })
        .collect();
    if let Some(predlog) = &state.predlog {
        predlog.record(log);
    }
    Ok(Json(PredictResponse {
        model: answer.model.name.clone(),
        version: answer.model.version,
        predictions,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}

/// A JSON request body, or 400 saying why it is not one.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

/// Lets the request through only with a bearer token granting `role`.
pub async fn require(
    State((auth, role)): State<(Arc<crate::auth::JwtAuth>, Role)>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            Some(t) => Some(t.trim()),
            None => {
                return Error::Unauthenticated("expected `Authorization: Bearer <token>`".into())
                    .into_response();
            }
        },
        Some(Err(_)) => {
            return Error::Unauthenticated("the Authorization header is not text".into()).into_response();
        }
    };
    match auth.authorize(token, role) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => Error::from(e).into_response(),
    }
}

/// A `POST /oauth/token` form (RFC 6749 §4.3 and §4.4).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// Accepted and ignored: roles come from the users file.
    #[serde(rename = "scope")]
    _scope: Option<String>,
}

/// An issued bearer token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    expires_in: u64,
}

/// OAuth2 token endpoint: `password` grant for users, `client_credentials` for services (client
/// credentials in the form or as HTTP Basic).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn token(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let form: TokenRequest = serde_urlencoded::from_bytes(&body).map_err(|e| {
        Error::BadRequest(format!("expected an application/x-www-form-urlencoded token request: {e}"))
    })?;
    // Client credentials in the body or as HTTP Basic (RFC 6749 §2.3.1).
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let auth = state.auth.clone();
    let issued = match form.grant_type.as_str() {
        "password" => {
            let (Some(user), Some(password)) = (form.username, form.password) else {
                return Err(Error::BadRequest("the password grant needs username and password".into()));
            };
            tokio::task::spawn_blocking(move || auth.login(&user, &password)).await
        }
        "client_credentials" => {
            let (id, secret) = match (form.client_id, form.client_secret, basic) {
                (Some(id), Some(secret), _) => (id, secret),
                (_, _, Some(pair)) => pair,
                _ => {
                    return Err(Error::BadRequest(
                        "client_credentials needs client_id and client_secret".into(),
                    ));
                }
            };
            tokio::task::spawn_blocking(move || auth.client_credentials(&id, &secret)).await
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unsupported grant_type `{other}` (password, client_credentials)"
            )));
        }
    }
    .map_err(|e| Error::Internal(format!("login task failed: {e}")))??;
    let body = TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in_secs,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The public keys tokens are signed with (RFC 7517), by key id.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "a JWK set", body = serde_json::Value)))]
async fn jwks(State(state): State<AppState>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(state.auth.jwks().clone())
}

/// The model being served.
#[utoipa::path(get, path = "/v1/models/current", tag = "predict", security(("oauth2" = ["viewer"])),
    responses((status = 200, body = crate::handle::ModelInfo), (status = 503, body = ErrorBody)))]
async fn current_model(State(state): State<AppState>) -> Result<Json<Arc<crate::handle::ModelInfo>>> {
    state.model.info().map(Json).ok_or(Error::NotReady)
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Ready when a model is loaded and (if checked) the broker answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "`{ready, model, version}`", body = serde_json::Value),
              (status = 503, body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Response {
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
async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.model_version.set(state.model.info().map_or(0, |i| i64::from(i.version)));
    state.metrics.queue_depth.set(state.model.queue_depth() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
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
