//! `/ui/drift?model=&version=`: a model version's kept drift windows (`GET /v1/drift/windows`)
//! as charts with their threshold lines — PSI and KS per feature, the predicted classes'
//! chi-square p-value, accuracy on labelled records — the same figures as a table, and the
//! windows where drift was confirmed or a retrain asked for.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::Value;

use super::runs::Chart;
use super::{num, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

/// Windows a page draws (newest).
const WINDOWS: usize = 500;

#[derive(Clone)]
pub(crate) struct WindowLine {
    pub(crate) index: u64,
    pub(crate) closed: String,
    pub(crate) records: u64,
    pub(crate) cells: Vec<String>,
    pub(crate) signals: String,
    pub(crate) drift: bool,
    pub(crate) retrain: bool,
}

#[derive(askama::Template)]
#[template(path = "ui/drift.html")]
struct DriftView {
    chrome: Chrome,
    model: String,
    version: u32,
    /// Every registered version of the model, for the picker.
    versions: Vec<u32>,
    charts: Vec<Chart>,
    columns: Vec<String>,
    lines: Vec<WindowLine>,
    events: Vec<WindowLine>,
}

/// A number at `path` of a kept report, if there is one.
fn at(report: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(report, |v, k| v.get(k)).and_then(Value::as_f64)
}

pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut query = pairs.clone();
    query.retain(|(k, _)| k != "limit");
    query.push(("limit".into(), WINDOWS.to_string()));
    let kept = crate::api::drift::windows(State(state.clone()), Query(query)).await?.0;
    let versions = state.store.model_versions(&kept.model).await?.iter().map(|v| v.version).collect();
    // Oldest first for the charts.
    let windows: Vec<_> = kept.windows.iter().rev().collect();
    let features: BTreeSet<String> = windows
        .iter()
        .flat_map(|w| w.report["psi"].as_object().into_iter().flat_map(|m| m.keys().cloned()))
        .collect();
    let ks_features: BTreeSet<String> = windows
        .iter()
        .flat_map(|w| w.report["ks"].as_object().into_iter().flat_map(|m| m.keys().cloned()))
        .collect();
    let threshold = |key: &str| {
        windows.last().and_then(|w| at(&w.report, &["thresholds", key])).map(num).unwrap_or_default()
    };
    let x = |w: &&metastore::DriftWindowRecord| (w.closed_at.timestamp_millis() as f64 / 1000.0).to_string();
    let cell = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let chart = |title: &str, series: Vec<(String, Vec<&str>)>, thresholds: String| Chart {
        title: title.to_string(),
        x: "closed at".into(),
        series: series.iter().map(|(n, _)| n.clone()).collect(),
        rows: windows
            .iter()
            .map(|w| (x(w), series.iter().map(|(_, path)| cell(at(&w.report, path))).collect()))
            .collect(),
        thresholds,
        x_kind: "time",
    };
    let mut charts = Vec::new();
    if !windows.is_empty() {
        let psi = features.iter().map(|f| (f.clone(), vec!["psi", f.as_str()])).collect();
        charts.push(chart("PSI per feature", psi, threshold("psi")));
        let ks = ks_features.iter().map(|f| (f.clone(), vec!["ks", f.as_str(), "d"])).collect();
        charts.push(chart("KS statistic D per feature", ks, threshold("ks_d")));
        charts.push(chart(
            "Chi-square p-value of the predicted classes",
            vec![("p".into(), vec!["chi_square", "p"])],
            threshold("chi_square_p_value"),
        ));
        if windows.iter().any(|w| at(&w.report, &["accuracy", "accuracy"]).is_some()) {
            charts.push(chart(
                "Accuracy on labelled records",
                vec![("accuracy".into(), vec!["accuracy", "accuracy"])],
                threshold("accuracy_floor"),
            ));
        }
    }
    let mut columns: Vec<String> = features.iter().map(|f| format!("PSI {f}")).collect();
    columns.extend(ks_features.iter().map(|f| format!("KS D {f}")));
    columns.extend(["chi² p".to_string(), "accuracy".to_string()]);
    let lines: Vec<WindowLine> = kept
        .windows
        .iter()
        .map(|w| {
            let r = &w.report;
            let mut cells: Vec<String> =
                features.iter().map(|f| at(r, &["psi", f]).map(num).unwrap_or_default()).collect();
            cells.extend(ks_features.iter().map(|f| at(r, &["ks", f, "d"]).map(num).unwrap_or_default()));
            cells.push(at(r, &["chi_square", "p"]).map(|p| format!("{p:.2e}")).unwrap_or_default());
            cells.push(at(r, &["accuracy", "accuracy"]).map(num).unwrap_or_default());
            let signals = r["signals"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| {
                            let (f, st) =
                                (s["feature"].as_str().unwrap_or(""), s["statistic"].as_str().unwrap_or(""));
                            format!("{f} {st} {}", s["value"].as_f64().map(num).unwrap_or_default())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            WindowLine {
                index: w.index,
                closed: time(&w.closed_at),
                records: w.records,
                cells,
                signals,
                drift: r["drift_confirmed"].as_bool().unwrap_or(false),
                retrain: r["retrain_requested"].as_bool().unwrap_or(false),
            }
        })
        .collect();
    let events = lines
        .iter()
        .filter(|l| l.drift || l.retrain)
        .map(|l| WindowLine { cells: vec![], ..l.clone() })
        .collect();
    let view = DriftView {
        chrome: Chrome::new(&viewer, "/ui/drift", format!("Drift of {} v{}", kept.model, kept.version)),
        model: kept.model.clone(),
        version: kept.version,
        versions,
        charts,
        columns,
        lines,
        events,
    };
    Ok(render(&view))
}
