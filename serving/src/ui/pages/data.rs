//! `/ui/data` (datasets), `/ui/data/{dataset}` (its versions: rows, rows added, tags, parent,
//! sources) and `/ui/data/{dataset}/{version}` (the manifest and a page of its rows), over the
//! functions behind `GET /v1/datasets…`.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{Pager, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

pub(crate) struct DatasetLine {
    pub(crate) name: String,
    pub(crate) versions: usize,
    pub(crate) latest: String,
    pub(crate) rows: u64,
    pub(crate) tags: String,
}

#[derive(askama::Template)]
#[template(path = "ui/datasets.html")]
struct DatasetsView {
    chrome: Chrome,
    datasets: Vec<DatasetLine>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, UiError> {
    let datasets = crate::api::manage::list_datasets(State(state))
        .await?
        .0
        .into_iter()
        .map(|d| DatasetLine {
            latest: d.latest.unwrap_or_default(),
            versions: d.versions,
            rows: d.rows,
            tags: d.tags.keys().cloned().collect::<Vec<_>>().join(", "),
            name: d.name,
        })
        .collect();
    Ok(render(&DatasetsView { chrome: Chrome::new(&viewer, "/ui/data", "Data"), datasets }))
}

pub(crate) struct VersionLine {
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) short: String,
    pub(crate) created: String,
    pub(crate) rows: u64,
    pub(crate) added: u64,
    pub(crate) tags: String,
    pub(crate) parent: String,
    /// `topic[partition] first..next` of the offsets this commit consumed, or the files imported.
    pub(crate) sources: String,
    pub(crate) raw: Option<(String, String, u64)>,
}

#[derive(askama::Template)]
#[template(path = "ui/dataset.html")]
struct DatasetView {
    chrome: Chrome,
    name: String,
    versions: Vec<VersionLine>,
}

pub(crate) async fn dataset(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let manifests = crate::api::manage::list_data_versions(State(state.clone()), Path(name.clone())).await?.0;
    // This dataset's tags only (listing every dataset would read all their versions).
    let (store, dataset) = (state.snapshots.clone(), name.clone());
    let tags = tokio::task::spawn_blocking(move || store.tags(&dataset))
        .await
        .map_err(|e| UiError::internal(&e.to_string()))?
        .map_err(crate::Error::Clean)?;
    let versions = manifests
        .iter()
        .rev()
        .map(|m| {
            let mut sources: Vec<String> = m
                .added
                .consumed
                .iter()
                .map(|s| format!("{}[{}] {}..{}", s.topic, s.partition, s.first, s.next))
                .collect();
            sources.extend(m.added.imported.iter().map(|f| format!("{} ({} rows)", f.name, f.rows)));
            let mut version_tags: Vec<String> = m.tags.clone();
            version_tags.extend(tags.iter().filter(|(_, id)| **id == m.id).map(|(t, _)| t.clone()));
            version_tags.sort();
            version_tags.dedup();
            VersionLine {
                seq: m.seq,
                id: m.id.clone(),
                short: m.short_id().to_string(),
                created: time(&m.created_at),
                rows: m.rows,
                added: m.added.rows,
                tags: version_tags.join(", "),
                parent: m.parent.as_deref().map(|p| p[..12.min(p.len())].to_string()).unwrap_or_default(),
                sources: sources.join("; "),
                raw: m.raw.as_ref().map(|r| (r.dataset.clone(), r.version.clone(), r.seq)),
            }
        })
        .collect();
    Ok(render(&DatasetView {
        chrome: Chrome::new(&viewer, "/ui/data", format!("Dataset {name}")),
        name,
        versions,
    }))
}

#[derive(askama::Template)]
#[template(path = "ui/data_version.html")]
struct DataVersionView {
    chrome: Chrome,
    m: stream::store::Manifest,
    created: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    pager: Pager,
}

/// Characters of a cell a page shows (a 5 KB e-mail would make a page of 25 rows heavy).
const CELL_CHARS: usize = 400;

/// A cell as text: strings as they are (cut at [`CELL_CHARS`]), null as empty, anything else
/// as JSON.
fn cell(v: Option<&serde_json::Value>) -> String {
    let s = match v {
        None | Some(serde_json::Value::Null) => return String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    match s.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

pub(crate) async fn version(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path((name, reference)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    use crate::api::manage;
    let m = manage::get_data_version(State(state.clone()), Path((name.clone(), reference.clone()))).await?.0;
    let mut query = pairs.clone();
    if !query.iter().any(|(k, _)| k == "limit") {
        query.push(("limit".into(), "25".into()));
    }
    let page = manage::version_rows(State(state), Path((name, m.id.clone())), Query(query)).await?.0;
    let columns: Vec<String> = m.schema.iter().map(|f| f.name.clone()).collect();
    let rows = page.rows.iter().map(|r| columns.iter().map(|c| cell(r.get(c))).collect()).collect();
    let shown = page.rows.len();
    let view = DataVersionView {
        chrome: Chrome::new(&viewer, "/ui/data", format!("{} v{}", m.dataset, m.seq)),
        created: time(&m.created_at),
        pager: Pager::new(
            &pairs,
            page.offset as usize,
            page.limit,
            shown,
            page.more,
            Some(page.total as usize),
        ),
        columns,
        rows,
        m,
    };
    Ok(render(&view))
}

#[derive(askama::Template)]
#[template(path = "ui/data_diff.html")]
struct DiffView {
    chrome: Chrome,
    name: String,
    diff: crate::api::manage::DataDiff,
}

/// `/ui/data/{dataset}/diff?from=&to=`: two versions compared row by row, by id.
pub(crate) async fn diff(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let diff = crate::api::manage::data_diff(State(state), Path(name.clone()), Query(pairs)).await?.0;
    let title = format!("{} → {}", diff.from, diff.to);
    Ok(render(&DiffView { chrome: Chrome::new(&viewer, "/ui/data", title), name, diff }))
}
