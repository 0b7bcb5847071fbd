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

/// The body of `POST /v1/predict` as documented: exactly one of three shapes. The handler
/// parses [`PredictForm`] instead, whose errors say which shape was meant and what is wrong.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = PredictRequest)]
#[allow(dead_code)]
pub enum PredictBody {
    One(OneText),
    Batch(TextBatch),
    Items(ItemBatch),
}

/// One text, with an optional caller id.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct OneText {
    text: String,
    /// Echoed back and written to the prediction log.
    id: Option<String>,
}

/// A batch of texts (at most `serve.max_request_texts`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TextBatch {
    #[schema(min_items = 1, max_items = 256)]
    texts: Vec<String>,
}

/// A batch of texts with caller ids (at most `serve.max_request_texts`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ItemBatch {
    #[schema(min_items = 1, max_items = 256)]
    items: Vec<Item>,
}

/// A text and its optional caller id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    text: String,
    /// Echoed back and written to the prediction log.
    id: Option<String>,
}

/// What the handler reads: every field of every shape, so a wrong mix gets a precise message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictForm {
    text: Option<String>,
    id: Option<String>,
    texts: Option<Vec<String>>,
    items: Option<Vec<Item>>,
}

impl PredictForm {
    /// The texts and their ids, in request order.
    fn into_texts(self) -> Result<(Vec<String>, Vec<Option<String>>)> {
        let shapes = [self.text.is_some(), self.texts.is_some(), self.items.is_some()];
        if shapes.iter().filter(|given| **given).count() != 1 {
            return Err(Error::BadRequest("give exactly one of `text`, `texts` or `items`".into()));
        }
        if self.id.is_some() && self.text.is_none() {
            return Err(Error::BadRequest("`id` goes with `text`; a batch with ids is `items`".into()));
        }
        let (texts, ids): (Vec<String>, Vec<Option<String>>) = match (self.text, self.texts, self.items) {
            (Some(t), _, _) => (vec![t], vec![self.id]),
            (_, Some(ts), _) => {
                let n = ts.len();
                (ts, vec![None; n])
            }
            (_, _, items) => items.unwrap_or_default().into_iter().map(|i| (i.text, i.id)).unzip(),
        };
        if texts.is_empty() {
            return Err(Error::BadRequest("the batch is empty".into()));
        }
        Ok((texts, ids))
    }
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
#[utoipa::path(post, path = "/v1/predict", tag = "predict", request_body = PredictBody,
    security(("oauth2" = ["predictor"])),
    responses((status = 200, body = PredictResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn predict(State(state): State<AppState>, body: Bytes) -> Result<Json<PredictResponse>> {
    let started = Instant::now();
    let (texts, ids) = json_body::<PredictForm>(&body)?.into_texts()?;
    if texts.len() > state.max_texts {
        return Err(Error::TooLarge(format!(
            "{} texts, at most {} per request",
            texts.len(),
            state.max_texts
        )));
    }
    let answer = state.model.predict_raw(texts).await?;
    state.metrics.batch_size.with_label_values(&["rest"]).observe(answer.batch_texts as f64);
    let latency_us = started.elapsed().as_micros() as u64;
    let mut log = Vec::new();
    let model = &answer.model;
    let predictions = answer
        .predictions
        .into_iter()
        .zip(ids)
        .map(|(p, id)| match p {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(Vec<String>, Vec<Option<String>>)> {
        json_body::<PredictForm>(body.as_bytes())?.into_texts()
    }

    #[test]
    fn each_documented_shape_gives_texts_and_ids_in_order() {
        assert_eq!(parse(r#"{"text": "a", "id": "x"}"#).unwrap(), (vec!["a".into()], vec![Some("x".into())]));
        assert_eq!(
            parse(r#"{"texts": ["a", "b"]}"#).unwrap(),
            (vec!["a".into(), "b".into()], vec![None, None])
        );
        let items = parse(r#"{"items": [{"text": "a", "id": "x"}, {"text": "b"}]}"#).unwrap();
        assert_eq!(items, (vec!["a".into(), "b".into()], vec![Some("x".into()), None]));
    }

    #[test]
    fn a_wrong_mix_is_refused_with_what_is_wrong() {
        let message = |body: &str| parse(body).unwrap_err().to_string();
        assert!(message(r#"{"text": "a", "texts": ["b"]}"#).contains("exactly one of"));
        assert!(message(r#"{}"#).contains("exactly one of"));
        assert!(message(r#"{"texts": ["a"], "id": "x"}"#).contains("`id` goes with `text`"));
        assert!(message(r#"{"items": []}"#).contains("empty"));
        assert!(message(r#"{"texts": ["a"], "ids": ["x"]}"#).contains("unknown field `ids`"));
    }
}
