//! `POST /v1/predict` and `GET /v1/models/current`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::response::{ErrorBody, json_body};
use super::state::AppState;
use crate::{Error, Result};

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
pub(super) async fn predict(State(state): State<AppState>, body: Bytes) -> Result<Json<PredictResponse>> {
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

/// The model being served.
#[utoipa::path(get, path = "/v1/models/current", tag = "predict", security(("oauth2" = ["viewer"])),
    responses((status = 200, body = crate::handle::ModelInfo), (status = 503, body = ErrorBody)))]
pub(super) async fn current_model(
    State(state): State<AppState>,
) -> Result<Json<Arc<crate::handle::ModelInfo>>> {
    state.model.info().map(Json).ok_or(Error::NotReady)
}
