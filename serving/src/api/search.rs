//! `GET /v1/search/runs`: runs filtered, sorted and paged on the server (MLflow's
//! `runs/search`), what the web UI's runs page shows.

use axum::Json;
use axum::extract::{Query, State};
use metastore::{RunQuery, RunSort, RunStatus, RunsPage};

use super::query::{query_number, single};
use super::response::ErrorBody;
use super::state::AppState;
use crate::{Error, Result};

/// Largest page of runs.
pub const MAX_RUNS_PAGE: usize = 500;

/// `(key, value)` of every `name=key:value` parameter; `name=key` alone asks for runs having
/// the key (any value).
fn pairs_of(pairs: &[(String, String)], name: &str) -> Vec<(String, Option<String>)> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| match v.split_once(':') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (v.clone(), None),
        })
        .collect()
}

/// The search a query string asks for; every refusal names the parameter. An empty value is a
/// value (`status=` is refused); the UI drops its empty form fields before asking.
pub fn run_query(pairs: &[(String, String)]) -> Result<RunQuery> {
    let status = match single(pairs, "status")? {
        None => None,
        Some(s) => Some(RunStatus::from_name(&s).ok_or_else(|| {
            Error::BadRequest(format!("`status` must be running, finished or failed, not `{s}`"))
        })?),
    };
    let sort = match single(pairs, "sort")? {
        None => RunSort::Started,
        Some(s) => RunSort::parse(&s).map_err(Error::BadRequest)?,
    };
    let descending = match single(pairs, "order")?.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(o) => return Err(Error::BadRequest(format!("`order` must be asc or desc, not `{o}`"))),
    };
    Ok(RunQuery {
        experiment: single(pairs, "experiment")?,
        status,
        tags: pairs_of(pairs, "tag"),
        params: pairs_of(pairs, "param"),
        parent: single(pairs, "parent")?,
        sort,
        descending,
        offset: query_number("offset", single(pairs, "offset")?.as_deref(), 0..=1_000_000, 0)?,
        limit: query_number("limit", single(pairs, "limit")?.as_deref(), 1..=MAX_RUNS_PAGE, 50)?,
    })
}

/// Runs matching every filter given, sorted (`started_at`, `metrics.<key>` or `params.<key>`;
/// runs lacking the key last), newest or largest first unless `order=asc`, a page at a time.
#[utoipa::path(get, path = "/v1/search/runs", tag = "tracking",
    params(("experiment" = Option<String>, Query, description = "only this experiment's runs"),
           ("status" = Option<String>, Query, description = "running, finished or failed", pattern = "^(running|finished|failed)$"),
           ("tag" = Option<Vec<String>>, Query, description = "`key:value`, or `key` for runs having the tag; repeat for several", explode = true),
           ("param" = Option<Vec<String>>, Query, description = "`key:value`, or `key` for runs having the parameter; repeat for several", explode = true),
           ("parent" = Option<String>, Query, description = "only the child runs of this run (a tuning run's trials)"),
           ("sort" = Option<String>, Query, description = "`started_at` (default), `metrics.<key>` or `params.<key>`", pattern = "^(started_at|metrics\\..+|params\\..+)$"),
           ("order" = Option<String>, Query, description = "desc (default) or asc", pattern = "^(asc|desc)$"),
           ("offset" = Option<u32>, Query, description = "runs to skip (default 0)", minimum = 0, maximum = 1000000),
           ("limit" = Option<u32>, Query, description = "runs per page, 1 to 500 (default 50)", minimum = 1, maximum = 500)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = RunsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn search_runs(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RunsPage>> {
    let q = run_query(&pairs)?;
    Ok(Json(state.store.search_runs(&q).await?))
}
