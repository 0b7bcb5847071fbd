//! The CQL schema: numbered migrations applied once each (recorded in `schema_migrations`),
//! and every statement the store runs, prepared once at connect.

use std::collections::HashSet;

use chrono::Utc;
use schemas::config::StoreConfig;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{cql, ts};
use crate::Result;

/// One schema migration: applied once, in order, recorded in `schema_migrations`.
struct Migration {
    id: i32,
    description: &'static str,
    /// Statements with `{ks}` for the keyspace.
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        id: 1,
        description: "runs, metrics, registry, aliases, audit, prediction log",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.runs (run_id text, experiment text, parent_run_id text, \
         status text, started_at timestamp, ended_at timestamp, params map<text, text>, \
         tags map<text, text>, data_version text, artifact_dir text, PRIMARY KEY (run_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.runs_by_experiment (experiment text, run_id text, \
         PRIMARY KEY ((experiment), run_id))",
            "CREATE TABLE IF NOT EXISTS {ks}.metric_latest (run_id text, key text, step bigint, \
         value double, first_day int, last_day int, PRIMARY KEY ((run_id), key))",
            "CREATE TABLE IF NOT EXISTS {ks}.metric_steps (run_id text, key text, day int, step bigint, \
         value double, at timestamp, PRIMARY KEY ((run_id, key, day), step))",
            "CREATE TABLE IF NOT EXISTS {ks}.model_versions (name text, version int, run_id text, \
         family text, data_version text, spec_hash text, metrics map<text, double>, \
         artifact_dir text, artifact_sha256 text, created_at timestamp, PRIMARY KEY ((name), version))",
            "CREATE TABLE IF NOT EXISTS {ks}.model_names (shard int, name text, PRIMARY KEY ((shard), name))",
            "CREATE TABLE IF NOT EXISTS {ks}.aliases (name text, alias text, version int, \
         updated_at timestamp, PRIMARY KEY ((name), alias))",
            "CREATE TABLE IF NOT EXISTS {ks}.alias_history (name text, alias text, seq text, \
         action text, version int, PRIMARY KEY ((name, alias), seq))",
            "CREATE TABLE IF NOT EXISTS {ks}.audit (day int, seq text, at timestamp, actor text, \
         action text, details text, PRIMARY KEY ((day), seq))",
            "CREATE TABLE IF NOT EXISTS {ks}.audit_days (shard int, day int, PRIMARY KEY ((shard), day))",
            "CREATE TABLE IF NOT EXISTS {ks}.predictions (model text, hour bigint, shard int, seq text, \
         at timestamp, id text, channel text, version int, label text, confidence double, \
         latency_us bigint, PRIMARY KEY ((model, hour, shard), seq))",
            "CREATE TABLE IF NOT EXISTS {ks}.prediction_hours (model text, hour bigint, \
         PRIMARY KEY ((model), hour))",
        ],
    },
    Migration {
        id: 2,
        description: "drift window reports",
        statements: &["CREATE TABLE IF NOT EXISTS {ks}.drift_windows (model text, version int, \
             closed_at timestamp, idx bigint, records bigint, report text, \
             PRIMARY KEY ((model, version), closed_at, idx)) \
             WITH CLUSTERING ORDER BY (closed_at DESC, idx DESC)"],
    },
];

pub(super) struct Statements {
    pub(super) insert_run: PreparedStatement,
    pub(super) insert_run_by_experiment: PreparedStatement,
    pub(super) run_by_id: PreparedStatement,
    pub(super) all_runs: PreparedStatement,
    pub(super) run_ids_by_experiment: PreparedStatement,
    pub(super) finish_run: PreparedStatement,
    pub(super) set_run_artifacts: PreparedStatement,
    pub(super) metric_latest: PreparedStatement,
    pub(super) latest_of_run: PreparedStatement,
    pub(super) upsert_latest: PreparedStatement,
    pub(super) insert_step: PreparedStatement,
    pub(super) steps_of_day: PreparedStatement,
    pub(super) versions_of: PreparedStatement,
    pub(super) insert_version: PreparedStatement,
    pub(super) version_of: PreparedStatement,
    pub(super) insert_name: PreparedStatement,
    pub(super) names: PreparedStatement,
    pub(super) alias_of: PreparedStatement,
    pub(super) aliases_of: PreparedStatement,
    pub(super) insert_alias: PreparedStatement,
    pub(super) move_alias: PreparedStatement,
    pub(super) insert_alias_history: PreparedStatement,
    pub(super) alias_history: PreparedStatement,
    pub(super) insert_audit: PreparedStatement,
    pub(super) insert_audit_day: PreparedStatement,
    pub(super) audit_days: PreparedStatement,
    pub(super) audit_of_day: PreparedStatement,
    pub(super) insert_prediction: PreparedStatement,
    pub(super) insert_prediction_hour: PreparedStatement,
    pub(super) prediction_hours: PreparedStatement,
    pub(super) predictions_in: PreparedStatement,
    pub(super) recent_predictions_in: PreparedStatement,
    pub(super) insert_drift_window: PreparedStatement,
    pub(super) drift_windows: PreparedStatement,
}

pub(super) const RUN_COLUMNS: &str = "run_id, experiment, parent_run_id, status, started_at, ended_at, params, tags, data_version, artifact_dir";
pub(super) const MV_COLUMNS: &str = "name, version, run_id, family, data_version, spec_hash, metrics, artifact_dir, artifact_sha256, created_at";

/// Creates the keyspace and applies the migrations it has not seen, then waits for the
/// cluster to agree on the schema.
pub(super) async fn migrate(session: &Session, ks: &str, replication: &str) -> Result<()> {
    session
        .query_unpaged(format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"), ())
        .await
        .map_err(cql("creating the keyspace"))?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (id int, description text, \
                 applied_at timestamp, PRIMARY KEY (id))"
            ),
            (),
        )
        .await
        .map_err(cql("creating schema_migrations"))?;
    let applied: HashSet<i32> = session
        .query_unpaged(format!("SELECT id FROM {ks}.schema_migrations"), ())
        .await
        .map_err(cql("reading schema_migrations"))?
        .into_rows_result()
        .map_err(cql("reading schema_migrations"))?
        .rows::<(i32,)>()
        .map_err(cql("reading schema_migrations"))?
        .map(|r| r.map(|(id,)| id))
        .collect::<std::result::Result<_, _>>()
        .map_err(cql("reading schema_migrations"))?;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.id)) {
        for statement in m.statements {
            session
                .query_unpaged(statement.replace("{ks}", ks), ())
                .await
                .map_err(cql(&format!("migration {} ({})", m.id, m.description)))?;
        }
        let record = session
            .prepare(format!(
                "INSERT INTO {ks}.schema_migrations (id, description, applied_at) VALUES (?, ?, ?)"
            ))
            .await
            .map_err(cql("recording a migration"))?;
        session
            .execute_unpaged(&record, (m.id, m.description, ts(Utc::now())))
            .await
            .map_err(cql("recording a migration"))?;
        tracing::info!(keyspace = ks, migration = m.id, description = m.description, "store schema migrated");
    }
    if let Err(e) = session.await_schema_agreement().await {
        tracing::warn!(error = %e, "could not confirm that the cluster agrees on the schema");
    }
    Ok(())
}

pub(super) async fn prepare(session: &Session, ks: &str, config: &StoreConfig) -> Result<Statements> {
    let ttl = |secs: u64| if secs == 0 { String::new() } else { format!(" USING TTL {secs}") };
    let prediction_ttl = ttl(config.prediction_ttl_secs);
    let metric_ttl = ttl(config.metric_ttl_secs);
    let p = |text: String| async move {
        session.prepare(text.clone()).await.map_err(cql(&format!("preparing `{text}`")))
    };
    Ok(Statements {
        insert_run: p(format!("INSERT INTO {ks}.runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")).await?,
        insert_run_by_experiment: p(format!("INSERT INTO {ks}.runs_by_experiment (experiment, run_id) VALUES (?, ?)"))
            .await?,
        run_by_id: p(format!("SELECT {RUN_COLUMNS} FROM {ks}.runs WHERE run_id = ?")).await?,
        all_runs: p(format!("SELECT {RUN_COLUMNS} FROM {ks}.runs")).await?,
        run_ids_by_experiment: p(format!("SELECT run_id FROM {ks}.runs_by_experiment WHERE experiment = ?")).await?,
        finish_run: p(format!("UPDATE {ks}.runs SET status = ?, ended_at = ? WHERE run_id = ?")).await?,
        set_run_artifacts: p(format!("UPDATE {ks}.runs SET artifact_dir = ? WHERE run_id = ?")).await?,
        metric_latest: p(format!(
            "SELECT key, step, first_day, last_day FROM {ks}.metric_latest WHERE run_id = ? AND key = ?"
        ))
        .await?,
        latest_of_run: p(format!("SELECT key, value FROM {ks}.metric_latest WHERE run_id = ?")).await?,
        upsert_latest: p(format!(
            "INSERT INTO {ks}.metric_latest (run_id, key, step, value, first_day, last_day) VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .await?,
        insert_step: p(format!(
            "INSERT INTO {ks}.metric_steps (run_id, key, day, step, value, at) VALUES (?, ?, ?, ?, ?, ?){metric_ttl}"
        ))
        .await?,
        steps_of_day: p(format!(
            "SELECT step, value FROM {ks}.metric_steps WHERE run_id = ? AND key = ? AND day = ?"
        ))
        .await?,
        versions_of: p(format!("SELECT {MV_COLUMNS} FROM {ks}.model_versions WHERE name = ?")).await?,
        insert_version: p(format!(
            "INSERT INTO {ks}.model_versions ({MV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?,
        version_of: p(format!("SELECT {MV_COLUMNS} FROM {ks}.model_versions WHERE name = ? AND version = ?")).await?,
        insert_name: p(format!("INSERT INTO {ks}.model_names (shard, name) VALUES (?, ?)")).await?,
        names: p(format!("SELECT name FROM {ks}.model_names WHERE shard = ?")).await?,
        alias_of: p(format!("SELECT alias, version, updated_at FROM {ks}.aliases WHERE name = ? AND alias = ?"))
            .await?,
        aliases_of: p(format!("SELECT alias, version FROM {ks}.aliases WHERE name = ?")).await?,
        insert_alias: p(format!(
            "INSERT INTO {ks}.aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?) IF NOT EXISTS"
        ))
        .await?,
        move_alias: p(format!(
            "UPDATE {ks}.aliases SET version = ?, updated_at = ? WHERE name = ? AND alias = ? IF updated_at = ?"
        ))
        .await?,
        insert_alias_history: p(format!(
            "INSERT INTO {ks}.alias_history (name, alias, seq, action, version) VALUES (?, ?, ?, ?, ?)"
        ))
        .await?,
        alias_history: p(format!("SELECT seq, action, version FROM {ks}.alias_history WHERE name = ? AND alias = ?"))
            .await?,
        insert_audit: p(format!(
            "INSERT INTO {ks}.audit (day, seq, at, actor, action, details) VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .await?,
        insert_audit_day: p(format!("INSERT INTO {ks}.audit_days (shard, day) VALUES (?, ?)")).await?,
        audit_days: p(format!("SELECT day FROM {ks}.audit_days WHERE shard = ?")).await?,
        audit_of_day: p(format!("SELECT seq, at, actor, action, details FROM {ks}.audit WHERE day = ?")).await?,
        insert_prediction: p(format!(
            "INSERT INTO {ks}.predictions (model, hour, shard, seq, at, id, channel, version, label, confidence, \
             latency_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){prediction_ttl}"
        ))
        .await?,
        insert_prediction_hour: p(format!(
            "INSERT INTO {ks}.prediction_hours (model, hour) VALUES (?, ?){prediction_ttl}"
        ))
        .await?,
        prediction_hours: p(format!("SELECT hour FROM {ks}.prediction_hours WHERE model = ?")).await?,
        predictions_in: p(format!(
            "SELECT seq FROM {ks}.predictions WHERE model = ? AND hour = ? AND shard = ?"
        ))
        .await?,
        recent_predictions_in: p(format!(
            "SELECT seq, at, id, channel, version, label, confidence, latency_us FROM {ks}.predictions \
             WHERE model = ? AND hour = ? AND shard = ? ORDER BY seq DESC"
        ))
        .await?,
        // The retention is the row's TTL, bound per write (0: none).
        insert_drift_window: p(format!(
            "INSERT INTO {ks}.drift_windows (model, version, closed_at, idx, records, report) \
             VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
        ))
        .await?,
        drift_windows: p(format!(
            "SELECT closed_at, idx, records, report FROM {ks}.drift_windows WHERE model = ? AND version = ? LIMIT ?"
        ))
        .await?,
    })
}
