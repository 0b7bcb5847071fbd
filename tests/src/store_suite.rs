//! The behaviour every metadata-store backend must have, run against each of them by
//! `tests/tests/it/metadata_store.rs`. Each case gets two handles on one backend (two connections,
//! as two replicas have) and writes through one and reads through both.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, ensure};
use chrono::{Duration, Utc};
use metastore::{AuditRecord, Error, MetadataStore, ModelVersion, PredictionLogEntry, Run, RunStatus};

pub type Store = Arc<dyn MetadataStore>;

/// A running run of `experiment` with two params and a tag.
pub fn run(id: &str, experiment: &str, parent: Option<&str>, started_secs_ago: i64) -> Run {
    Run {
        run_id: id.into(),
        experiment: experiment.into(),
        parent_run_id: parent.map(str::to_string),
        status: RunStatus::Running,
        started_at: Utc::now() - Duration::seconds(started_secs_ago),
        ended_at: None,
        params: BTreeMap::from([("epochs".into(), "3".into()), ("lr".into(), "0.01".into())]),
        metrics: BTreeMap::new(),
        tags: BTreeMap::from([("team".into(), "mail".into())]),
        data_version: Some("abc".into()),
        artifact_dir: None,
    }
}

/// A version of model `name` trained by `run_id` (its number is assigned on registration).
pub fn mv(name: &str, run_id: &str) -> ModelVersion {
    ModelVersion {
        name: name.into(),
        version: 0,
        run_id: run_id.into(),
        family: "logreg".into(),
        data_version: "abc".into(),
        spec_hash: "h".into(),
        metrics: BTreeMap::from([("test_accuracy".into(), 0.97), ("test_f1".into(), 0.5)]),
        artifact_dir: "/x".into(),
        artifact_sha256: "s".into(),
        created_at: Utc::now(),
    }
}

/// Runs, their parameters, tags, step metrics, latest values and listing.
pub async fn runs_and_metrics(a: Store, b: Store) -> Result<()> {
    a.create_run(&run("r1", "spam", None, 30)).await?;
    a.create_run(&run("r2", "spam", Some("r1"), 10)).await?;
    a.create_run(&run("r3", "other", None, 20)).await?;
    ensure!(b.create_run(&run("r1", "spam", None, 0)).await.is_err(), "a run id is created once");

    a.log_metrics("r1", 0, &BTreeMap::from([("loss".into(), 0.9)])).await?;
    a.log_metrics("r1", 5, &BTreeMap::from([("loss".into(), 0.2), ("acc".into(), 0.8)])).await?;
    // A late write of an earlier step joins the history but is not the latest value.
    a.log_metrics("r1", 3, &BTreeMap::from([("loss".into(), 0.5)])).await?;
    a.set_run_artifacts("r1", "/artifacts/r1").await?;
    let ended = Utc::now();
    a.finish_run("r1", RunStatus::Finished, ended).await?;

    let r = b.get_run("r1").await?;
    ensure!(r.status == RunStatus::Finished, "status {:?}", r.status);
    let ended_ms = r.ended_at.map(|t| t.timestamp_millis());
    ensure!(ended_ms == Some(ended.timestamp_millis()), "ended_at {:?}", r.ended_at);
    ensure!(
        r.metrics == BTreeMap::from([("acc".into(), 0.8), ("loss".into(), 0.2)]),
        "latest {:?}",
        r.metrics
    );
    ensure!(r.params["lr"] == "0.01" && r.tags["team"] == "mail", "params {:?} tags {:?}", r.params, r.tags);
    ensure!(r.artifact_dir.as_deref() == Some("/artifacts/r1"), "artifacts {:?}", r.artifact_dir);
    ensure!(r.data_version.as_deref() == Some("abc"));
    let history = b.metric_history("r1", "loss").await?;
    ensure!(history == vec![(0, 0.9), (3, 0.5), (5, 0.2)], "history {history:?}");
    ensure!(b.metric_history("r1", "nope").await?.is_empty());
    // Keys that sort before existing ones match nothing.
    ensure!(b.metric_history("r1", "a").await?.is_empty());
    ensure!(b.get_run("r2").await?.parent_run_id.as_deref() == Some("r1"));

    ensure!(matches!(b.get_run("nope").await, Err(Error::NotFound(_))));
    ensure!(matches!(b.finish_run("nope", RunStatus::Failed, Utc::now()).await, Err(Error::NotFound(_))));

    let ids = |runs: Vec<Run>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    // Oldest first.
    ensure!(ids(b.list_runs(None).await?) == ["r1", "r3", "r2"], "all runs");
    ensure!(ids(b.list_runs(Some("spam")).await?) == ["r1", "r2"], "spam runs");
    ensure!(b.list_runs(Some("missing")).await?.is_empty());
    Ok(())
}

/// Versions are numbered per model from 1; aliases move with an audit record each.
pub async fn registry_versions_aliases_and_audit(a: Store, b: Store) -> Result<()> {
    let v1 = a.register_model(mv("spam", "r1")).await?;
    let v2 = b.register_model(mv("spam", "r2")).await?;
    let other = a.register_model(mv("ham", "r3")).await?;
    ensure!(
        (v1.version, v2.version, other.version) == (1, 2, 1),
        "{} {} {}",
        v1.version,
        v2.version,
        other.version
    );
    let versions = b.model_versions("spam").await?;
    ensure!(
        versions.iter().map(|v| (v.version, v.run_id.as_str())).collect::<Vec<_>>() == [(1, "r1"), (2, "r2")]
    );
    ensure!(versions[1].metrics == mv("spam", "r2").metrics);
    ensure!(b.model_versions("missing").await?.is_empty());
    ensure!(b.model_names().await? == ["ham", "spam"]);
    ensure!(matches!(b.get_model_version("spam", 9).await, Err(Error::NotFound(_))));
    ensure!(b.get_model_version("spam", 1).await?.run_id == "r1", "exactly the version asked for");

    ensure!(a.set_alias("spam", "production", 1, "alice", "first").await?.is_none());
    ensure!(b.set_alias("spam", "production", 2, "bob", "better").await? == Some(1));
    ensure!(
        a.set_alias("spam", "candidate", 1, "carol", "try").await?.is_none(),
        "a new alias has no previous"
    );
    ensure!(b.get_alias("spam", "production").await? == Some(2));
    ensure!(b.get_alias("spam", "staging").await?.is_none());
    ensure!(b.get_alias("spam", "alpha").await?.is_none());
    ensure!(b.aliases("spam").await? == BTreeMap::from([("candidate".into(), 1), ("production".into(), 2)]));
    ensure!(matches!(a.set_alias("spam", "production", 9, "bob", "x").await, Err(Error::NotFound(_))));
    ensure!(b.get_alias("spam", "production").await? == Some(2), "a refused move changes nothing");

    let audit = b.audit_log(10).await?;
    ensure!(audit.len() == 3, "{} audit records", audit.len());
    ensure!(
        audit[0].actor == "carol" && audit[1].actor == "bob" && audit[2].actor == "alice",
        "newest first"
    );
    ensure!(audit[1].action == "set_alias");
    ensure!(
        audit[1].details["previous"] == 1
            && audit[1].details["version"] == 2
            && audit[1].details["reason"] == "better"
    );
    ensure!(b.audit_log(1).await?.len() == 1);
    Ok(())
}

/// Each rollback steps one promotion further back; each alias has its own history.
pub async fn rollback_steps_back_through_promotions(a: Store, b: Store) -> Result<()> {
    for r in ["r1", "r2", "r3"] {
        a.register_model(mv("spam", r)).await?;
    }
    ensure!(matches!(a.rollback_alias("spam", "production", "a", "x").await, Err(Error::NotFound(_))));
    a.set_alias("spam", "production", 1, "a", "").await?;
    ensure!(matches!(a.rollback_alias("spam", "production", "a", "x").await, Err(Error::State(_))));
    a.set_alias("spam", "production", 2, "a", "").await?;
    b.set_alias("spam", "production", 3, "a", "").await?;
    a.set_alias("spam", "candidate", 1, "a", "").await?;
    ensure!(b.rollback_alias("spam", "production", "ops", "bad").await? == (3, 2));
    ensure!(a.rollback_alias("spam", "production", "ops", "worse").await? == (2, 1));
    ensure!(matches!(b.rollback_alias("spam", "production", "ops", "x").await, Err(Error::State(_))));
    ensure!(a.get_alias("spam", "production").await? == Some(1));
    // A promotion after rollbacks starts from where the alias is.
    a.set_alias("spam", "production", 3, "a", "").await?;
    ensure!(b.rollback_alias("spam", "production", "ops", "again").await? == (3, 1));
    let audit = a.audit_log(1).await?;
    ensure!((audit[0].action.as_str(), audit[0].actor.as_str()) == ("rollback_alias", "ops"));
    ensure!(
        audit[0].details["version"].as_u64() == Some(1) && audit[0].details["previous"].as_u64() == Some(3)
    );
    ensure!(b.get_alias("spam", "candidate").await? == Some(1));
    Ok(())
}

/// Audit records come back newest-appended first, whatever their `at`, with their details.
pub async fn audit_records_newest_first(a: Store, b: Store) -> Result<()> {
    let record = |action: &str, at_days_ago: i64, n: u64| AuditRecord {
        at: Utc::now() - Duration::days(at_days_ago),
        actor: "cli:ops".into(),
        action: action.into(),
        details: serde_json::json!({"n": n, "nested": {"ok": true}}),
    };
    a.append_audit(&record("keys.add", 0, 1)).await?;
    b.append_audit(&record("import", 2, 2)).await?;
    a.append_audit(&record("keys.remove", 1, 3)).await?;
    let log = b.audit_log(10).await?;
    let order: Vec<u64> = log.iter().filter_map(|r| r.details["n"].as_u64()).collect();
    ensure!(order == [3, 2, 1], "order {order:?}");
    ensure!(log[1].action == "import" && log[1].details["nested"]["ok"] == true);
    let at_ms = log[1].at.timestamp_millis();
    let expected = (Utc::now() - Duration::days(2)).timestamp_millis();
    ensure!((at_ms - expected).abs() < 60_000, "at kept: {at_ms} vs {expected}");
    ensure!(a.audit_log(2).await?.len() == 2);
    ensure!(a.audit_log(0).await?.is_empty());
    Ok(())
}

/// Drift window reports: newest first per model version, replaced when written again, refused
/// past the size bound, gone once their retention has passed.
pub async fn drift_windows_newest_first_and_expire(a: Store, b: Store) -> Result<()> {
    let window = |version: u32, index: u64, secs_ago: i64| metastore::DriftWindowRecord {
        model: "spam".into(),
        version,
        closed_at: Utc::now() - Duration::seconds(secs_ago),
        index,
        records: 500,
        report: serde_json::json!({"psi": {"chars": 0.1 * index as f64}, "signals": []}),
    };
    // Kept for good, except the one written with a short retention.
    for (i, ago) in [(0, 30), (1, 20), (2, 10)] {
        a.record_drift_window(&window(1, i, ago), 0).await?;
    }
    b.record_drift_window(&window(2, 0, 5), 0).await?;
    let seen = b.drift_windows("spam", 1, 10).await?;
    let order: Vec<u64> = seen.iter().map(|w| w.index).collect();
    ensure!(order == [2, 1, 0], "newest first: {order:?}");
    ensure!(seen[1].report["psi"]["chars"] == 0.1 && seen[1].records == 500, "{:?}", seen[1]);
    ensure!(
        b.drift_windows("spam", 1, 2).await?.len() == 2 && a.drift_windows("spam", 2, 10).await?.len() == 1
    );
    ensure!(
        a.drift_windows("ham", 1, 10).await?.is_empty() && a.drift_windows("spam", 1, 0).await?.is_empty()
    );
    // The same window again replaces it.
    let mut again = seen[0].clone();
    again.report = serde_json::json!({"psi": {"chars": 9.0}});
    a.record_drift_window(&again, 0).await?;
    let seen = b.drift_windows("spam", 1, 10).await?;
    ensure!(seen.len() == 3 && seen[0].report["psi"]["chars"] == 9.0, "{seen:?}");
    // Too large a report is refused and nothing is written.
    let mut huge = window(3, 0, 0);
    huge.report = serde_json::json!({"blob": "x".repeat(metastore::DriftWindowRecord::MAX_REPORT_BYTES)});
    ensure!(
        a.record_drift_window(&huge, 0).await.is_err() && a.drift_windows("spam", 3, 10).await?.is_empty()
    );
    // A retention of 1 s: gone after it (CQL: the TTL; SQLite: the next write deletes it).
    a.record_drift_window(&window(4, 0, 0), 1).await?;
    ensure!(b.drift_windows("spam", 4, 10).await?.len() == 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    a.record_drift_window(&window(4, 1, 0), 1).await?;
    let left: Vec<u64> = b.drift_windows("spam", 4, 10).await?.iter().map(|w| w.index).collect();
    ensure!(left == [1], "the window past its retention is gone: {left:?}");
    Ok(())
}

/// Predictions from several writers and hours are all counted, per model.
pub async fn prediction_log_counts_every_writer(a: Store, b: Store) -> Result<()> {
    let entry = |model: &str, hours_ago: i64, i: usize| PredictionLogEntry {
        at: Utc::now() - Duration::hours(hours_ago),
        id: i.is_multiple_of(2).then(|| format!("id-{i}")),
        channel: if i.is_multiple_of(3) { "stream".into() } else { "rest".into() },
        model: model.into(),
        version: 1,
        label: "spam".into(),
        confidence: 0.9,
        latency_us: 120,
    };
    let first: Vec<_> = (0..40).map(|i| entry("spam", (i % 3) as i64, i)).collect();
    let second: Vec<_> =
        (0..25).map(|i| entry("spam", 0, i)).chain((0..7).map(|i| entry("ham", 5, i))).collect();
    a.log_predictions(&first).await?;
    b.log_predictions(&second).await?;
    b.log_predictions(&[]).await?;
    for store in [&a, &b] {
        ensure!(store.prediction_count("spam").await? == 65, "spam count");
        ensure!(store.prediction_count("ham").await? == 7, "ham count");
        ensure!(store.prediction_count("none").await? == 0, "unknown model");
    }
    Ok(())
}

/// The newest logged predictions, across hours and writers, filtered by version, channel,
/// label and confidence.
pub async fn recent_predictions_newest_first_with_filters(a: Store, b: Store) -> Result<()> {
    use metastore::PredictionQuery;
    // 30 predictions 7 minutes apart (three and a half hours), logged in time order.
    let entry = |i: usize| PredictionLogEntry {
        at: Utc::now() - Duration::minutes(7 * (30 - i as i64)),
        id: Some(format!("id-{i}")),
        channel: if i.is_multiple_of(3) { "stream".into() } else { "rest".into() },
        model: "spam".into(),
        version: 1 + (i % 2) as u32,
        label: if i.is_multiple_of(4) { "spam".into() } else { "ham".into() },
        confidence: 0.5 + i as f32 / 60.0,
        latency_us: 100,
    };
    let all: Vec<_> = (0..30).map(entry).collect();
    a.log_predictions(&all[..15]).await?;
    b.log_predictions(&all[15..]).await?;
    b.log_predictions(&[entry(0)].map(|mut e| {
        e.model = "ham".into();
        e
    }))
    .await?;
    let ids =
        |v: Vec<PredictionLogEntry>| v.into_iter().map(|e| e.id.unwrap_or_default()).collect::<Vec<_>>();
    let q = |limit| PredictionQuery { model: "spam".into(), limit, ..Default::default() };
    for store in [&a, &b] {
        ensure!(ids(store.recent_predictions(&q(3)).await?) == ["id-29", "id-28", "id-27"], "newest first");
        ensure!(store.recent_predictions(&q(100)).await?.len() == 30, "every hour read");
        let filtered = PredictionQuery {
            version: Some(1),
            channel: Some("stream".into()),
            label: Some("spam".into()),
            ..q(10)
        };
        // version 1: even i; stream: i % 3 == 0; spam: i % 4 == 0 → i % 12 == 0.
        ensure!(
            ids(store.recent_predictions(&filtered).await?) == ["id-24", "id-12", "id-0"],
            "filters combine"
        );
        let doubtful = PredictionQuery { max_confidence: Some(0.55), ..q(10) };
        let got = ids(store.recent_predictions(&doubtful).await?);
        ensure!(got == ["id-3", "id-2", "id-1", "id-0"], "low confidence: {got:?}");
        ensure!(store.recent_predictions(&q(0)).await?.is_empty());
        let e = &store.recent_predictions(&q(1)).await?[0];
        ensure!(
            e.channel == "rest" && e.version == 2 && (e.confidence - (0.5 + 29.0 / 60.0)).abs() < 1e-4,
            "{e:?}"
        );
    }
    Ok(())
}

/// Two writers registering versions of one model at once get distinct, gap-free numbers.
/// Needs conditional writes (SQLite transactions, ScyllaDB lightweight transactions).
pub async fn concurrent_registrations_get_distinct_versions(a: Store, b: Store) -> Result<()> {
    let register = |s: Store, prefix: &'static str| async move {
        let mut versions = Vec::new();
        for i in 0..10 {
            versions.push(s.register_model(mv("spam", &format!("{prefix}{i}"))).await?.version);
        }
        anyhow::Ok(versions)
    };
    let (va, vb) = tokio::try_join!(register(a.clone(), "a"), register(b.clone(), "b"))?;
    let mut all: Vec<u32> = va.into_iter().chain(vb).collect();
    all.sort_unstable();
    ensure!(all == (1..=20).collect::<Vec<_>>(), "versions {all:?}");
    ensure!(a.model_versions("spam").await?.len() == 20);
    Ok(())
}
