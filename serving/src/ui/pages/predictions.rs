//! `/ui/predictions` (the newest logged predictions of a model, by version and channel,
//! filtered by label and low confidence: `GET /v1/predictions`) and `/ui/predictions/{id}`
//! (one prediction's lineage — `GET /v1/lineage/predictions/{id}` — with its text, read from
//! the raw version that holds the record).

use arrow::array::{Array, AsArray};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{num, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

/// Confidence at or under which the "doubtful only" filter keeps a prediction.
const DOUBTFUL: &str = "0.6";

pub(crate) struct Line {
    pub(crate) at: String,
    pub(crate) id: Option<String>,
    pub(crate) channel: String,
    pub(crate) version: u32,
    pub(crate) label: String,
    pub(crate) confidence: String,
    pub(crate) latency_us: u64,
}

#[derive(askama::Template)]
#[template(path = "ui/predictions.html")]
struct PredictionsView {
    chrome: Chrome,
    model: String,
    versions: Vec<(u32, bool)>,
    channels: Vec<(&'static str, &'static str, bool)>,
    label: String,
    doubtful: bool,
    threshold: &'static str,
    lines: Vec<Line>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let mut pairs: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let doubtful = pairs.iter().any(|(k, v)| k == "doubtful" && v == "on");
    pairs.retain(|(k, _)| k != "doubtful" && k != "max_confidence");
    if doubtful {
        pairs.push(("max_confidence".into(), DOUBTFUL.into()));
    }
    // The query `GET /v1/predictions` parses, run as it runs it.
    let q = crate::api::predictions::prediction_query(&state, &pairs)?;
    let found = state.store.recent_predictions(&q).await?;
    let versions = state
        .store
        .model_versions(&q.model)
        .await?
        .iter()
        .map(|v| (v.version, Some(v.version) == q.version))
        .collect();
    let channel = q.channel.clone().unwrap_or_default();
    let lines = found
        .iter()
        .map(|p| Line {
            at: time(&p.at),
            id: p.id.clone(),
            channel: p.channel.clone(),
            version: p.version,
            label: p.label.clone(),
            confidence: num(f64::from(p.confidence)),
            latency_us: p.latency_us,
        })
        .collect();
    let view = PredictionsView {
        chrome: Chrome::new(&viewer, "/ui/predictions", format!("Predictions of {}", q.model)),
        channels: [("", "any"), ("rest", "REST"), ("stream", "stream")]
            .into_iter()
            .map(|(v, l)| (v, l, channel == v))
            .collect(),
        label: q.label.clone().unwrap_or_default(),
        model: q.model,
        versions,
        doubtful,
        threshold: DOUBTFUL,
        lines,
    };
    Ok(render(&view))
}

#[derive(askama::Template)]
#[template(path = "ui/prediction.html")]
struct PredictionView {
    chrome: Chrome,
    id: String,
    lineage: trainer::lineage::Lineage,
    text: Option<String>,
}

/// The text of record `id` among the objects raw version `version` of `dataset` added.
fn raw_text(
    store: &stream::store::SnapshotStore,
    dataset: &str,
    version: &str,
    id: &str,
) -> stream::Result<Option<String>> {
    let m = store.resolve(dataset, version)?;
    let added: Vec<_> = m.files.iter().filter(|f| m.added.files.contains(&f.hash)).cloned().collect();
    for batch in store.read_files(added) {
        let batch = batch?;
        let (Some(ids), Some(texts)) = (batch.column_by_name("id"), batch.column_by_name("text")) else {
            return Ok(None);
        };
        let (ids, texts) = (ids.as_string::<i32>(), texts.as_string::<i32>());
        if let Some(i) = (0..ids.len()).find(|&i| ids.is_valid(i) && ids.value(i) == id) {
            return Ok(texts.is_valid(i).then(|| texts.value(i).to_string()));
        }
    }
    Ok(None)
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let lineage = crate::api::manage::prediction_lineage(State(state.clone()), Path(id.clone())).await?.0;
    let located = lineage
        .prediction
        .as_ref()
        .and_then(|p| p.raw_version.clone())
        .zip(lineage.raw.as_ref().map(|r| r.dataset.clone()));
    let text = match located {
        Some((version, dataset)) => {
            let (store, wanted) = (state.snapshots.clone(), id.clone());
            tokio::task::spawn_blocking(move || raw_text(&store, &dataset, &version, &wanted))
                .await
                .map_err(|e| UiError::internal(&e.to_string()))?
                .map_err(|e| UiError::internal(&e.to_string()))?
        }
        None => None,
    };
    let view = PredictionView {
        chrome: Chrome::new(&viewer, "/ui/predictions", format!("Prediction {id}")),
        id,
        lineage,
        text,
    };
    Ok(render(&view))
}
