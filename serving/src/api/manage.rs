//! The registry, runs and data versions over REST: reads for `viewer`, promote / rollback for
//! `admin` (MLflow's model registry and tracking reads, DVC's version list).
//!
//! Promote and rollback move an alias in the metadata store (audited, with the caller as the
//! actor) and announce `ModelPromoted` on the control topic; every server following the alias
//! hot-swaps (see [`crate::reload`]).

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use metastore::{ModelVersion, Run};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use trainer::registry;
use utoipa::{IntoParams, ToSchema};

use schemas::auth::Principal;
use stream::store::{Manifest, SnapshotStore};

use super::query::{query_number, single};
use super::response::{ErrorBody, json_body};
use super::state::AppState;
use crate::{Error, Result};

/// A registered model: its versions (oldest first) and aliases.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    /// Alias → version.
    pub aliases: BTreeMap<String, u32>,
    pub versions: Vec<ModelVersion>,
}

/// One version with its model card.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDetail {
    pub version: ModelVersion,
    /// The aliases pointing at this version.
    pub aliases: Vec<String>,
    /// The model card (`card.json`): family, labels, hyper-parameters, data version, metrics.
    #[schema(value_type = Object)]
    pub card: serde_json::Value,
}

/// `POST /v1/models/{name}/promote`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// A JSON number with no fraction (`3` or `3.0`, as JSON Schema's `integer`).
    #[serde(deserialize_with = "whole_number")]
    pub version: u32,
    /// Default `production`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub alias: Option<String>,
    /// Recorded in the audit log.
    pub reason: Option<String>,
}

/// A `u32` from any JSON number without a fraction: JSON Schema counts `3.0` as an integer, so a
/// generated client may send it.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    whole.and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "expected a version number (a whole number from 0 to {}), got {n}",
            u32::MAX
        ))
    })
}

/// `POST /v1/models/{name}/rollback`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Default `production`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub alias: Option<String>,
    /// Recorded in the audit log.
    pub reason: Option<String>,
}

/// Where an alias points after a promote or rollback.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasMoved {
    pub model: String,
    pub alias: String,
    pub version: u32,
    pub previous: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RunsQuery {
    /// Only the runs of this experiment.
    pub experiment: Option<String>,
}

/// One step of a metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPoint {
    pub step: u64,
    pub value: f64,
}

/// A metric's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricHistory {
    pub run_id: String,
    pub key: String,
    pub history: Vec<MetricPoint>,
}

/// A dataset of the snapshot store.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetSummary {
    pub name: String,
    pub versions: usize,
    /// The newest version's id.
    pub latest: Option<String>,
    pub rows: u64,
    /// Tag → version id.
    pub tags: BTreeMap<String, String>,
}

const DEFAULT_ALIAS: &str = registry::PRODUCTION;

async fn summary(state: &AppState, name: &str) -> Result<ModelSummary> {
    let versions = state.store.model_versions(name).await?;
    if versions.is_empty() {
        return Err(Error::NotFound(format!("model `{name}`")));
    }
    Ok(ModelSummary { name: name.to_string(), aliases: state.store.aliases(name).await?, versions })
}

/// Every registered model with its versions and aliases.
#[utoipa::path(get, path = "/v1/models", tag = "registry",
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Vec<ModelSummary>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_models(State(state): State<AppState>) -> Result<Json<Vec<ModelSummary>>> {
    let mut out = Vec::new();
    for name in state.store.model_names().await? {
        out.push(summary(&state, &name).await?);
    }
    Ok(Json(out))
}

/// One model's versions and aliases.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "registry",
    params(("name" = String, Path, description = "model name", pattern = "^[a-z0-9_-]{1,64}$")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = ModelSummary), (status = 404, body = ErrorBody)))]
pub async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelSummary>> {
    Ok(Json(summary(&state, &name).await?))
}

/// One version — a number, `latest` or an alias — with its model card.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "model name", pattern = "^[a-z0-9_-]{1,64}$"),
           ("version" = String, Path, description = "a version number, `latest` or an alias")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = VersionDetail), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    State(state): State<AppState>,
    Path((name, reference)): Path<(String, String)>,
) -> Result<Json<VersionDetail>> {
    let version = registry::resolve(state.store.as_ref(), &name, &reference).await?;
    let aliases = state
        .store
        .aliases(&name)
        .await?
        .into_iter()
        .filter(|(_, v)| *v == version.version)
        .map(|(a, _)| a)
        .collect();
    let dir = std::path::PathBuf::from(&version.artifact_dir);
    let card = match tokio::task::spawn_blocking(move || trainer::artifact::read_card(&dir))
        .await
        .map_err(|e| Error::Internal(format!("reading the model card: {e}")))?
    {
        Ok(card) => serde_json::to_value(card).map_err(|e| Error::Internal(e.to_string()))?,
        // The registry entry is still worth showing when its artifacts are gone.
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    Ok(Json(VersionDetail { version, aliases, card }))
}

fn alias_or_default(alias: Option<String>) -> String {
    alias.unwrap_or_else(|| DEFAULT_ALIAS.to_string())
}

/// Points an alias (default `production`) at a version; audited; servers following the alias
/// hot-swap.
#[utoipa::path(post, path = "/v1/models/{name}/promote", tag = "registry",
    params(("name" = String, Path, description = "model name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body = PromoteRequest,
    security(("oauth2" = ["admin"])),
    responses((status = 200, body = AliasMoved), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn promote(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AliasMoved>> {
    let req: PromoteRequest = json_body(&body)?;
    let alias = alias_or_default(req.alias);
    let reason = req.reason.unwrap_or_else(|| "promoted over the REST API".into());
    let change =
        registry::AliasChange { name: &name, alias: &alias, actor: &principal.subject, reason: &reason };
    let previous =
        registry::promote(state.store.as_ref(), state.control.as_deref(), &change, req.version).await?;
    tracing::info!(model = %name, alias = %alias, version = req.version, actor = %principal.subject, "alias promoted");
    Ok(Json(AliasMoved { model: name, alias, version: req.version, previous }))
}

/// Points an alias (default `production`) back at the version it served before the current
/// one; each rollback steps one promotion further back. 400 when there is none.
#[utoipa::path(post, path = "/v1/models/{name}/rollback", tag = "registry",
    params(("name" = String, Path, description = "model name", pattern = "^[a-z0-9_-]{1,64}$")),
    request_body(content = RollbackRequest, description = "optional; `{}` rolls back `production`"),
    security(("oauth2" = ["admin"])),
    responses((status = 200, body = AliasMoved), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<AliasMoved>> {
    let req: RollbackRequest =
        if body.iter().all(u8::is_ascii_whitespace) { Default::default() } else { json_body(&body)? };
    let alias = alias_or_default(req.alias);
    let reason = req.reason.unwrap_or_else(|| "rolled back over the REST API".into());
    let change =
        registry::AliasChange { name: &name, alias: &alias, actor: &principal.subject, reason: &reason };
    let (from, to) = registry::rollback(state.store.as_ref(), state.control.as_deref(), &change).await?;
    tracing::info!(model = %name, alias = %alias, from, to, actor = %principal.subject, "alias rolled back");
    Ok(Json(AliasMoved { model: name, alias, version: to, previous: Some(from) }))
}

/// Tracked runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "tracking", params(RunsQuery),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Vec<Run>), (status = 401, body = ErrorBody)))]
pub async fn list_runs(State(state): State<AppState>, Query(q): Query<RunsQuery>) -> Result<Json<Vec<Run>>> {
    Ok(Json(state.store.list_runs(q.experiment.as_deref()).await?))
}

/// One run: params, latest metric values, tags, data version, artifacts.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "tracking",
    params(("run_id" = String, Path, description = "run id")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub async fn get_run(State(state): State<AppState>, Path(run_id): Path<String>) -> Result<Json<Run>> {
    Ok(Json(state.store.get_run(&run_id).await?))
}

/// The step history of one metric of a run; with `max_points`, thinned on the server to about
/// that many points, the first, the last and each stretch's lowest and highest kept
/// ([`metastore::downsample`]).
#[utoipa::path(get, path = "/v1/runs/{run_id}/metrics/{key}", tag = "tracking",
    params(("run_id" = String, Path, description = "run id"), ("key" = String, Path, description = "metric name"),
           ("max_points" = Option<u32>, Query, description = "at most this many points, 4 to 100,000 (default: every step)", minimum = 4, maximum = 100000)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = MetricHistory), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn metric_history(
    State(state): State<AppState>,
    Path((run_id, key)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<MetricHistory>> {
    let max_points = match single(&pairs, "max_points")? {
        None => None,
        Some(v) => Some(query_number("max_points", Some(&v), 4..=100_000, 0)?),
    };
    state.store.get_run(&run_id).await?;
    let mut points = state.store.metric_history(&run_id, &key).await?;
    if points.is_empty() {
        return Err(Error::NotFound(format!("metric `{key}` of run `{run_id}`")));
    }
    if let Some(max) = max_points {
        points = metastore::downsample(&points, max);
    }
    let history = points.into_iter().map(|(step, value)| MetricPoint { step, value }).collect();
    Ok(Json(MetricHistory { run_id, key, history }))
}

/// `GET /v1/audit`: a page of the audit log, newest first.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Records per page: 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Records to skip: 0 to 10,000 (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 10000)]
    pub offset: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub offset: usize,
    pub limit: usize,
    /// Newest first.
    pub records: Vec<metastore::AuditRecord>,
    /// Whether older records follow this page.
    pub more: bool,
}

/// The audit log (alias moves and rollbacks, with actor and reason), newest first, paged.
#[utoipa::path(get, path = "/v1/audit", tag = "registry", params(AuditQuery),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<AuditPage>> {
    let q = AuditQuery { limit: single(&pairs, "limit")?, offset: single(&pairs, "offset")? };
    let limit = query_number("limit", q.limit.as_deref(), 1..=500, 50)?;
    let offset = query_number("offset", q.offset.as_deref(), 0..=10_000, 0)?;
    let mut records = state.store.audit_log(offset + limit + 1).await?;
    let more = records.len() > offset + limit;
    records.truncate(offset + limit);
    let records = records.split_off(offset.min(records.len()));
    Ok(Json(AuditPage { offset, limit, records, more }))
}

/// Runs `f` on the snapshot store off the async runtime (the store reads files).
async fn snapshots<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&SnapshotStore) -> stream::Result<T> + Send + 'static,
) -> Result<T> {
    let store = state.snapshots.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Error::Internal(format!("snapshot store task failed: {e}")))?
        .map_err(|e| match e {
            stream::Error::NotFound(m) => Error::NotFound(m),
            stream::Error::Spec(m) => Error::BadRequest(m),
            e => Error::Clean(e),
        })
}

fn valid_dataset(name: &str) -> Result<()> {
    if schemas::config::valid_name(name) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("invalid dataset name `{name}`")))
    }
}

/// Every dataset of the snapshot store.
#[utoipa::path(get, path = "/v1/datasets", tag = "data",
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Vec<DatasetSummary>), (status = 401, body = ErrorBody)))]
pub async fn list_datasets(State(state): State<AppState>) -> Result<Json<Vec<DatasetSummary>>> {
    let out = snapshots(&state, |s| {
        let mut out = Vec::new();
        for name in s.datasets()? {
            let versions = s.versions(&name)?;
            out.push(DatasetSummary {
                latest: versions.last().map(|m| m.id.clone()),
                rows: versions.last().map_or(0, |m| m.rows),
                versions: versions.len(),
                tags: s.tags(&name)?,
                name,
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Json(out))
}

/// The versions of a dataset, oldest first (manifests: rows, files, offsets consumed, tags).
#[utoipa::path(get, path = "/v1/datasets/{dataset}/versions", tag = "data",
    params(("dataset" = String, Path, description = "dataset name", pattern = "^[a-z0-9_-]{1,64}$")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Vec<Manifest>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_data_versions(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<Json<Vec<Manifest>>> {
    valid_dataset(&dataset)?;
    let versions = snapshots(&state, move |s| {
        let versions = s.versions(&dataset)?;
        if versions.is_empty() {
            return Err(stream::Error::NotFound(format!("dataset `{dataset}`")));
        }
        Ok(versions)
    })
    .await?;
    Ok(Json(versions))
}

/// One version of a dataset: an id, a unique id prefix, a tag, `v<seq>` or `latest`.
#[utoipa::path(get, path = "/v1/datasets/{dataset}/versions/{version}", tag = "data",
    params(("dataset" = String, Path, description = "dataset name", pattern = "^[a-z0-9_-]{1,64}$"),
           ("version" = String, Path, description = "an id, id prefix, tag, `v<seq>` or `latest`")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = Manifest), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_data_version(
    State(state): State<AppState>,
    Path((dataset, reference)): Path<(String, String)>,
) -> Result<Json<Manifest>> {
    valid_dataset(&dataset)?;
    Ok(Json(snapshots(&state, move |s| s.resolve(&dataset, &reference)).await?))
}

/// A page of a version's rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowsPage {
    pub dataset: String,
    /// The version's id and sequence number.
    pub version: String,
    pub seq: u64,
    /// Rows the version holds (less any raw-data retention expired).
    pub total: u64,
    pub offset: u64,
    pub limit: usize,
    /// Each row as a JSON object, column → value, in the version's order.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
    /// Whether rows follow this page.
    pub more: bool,
}

/// A page of a version's rows, in order (`offset`, `limit` 1–500, default 50): what a person
/// samples before training on it.
#[utoipa::path(get, path = "/v1/datasets/{dataset}/versions/{version}/rows", tag = "data",
    params(("dataset" = String, Path, description = "dataset name", pattern = "^[a-z0-9_-]{1,64}$"),
           ("version" = String, Path, description = "an id, id prefix, tag, `v<seq>` or `latest`"),
           ("offset" = Option<u64>, Query, description = "rows to skip (default 0)", minimum = 0),
           ("limit" = Option<u32>, Query, description = "rows per page, 1 to 500 (default 50)", minimum = 1, maximum = 500)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = RowsPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn version_rows(
    State(state): State<AppState>,
    Path((dataset, reference)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RowsPage>> {
    valid_dataset(&dataset)?;
    let limit = query_number("limit", single(&pairs, "limit")?.as_deref(), 1..=500, 50)?;
    let offset = query_number("offset", single(&pairs, "offset")?.as_deref(), 0..=usize::MAX, 0)? as u64;
    let page = snapshots(&state, move |s| {
        let m = s.resolve(&dataset, &reference)?;
        let total = s.live_files(&m).iter().map(|f| f.rows).sum::<u64>();
        let (mut skip, mut rows) = (offset, Vec::new());
        for batch in s.read(&m) {
            let batch = batch?;
            let n = batch.num_rows() as u64;
            if skip >= n {
                skip -= n;
                continue;
            }
            let take = (n - skip).min((limit - rows.len()) as u64);
            let part = batch.slice(skip as usize, take as usize);
            skip = 0;
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(Vec::new());
            w.write(&part)?;
            w.finish()?;
            let bytes = w.into_inner();
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
                .map_err(|e| stream::Error::Internal(format!("rows as JSON: {e}")))?;
            rows.extend(parsed);
            if rows.len() == limit {
                break;
            }
        }
        let more = offset + (rows.len() as u64) < total;
        Ok(RowsPage {
            dataset: m.dataset.clone(),
            version: m.id.clone(),
            seq: m.seq,
            total,
            offset,
            limit,
            rows,
            more,
        })
    })
    .await?;
    Ok(Json(page))
}

/// `GET /v1/datasets/{dataset}/diff`: two versions compared row by row.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataDiff {
    /// `dataset@id` of the versions compared.
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub diff: stream::diff::Diff,
}

/// Row-level differences by id from version `from` to version `to` of a dataset (either may
/// be `other_dataset@version`): counts of rows added, removed, changed (text or label) and
/// unchanged, and up to `examples` ids of each (default 10).
#[utoipa::path(get, path = "/v1/datasets/{dataset}/diff", tag = "data",
    params(("dataset" = String, Path, description = "dataset name", pattern = "^[a-z0-9_-]{1,64}$"),
           ("from" = String, Query, description = "the version before: an id, id prefix, tag, `v<seq>`, `latest`, or `dataset@version`", min_length = 1),
           ("to" = String, Query, description = "the version after, likewise", min_length = 1),
           ("examples" = Option<u32>, Query, description = "example ids of each kind, 0 to 100 (default 10)", minimum = 0, maximum = 100)),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = DataDiff), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn data_diff(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<DataDiff>> {
    valid_dataset(&dataset)?;
    let required = |name: &str| {
        single(&pairs, name)?.ok_or_else(|| Error::BadRequest(format!("`{name}` (a version) is required")))
    };
    let (from, to) = (required("from")?, required("to")?);
    let examples = query_number("examples", single(&pairs, "examples")?.as_deref(), 0..=100, 10)?;
    let (a, b) = snapshots(&state, move |s| {
        let resolve = |r: &str| {
            let (d, v) = r.split_once('@').unwrap_or((dataset.as_str(), r));
            if !schemas::config::valid_name(d) {
                return Err(stream::Error::NotFound(format!("dataset `{d}`")));
            }
            s.resolve(d, v)
        };
        Ok((resolve(&from)?, resolve(&to)?))
    })
    .await?;
    let diff = stream::diff::diff(&state.snapshots, &a, &b, examples).await.map_err(Error::Clean)?;
    Ok(Json(DataDiff {
        from: format!("{}@{}", a.dataset, a.id),
        to: format!("{}@{}", b.dataset, b.id),
        diff,
    }))
}

/// Where model version `version` (a number, `v<N>`, an alias or `latest`) came from: its run,
/// the data version it was trained on, the raw version that was cleaned from (Kafka offset
/// ranges), the cleaning spec.
#[utoipa::path(get, path = "/v1/lineage/models/{name}/{version}", tag = "lineage",
    params(("name" = String, Path, description = "model name"),
           ("version" = String, Path, description = "a version, `v<N>`, an alias or `latest`")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = trainer::lineage::Lineage), (status = 404, body = ErrorBody)))]
pub async fn model_lineage(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<trainer::lineage::Lineage>> {
    Ok(Json(trainer::lineage::of_model(state.store.as_ref(), &state.snapshots, &name, &version).await?))
}

/// Where the prediction for record `id` came from: its row on the scored dataset (the raw
/// record's partition and offset), then the model version's lineage.
#[utoipa::path(get, path = "/v1/lineage/predictions/{id}", tag = "lineage",
    params(("id" = String, Path, description = "the record id")),
    security(("oauth2" = ["viewer"])),
    responses((status = 200, body = trainer::lineage::Lineage), (status = 404, body = ErrorBody)))]
pub async fn prediction_lineage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<trainer::lineage::Lineage>> {
    let scored = &state.scored_dataset;
    Ok(Json(
        trainer::lineage::of_prediction(
            state.store.as_ref(),
            &state.snapshots,
            scored,
            &state.raw_topic,
            &id,
        )
        .await?,
    ))
}
