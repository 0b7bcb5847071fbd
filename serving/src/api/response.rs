//! The one HTTP mapping of [`Error`]: status, JSON body and `WWW-Authenticate`; and JSON
//! request bodies that fail as 400s.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{Error, Result};

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
pub(super) struct ErrorType(pub(super) &'static str);

/// A JSON request body, or 400 saying why it is not one.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}
