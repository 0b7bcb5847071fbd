//! `/ui/runs` (filtered, sorted, paged on the server: `GET /v1/search/runs`), `/ui/runs/{id}`
//! (params, metrics with step curves, tags, the data version, child runs, the evaluation of
//! the model version it registered) and `/ui/runs/compare?run=…` (params that differ, final
//! metrics, curves). Curves are thinned on the server ([`metastore::downsample`]), so a run of
//! a million steps costs a page as much as one of a thousand.

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use metastore::{Run, RunSort};

use super::{Pager, num, query, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

/// Points per curve on a run's page, and per run on the compare page.
const RUN_CURVE_POINTS: usize = 400;
const COMPARE_CURVE_POINTS: usize = 150;
/// Runs the compare page takes.
const MAX_COMPARED: usize = 20;
/// Parameter columns the runs list shows (those that vary on the page first).
const PARAM_COLUMNS: usize = 6;
const METRIC_COLUMNS: usize = 8;

/// A column header that sorts by its key.
pub(crate) struct SortHeader {
    pub(crate) label: String,
    pub(crate) href: String,
    /// `ascending`, `descending` or `none` (aria-sort).
    pub(crate) aria: &'static str,
}

pub(crate) struct RunLine {
    pub(crate) id: String,
    pub(crate) experiment: String,
    pub(crate) status: String,
    pub(crate) started: String,
    pub(crate) parent: Option<String>,
    pub(crate) params: Vec<String>,
    pub(crate) metrics: Vec<String>,
}

#[derive(askama::Template)]
#[template(path = "ui/runs.html")]
struct RunsView {
    chrome: Chrome,
    experiment: String,
    /// (value, label, selected) of the status filter's options.
    statuses: Vec<(&'static str, &'static str, bool)>,
    tag: String,
    param: String,
    started: SortHeader,
    param_headers: Vec<SortHeader>,
    metric_headers: Vec<SortHeader>,
    lines: Vec<RunLine>,
    pager: Pager,
    total: usize,
}

fn first(pairs: &[(String, String)], name: &str) -> String {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Sort links keep every filter and start again at the first page.
fn sort_header(
    pairs: &[(String, String)],
    current: &metastore::RunQuery,
    sort: RunSort,
    label: String,
) -> SortHeader {
    let active = current.sort == sort;
    let descending = if active { !current.descending } else { true };
    let mut p: Vec<(String, String)> =
        pairs.iter().filter(|(k, _)| !matches!(k.as_str(), "sort" | "order" | "offset")).cloned().collect();
    p.push(("sort".into(), sort.as_string()));
    p.push(("order".into(), if descending { "desc" } else { "asc" }.into()));
    let aria = match (active, current.descending) {
        (false, _) => "none",
        (true, true) => "descending",
        (true, false) => "ascending",
    };
    SortHeader { label, href: query(&p), aria }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    // Empty form fields mean "any".
    let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let q = crate::api::search::run_query(&pairs)?;
    let page = state.store.search_runs(&q).await?;
    // Parameters whose values differ on this page come first; then the rest, alphabetically.
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &page.runs {
        for (k, v) in &r.params {
            values.entry(k).or_default().insert(v);
        }
    }
    let mut param_keys: Vec<&str> = values.keys().copied().collect();
    param_keys.sort_by_key(|k| (values[k].len() <= 1, *k));
    param_keys.truncate(PARAM_COLUMNS);
    let metric_keys: Vec<&str> = page
        .runs
        .iter()
        .flat_map(|r| r.metrics.keys().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(METRIC_COLUMNS)
        .collect();
    let lines = page
        .runs
        .iter()
        .map(|r| RunLine {
            id: r.run_id.clone(),
            experiment: r.experiment.clone(),
            status: r.status.as_str().into(),
            started: time(&r.started_at),
            parent: r.parent_run_id.clone(),
            params: param_keys.iter().map(|k| r.params.get(*k).cloned().unwrap_or_default()).collect(),
            metrics: metric_keys
                .iter()
                .map(|k| r.metrics.get(*k).map_or(String::new(), |v| num(*v)))
                .collect(),
        })
        .collect();
    let view = RunsView {
        chrome: Chrome::new(&viewer, "/ui/runs", "Runs"),
        experiment: first(&pairs, "experiment"),
        statuses: {
            let status = first(&pairs, "status");
            [("", "any"), ("running", "running"), ("finished", "finished"), ("failed", "failed")]
                .into_iter()
                .map(|(v, l)| (v, l, status == v))
                .collect()
        },
        tag: first(&pairs, "tag"),
        param: first(&pairs, "param"),
        started: sort_header(&pairs, &q, RunSort::Started, "Started".into()),
        param_headers: param_keys
            .iter()
            .map(|k| sort_header(&pairs, &q, RunSort::Param(k.to_string()), k.to_string()))
            .collect(),
        metric_headers: metric_keys
            .iter()
            .map(|k| sort_header(&pairs, &q, RunSort::Metric(k.to_string()), k.to_string()))
            .collect(),
        pager: Pager::new(&pairs, page.offset, page.limit, page.runs.len(), page.more, Some(page.total)),
        total: page.total,
        lines,
    };
    Ok(render(&view))
}

/// A chart and its table: x in the first column, one column per series; empty cells are gaps.
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x: String,
    pub(crate) series: Vec<String>,
    pub(crate) rows: Vec<(String, Vec<String>)>,
    /// Comma-separated threshold values (dashed lines), or empty.
    pub(crate) thresholds: String,
    /// `time` for Unix-second x values, else empty.
    pub(crate) x_kind: &'static str,
}

impl Chart {
    /// Series of `(step, value)` points on the union of their steps.
    pub(crate) fn of_series(title: String, x: &str, series: Vec<(String, Vec<(u64, f64)>)>) -> Chart {
        let steps: BTreeSet<u64> = series.iter().flat_map(|(_, p)| p.iter().map(|(s, _)| *s)).collect();
        let maps: Vec<BTreeMap<u64, f64>> = series.iter().map(|(_, p)| p.iter().copied().collect()).collect();
        let rows = steps
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    maps.iter().map(|m| m.get(s).map_or(String::new(), |v| v.to_string())).collect(),
                )
            })
            .collect();
        Chart {
            title,
            x: x.into(),
            series: series.into_iter().map(|(n, _)| n).collect(),
            rows,
            thresholds: String::new(),
            x_kind: "",
        }
    }
}

pub(crate) struct ChildRun {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) params: String,
    pub(crate) metrics: String,
}

/// The evaluation of the model version a run registered.
pub(crate) struct Evaluation {
    pub(crate) model: String,
    pub(crate) version: u32,
    pub(crate) labels: Vec<String>,
    /// label, precision, recall, f1, support
    pub(crate) per_class: Vec<[String; 5]>,
    /// One row per true label.
    pub(crate) confusion: Vec<(String, Vec<(u64, bool)>)>,
}

#[derive(askama::Template)]
#[template(path = "ui/run.html")]
struct RunView {
    chrome: Chrome,
    run: Run,
    started: String,
    ended: String,
    metrics: Vec<(String, String)>,
    dataset: Option<String>,
    charts: Vec<Chart>,
    children: Vec<ChildRun>,
    evaluation: Option<Evaluation>,
}

impl Evaluation {
    /// The card's test evaluation, when it has one.
    pub(crate) fn of(mv: &metastore::ModelVersion, card: &trainer::card::ModelCard) -> Option<Evaluation> {
        let e = card.evaluation.as_ref()?;
        Some(Evaluation {
            model: mv.name.clone(),
            version: mv.version,
            per_class: e
                .per_class
                .iter()
                .map(|(l, c)| [l.clone(), num(c.precision), num(c.recall), num(c.f1), c.support.to_string()])
                .collect(),
            confusion: e
                .confusion
                .iter()
                .enumerate()
                .map(|(t, row)| {
                    let label = card.labels.get(t).cloned().unwrap_or_default();
                    (label, row.iter().enumerate().map(|(p, n)| (*n, p == t)).collect())
                })
                .collect(),
            labels: card.labels.clone(),
        })
    }
}

/// The evaluation of the model version `run_id` registered, if it registered one whose card
/// is readable.
async fn evaluation_of(state: &AppState, run_id: &str) -> Result<Option<Evaluation>, UiError> {
    for name in state.store.model_names().await? {
        if let Some(mv) = state.store.model_versions(&name).await?.into_iter().find(|v| v.run_id == run_id) {
            let dir = std::path::PathBuf::from(&mv.artifact_dir);
            let card = tokio::task::spawn_blocking(move || trainer::artifact::read_card(&dir))
                .await
                .map_err(|e| UiError::internal(&e.to_string()))?;
            return Ok(card.ok().and_then(|c| Evaluation::of(&mv, &c)));
        }
    }
    Ok(None)
}

fn pairs_line(m: &BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(run_id): Path<String>,
) -> Result<Response, UiError> {
    let run = crate::api::manage::get_run(State(state.clone()), Path(run_id.clone())).await?.0;
    let mut charts = Vec::new();
    for key in run.metrics.keys() {
        let points = state.store.metric_history(&run.run_id, key).await?;
        if points.len() > 1 {
            let thin = metastore::downsample(&points, RUN_CURVE_POINTS);
            charts.push(Chart::of_series(key.clone(), "step", vec![(key.clone(), thin)]));
        }
    }
    let q = metastore::RunQuery {
        parent: Some(run.run_id.clone()),
        limit: 500,
        descending: false,
        ..Default::default()
    };
    let children = state
        .store
        .search_runs(&q)
        .await?
        .runs
        .iter()
        .map(|c| ChildRun {
            id: c.run_id.clone(),
            status: c.status.as_str().into(),
            params: pairs_line(&c.params),
            metrics: c.metrics.iter().map(|(k, v)| format!("{k}={}", num(*v))).collect::<Vec<_>>().join(", "),
        })
        .collect();
    let view = RunView {
        chrome: Chrome::new(&viewer, "/ui/runs", format!("Run {}", run.run_id)),
        started: time(&run.started_at),
        ended: run.ended_at.as_ref().map(time).unwrap_or_default(),
        metrics: run.metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect(),
        dataset: run.params.get("dataset").or_else(|| run.tags.get("dataset")).cloned(),
        evaluation: evaluation_of(&state, &run.run_id).await?,
        charts,
        children,
        run,
    };
    Ok(render(&view))
}

pub(crate) struct ParamRow {
    pub(crate) key: String,
    pub(crate) values: Vec<String>,
    pub(crate) differs: bool,
}

#[derive(askama::Template)]
#[template(path = "ui/compare.html")]
struct CompareView {
    chrome: Chrome,
    ids: Vec<String>,
    params: Vec<ParamRow>,
    metrics: Vec<ParamRow>,
    charts: Vec<Chart>,
    only_differences: bool,
}

pub(crate) async fn compare(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let ids: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "run")
        .map(|(_, v)| v.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if ids.len() < 2 || ids.len() > MAX_COMPARED {
        return Err(UiError {
            status: axum::http::StatusCode::BAD_REQUEST,
            message: format!("pick 2 to {MAX_COMPARED} runs to compare (got {})", ids.len()),
        });
    }
    let only_differences = pairs.iter().any(|(k, v)| k == "differences" && v == "only");
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(state.store.get_run(id).await?);
    }
    let table = |get: &dyn Fn(&Run) -> BTreeMap<String, String>| {
        let maps: Vec<BTreeMap<String, String>> = runs.iter().map(get).collect();
        let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
        keys.into_iter()
            .map(|k| {
                let values: Vec<String> =
                    maps.iter().map(|m| m.get(k).cloned().unwrap_or_default()).collect();
                let differs = values.iter().any(|v| *v != values[0]);
                ParamRow { key: k.clone(), values, differs }
            })
            .filter(|r| r.differs || !only_differences)
            .collect::<Vec<_>>()
    };
    let params = table(&|r: &Run| r.params.clone());
    let metrics = table(&|r: &Run| r.metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect());
    let keys: BTreeSet<String> = runs.iter().flat_map(|r| r.metrics.keys().cloned()).collect();
    let mut charts = Vec::new();
    for key in keys {
        let mut series = Vec::new();
        for r in &runs {
            let points = state.store.metric_history(&r.run_id, &key).await?;
            if !points.is_empty() {
                series.push((r.run_id.clone(), metastore::downsample(&points, COMPARE_CURVE_POINTS)));
            }
        }
        if series.iter().any(|(_, p)| p.len() > 1) {
            charts.push(Chart::of_series(key.clone(), "step", series));
        }
    }
    let view = CompareView {
        chrome: Chrome::new(&viewer, "/ui/runs", format!("{} runs compared", ids.len())),
        ids,
        params,
        metrics,
        charts,
        only_differences,
    };
    Ok(render(&view))
}
