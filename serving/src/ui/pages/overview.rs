//! `/ui`: the pipeline at a glance — the model this server serves and its latest drift window,
//! every model's aliases, the
//! datasets' latest versions, the newest runs and the last audited events. The live part
//! (what is served, what the scorer did) refreshes itself every 5 s through htmx.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;

use super::audit::Entry;
use super::{num, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

pub(crate) struct Serving {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) family: String,
    pub(crate) data_version: String,
    pub(crate) metrics: Vec<(String, String)>,
}

pub(crate) struct AliasRow {
    pub(crate) model: String,
    pub(crate) alias: String,
    pub(crate) version: u32,
}

pub(crate) struct DatasetRow {
    pub(crate) name: String,
    pub(crate) versions: usize,
    pub(crate) latest: String,
    pub(crate) rows: u64,
}

pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) experiment: String,
    pub(crate) status: String,
    pub(crate) started: String,
}

/// The served version's newest kept drift window.
pub(crate) struct DriftStatus {
    pub(crate) index: u64,
    pub(crate) closed: String,
    pub(crate) drifting: bool,
    pub(crate) confirmed: bool,
    pub(crate) signals: usize,
}

#[derive(askama::Template)]
#[template(path = "ui/overview.html")]
struct OverviewView {
    chrome: Chrome,
    serving: Option<Serving>,
    drift: Option<DriftStatus>,
    /// Records the in-process scorer wrote scored / skipped, and its partitions.
    scored: u64,
    skipped: u64,
    partitions: i64,
    aliases: Vec<AliasRow>,
    datasets: Vec<DatasetRow>,
    runs: Vec<RunRow>,
    events: Vec<Entry>,
}

pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, UiError> {
    use crate::api::manage;
    let serving = state.model.info().map(|i| Serving {
        name: i.name.clone(),
        version: i.version,
        family: i.family.to_string(),
        data_version: i.data_version.clone(),
        metrics: i.metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect(),
    });
    let drift = match &serving {
        Some(s) => state.store.drift_windows(&s.name, s.version, 1).await?.first().map(|w| DriftStatus {
            index: w.index,
            closed: time(&w.closed_at),
            signals: w.report["signals"].as_array().map_or(0, Vec::len),
            drifting: w.report["signals"].as_array().is_some_and(|s| !s.is_empty()),
            confirmed: w.report["drift_confirmed"].as_bool().unwrap_or(false),
        }),
        None => None,
    };
    let mut aliases = Vec::new();
    for m in manage::list_models(State(state.clone())).await?.0 {
        aliases.extend(m.aliases.iter().map(|(a, v)| AliasRow {
            model: m.name.clone(),
            alias: a.clone(),
            version: *v,
        }));
    }
    let datasets = manage::list_datasets(State(state.clone()))
        .await?
        .0
        .into_iter()
        .map(|d| DatasetRow {
            latest: d.latest.unwrap_or_default(),
            name: d.name,
            versions: d.versions,
            rows: d.rows,
        })
        .collect();
    let q = metastore::RunQuery { limit: 5, descending: true, ..Default::default() };
    let runs = state
        .store
        .search_runs(&q)
        .await?
        .runs
        .iter()
        .map(|r| RunRow {
            id: r.run_id.clone(),
            experiment: r.experiment.clone(),
            status: r.status.as_str().to_string(),
            started: time(&r.started_at),
        })
        .collect();
    let events = manage::audit(State(state.clone()), Query(vec![("limit".into(), "10".into())]))
        .await?
        .0
        .records
        .iter()
        .map(Entry::of)
        .collect();
    let m = &state.metrics;
    let view = OverviewView {
        chrome: Chrome::new(&viewer, "/ui", "Overview"),
        serving,
        drift,
        scored: m.scored.with_label_values(&["scored"]).get(),
        skipped: m.scored.with_label_values(&["skipped"]).get(),
        partitions: m.scorer_partitions.get(),
        aliases,
        datasets,
        runs,
        events,
    };
    Ok(render(&view))
}
