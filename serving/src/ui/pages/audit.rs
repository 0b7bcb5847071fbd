//! `/ui/audit`: the audit log, newest first, a page at a time (`GET /v1/audit`).

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;

use super::{Pager, time};
use crate::api::AppState;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

/// One audit record as shown.
pub(crate) struct Entry {
    pub(crate) at: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) details: String,
}

impl Entry {
    pub(crate) fn of(r: &metastore::AuditRecord) -> Entry {
        let details = match &r.details {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}: {s}"),
                    v => format!("{k}: {v}"),
                })
                .collect::<Vec<_>>()
                .join(" · "),
            v => v.to_string(),
        };
        Entry { at: time(&r.at), actor: r.actor.clone(), action: r.action.clone(), details }
    }
}

#[derive(askama::Template)]
#[template(path = "ui/audit.html")]
struct AuditView {
    chrome: Chrome,
    entries: Vec<Entry>,
    pager: Pager,
}

pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let page = crate::api::manage::audit(State(state), Query(pairs.clone())).await?.0;
    let entries: Vec<Entry> = page.records.iter().map(Entry::of).collect();
    let pager = Pager::new(&pairs, page.offset, page.limit, entries.len(), page.more, None);
    Ok(render(&AuditView { chrome: Chrome::new(&viewer, "/ui/audit", "Audit log"), entries, pager }))
}
