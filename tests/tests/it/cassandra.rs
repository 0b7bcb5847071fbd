//! What only a real Cassandra shows about the ScyllaDB/Cassandra backend of the metadata store:
//! lightweight transactions that answer "not applied" to the loser of a race (two processes
//! registering versions of one model, two handles moving one alias), TTLs that expire the
//! prediction log and step metrics, and password authentication refusing a wrong login.
//! The shared suite on this backend is in `metadata_store.rs`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use metastore::cql::ScyllaStore;
use metastore::{MetadataStore, PredictionLogEntry};
use schemas::config::StoreConfig;
use tests::cassandra::Cassandra;
use tests::store_suite as suite;

/// Versions each of the two processes registers.
const PER_PROCESS: usize = 20;
/// Set in the worker processes: `<nodes>|<keyspace>|<password file>|<start at, unix ms>|<prefix>`.
const WORKER_ENV: &str = "DRIFTWOOD_TEST_REGISTRATION_WORKER";

/// Two processes register 20 versions of one model each, starting at the same instant: the 40
/// numbers are 1..=40 with no gap and no duplicate, and each process lost races to the other
/// (the server said "not applied") and retried.
#[tokio::test]
async fn two_processes_register_versions_without_gaps_or_duplicates() -> Result<()> {
    let config = Cassandra::shared()?.store_config("two_processes");
    // Created and migrated here, so the workers only connect.
    let store = ScyllaStore::connect(&config).await?;
    let start_at = unix_ms() + 4000;
    let spawn = |prefix: &str| {
        let spec =
            format!("{}|{}|{}|{start_at}|{prefix}", config.nodes, config.keyspace, config.password_file);
        Command::new(std::env::current_exe()?)
            .args([
                "cassandra::registration_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a registration worker")
    };
    let workers = [spawn("a")?, spawn("b")?];
    let mut versions = Vec::new();
    let mut lost = Vec::new();
    for worker in workers {
        let out = worker.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "worker failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        // libtest prints the test's name on the same line, before the report.
        let report = stdout
            .split_once("WORKER ")
            .and_then(|(_, rest)| rest.lines().next())
            .with_context(|| format!("no report from the worker: {stdout}"))?;
        let (mine, races) = report.split_once(" lost_races=").context("malformed worker report")?;
        versions.extend(mine.split(',').map(str::parse::<u32>).collect::<Result<Vec<_>, _>>()?);
        lost.push(races.parse::<u64>()?);
    }
    versions.sort_unstable();
    ensure!(versions == (1..=2 * PER_PROCESS as u32).collect::<Vec<_>>(), "versions {versions:?}");
    let registered: Vec<u32> = store.model_versions("spam").await?.iter().map(|v| v.version).collect();
    ensure!(registered == versions, "the registry holds {registered:?}");
    ensure!(lost.iter().all(|&n| n > 0), "each writer must have lost a race and retried: {lost:?}");
    eprintln!(
        "two processes registered {} versions (1..={}), no gap or duplicate; races lost and retried: {lost:?}",
        versions.len(),
        versions.len()
    );
    Ok(())
}

/// One of the two processes above (run only by it: it does nothing without [`WORKER_ENV`]).
#[tokio::test]
#[ignore = "a worker process of two_processes_register_versions_without_gaps_or_duplicates"]
async fn registration_worker() -> Result<()> {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return Ok(()) };
    let parts: Vec<&str> = spec.split('|').collect();
    let [nodes, keyspace, password_file, start_at, prefix] = parts[..] else {
        anyhow::bail!("malformed {WORKER_ENV}: {spec}")
    };
    let config = tests::cassandra::store_config_at(nodes, keyspace, password_file);
    let store = ScyllaStore::connect(&config).await?;
    let wait = start_at.parse::<u64>()?.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut versions = Vec::new();
    for i in 0..PER_PROCESS {
        versions.push(store.register_model(suite::mv("spam", &format!("{prefix}{i}"))).await?.version);
    }
    let versions: Vec<String> = versions.iter().map(u32::to_string).collect();
    println!("WORKER {} lost_races={}", versions.join(","), store.lost_races());
    Ok(())
}

/// Two handles move one alias back and forth at once: every move that returned is in the
/// audit trail and the alias's history, none overwritten by the other writer's.
#[tokio::test]
async fn concurrent_alias_moves_keep_every_audit_record() -> Result<()> {
    const MOVES: u32 = 15;
    let config = Cassandra::shared()?.store_config("alias_moves");
    let (a, b) = (ScyllaStore::connect(&config).await?, ScyllaStore::connect(&config).await?);
    for i in 0..3 {
        a.register_model(suite::mv("spam", &format!("r{i}"))).await?;
    }
    let mover = async |store: &ScyllaStore, who: &'static str| {
        for i in 0..MOVES {
            store.set_alias("spam", "production", 1 + i % 3, who, "load").await?;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(mover(&a, "alice"), mover(&b, "bob"))?;
    let audit = a.audit_log(1000).await?;
    let moves: Vec<_> = audit.iter().filter(|r| r.action == "set_alias").collect();
    for who in ["alice", "bob"] {
        let n = moves.iter().filter(|r| r.actor == who).count();
        ensure!(n == MOVES as usize, "{n} audit records of {who}'s {MOVES} moves");
    }
    // Each recorded move starts where the one before it ended: no move was lost in between.
    let mut chain: Vec<(Option<u64>, u64)> = moves
        .iter()
        .rev()
        .map(|r| (r.details["previous"].as_u64(), r.details["version"].as_u64().unwrap_or(0)))
        .collect();
    ensure!(chain.first().map(|m| m.0) == Some(None), "the first move starts from no alias: {chain:?}");
    for pair in chain.windows(2) {
        ensure!(pair[1].0 == Some(pair[0].1), "a move was lost between {pair:?} in {chain:?}");
    }
    let last = chain.pop().map(|m| m.1 as u32);
    ensure!(a.get_alias("spam", "production").await? == last, "the alias is not where the last move left it");
    eprintln!(
        "{} alias moves from two handles, all audited in one unbroken chain; races lost: {} + {}",
        moves.len(),
        a.lost_races(),
        b.lost_races()
    );
    Ok(())
}

/// With short TTLs the prediction log and step metrics are gone once they expire; the run,
/// its latest metric values and the registry are kept.
#[tokio::test]
async fn ttls_expire_prediction_log_and_step_metrics() -> Result<()> {
    let config = StoreConfig {
        prediction_ttl_secs: 2,
        metric_ttl_secs: 2,
        ..Cassandra::shared()?.store_config("ttls")
    };
    let store = ScyllaStore::connect(&config).await?;
    store.create_run(&suite::run("r1", "mail", None, 0)).await?;
    for step in 0..3 {
        store.log_metrics("r1", step, &BTreeMap::from([("loss".into(), 1.0 / (step + 1) as f64)])).await?;
    }
    let entries: Vec<_> = (0..50).map(prediction).collect();
    store.log_predictions(&entries).await?;
    ensure!(store.prediction_count("spam").await? == 50, "predictions before expiry");
    ensure!(store.metric_history("r1", "loss").await?.len() == 3, "steps before expiry");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    ensure!(store.prediction_count("spam").await? == 0, "predictions must have expired");
    ensure!(store.metric_history("r1", "loss").await?.is_empty(), "steps must have expired");
    let run = store.get_run("r1").await?;
    ensure!(run.metrics.get("loss") == Some(&(1.0 / 3.0)), "latest values are kept: {:?}", run.metrics);
    Ok(())
}

/// A wrong password and a missing login are refused at connect time with the node and the
/// reason; the right ones connect.
#[tokio::test]
async fn password_authentication_refuses_wrong_logins() -> Result<()> {
    let node = Cassandra::shared()?;
    let dir = tempfile::tempdir()?;
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n")?;
    let base = node.store_config("auth");
    let attempts = [
        ("a wrong password", StoreConfig { password_file: wrong.display().to_string(), ..base.clone() }),
        ("no login", StoreConfig { username: String::new(), password_file: String::new(), ..base.clone() }),
    ];
    for (what, config) in attempts {
        let error = match ScyllaStore::connect(&config).await {
            Ok(_) => anyhow::bail!("{what} was let in"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(error.contains(&node.addr), "{what}: the error names no node: {error}");
        ensure!(
            error.to_lowercase().contains("authenticat") || error.contains("credentials"),
            "{what}: the error does not say authentication failed: {error}"
        );
    }
    node.create_role("driftwood_auth", "s3cret").await?;
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n")?;
    let own = StoreConfig {
        username: "driftwood_auth".into(),
        password_file: password.display().to_string(),
        ..base
    };
    ScyllaStore::connect(&own).await?.register_model(suite::mv("spam", "r1")).await?;
    Ok(())
}

fn prediction(i: usize) -> PredictionLogEntry {
    PredictionLogEntry {
        at: Utc::now(),
        id: Some(format!("id-{i}")),
        channel: "stream".into(),
        model: "spam".into(),
        version: 1,
        label: "spam".into(),
        confidence: 0.9,
        latency_us: 100,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
