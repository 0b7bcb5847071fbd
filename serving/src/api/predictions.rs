//! `GET /v1/predictions`: the newest logged predictions (REST and stream) of a model, filtered
//! by version, channel, label and confidence — the web UI's predictions page.

use axum::Json;
use axum::extract::{Query, State};
use metastore::{PredictionLogEntry, PredictionQuery};
use serde::Serialize;
use utoipa::ToSchema;

use super::query::{query_number, single};
use super::response::ErrorBody;
use super::state::AppState;
use crate::{Error, Result};

/// The newest predictions matching a query.
#[derive(Debug, Serialize, ToSchema)]
pub struct Predictions {
    pub model: String,
    /// Newest first.
    pub predictions: Vec<PredictionLogEntry>,
}

/// The query a query string asks for (`model` defaults to the served model).
pub fn prediction_query(state: &AppState, pairs: &[(String, String)]) -> Result<PredictionQuery> {
    let model = match single(pairs, "model")? {
        Some(m) if schemas::config::valid_name(&m) => m,
        Some(m) => return Err(Error::BadRequest(format!("invalid model name `{m}`"))),
        None => state
            .model
            .info()
            .map(|i| i.name.clone())
            .ok_or_else(|| Error::NotFound("no model is served here: name one with `model`".into()))?,
    };
    let version = match single(pairs, "version")? {
        Some(v) => Some(query_number("version", Some(&v), 1..=i32::MAX as usize, 1)? as u32),
        None => None,
    };
    let channel = match single(pairs, "channel")? {
        Some(c) if c == "rest" || c == "stream" => Some(c),
        Some(c) => return Err(Error::BadRequest(format!("`channel` must be rest or stream, not `{c}`"))),
        None => None,
    };
    let max_confidence = match single(pairs, "max_confidence")? {
        Some(v) => Some(v.parse::<f32>().ok().filter(|c| (0.0..=1.0).contains(c)).ok_or_else(|| {
            Error::BadRequest(format!("`max_confidence` must be a number from 0 to 1, not `{v}`"))
        })?),
        None => None,
    };
    Ok(PredictionQuery {
        model,
        version,
        channel,
        label: single(pairs, "label")?,
        max_confidence,
        limit: query_number("limit", single(pairs, "limit")?.as_deref(), 1..=500, 50)?,
    })
}

/// The newest logged predictions of a model (default: the served one), filtered: a version, a
/// channel (`rest` or `stream`), a label, and `max_confidence` for the doubtful ones.
#[utoipa::path(get, path = "/v1/predictions", tag = "serving",
    params(("model" = Option<String>, Query, description = "model name (default: the served model)", pattern = "^[a-z0-9_-]{1,64}$"),
           ("version" = Option<u32>, Query, description = "only this version's", minimum = 1, maximum = 2147483647),
           ("channel" = Option<String>, Query, description = "rest or stream", pattern = "^(rest|stream)$"),
           ("label" = Option<String>, Query, description = "only predictions of this label"),
           ("max_confidence" = Option<f32>, Query, description = "only predictions at most this confident, 0 to 1", minimum = 0, maximum = 1),
           ("limit" = Option<u32>, Query, description = "predictions, 1 to 500 (default 50)", minimum = 1, maximum = 500)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Predictions), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recent(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Predictions>> {
    let q = prediction_query(&state, &pairs)?;
    let predictions = state.store.recent_predictions(&q).await?;
    Ok(Json(Predictions { model: q.model, predictions }))
}
