//! The metadata store: runs, step metrics, model versions, aliases, audit records and the
//! prediction log behind one trait ([`MetadataStore`]), with an embedded SQLite backend
//! ([`SqliteStore`], a file in the data dir) and a CQL backend for ScyllaDB or Cassandra
//! ([`cql::ScyllaStore`]) shared by replicas. [`open`] picks one from `[store]`.
//!
//! ```text
//!  trainer (runs, registry) ─┐
//!  serving (audit, predlog) ─┼─► dyn MetadataStore ─┬─► SqliteStore (blocking threads)
//!  the binary (keys audit) ──┘                       └─► ScyllaStore (scylla driver)
//! ```
//!
//! Architecture invariant: plain storage of typed records — no models, no libtorch, no Kafka,
//! no HTTP. Every call of the SQLite backend runs on a blocking thread, so an `async` caller
//! never stalls a runtime worker on a disk write.

pub mod cql;
mod error;
pub mod search;
mod sqlite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use search::{RunQuery, RunSort, RunsPage, downsample};
pub use sqlite::SqliteStore;

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<RunStatus> {
        match s {
            "running" => Ok(RunStatus::Running),
            "finished" => Ok(RunStatus::Finished),
            "failed" => Ok(RunStatus::Failed),
            other => Err(Error::Corrupt(format!("unknown run status `{other}`"))),
        }
    }

    /// A status as a person or a query names it: `running`, `finished` or `failed`.
    pub fn from_name(s: &str) -> Option<RunStatus> {
        RunStatus::parse(s).ok()
    }
}

/// A tracked training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub run_id: String,
    pub experiment: String,
    pub parent_run_id: Option<String>,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub params: BTreeMap<String, String>,
    /// Latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
    pub tags: BTreeMap<String, String>,
    pub data_version: Option<String>,
    pub artifact_dir: Option<String>,
}

impl Run {
    /// A run starting now, with a fresh id (16 hex characters, unique even for runs started in
    /// the same nanosecond by one process).
    pub fn started(
        experiment: &str,
        parent_run_id: Option<&str>,
        params: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
        data_version: &str,
    ) -> Run {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let started_at = Utc::now();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = started_at.timestamp_nanos_opt().unwrap_or_default();
        let run_id = schemas::sha256_hex(format!("{experiment}:{data_version}:{nanos}:{n}").as_bytes())[..16]
            .to_string();
        Run {
            run_id,
            experiment: experiment.to_string(),
            parent_run_id: parent_run_id.map(str::to_string),
            status: RunStatus::Running,
            started_at,
            ended_at: None,
            params,
            metrics: BTreeMap::new(),
            tags,
            data_version: Some(data_version.to_string()),
            artifact_dir: None,
        }
    }
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    pub run_id: String,
    pub family: String,
    pub data_version: String,
    pub spec_hash: String,
    pub metrics: BTreeMap<String, f64>,
    /// Directory holding `card.json` and the weights.
    pub artifact_dir: String,
    /// SHA-256 of the weights file, checked at load.
    pub artifact_sha256: String,
    pub created_at: DateTime<Utc>,
}

/// An audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    /// What the action did (e.g. the alias, versions and reason of a move).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// One prediction, REST or stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictionLogEntry {
    pub at: DateTime<Utc>,
    pub id: Option<String>,
    pub channel: String,
    pub model: String,
    pub version: u32,
    pub label: String,
    pub confidence: f32,
    pub latency_us: u64,
}

/// Which logged predictions to list: every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct PredictionQuery {
    pub model: String,
    pub version: Option<u32>,
    /// `rest` or `stream`.
    pub channel: Option<String>,
    pub label: Option<String>,
    /// Only predictions at most this confident (the doubtful ones).
    pub max_confidence: Option<f32>,
    pub limit: usize,
}

impl PredictionQuery {
    pub fn matches(&self, e: &PredictionLogEntry) -> bool {
        e.model == self.model
            && self.version.is_none_or(|v| e.version == v)
            && self.channel.as_ref().is_none_or(|c| &e.channel == c)
            && self.label.as_ref().is_none_or(|l| &e.label == l)
            && self.max_confidence.is_none_or(|m| e.confidence <= m)
    }
}

/// The report of one closed drift window, as the drift monitor keeps it for the UI and
/// `GET /v1/drift/windows`: bounded ([`DriftWindowRecord::MAX_REPORT_BYTES`]), kept for the
/// retention its writer gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftWindowRecord {
    pub model: String,
    pub version: u32,
    /// When the window closed (millisecond precision).
    pub closed_at: DateTime<Utc>,
    /// The monitor's window number for this version (counts from 0 when a monitor starts).
    pub index: u64,
    pub records: u64,
    /// The statistics per feature, the accuracy, the signals, the thresholds and the decision.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

impl DriftWindowRecord {
    /// Largest report kept, as JSON bytes.
    pub const MAX_REPORT_BYTES: usize = 64 << 10;

    /// `Input` when the report is larger than [`Self::MAX_REPORT_BYTES`].
    pub fn check_size(&self) -> Result<String> {
        let text = self.report.to_string();
        if text.len() > Self::MAX_REPORT_BYTES {
            return Err(Error::Input(format!(
                "a drift window report of {} bytes is larger than the {} kept",
                text.len(),
                Self::MAX_REPORT_BYTES
            )));
        }
        Ok(text)
    }
}

/// The store behind runs, the registry, audit and the prediction log.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    async fn create_run(&self, run: &Run) -> Result<()>;
    /// Records metric values at `step` and updates the run's latest values.
    async fn log_metrics(&self, run_id: &str, step: u64, metrics: &BTreeMap<String, f64>) -> Result<()>;
    async fn finish_run(&self, run_id: &str, status: RunStatus, ended_at: DateTime<Utc>) -> Result<()>;
    async fn set_run_artifacts(&self, run_id: &str, artifact_dir: &str) -> Result<()>;
    async fn get_run(&self, run_id: &str) -> Result<Run>;
    async fn list_runs(&self, experiment: Option<&str>) -> Result<Vec<Run>>;
    /// A page of the runs matching `q`, filtered, sorted and paged as [`RunQuery::apply`] does.
    async fn search_runs(&self, q: &RunQuery) -> Result<RunsPage> {
        Ok(q.apply(self.list_runs(q.experiment.as_deref()).await?))
    }
    /// Step history of one metric.
    async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<(u64, f64)>>;

    /// Registers the next version of `mv.name` (the `version` field is assigned).
    async fn register_model(&self, mv: ModelVersion) -> Result<ModelVersion>;
    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>>;
    async fn model_names(&self) -> Result<Vec<String>>;
    async fn get_model_version(&self, name: &str, version: u32) -> Result<ModelVersion>;
    /// Points `alias` at `version`, recording an audit record; returns the previous version.
    async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u32,
        actor: &str,
        reason: &str,
    ) -> Result<Option<u32>>;
    /// Points `alias` back at the version it served before its current one was set (each
    /// rollback steps one promotion further back), recording an audit record; returns
    /// `(from, to)`. `Input` when there is nothing to roll back to.
    async fn rollback_alias(&self, name: &str, alias: &str, actor: &str, reason: &str) -> Result<(u32, u32)>;
    async fn get_alias(&self, name: &str, alias: &str) -> Result<Option<u32>>;
    async fn aliases(&self, name: &str) -> Result<BTreeMap<String, u32>>;

    async fn append_audit(&self, record: &AuditRecord) -> Result<()>;
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>>;

    async fn log_predictions(&self, entries: &[PredictionLogEntry]) -> Result<()>;
    async fn prediction_count(&self, model: &str) -> Result<u64>;
    /// The newest `q.limit` logged predictions matching `q`, newest first.
    async fn recent_predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionLogEntry>>;

    /// Keeps a closed drift window's report for `retention_secs` (0: for ever); older windows
    /// go (SQLite: deleted by this call; CQL: the row's TTL).
    async fn record_drift_window(&self, window: &DriftWindowRecord, retention_secs: u64) -> Result<()>;
    /// The newest `limit` windows of `model` v`version`, newest first.
    async fn drift_windows(&self, model: &str, version: u32, limit: usize) -> Result<Vec<DriftWindowRecord>>;
}

/// The store `[store]` names: SQLite in `data_dir`, or ScyllaDB (connected and migrated).
pub async fn open(config: &schemas::Config, data_dir: &Path) -> Result<Arc<dyn MetadataStore>> {
    Ok(match config.store.backend {
        schemas::config::StoreBackend::Sqlite => Arc::new(SqliteStore::in_data_dir(data_dir)?),
        schemas::config::StoreBackend::Scylla => Arc::new(cql::ScyllaStore::connect(&config.store).await?),
    })
}

/// The version a rollback of `name@alias` (now at `current`) returns to: the alias's history of
/// `(action, version)` in order is replayed — a promotion pushes its version, a rollback pops
/// one — and repeats of the current version (re-promotions) are dropped. `Input` when there is
/// nothing earlier.
pub(crate) fn rollback_target(
    name: &str,
    alias: &str,
    current: u32,
    history: impl IntoIterator<Item = (String, u32)>,
) -> Result<u32> {
    let mut stack: Vec<u32> = Vec::new();
    for (action, version) in history {
        if action == "rollback_alias" {
            stack.pop();
        } else {
            stack.push(version);
        }
    }
    while stack.last() == Some(&current) {
        stack.pop();
    }
    stack.last().copied().ok_or_else(|| {
        Error::State(format!("`{name}@{alias}` has no earlier version to roll back to (it is at v{current})"))
    })
}

/// An alias pointed at `version`: the row and its audit record (in the caller's transaction,
/// for SQLite).
pub(crate) struct AliasMove<'a> {
    pub(crate) name: &'a str,
    pub(crate) alias: &'a str,
    pub(crate) version: u32,
    pub(crate) previous: Option<u32>,
    pub(crate) actor: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) at: DateTime<Utc>,
}

impl AliasMove<'_> {
    /// The audit record's details, the same in every backend.
    pub(crate) fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.name, "alias": self.alias, "version": self.version,
            "previous": self.previous, "reason": self.reason
        })
    }
}
