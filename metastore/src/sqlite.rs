//! The embedded backend: SQLite (bundled), WAL mode, one file. Each call takes the one
//! connection on a blocking thread (`spawn_blocking`), so the async trait never blocks a
//! runtime worker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{
    AliasMove, AuditRecord, DriftWindowRecord, Error, MetadataStore, ModelVersion, PredictionLogEntry,
    PredictionQuery, Result, Run, RunStatus, rollback_target,
};

/// The embedded backend: SQLite (bundled), WAL mode, one file.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
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
CREATE TABLE IF NOT EXISTS drift_windows (
    model TEXT NOT NULL, version INTEGER NOT NULL, closed_at_ms INTEGER NOT NULL, idx INTEGER NOT NULL,
    records INTEGER NOT NULL, report TEXT NOT NULL, PRIMARY KEY (model, version, closed_at_ms, idx));
CREATE INDEX IF NOT EXISTS drift_windows_by_time ON drift_windows (closed_at_ms);
"#;

fn sql(e: rusqlite::Error) -> Error {
    Error::Sqlite(e)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values always serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("JSON in the store: {e}")))
}

fn time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Corrupt(format!("timestamp `{s}`: {e}")))
}

impl SqliteStore {
    /// Opens (creating and migrating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
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
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
    }

    /// The store of a data dir: `<data_dir>/metadata.sqlite`.
    pub fn in_data_dir(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open(&data_dir.join("metadata.sqlite"))
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| Error::Internal("store lock poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
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

/// Points the alias and appends its audit record, in the caller's transaction.
fn record_move(tx: &rusqlite::Transaction<'_>, m: &AliasMove<'_>, action: &str) -> Result<()> {
    let at = m.at.to_rfc3339();
    tx.execute(
        "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        params![m.name, m.alias, m.version, at],
    )
    .map_err(sql)?;
    tx.execute(
        "INSERT INTO audit (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
        params![at, m.actor, action, m.details().to_string()],
    )
    .map_err(sql)?;
    Ok(())
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn create_run(&self, run: &Run) -> Result<()> {
        let run = run.clone();
        self.call(move |c| {
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
        .await
    }

    async fn log_metrics(&self, run_id: &str, step: u64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let at = Utc::now().to_rfc3339();
        let (run_id, metrics) = (run_id.to_string(), metrics.clone());
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO metrics (run_id, key, step, value, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(sql)?;
                for (k, v) in &metrics {
                    stmt.execute(params![run_id, k, step as i64, v, at]).map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn finish_run(&self, run_id: &str, status: RunStatus, ended_at: DateTime<Utc>) -> Result<()> {
        let run_id = run_id.to_string();
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE runs SET status = ?2, ended_at = ?3 WHERE run_id = ?1",
                    params![run_id, status.as_str(), ended_at.to_rfc3339()],
                )
                .map_err(sql)?;
            if n == 0 { Err(Error::NotFound(format!("run {run_id}"))) } else { Ok(()) }
        })
        .await
    }

    async fn set_run_artifacts(&self, run_id: &str, artifact_dir: &str) -> Result<()> {
        let (run_id, artifact_dir) = (run_id.to_string(), artifact_dir.to_string());
        self.call(move |c| {
            c.execute("UPDATE runs SET artifact_dir = ?2 WHERE run_id = ?1", params![run_id, artifact_dir])
                .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        let run_id = run_id.to_string();
        self.call(move |c| {
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
        .await
    }

    async fn list_runs(&self, experiment: Option<&str>) -> Result<Vec<Run>> {
        let experiment = experiment.map(str::to_string);
        self.call(move |c| {
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
        .await
    }

    async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<(u64, f64)>> {
        let (run_id, key) = (run_id.to_string(), key.to_string());
        self.call(move |c| {
            let mut stmt = c
                .prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND key = ?2 ORDER BY step")
                .map_err(sql)?;
            stmt.query_map(params![run_id, key], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)
        })
        .await
    }

    async fn register_model(&self, mut mv: ModelVersion) -> Result<ModelVersion> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let next: u32 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?1",
                    params![mv.name],
                    |r| r.get(0),
                )
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
        .await
    }

    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let name = name.to_string();
        self.call(move |c| {
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
        .await
    }

    async fn model_names(&self) -> Result<Vec<String>> {
        self.call(|c| {
            let mut stmt =
                c.prepare("SELECT DISTINCT name FROM model_versions ORDER BY name").map_err(sql)?;
            stmt.query_map([], |r| r.get(0))
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sql)
        })
        .await
    }

    async fn get_model_version(&self, name: &str, version: u32) -> Result<ModelVersion> {
        let name = name.to_string();
        self.call(move |c| {
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
        .await
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
        let [name, alias, actor, reason] = [name, alias, actor, reason].map(str::to_string);
        self.call(move |c| {
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
            let previous = alias_version(&tx, &name, &alias)?;
            let to = AliasMove {
                name: &name,
                alias: &alias,
                version,
                previous,
                actor: &actor,
                reason: &reason,
                at: now,
            };
            record_move(&tx, &to, "set_alias")?;
            tx.commit().map_err(sql)?;
            Ok(previous)
        })
        .await
    }

    async fn rollback_alias(&self, name: &str, alias: &str, actor: &str, reason: &str) -> Result<(u32, u32)> {
        let now = Utc::now();
        let [name, alias, actor, reason] = [name, alias, actor, reason].map(str::to_string);
        self.call(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
            let current = alias_version(&tx, &name, &alias)?
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
            let target = rollback_target(&name, &alias, current, history)?;
            let to = AliasMove {
                name: &name,
                alias: &alias,
                version: target,
                previous: Some(current),
                actor: &actor,
                reason: &reason,
                at: now,
            };
            record_move(&tx, &to, "rollback_alias")?;
            tx.commit().map_err(sql)?;
            Ok((current, target))
        })
        .await
    }

    async fn get_alias(&self, name: &str, alias: &str) -> Result<Option<u32>> {
        let (name, alias) = (name.to_string(), alias.to_string());
        self.call(move |c| alias_version(c, &name, &alias)).await
    }

    async fn aliases(&self, name: &str) -> Result<BTreeMap<String, u32>> {
        let name = name.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare("SELECT alias, version FROM aliases WHERE name = ?1").map_err(sql)?;
            stmt.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<BTreeMap<String, u32>>>()
                .map_err(sql)
        })
        .await
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let record = record.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit (at, actor, action, details) VALUES (?1, ?2, ?3, ?4)",
                params![record.at.to_rfc3339(), record.actor, record.action, record.details.to_string()],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.call(move |c| {
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
        .await
    }

    async fn log_predictions(&self, entries: &[PredictionLogEntry]) -> Result<()> {
        let entries = entries.to_vec();
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO predictions (at, id, channel, model, version, label, confidence, latency_us) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(sql)?;
                for e in &entries {
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
        .await
    }

    async fn prediction_count(&self, model: &str) -> Result<u64> {
        let model = model.to_string();
        self.call(move |c| {
            c.query_row("SELECT COUNT(*) FROM predictions WHERE model = ?1", params![model], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(sql)
        })
        .await
    }

    async fn recent_predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionLogEntry>> {
        let q = q.clone();
        self.call(move |c| {
            // Newest first by insertion (the log is written in time order, batch by batch).
            let mut stmt = c
                .prepare_cached(
                    "SELECT at, id, channel, model, version, label, confidence, latency_us FROM predictions \
                     WHERE model = ?1 AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR channel = ?3) \
                     AND (?4 IS NULL OR label = ?4) AND (?5 IS NULL OR confidence <= ?5) \
                     ORDER BY rowid DESC LIMIT ?6",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(
                    params![
                        q.model,
                        q.version,
                        q.channel,
                        q.label,
                        q.max_confidence.map(f64::from),
                        q.limit as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, u32>(4)?,
                            r.get::<_, String>(5)?,
                            r.get::<_, f64>(6)?,
                            r.get::<_, i64>(7)?,
                        ))
                    },
                )
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            rows.into_iter()
                .map(|(at, id, channel, model, version, label, confidence, latency_us)| {
                    Ok(PredictionLogEntry {
                        at: time(&at)?,
                        id,
                        channel,
                        model,
                        version,
                        label,
                        confidence: confidence as f32,
                        latency_us: latency_us.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_drift_window(&self, window: &DriftWindowRecord, retention_secs: u64) -> Result<()> {
        let report = window.check_size()?;
        let w = window.clone();
        self.call(move |c| {
            let tx = c.transaction().map_err(sql)?;
            tx.execute(
                "INSERT OR REPLACE INTO drift_windows (model, version, closed_at_ms, idx, records, report) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    w.model,
                    w.version,
                    w.closed_at.timestamp_millis(),
                    w.index as i64,
                    w.records as i64,
                    report
                ],
            )
            .map_err(sql)?;
            if retention_secs > 0 {
                let cutoff = Utc::now().timestamp_millis() - (retention_secs as i64).saturating_mul(1000);
                tx.execute("DELETE FROM drift_windows WHERE closed_at_ms < ?1", params![cutoff])
                    .map_err(sql)?;
            }
            tx.commit().map_err(sql)
        })
        .await
    }

    async fn drift_windows(&self, model: &str, version: u32, limit: usize) -> Result<Vec<DriftWindowRecord>> {
        let model = model.to_string();
        self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT closed_at_ms, idx, records, report FROM drift_windows WHERE model = ?1 AND version = ?2 \
                     ORDER BY closed_at_ms DESC, idx DESC LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![model, version, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
                })
                .map_err(sql)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql)?;
            rows.into_iter()
                .map(|(ms, idx, records, report)| {
                    Ok(DriftWindowRecord {
                        model: model.clone(),
                        version,
                        closed_at: DateTime::from_timestamp_millis(ms)
                            .ok_or_else(|| Error::Corrupt(format!("drift window time {ms}")))?,
                        index: idx as u64,
                        records: records as u64,
                        report: from_json(&report)?,
                    })
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(name: &str) -> ModelVersion {
        ModelVersion {
            name: name.into(),
            version: 0,
            run_id: "r".into(),
            family: "logreg".into(),
            data_version: "d".repeat(64),
            spec_hash: "s".into(),
            metrics: BTreeMap::from([("test_accuracy".to_string(), 0.9)]),
            artifact_dir: "/a".into(),
            artifact_sha256: "x".into(),
            created_at: Utc::now(),
        }
    }

    // A current-thread runtime, as `#[tokio::test]` gives: every call still runs on a blocking
    // thread and comes back.
    #[tokio::test]
    async fn calls_run_off_the_runtime_and_errors_keep_their_kind() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io { path: "tmp".into(), source })?;
        let store = SqliteStore::in_data_dir(dir.path())?;
        assert_eq!(store.register_model(mv("spam")).await?.version, 1);
        assert_eq!(store.register_model(mv("spam")).await?.version, 2);
        assert!(store.set_alias("spam", "production", 1, "a", "first").await?.is_none());
        assert_eq!(store.set_alias("spam", "production", 2, "a", "second").await?, Some(1));
        assert_eq!(store.rollback_alias("spam", "production", "a", "bad").await?, (2, 1));
        assert!(matches!(store.rollback_alias("spam", "production", "a", "x").await, Err(Error::State(_))));
        assert!(matches!(store.get_model_version("spam", 7).await, Err(Error::NotFound(_))));
        let audit = store.audit_log(10).await?;
        assert_eq!(audit.len(), 3);
        assert_eq!(audit[0].action, "rollback_alias");
        // An error keeps its kind and its source: a data dir under a plain file cannot be made.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").map_err(|source| Error::Io { path: "file".into(), source })?;
        let e = SqliteStore::in_data_dir(&file.join("sub")).err().expect("refused");
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "{e}");
        Ok(())
    }
}
