//! `GET /v1/drift/windows`: the drift monitor's closed windows of a model version, as it kept
//! them in the metadata store (`[drift] report_retention_secs`), newest first — what the web
//! UI's drift page draws.

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::query::{query_number, single};
use super::response::ErrorBody;
use super::state::AppState;
use crate::{Error, Result};

/// Largest number of windows one request returns.
pub const MAX_WINDOWS: usize = 1000;

/// A model version's kept windows.
#[derive(Debug, Serialize, ToSchema)]
pub struct DriftWindows {
    pub model: String,
    pub version: u32,
    /// Newest first.
    pub windows: Vec<metastore::DriftWindowRecord>,
}

/// The model version a query names; without a version, the served one if it is that model's,
/// else the model's `production` version; without either, the served model.
pub async fn model_version(state: &AppState, pairs: &[(String, String)]) -> Result<(String, u32)> {
    let served = state.model.info();
    let model = match single(pairs, "model")? {
        Some(m) if schemas::config::valid_name(&m) => m,
        Some(m) => return Err(Error::BadRequest(format!("invalid model name `{m}`"))),
        None => served.as_ref().map(|i| i.name.clone()).ok_or_else(|| {
            Error::NotFound("no model is served here: name one with `model` (and `version`)".into())
        })?,
    };
    let version = match single(pairs, "version")? {
        Some(v) => query_number("version", Some(&v), 1..=i32::MAX as usize, 1)? as u32,
        None => match served.as_ref().filter(|i| i.name == model) {
            Some(i) => i.version,
            None => state.store.get_alias(&model, trainer::registry::PRODUCTION).await?.ok_or_else(|| {
                Error::NotFound(format!("`{model}` has no production version: name one with `version`"))
            })?,
        },
    };
    Ok((model, version))
}

/// The closed windows of a model version (default: the one served here), newest first: each
/// window's PSI and KS per feature, chi-square of the predicted classes, accuracy on labelled
/// records, the signals over threshold, the thresholds, and whether drift was confirmed and a
/// retrain asked for.
#[utoipa::path(get, path = "/v1/drift/windows", tag = "drift",
    params(("model" = Option<String>, Query, description = "model name (default: the served model)", pattern = "^[a-z0-9_-]{1,64}$"),
           ("version" = Option<u32>, Query, description = "model version (default: the served version, else the model's production version)", minimum = 1, maximum = 2147483647),
           ("limit" = Option<u32>, Query, description = "windows, 1 to 1000 (default 100)", minimum = 1, maximum = 1000)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = DriftWindows), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn windows(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<DriftWindows>> {
    let (model, version) = model_version(&state, &pairs).await?;
    let limit = query_number("limit", single(&pairs, "limit")?.as_deref(), 1..=MAX_WINDOWS, 100)?;
    let windows = state.store.drift_windows(&model, version, limit).await?;
    Ok(Json(DriftWindows { model, version, windows }))
}
