//! The metadata store: runs, metrics, model versions, aliases, audit records and the
//! prediction log behind one trait, with an embedded SQLite backend (a file in the data dir)
//! and a ScyllaDB backend ([`cql`]) shared by replicas. [`open`] picks one from `[store]`.

pub mod cql;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<RunStatus> {
        match s {
            "running" => Ok(RunStatus::Running),
            "finished" => Ok(RunStatus::Finished),
            "failed" => Ok(RunStatus::Failed),
            other => Err(Error::Store(format!("unknown run status `{other}`"))),
        }
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub details: serde_json::Value,
}

/// One prediction, REST or stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// The store `[store]` names: SQLite in `data_dir`, or ScyllaDB (connected and migrated).
pub async fn open(config: &schemas::Config, data_dir: &Path) -> Result<Arc<dyn MetadataStore>> {
    Ok(match config.store.backend {
        schemas::config::StoreBackend::Sqlite => Arc::new(SqliteStore::in_data_dir(data_dir)?),
        schemas::config::StoreBackend::Scylla => Arc::new(cql::ScyllaStore::connect(&config.store).await?),
    })
}

/// The embedded backend: SQLite (bundled), WAL mode, one file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, parent_run_id TEXT, status TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT, params TEXT NOT NULL, tags TEXT NOT NULL,
    data_version TEXT, artifact_dir TEXT);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, started_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL, value REAL NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (run_id, key, step));
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, run_id TEXT NOT NULL, family TEXT NOT NULL,
    data_version TEXT NOT NULL, spec_hash TEXT NOT NULL, metrics TEXT NOT NULL,
    artifact_dir TEXT NOT NULL, artifact_sha256 TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, details TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    at TEXT NOT NULL, id TEXT, channel TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    label TEXT NOT NULL, confidence REAL NOT NULL, latency_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS predictions_by_model ON predictions (model, at);
"#;

fn sql(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values always serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Store(format!("corrupt JSON in the store: {e}")))
}

fn time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Store(format!("corrupt timestamp `{s}`: {e}")))
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sql)?;
        // Switching to WAL needs a moment of exclusive access, which the busy timeout does not
        // cover: retry while another process opens the same file.
        let mut attempts = 0;
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Ok(()) => break,
                Err(e)
                    if attempts < 50 && e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(sql(e)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    /// The store of a data dir: `<data_dir>/metadata.sqlite`.
    pub fn in_data_dir(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open(&data_dir.join("metadata.sqlite"))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| Error::Store("store lock poisoned".into()))?;
        f(&mut conn)
    }

    fn run_from_row(conn: &Connection, row: RunRow) -> Result<Run> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, value FROM metrics m WHERE run_id = ?1 AND step = \
                 (SELECT MAX(step) FROM metrics WHERE run_id = m.run_id AND key = m.key)",
            )
            .map_err(sql)?;
        let metrics = stmt
            .query_map(params![row.run_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))
            .map_err(sql)?
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()
            .map_err(sql)?;
        Ok(Run {
            status: RunStatus::parse(&row.status)?,
            started_at: time(&row.started_at)?,
            ended_at: row.ended_at.as_deref().map(time).transpose()?,
            params: from_json(&row.params)?,
            tags: from_json(&row.tags)?,
            metrics,
            run_id: row.run_id,
            experiment: row.experiment,
            parent_run_id: row.parent_run_id,
            data_version: row.data_version,
            artifact_dir: row.artifact_dir,
        })
    }
}

struct RunRow {
    run_id: String,
    experiment: String,
    parent_run_id: Option<String>,
    status: String,
    started_at: String,
    ended_at: Option<String>,
    params: String,
    tags: String,
    data_version: Option<String>,
    artifact_dir: Option<String>,
}

const RUN_COLUMNS: &str = "run_id, experiment, parent_run_id, status, started_at, ended_at, params, tags, data_version, artifact_dir";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        experiment: r.get(1)?,
        parent_run_id: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        params: r.get(6)?,
        tags: r.get(7)?,
        data_version: r.get(8)?,
        artifact_dir: r.get(9)?,
    })
}

const MV_COLUMNS: &str = "name, version, run_id, family, data_version, spec_hash, metrics, artifact_dir, artifact_sha256, created_at";

fn mv_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ModelVersion, String, String)> {
    Ok((
        ModelVersion {
            name: r.get(0)?,
            version: r.get(1)?,
            run_id: r.get(2)?,
            family: r.get(3)?,
            data_version: r.get(4)?,
            spec_hash: r.get(5)?,
            metrics: BTreeMap::new(),
            artifact_dir: r.get(7)?,
            artifact_sha256: r.get(8)?,
            created_at: Utc::now(),
        },
        r.get(6)?,
        r.get(9)?,
    ))
}

fn finish_mv((mut mv, metrics, created): (ModelVersion, String, String)) -> Result<ModelVersion> {
    mv.metrics = from_json(&metrics)?;
    mv.created_at = time(&created)?;
    Ok(mv)
}

/// The version `alias` of model `name` points at.
fn alias_version(conn: &Connection, name: &str, alias: &str) -> Result<Option<u32>> {
    conn.query_row("SELECT version FROM aliases WHERE name = ?1 AND alias = ?2", params![name, alias], |r| {
        r.get(0)
    })
    .optional()
    .map_err(sql)
}

/// The version a rollback of `name@alias` (now at `current`) returns to: the alias's history of
/// `(action, version)` in order is replayed — a promotion pushes its version, a rollback pops
/// one — and repeats of the current version (re-promotions) are dropped. `Input` when there is
/// nothing earlier.
fn rollback_target(
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
        Error::Input(format!("`{name}@{alias}` has no earlier version to roll back to (it is at v{current})"))
    })
}

/// An alias pointed at `version`: the row and its audit record (in the caller's transaction,
/// for SQLite).
struct AliasMove<'a> {
    name: &'a str,
    alias: &'a str,
    version: u32,
    previous: Option<u32>,
    actor: &'a str,
    reason: &'a str,
    at: DateTime<Utc>,
}

impl AliasMove<'_> {
    /// The audit record's details, the same in every backend.
    fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.name, "alias": self.alias, "version": self.version,
            "previous": self.previous, "reason": self.reason
        })
    }

    fn record(&self, tx: &rusqlite::Transaction<'_>, action: &str) -> Result<()> {
        let at = self.at.to_rfc3339();
        tx.execute(
            "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
            params![self.name, self.alias, self.version, at],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO audit (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
            params![at, self.actor, action, self.details().to_string()],
        )
        .map_err(sql)?;
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn create_run(&self, run: &Run) -> Result<()> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    run.run_id,
                    run.experiment,
                    run.parent_run_id,
                    run.status.as_str(),
                    run.started_at.to_rfc3339(),
                    run.ended_at.map(|t| t.to_rfc3339()),
                    json(&run.params),
                    json(&run.tags),
                    run.data_version,
                    run.artifact_dir
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    async fn log_metrics(&self, run_id: &str, step: u64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let at = Utc::now().to_rfc3339();
        self.with(|c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached("INSERT OR REPLACE INTO metrics (run_id, key, step, value, at) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(sql)?;
                for (k, v) in metrics {
                    stmt.execute(params![run_id, k, step as i64, v, at]).map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
    }

    async fn finish_run(&self, run_id: &str, status: RunStatus, ended_at: DateTime<Utc>) -> Result<()> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?2, ended_at = ?3 WHERE run_id = ?1",
                    params![run_id, status.as_str(), ended_at.to_rfc3339()],
                )
                .map_err(sql)?;
            if n == 0 { Err(Error::NotFound(format!("run {run_id}"))) } else { Ok(()) }
        })
    }

    async fn set_run_artifacts(&self, run_id: &str, artifact_dir: &str) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE runs SET artifact_dir = ?2 WHERE run_id = ?1", params![run_id, artifact_dir])
                .map_err(sql)?;
            Ok(())
        })
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.with(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                    params![run_id],
                    run_row,
                )
                .optional()
                .map_err(sql)?
                .ok_or_else(|| Error::NotFound(format!("run {run_id}")))?;
            Self::run_from_row(c, row)
        })
    }

    async fn list_runs(&self, experiment: Option<&str>) -> Result<Vec<Run>> {
        self.with(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR experiment = ?1 ORDER BY started_at, run_id"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![experiment], run_row)
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            rows.into_iter().map(|r| Self::run_from_row(c, r)).collect()
        })
    }

    async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<(u64, f64)>> {
        self.with(|c| {
            let mut stmt = c
                .prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step")
                .map_err(sql)?;
            stmt.query_map(params![run_id, key], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)
        })
    }

    async fn register_model(&self, mut mv: ModelVersion) -> Result<ModelVersion> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let next: u32 = tx
                .query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?1", params![mv.name], |r| r.get(0))
                .map_err(sql)?;
            mv.version = next;
            tx.execute(
                &format!("INSERT INTO model_versions ({MV_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    mv.name,
                    mv.version,
                    mv.run_id,
                    mv.family,
                    mv.data_version,
                    mv.spec_hash,
                    json(&mv.metrics),
                    mv.artifact_dir,
                    mv.artifact_sha256,
                    mv.created_at.to_rfc3339()
                ],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(mv)
        })
    }

    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.with(|c| {
            let mut stmt = c
                .prepare(&format!("SELECT {MV_COLUMNS} FROM model_versions WHERE name = ?1 ORDER BY version"))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![name], mv_row)
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            rows.into_iter().map(finish_mv).collect()
        })
    }

    async fn model_names(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT DISTINCT name FROM model_versions ORDER BY name").map_err(sql)?;
            stmt.query_map([], |r| r.get(0))
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sql)
        })
    }

    async fn get_model_version(&self, name: &str, version: u32) -> Result<ModelVersion> {
        self.with(|c| {
            let row = c
                .query_row(
                    &format!("SELECT {MV_COLUMNS} FROM model_versions WHERE name = ?1 AND version = ?2"),
                    params![name, version],
                    mv_row,
                )
                .optional()
                .map_err(sql)?
                .ok_or_else(|| Error::NotFound(format!("model {name} version {version}")))?;
            finish_mv(row)
        })
    }

    async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u32,
        actor: &str,
        reason: &str,
    ) -> Result<Option<u32>> {
        let now = Utc::now();
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM model_versions WHERE name = ?1 AND version = ?2",
                    params![name, version],
                    |_| Ok(true),
                )
                .optional()
                .map_err(sql)?
                .unwrap_or(false);
            if !exists {
                return Err(Error::NotFound(format!("model {name} version {version}")));
            }
            let previous = alias_version(&tx, name, alias)?;
            let to = AliasMove { name, alias, version, previous, actor, reason, at: now };
            to.record(&tx, "set_alias")?;
            tx.commit().map_err(sql)?;
            Ok(previous)
        })
    }

    async fn rollback_alias(&self, name: &str, alias: &str, actor: &str, reason: &str) -> Result<(u32, u32)> {
        let now = Utc::now();
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let current = alias_version(&tx, name, alias)?
                .ok_or_else(|| Error::NotFound(format!("alias `{alias}` of model `{name}`")))?;
            let history = {
                let mut stmt = tx
                    .prepare(
                        "SELECT action, json_extract(details, '$.version') FROM audit \
                         WHERE action IN ('set_alias', 'rollback_alias') \
                         AND json_extract(details, '$.model') = ?1 AND json_extract(details, '$.alias') = ?2 \
                         ORDER BY seq",
                    )
                    .map_err(sql)?;
                stmt.query_map(params![name, alias], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
                    .map_err(sql)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(sql)?
            };
            let target = rollback_target(name, alias, current, history)?;
            let to =
                AliasMove { name, alias, version: target, previous: Some(current), actor, reason, at: now };
            to.record(&tx, "rollback_alias")?;
            tx.commit().map_err(sql)?;
            Ok((current, target))
        })
    }

    async fn get_alias(&self, name: &str, alias: &str) -> Result<Option<u32>> {
        self.with(|c| alias_version(c, name, alias))
    }

    async fn aliases(&self, name: &str) -> Result<BTreeMap<String, u32>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT alias, version FROM aliases WHERE name = ?1").map_err(sql)?;
            stmt.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<BTreeMap<String, u32>>>()
                .map_err(sql)
        })
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
                params![record.at.to_rfc3339(), record.actor, record.action, record.details.to_string()],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.with(|c| {
            let mut stmt = c
                .prepare("SELECT at, actor, action, details FROM audit ORDER BY seq DESC LIMIT ?1")
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            rows.into_iter()
                .map(|(at, actor, action, details)| {
                    Ok(AuditRecord { at: time(&at)?, actor, action, details: from_json(&details)? })
                })
                .collect()
        })
    }

    async fn log_predictions(&self, entries: &[PredictionLogEntry]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO predictions (at, id, channel, model, version, label, confidence, latency_us) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(sql)?;
                for e in entries {
                    stmt.execute(params![
                        e.at.to_rfc3339(),
                        e.id,
                        e.channel,
                        e.model,
                        e.version,
                        e.label,
                        f64::from(e.confidence),
                        e.latency_us as i64
                    ])
                    .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
    }

    async fn prediction_count(&self, model: &str) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM predictions WHERE model = ?1", params![model], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(sql)
        })
    }
}
