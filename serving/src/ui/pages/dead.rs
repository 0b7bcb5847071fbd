//! `/ui/dead-letters`: what the pipeline refused (`GET /v1/dead-letters`) — counts by reason,
//! by hour as a chart beside its table, and the newest dead letters with their detail.

use std::collections::BTreeSet;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;

use super::runs::Chart;
use crate::api::AppState;
use crate::api::dead::DeadLettersPage;
use crate::ui::page::{Chrome, UiError, render};
use crate::ui::session::Viewer;

#[derive(askama::Template)]
#[template(path = "ui/dead.html")]
struct DeadView {
    chrome: Chrome,
    page: DeadLettersPage,
    chart: Option<Chart>,
    /// `at` and the start of the value of each listed letter, as shown.
    times: Vec<String>,
    values: Vec<String>,
}

/// Characters of a dead letter's value the page shows (the route gives 2 KB).
const VALUE_CHARS: usize = 300;

pub(crate) async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let page = crate::api::dead::dead_letters(State(state), Query(pairs)).await?.0;
    let reasons: BTreeSet<&String> = page.by_reason.keys().collect();
    // A chart needs two hours at least; one hour is its table's single row.
    let chart = (page.by_hour.len() > 1).then(|| Chart {
        title: "Dead letters per hour, by reason".into(),
        x: "hour".into(),
        series: reasons.iter().map(|r| r.to_string()).collect(),
        rows: page
            .by_hour
            .iter()
            .map(|h| {
                let counts =
                    reasons.iter().map(|r| h.by_reason.get(*r).copied().unwrap_or(0).to_string()).collect();
                (h.hour.timestamp().to_string(), counts)
            })
            .collect(),
        thresholds: String::new(),
        x_kind: "time",
    });
    let times = page.latest.iter().map(|d| d.at.as_ref().map(super::time).unwrap_or_default()).collect();
    let values = page
        .latest
        .iter()
        .map(|d| match d.value.char_indices().nth(VALUE_CHARS) {
            Some((at, _)) => format!("{}… ({} bytes)", &d.value[..at], d.value_bytes),
            None if d.value_bytes > d.value.len() => format!("{}… ({} bytes)", d.value, d.value_bytes),
            None => d.value.clone(),
        })
        .collect();
    let chrome = Chrome::new(&viewer, "/ui/dead-letters", "Dead letters");
    Ok(render(&DeadView { chrome, page, chart, times, values }))
}
