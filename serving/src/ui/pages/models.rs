//! `/ui/models` (every registered model), `/ui/models/{name}` (versions, aliases, the alias
//! timeline from the audit trail, promote and roll back for admins) and
//! `/ui/models/{name}/{version}` (the model card and its lineage).
//!
//! Promote and roll back post a form (with the session's CSRF token) that calls the same
//! registry functions as `POST /v1/models/{name}/promote|rollback`, with the signed-in user as
//! the audited actor; the role is checked here whatever the page showed.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use schemas::auth::Role;
use serde::Deserialize;
use trainer::registry;

use super::audit::Entry;
use super::runs::Evaluation;
use super::{num, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

/// Audit records searched for a model's alias timeline.
const TIMELINE_SCAN: usize = 10_000;

pub(crate) struct ModelLine {
    pub(crate) name: String,
    pub(crate) versions: usize,
    pub(crate) latest: u32,
    pub(crate) aliases: String,
}

#[derive(askama::Template)]
#[template(path = "ui/models.html")]
struct ModelsView {
    chrome: Chrome,
    models: Vec<ModelLine>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response, UiError> {
    let models = crate::api::manage::list_models(State(state))
        .await?
        .0
        .into_iter()
        .map(|m| ModelLine {
            versions: m.versions.len(),
            latest: m.versions.last().map_or(0, |v| v.version),
            aliases: m.aliases.iter().map(|(a, v)| format!("{a} → v{v}")).collect::<Vec<_>>().join(", "),
            name: m.name,
        })
        .collect();
    Ok(render(&ModelsView { chrome: Chrome::new(&viewer, "/ui/models", "Models"), models }))
}

pub(crate) struct VersionLine {
    pub(crate) version: u32,
    pub(crate) family: String,
    pub(crate) created: String,
    pub(crate) run_id: String,
    pub(crate) data_version: String,
    pub(crate) aliases: String,
    pub(crate) metrics: String,
    /// Whether `production` points at it (the promote form's default).
    pub(crate) production: bool,
}

#[derive(askama::Template)]
#[template(path = "ui/model.html")]
struct ModelView {
    chrome: Chrome,
    name: String,
    versions: Vec<VersionLine>,
    aliases: Vec<(String, u32)>,
    timeline: Vec<Entry>,
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let summary = crate::api::manage::get_model(State(state.clone()), Path(name.clone())).await?.0;
    let versions = summary
        .versions
        .iter()
        .rev()
        .map(|v| VersionLine {
            version: v.version,
            family: v.family.clone(),
            created: time(&v.created_at),
            run_id: v.run_id.clone(),
            data_version: v.data_version.clone(),
            production: summary.aliases.get(registry::PRODUCTION) == Some(&v.version),
            aliases: summary
                .aliases
                .iter()
                .filter(|(_, n)| **n == v.version)
                .map(|(a, _)| a.clone())
                .collect::<Vec<_>>()
                .join(", "),
            metrics: v
                .metrics
                .iter()
                .filter(|(k, _)| k.starts_with("test_"))
                .map(|(k, m)| format!("{k} {}", num(*m)))
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let timeline = state
        .store
        .audit_log(TIMELINE_SCAN)
        .await?
        .iter()
        .filter(|r| r.details.get("model").and_then(|m| m.as_str()) == Some(name.as_str()))
        .map(Entry::of)
        .collect();
    let view = ModelView {
        chrome: Chrome::new(&viewer, "/ui/models", format!("Model {name}")),
        aliases: summary.aliases.into_iter().collect(),
        versions,
        timeline,
        name,
    };
    Ok(render(&view))
}

#[derive(Deserialize)]
pub(crate) struct MoveForm {
    #[serde(default)]
    csrf: String,
    version: Option<String>,
    alias: Option<String>,
    reason: Option<String>,
}

impl MoveForm {
    fn alias(&self) -> String {
        self.alias.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| registry::PRODUCTION.to_string())
    }

    fn reason(&self, default: &str) -> String {
        self.reason.clone().filter(|r| !r.trim().is_empty()).unwrap_or_else(|| default.to_string())
    }
}

fn bad(message: String) -> UiError {
    UiError { status: axum::http::StatusCode::BAD_REQUEST, message }
}

/// `POST /ui/models/{name}/promote` (admin).
pub(crate) async fn promote(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Form(form): Form<MoveForm>,
) -> Result<Response, UiError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.require(Role::Admin)?;
    let version = form
        .version
        .as_deref()
        .and_then(|v| v.trim().trim_start_matches('v').parse::<u32>().ok())
        .ok_or_else(|| {
            bad(format!("`{}` is not a version number", form.version.clone().unwrap_or_default()))
        })?;
    let (alias, reason) = (form.alias(), form.reason("promoted in the web UI"));
    let change = registry::AliasChange {
        name: &name,
        alias: &alias,
        actor: &viewer.principal.subject,
        reason: &reason,
    };
    registry::promote(state.store.as_ref(), state.control.as_deref(), &change, version)
        .await
        .map_err(crate::Error::from)?;
    tracing::info!(model = %name, alias = %alias, version, actor = %viewer.principal.subject, "alias promoted in the web UI");
    Ok(Redirect::to(&format!("/ui/models/{name}")).into_response())
}

/// `POST /ui/models/{name}/rollback` (admin).
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
    Form(form): Form<MoveForm>,
) -> Result<Response, UiError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.require(Role::Admin)?;
    let (alias, reason) = (form.alias(), form.reason("rolled back in the web UI"));
    let change = registry::AliasChange {
        name: &name,
        alias: &alias,
        actor: &viewer.principal.subject,
        reason: &reason,
    };
    let (from, to) = registry::rollback(state.store.as_ref(), state.control.as_deref(), &change)
        .await
        .map_err(crate::Error::from)?;
    tracing::info!(model = %name, alias = %alias, from, to, actor = %viewer.principal.subject, "alias rolled back in the web UI");
    Ok(Redirect::to(&format!("/ui/models/{name}")).into_response())
}

pub(crate) struct Feature {
    pub(crate) name: String,
    pub(crate) count: u64,
    pub(crate) mean: String,
    pub(crate) bins: usize,
}

#[derive(askama::Template)]
#[template(path = "ui/version.html")]
struct VersionView {
    chrome: Chrome,
    mv: metastore::ModelVersion,
    created: String,
    aliases: String,
    metrics: Vec<(String, String)>,
    labels: String,
    params: Vec<(String, String)>,
    features: Vec<Feature>,
    classes: Vec<(String, String)>,
    evaluation: Option<Evaluation>,
    card_error: Option<String>,
    lineage: Option<trainer::lineage::Lineage>,
    lineage_error: Option<String>,
}

pub(crate) async fn version(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Response, UiError> {
    let detail =
        crate::api::manage::get_version(State(state.clone()), Path((name.clone(), reference))).await?.0;
    let mv = detail.version;
    let card: Result<trainer::card::ModelCard, String> = match detail.card.get("error") {
        Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
        None => serde_json::from_value(detail.card).map_err(|e| e.to_string()),
    };
    let (labels, params, features, classes, card_error) = match &card {
        Ok(c) => (
            c.labels.join(", "),
            c.params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect(),
            c.reference
                .features
                .iter()
                .map(|(n, f)| Feature {
                    name: n.clone(),
                    count: f.count,
                    mean: num(f.mean),
                    bins: f.fractions.len(),
                })
                .collect(),
            c.reference.classes.iter().map(|(k, v)| (k.clone(), num(*v))).collect(),
            None,
        ),
        Err(e) => (String::new(), vec![], vec![], vec![], Some(e.clone())),
    };
    let evaluation = card.as_ref().ok().and_then(|c| Evaluation::of(&mv, c));
    let lineage =
        crate::api::manage::model_lineage(State(state.clone()), Path((name.clone(), mv.version.to_string())))
            .await;
    let (lineage, lineage_error) = match lineage {
        Ok(l) => (Some(l.0), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let view = VersionView {
        chrome: Chrome::new(&viewer, "/ui/models", format!("{} v{}", mv.name, mv.version)),
        created: time(&mv.created_at),
        aliases: detail.aliases.join(", "),
        metrics: mv.metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect(),
        labels,
        params,
        features,
        classes,
        evaluation,
        card_error,
        lineage,
        lineage_error,
        mv,
    };
    Ok(render(&view))
}
