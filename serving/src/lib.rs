//! Serving for Driftwood: the REST API and the online Kafka scorer around one model thread.
//!
//! ```text
//!  POST /v1/predict ─► api ─┐                                  ┌─► JSON response
//!                           ├─► handle::ModelHandle (thread) ──┤
//!  <prefix>.text.raw ─► scorer ─┘    clean plan + model        └─► <prefix>.text.scored
//!                                                              └─► predlog (store, batched)
//! ```
//!
//! * [`auth`] — RS256 JWTs (key ids, rotation, JWKS), argon2 users and clients, roles;
//! * [`batch`] — batch scoring of JSON lines through the model thread (`models predict`);
//! * [`handle`] — the model thread, dynamic batching, hot swap guarded by the spec hash;
//! * [`api`] — the axum router and its handlers by concern (predict, token, ops, and the
//!   registry/runs/data routes); errors map to HTTP status in [`Error::status`];
//!   [`api::openapi`] is `/openapi.json`, generated from the handlers' annotations;
//! * [`scorer`] — consume raw → clean → predict → produce scored → commit offsets;
//! * [`predlog`] — the asynchronous, bounded prediction log;
//! * [`reload`] — following a registry alias, hot swap;
//! * [`tls`] — rustls server config and a TLS listener for the REST API;
//! * [`metrics`] — Prometheus metrics of both;
//! * `ui` — the web UI under `/ui` (pages, session cookie, CSRF, compiled-in assets), merged
//!   into [`api::router`].
//!
//! Architecture invariant: nothing depends on this crate; it never trains.

pub mod api;
pub mod auth;
pub mod batch;
pub mod handle;
pub mod metrics;
pub mod predlog;
pub mod reload;
pub mod scorer;
pub mod tls;
mod ui;

use axum::http::StatusCode;

/// Errors of serving. Each maps to one HTTP status in [`Error::status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (the client's fault).
    #[error("{0}")]
    BadRequest(String),
    /// Too many texts or too large a body.
    #[error("{0}")]
    TooLarge(String),
    /// The model queue is full; retry later.
    #[error("the server is overloaded, retry later")]
    Overloaded,
    /// No model is loaded yet.
    #[error("no model is loaded")]
    NotReady,
    /// `/readyz`: what is missing (a model, the broker).
    #[error("not ready: {0}")]
    Unready(String),
    /// The request took longer than `serve.request_timeout_ms`.
    #[error("the request timed out")]
    Timeout,
    /// No token, a bad token, or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid identity lacking the route's role.
    #[error("{0}")]
    Forbidden(String),
    /// Authentication cannot be done now (disabled, no signing key).
    #[error("{0}")]
    AuthUnavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A model whose cleaning spec differs from the running plan was refused.
    #[error("model refused: {0}")]
    SpecMismatch(String),
    #[error(transparent)]
    Model(#[from] trainer::Error),
    #[error(transparent)]
    Store(#[from] metastore::Error),
    #[error(transparent)]
    Kafka(#[from] ingest::Error),
    #[error(transparent)]
    Clean(#[from] stream::Error),
    /// Writing batch-scoring output failed (a closed pipe, a full disk).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status and the stable `error_type` of an error — the one place they are decided.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            Error::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Error::Unready(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::AuthUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::SpecMismatch(_) => (StatusCode::CONFLICT, "spec_mismatch"),
            Error::Model(trainer::Error::Store(e)) | Error::Store(e) => store_status(e),
            Error::Model(trainer::Error::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Model(trainer::Error::Input(_)) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::Model(trainer::Error::Artifact(_)) => (StatusCode::CONFLICT, "artifact_refused"),
            Error::Model(trainer::Error::Snapshot(stream::Error::NotFound(_)))
            | Error::Clean(stream::Error::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Model(_) => (StatusCode::INTERNAL_SERVER_ERROR, "model"),
            Error::Kafka(_) => (StatusCode::BAD_GATEWAY, "kafka"),
            Error::Clean(_) => (StatusCode::INTERNAL_SERVER_ERROR, "clean"),
            Error::Output(_) => (StatusCode::INTERNAL_SERVER_ERROR, "output"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// A metadata-store error as an HTTP status: the caller's faults are 4xx, the store's 5xx.
fn store_status(e: &metastore::Error) -> (StatusCode, &'static str) {
    use metastore::Error as S;
    match e {
        S::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        S::Input(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        S::Conflict(_) | S::State(_) => (StatusCode::CONFLICT, "conflict"),
        S::Cql { .. } => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        S::Sqlite(_) | S::Corrupt(_) | S::Io { .. } | S::Tls { .. } | S::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store")
        }
    }
}

impl From<schemas::auth::AuthError> for Error {
    fn from(e: schemas::auth::AuthError) -> Error {
        use schemas::auth::AuthError;
        match e {
            AuthError::Unauthenticated(m) => Error::Unauthenticated(m),
            AuthError::Forbidden(m) => Error::Forbidden(m),
            AuthError::Unavailable(m) => Error::AuthUnavailable(m),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
