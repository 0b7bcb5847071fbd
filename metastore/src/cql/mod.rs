//! The ScyllaDB / Cassandra backend of the metadata store (the `scylla` driver, CQL v4), shared
//! by every replica.
//!
//! Tables, each shaped by the queries that read it (keyspace from `[store] keyspace`):
//!
//! | table | partition key | clustering | read by |
//! |---|---|---|---|
//! | `runs` | `run_id` | — | `get_run`, `list_runs(None)` (a scan) |
//! | `runs_by_experiment` | `experiment` | `run_id` | `list_runs(Some)` |
//! | `metric_latest` | `run_id` | `key` | a run's latest metric values |
//! | `metric_steps` | `run_id, key, day` | `step` | `metric_history` (time-bucketed, TTL) |
//! | `model_versions` | `name` | `version` | the registry |
//! | `model_names` | `shard` (always 0) | `name` | `model_names` |
//! | `aliases` | `name` | `alias` | alias lookups |
//! | `alias_history` | `name, alias` | `seq` | `rollback_alias` |
//! | `audit` / `audit_days` | `day` / `shard` | `seq` / `day` | `audit_log` (newest day first) |
//! | `predictions` / `prediction_hours` | `model, hour, shard` / `model` | `seq` / `hour` | `prediction_count` (TTL) |
//!
//! Writes that must not race across replicas are lightweight transactions: the next model
//! version (`INSERT … IF NOT EXISTS`, retried on conflict) and moving an alias
//! (`UPDATE … IF updated_at = <seen>`: the time of the last move, which never repeats, where a
//! version can come back); a server that answers them without an `[applied]` column
//! is refused. Each handle counts the races it lost and retried ([`ScyllaStore::lost_races`]).
//!
//! Timestamps are CQL `timestamp`s: millisecond precision. Rows read by a full primary key are
//! checked against the key asked for before they are used.

mod schema;
mod values;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use schemas::config::StoreConfig;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;

use crate::{
    AliasMove, AuditRecord, DriftWindowRecord, Error, MetadataStore, ModelVersion, PredictionLogEntry,
    PredictionQuery, Result, Run, RunStatus, rollback_target,
};
use schema::{Statements, migrate, prepare};
use values::{
    MvRow, RunRow, Sequence, applied, day_of, from_ts, hour_of, mv_from_row, shard_of, version_i32,
};
pub(crate) use values::{cql, ts};

/// Where an alias points, and the time of its last move (milliseconds; what a move's
/// condition compares).
struct AliasState {
    version: u32,
    /// `None` for a row written without one (the condition then asks for none).
    moved_at: Option<i64>,
}

/// A TLS client (OpenSSL) that trusts only the CA certificates in the PEM file `ca_file`; the
/// driver checks each node's certificate against the IP address it dialled.
fn tls_client(ca_file: &str) -> Result<openssl::ssl::SslConnectorBuilder> {
    use openssl::ssl::{SslConnector, SslMethod, SslVersion};
    let refused = |detail: String| Error::Tls { path: ca_file.to_string(), detail };
    let pem = std::fs::read(ca_file).map_err(|source| Error::Io { path: ca_file.to_string(), source })?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| refused(e.to_string()))?;
    if certs.is_empty() {
        return Err(refused("no PEM certificate in the file".into()));
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| refused(e.to_string()))?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| refused(e.to_string()))?;
    // Only this CA: a fresh store, not the system's.
    let mut roots = openssl::x509::store::X509StoreBuilder::new().map_err(|e| refused(e.to_string()))?;
    for cert in certs {
        roots.add_cert(cert).map_err(|e| refused(e.to_string()))?;
    }
    builder.set_verify_cert_store(roots.build()).map_err(|e| refused(e.to_string()))?;
    Ok(builder)
}

/// How many times a conditional write is retried after losing a race.
const LWT_ATTEMPTS: usize = 16;

/// The ScyllaDB backend.
pub struct ScyllaStore {
    session: Session,
    keyspace: String,
    st: Statements,
    seq: Sequence,
    shards: u32,
    /// `(model, hour)` partitions this process has already recorded in `prediction_hours`.
    hours_seen: Mutex<HashSet<(String, i64)>>,
    /// Conditional writes this handle lost to another writer (and retried).
    lost_races: AtomicU64,
}

impl ScyllaStore {
    /// Connects to `config.nodes`, creates and migrates the keyspace, prepares every statement.
    pub async fn connect(config: &StoreConfig) -> Result<ScyllaStore> {
        let nodes: Vec<&str> = config.nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
        let mut builder = SessionBuilder::new()
            .known_nodes(&nodes)
            .connection_timeout(Duration::from_secs(10))
            // Schema agreement is awaited once after the migration (below).
            .auto_await_schema_agreement(false);
        if !config.username.is_empty() {
            let password = if config.password_file.is_empty() {
                String::new()
            } else {
                std::fs::read_to_string(&config.password_file)
                    .map_err(|source| Error::Io { path: config.password_file.clone(), source })?
                    .trim_end()
                    .to_string()
            };
            builder = builder.user(&config.username, password);
        }
        if !config.tls_ca_file.is_empty() {
            builder = builder.tls_context(Some(tls_client(&config.tls_ca_file)?));
        }
        let session = builder.build().await.map_err(|e| Error::Cql {
            context: format!("connecting to {}", config.nodes),
            source: Box::new(e),
        })?;
        let ks = config.keyspace.clone();
        migrate(&session, &ks, &config.replication).await?;
        let st = prepare(&session, &ks, config).await?;
        Ok(ScyllaStore {
            session,
            keyspace: ks,
            st,
            seq: Sequence::new(),
            shards: config.prediction_shards.max(1),
            hours_seen: Mutex::new(HashSet::new()),
            lost_races: AtomicU64::new(0),
        })
    }

    /// The keyspace this store writes.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// How many conditional writes (a version number, an alias move) this handle lost to
    /// another writer and retried: the server answered `[applied] = false`.
    pub fn lost_races(&self) -> u64 {
        self.lost_races.load(Ordering::Relaxed)
    }

    fn lost_race(&self) {
        self.lost_races.fetch_add(1, Ordering::Relaxed);
    }

    async fn exec(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult> {
        self.session.execute_unpaged(st, values).await.map_err(cql(what))
    }

    /// Every row of a (paged) query.
    async fn rows<R>(&self, what: &str, st: &PreparedStatement, values: impl SerializeRow) -> Result<Vec<R>>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let pager = self.session.execute_iter(st.clone(), values).await.map_err(cql(what))?;
        pager.rows_stream::<R>().map_err(cql(what))?.map_err(cql(what)).try_collect().await
    }

    async fn run_from_row(&self, row: RunRow) -> Result<Run> {
        let (
            run_id,
            experiment,
            parent_run_id,
            status,
            started_at,
            ended_at,
            params,
            tags,
            data_version,
            artifact_dir,
        ) = row;
        let metrics: Vec<(String, f64)> =
            self.rows("reading a run's metrics", &self.st.latest_of_run, (&run_id,)).await?;
        Ok(Run {
            status: RunStatus::parse(&status)?,
            started_at: from_ts(started_at)?,
            ended_at: ended_at.map(from_ts).transpose()?,
            params: params.unwrap_or_default(),
            tags: tags.unwrap_or_default(),
            metrics: metrics.into_iter().collect(),
            run_id,
            experiment,
            parent_run_id,
            data_version,
            artifact_dir,
        })
    }

    async fn run_exists(&self, run_id: &str) -> Result<bool> {
        let rows: Vec<RunRow> = self.rows("reading a run", &self.st.run_by_id, (run_id,)).await?;
        Ok(!rows.is_empty())
    }

    /// `(step, first_day, last_day)` of a run's metric.
    async fn metric_latest(&self, run_id: &str, key: &str) -> Result<Option<(i64, i32, i32)>> {
        let rows: Vec<(String, i64, i32, i32)> =
            self.rows("reading metrics", &self.st.metric_latest, (run_id, key)).await?;
        Ok(rows.into_iter().find(|r| r.0 == key).map(|(_, step, first, last)| (step, first, last)))
    }

    async fn alias_version(&self, name: &str, alias: &str) -> Result<Option<u32>> {
        Ok(self.alias_state(name, alias).await?.map(|a| a.version))
    }

    /// Where `alias` points and when it was last moved.
    async fn alias_state(&self, name: &str, alias: &str) -> Result<Option<AliasState>> {
        let rows: Vec<(String, i32, Option<CqlTimestamp>)> =
            self.rows("reading an alias", &self.st.alias_of, (name, alias)).await?;
        Ok(rows
            .into_iter()
            .find(|(a, _, _)| a == alias)
            .map(|(_, version, moved)| AliasState { version: version as u32, moved_at: moved.map(|t| t.0) }))
    }

    /// Moves `alias` from `seen` to `version` if no other writer moved it meanwhile; the time
    /// of the move if it did.
    ///
    /// The condition is on the time of the last move, not on the version: a version can come
    /// back (1 → 2 → 1) while a slow writer holds an old read, and a condition on it would
    /// then apply that writer's move out of turn. Each move's time is later than the one it
    /// replaces (by a millisecond when the clock says otherwise), so the times never repeat,
    /// and the alias's history and audit records, keyed by them, are in the order the moves
    /// were applied.
    async fn move_alias(
        &self,
        name: &str,
        alias: &str,
        seen: Option<&AliasState>,
        version: u32,
    ) -> Result<Option<DateTime<Utc>>> {
        let version = version_i32(version)?;
        let now = Utc::now().timestamp_millis();
        let at_ms = seen.and_then(|s| s.moved_at).map_or(now, |last| now.max(last + 1));
        let at = from_ts(CqlTimestamp(at_ms))?;
        let result = match seen {
            None => {
                self.exec("setting an alias", &self.st.insert_alias, (name, alias, version, ts(at))).await?
            }
            Some(seen) => {
                let values = (version, ts(at), name, alias, seen.moved_at.map(CqlTimestamp));
                self.exec("moving an alias", &self.st.move_alias, values).await?
            }
        };
        Ok(applied(result)?.then_some(at))
    }

    async fn log_prediction(&self, e: &PredictionLogEntry) -> Result<()> {
        let seq = self.seq.at(e.at);
        let shard = (shard_of(&seq) % u64::from(self.shards)) as i32;
        let values = (
            &e.model,
            hour_of(e.at),
            shard,
            &seq,
            ts(e.at),
            &e.id,
            &e.channel,
            version_i32(e.version)?,
            &e.label,
            f64::from(e.confidence),
            i64::try_from(e.latency_us).unwrap_or(i64::MAX),
        );
        self.exec("logging predictions", &self.st.insert_prediction, values).await?;
        Ok(())
    }

    /// The alias's history row and the audit record, in one logged batch.
    async fn record_alias_move(&self, mv: AliasMove<'_>, action: &str) -> Result<()> {
        let details = mv.details();
        let seq = self.seq.at(mv.at);
        let day = day_of(mv.at);
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(self.st.insert_alias_history.clone());
        batch.append_statement(self.st.insert_audit.clone());
        batch.append_statement(self.st.insert_audit_day.clone());
        self.session
            .batch(
                &batch,
                (
                    (mv.name, mv.alias, &seq, action, version_i32(mv.version)?),
                    (day, &seq, ts(mv.at), mv.actor, action, details.to_string()),
                    (0i32, day),
                ),
            )
            .await
            .map_err(cql("recording an alias move"))?;
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for ScyllaStore {
    async fn create_run(&self, run: &Run) -> Result<()> {
        if self.run_exists(&run.run_id).await? {
            return Err(Error::Conflict(format!("run {} already exists", run.run_id)));
        }
        self.exec(
            "creating a run",
            &self.st.insert_run,
            (
                &run.run_id,
                &run.experiment,
                &run.parent_run_id,
                run.status.as_str(),
                ts(run.started_at),
                run.ended_at.map(ts),
                &run.params,
                &run.tags,
                &run.data_version,
                &run.artifact_dir,
            ),
        )
        .await?;
        self.exec("creating a run", &self.st.insert_run_by_experiment, (&run.experiment, &run.run_id))
            .await?;
        Ok(())
    }

    async fn log_metrics(&self, run_id: &str, step: u64, metrics: &BTreeMap<String, f64>) -> Result<()> {
        let at = Utc::now();
        let day = day_of(at);
        let step_i = i64::try_from(step).map_err(|_| Error::Input(format!("step {step} is out of range")))?;
        for (key, value) in metrics {
            self.exec("logging a metric", &self.st.insert_step, (run_id, key, day, step_i, value, ts(at)))
                .await?;
            // One trainer writes a run: read-then-write of the latest value does not race.
            let latest = self.metric_latest(run_id, key).await?;
            let (first_day, newer) = match latest {
                None => (day, true),
                Some((last_step, first_day, _)) => (first_day.min(day), step_i >= last_step),
            };
            if newer {
                self.exec(
                    "logging a metric",
                    &self.st.upsert_latest,
                    (run_id, key, step_i, value, first_day, day),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn finish_run(&self, run_id: &str, status: RunStatus, ended_at: DateTime<Utc>) -> Result<()> {
        if !self.run_exists(run_id).await? {
            return Err(Error::NotFound(format!("run {run_id}")));
        }
        self.exec("finishing a run", &self.st.finish_run, (status.as_str(), ts(ended_at), run_id)).await?;
        Ok(())
    }

    async fn set_run_artifacts(&self, run_id: &str, artifact_dir: &str) -> Result<()> {
        if self.run_exists(run_id).await? {
            self.exec("recording artifacts", &self.st.set_run_artifacts, (artifact_dir, run_id)).await?;
        }
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Run> {
        let mut rows: Vec<RunRow> = self.rows("reading a run", &self.st.run_by_id, (run_id,)).await?;
        let row = rows.pop().ok_or_else(|| Error::NotFound(format!("run {run_id}")))?;
        self.run_from_row(row).await
    }

    async fn list_runs(&self, experiment: Option<&str>) -> Result<Vec<Run>> {
        let rows: Vec<RunRow> = match experiment {
            None => self.rows("listing runs", &self.st.all_runs, ()).await?,
            Some(e) => {
                let ids: Vec<(String,)> =
                    self.rows("listing runs", &self.st.run_ids_by_experiment, (e,)).await?;
                let mut rows = Vec::with_capacity(ids.len());
                for (id,) in ids {
                    rows.extend(self.rows::<RunRow>("listing runs", &self.st.run_by_id, (&id,)).await?);
                }
                rows
            }
        };
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            runs.push(self.run_from_row(row).await?);
        }
        runs.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
        Ok(runs)
    }

    async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<(u64, f64)>> {
        let Some((_, first_day, last_day)) = self.metric_latest(run_id, key).await? else {
            return Ok(Vec::new());
        };
        let mut by_step = BTreeMap::new();
        for day in first_day..=last_day {
            let rows: Vec<(i64, f64)> =
                self.rows("reading metrics", &self.st.steps_of_day, (run_id, key, day)).await?;
            by_step.extend(rows.into_iter().map(|(s, v)| (s as u64, v)));
        }
        Ok(by_step.into_iter().collect())
    }

    async fn register_model(&self, mut mv: ModelVersion) -> Result<ModelVersion> {
        for _ in 0..LWT_ATTEMPTS {
            let versions: Vec<MvRow> =
                self.rows("registering a model", &self.st.versions_of, (&mv.name,)).await?;
            mv.version = versions.iter().map(|r| r.1 as u32).max().unwrap_or(0) + 1;
            let result = self
                .exec(
                    "registering a model",
                    &self.st.insert_version,
                    (
                        &mv.name,
                        version_i32(mv.version)?,
                        &mv.run_id,
                        &mv.family,
                        &mv.data_version,
                        &mv.spec_hash,
                        &mv.metrics,
                        &mv.artifact_dir,
                        &mv.artifact_sha256,
                        ts(mv.created_at),
                    ),
                )
                .await?;
            if applied(result)? {
                self.exec("registering a model", &self.st.insert_name, (0i32, &mv.name)).await?;
                return Ok(mv);
            }
            self.lost_race();
        }
        Err(Error::Conflict(format!(
            "could not register a version of `{}`: {LWT_ATTEMPTS} concurrent registrations won first",
            mv.name
        )))
    }

    async fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let rows: Vec<MvRow> = self.rows("reading model versions", &self.st.versions_of, (name,)).await?;
        let mut versions = rows.into_iter().map(mv_from_row).collect::<Result<Vec<_>>>()?;
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn model_names(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = self.rows("reading model names", &self.st.names, (0i32,)).await?;
        let mut names: Vec<String> = rows.into_iter().map(|(n,)| n).collect();
        names.sort();
        Ok(names)
    }

    async fn get_model_version(&self, name: &str, version: u32) -> Result<ModelVersion> {
        let v = version_i32(version)?;
        let rows: Vec<MvRow> = self.rows("reading a model version", &self.st.version_of, (name, v)).await?;
        let row = rows.into_iter().find(|r| r.1 == v);
        mv_from_row(row.ok_or_else(|| Error::NotFound(format!("model {name} version {version}")))?)
    }

    async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u32,
        actor: &str,
        reason: &str,
    ) -> Result<Option<u32>> {
        self.get_model_version(name, version).await?;
        for _ in 0..LWT_ATTEMPTS {
            let seen = self.alias_state(name, alias).await?;
            let previous = seen.as_ref().map(|s| s.version);
            if let Some(at) = self.move_alias(name, alias, seen.as_ref(), version).await? {
                let mv = AliasMove { name, alias, version, previous, actor, reason, at };
                self.record_alias_move(mv, "set_alias").await?;
                return Ok(previous);
            }
            self.lost_race();
        }
        Err(Error::Conflict(format!(
            "could not move `{name}@{alias}`: it kept changing under {LWT_ATTEMPTS} attempts"
        )))
    }

    async fn rollback_alias(&self, name: &str, alias: &str, actor: &str, reason: &str) -> Result<(u32, u32)> {
        for _ in 0..LWT_ATTEMPTS {
            let seen = self
                .alias_state(name, alias)
                .await?
                .ok_or_else(|| Error::NotFound(format!("alias `{alias}` of model `{name}`")))?;
            let current = seen.version;
            let mut history: Vec<(String, String, i32)> =
                self.rows("reading an alias's history", &self.st.alias_history, (name, alias)).await?;
            history.sort_by(|a, b| a.0.cmp(&b.0));
            let history = history.into_iter().map(|(_, action, version)| (action, version as u32));
            let target = rollback_target(name, alias, current, history)?;
            if let Some(at) = self.move_alias(name, alias, Some(&seen), target).await? {
                let mv =
                    AliasMove { name, alias, version: target, previous: Some(current), actor, reason, at };
                self.record_alias_move(mv, "rollback_alias").await?;
                return Ok((current, target));
            }
            self.lost_race();
        }
        Err(Error::Conflict(format!(
            "could not roll back `{name}@{alias}`: it kept changing under {LWT_ATTEMPTS} attempts"
        )))
    }

    async fn get_alias(&self, name: &str, alias: &str) -> Result<Option<u32>> {
        self.alias_version(name, alias).await
    }

    async fn aliases(&self, name: &str) -> Result<BTreeMap<String, u32>> {
        let rows: Vec<(String, i32)> = self.rows("reading aliases", &self.st.aliases_of, (name,)).await?;
        Ok(rows.into_iter().map(|(a, v)| (a, v as u32)).collect())
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        // Ordered by when it was appended, like the embedded backend, not by `record.at`.
        let now = Utc::now();
        let day = day_of(now);
        let seq = self.seq.at(now);
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(self.st.insert_audit.clone());
        batch.append_statement(self.st.insert_audit_day.clone());
        self.session
            .batch(
                &batch,
                (
                    (day, &seq, ts(record.at), &record.actor, &record.action, record.details.to_string()),
                    (0i32, day),
                ),
            )
            .await
            .map_err(cql("appending an audit record"))?;
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut days: Vec<(i32,)> = self.rows("reading the audit log", &self.st.audit_days, (0i32,)).await?;
        days.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for (day,) in days {
            if out.len() >= limit {
                break;
            }
            let mut rows: Vec<(String, CqlTimestamp, String, String, String)> =
                self.rows("reading the audit log", &self.st.audit_of_day, (day,)).await?;
            rows.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            for (_, at, actor, action, details) in rows.into_iter().take(limit - out.len()) {
                let details = serde_json::from_str(&details)
                    .map_err(|e| Error::Corrupt(format!("JSON in the audit log: {e}")))?;
                out.push(AuditRecord { at: from_ts(at)?, actor, action, details });
            }
        }
        Ok(out)
    }

    async fn log_predictions(&self, entries: &[PredictionLogEntry]) -> Result<()> {
        let new_hours: Vec<(String, i64)> = {
            let mut seen =
                self.hours_seen.lock().map_err(|_| Error::Internal("store lock poisoned".into()))?;
            let mut new = Vec::new();
            for e in entries {
                let key = (e.model.clone(), hour_of(e.at));
                if !seen.contains(&key) {
                    seen.insert(key.clone());
                    new.push(key);
                }
            }
            new
        };
        for (model, hour) in &new_hours {
            self.exec("logging predictions", &self.st.insert_prediction_hour, (model, hour)).await?;
        }
        let writes: Vec<_> = entries.iter().map(|e| self.log_prediction(e)).collect();
        let mut writes = futures::stream::iter(writes).buffer_unordered(32);
        while let Some(r) = writes.next().await {
            r?;
        }
        Ok(())
    }

    async fn prediction_count(&self, model: &str) -> Result<u64> {
        let hours: Vec<(i64,)> =
            self.rows("counting predictions", &self.st.prediction_hours, (model,)).await?;
        let mut n = 0u64;
        for (hour,) in hours {
            for shard in 0..self.shards as i32 {
                let pager = self
                    .session
                    .execute_iter(self.st.predictions_in.clone(), (model, hour, shard))
                    .await
                    .map_err(cql("counting predictions"))?;
                let mut rows = pager.rows_stream::<(String,)>().map_err(cql("counting predictions"))?;
                while let Some(r) = rows.next().await {
                    r.map_err(cql("counting predictions"))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn recent_predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionLogEntry>> {
        type Row = (String, CqlTimestamp, Option<String>, String, i32, String, f64, i64);
        let what = "reading recent predictions";
        let mut hours: Vec<i64> = self
            .rows::<(i64,)>(what, &self.st.prediction_hours, (&q.model,))
            .await?
            .into_iter()
            .map(|(h,)| h)
            .collect();
        hours.sort_unstable_by(|a, b| b.cmp(a));
        let mut out: Vec<(String, PredictionLogEntry)> = Vec::new();
        // Hour by hour from the newest: each shard's newest matches (at most `limit` of them),
        // merged by sequence; an older hour is read only while the page is short.
        for hour in hours {
            if out.len() >= q.limit {
                break;
            }
            let mut in_hour = Vec::new();
            for shard in 0..self.shards as i32 {
                let pager = self
                    .session
                    .execute_iter(self.st.recent_predictions_in.clone(), (&q.model, hour, shard))
                    .await
                    .map_err(cql(what))?;
                let mut rows = pager.rows_stream::<Row>().map_err(cql(what))?;
                let mut taken = 0;
                while taken < q.limit {
                    let Some(row) = rows.next().await else { break };
                    let (seq, at, id, channel, version, label, confidence, latency_us) =
                        row.map_err(cql(what))?;
                    let e = PredictionLogEntry {
                        at: from_ts(at)?,
                        id,
                        channel,
                        model: q.model.clone(),
                        version: version.max(0) as u32,
                        label,
                        confidence: confidence as f32,
                        latency_us: latency_us.max(0) as u64,
                    };
                    if q.matches(&e) {
                        in_hour.push((seq, e));
                        taken += 1;
                    }
                }
            }
            in_hour.sort_by(|a, b| b.0.cmp(&a.0));
            out.extend(in_hour);
        }
        out.truncate(q.limit);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    async fn record_drift_window(&self, w: &DriftWindowRecord, retention_secs: u64) -> Result<()> {
        let report = w.check_size()?;
        let ttl = i32::try_from(retention_secs).map_err(|_| {
            Error::Input(format!("a retention of {retention_secs} s is longer than CQL's TTL allows"))
        })?;
        let values = (
            &w.model,
            version_i32(w.version)?,
            ts(w.closed_at),
            w.index as i64,
            w.records as i64,
            report,
            ttl,
        );
        self.exec("recording a drift window", &self.st.insert_drift_window, values).await?;
        Ok(())
    }

    async fn drift_windows(&self, model: &str, version: u32, limit: usize) -> Result<Vec<DriftWindowRecord>> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<(CqlTimestamp, i64, i64, String)> = self
            .rows("reading drift windows", &self.st.drift_windows, (model, version_i32(version)?, limit))
            .await?;
        rows.into_iter()
            .map(|(at, idx, records, report)| {
                Ok(DriftWindowRecord {
                    model: model.to_string(),
                    version,
                    closed_at: from_ts(at)?,
                    index: idx as u64,
                    records: records as u64,
                    report: serde_json::from_str(&report)
                        .map_err(|e| Error::Corrupt(format!("a drift window report: {e}")))?,
                })
            })
            .collect()
    }
}
