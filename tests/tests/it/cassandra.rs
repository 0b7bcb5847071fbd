//! What only a real Cassandra shows about the ScyllaDB/Cassandra backend of the metadata store:
//! lightweight transactions that answer "not applied" to the loser of a race (two processes
//! registering versions of one model, two handles moving one alias), TTLs that expire the
//! prediction log and step metrics, password authentication refusing a wrong login, and TLS
//! to the node (verified against the CA; the node itself says the connections are encrypted).
//! The shared suite on this backend is in `metadata_store.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::Utc;
use metastore::cql::ScyllaStore;
use metastore::{MetadataStore, PredictionLogEntry};
use schemas::config::StoreConfig;
use tests::cassandra::Cassandra;
use tests::store_suite as suite;

/// Versions each of the two processes registers.
const PER_PROCESS: usize = 20;
/// Set in the worker processes: `<nodes>|<keyspace>|<password file>|<prefix>`.
const WORKER_ENV: &str = "DRIFTWOOD_TEST_REGISTRATION_WORKER";
/// What a worker prints once it has connected.
const READY: &str = "WORKER-CONNECTED";

/// Two processes register 20 versions of one model each, released at the same instant once
/// both are connected: the 40 numbers are 1..=40 with no gap and no duplicate, and races were
/// lost (the server said "not applied" to a number the other process had just taken) and retried.
#[tokio::test]
async fn two_processes_register_versions_without_gaps_or_duplicates() -> Result<()> {
    let config = Cassandra::shared()?.store_config("two_processes");
    // Created and migrated here, so the workers only connect.
    let store = ScyllaStore::connect(&config).await?;
    let spec = format!("{}|{}|{}", config.nodes, config.keyspace, config.password_file);
    // Blocking pipes: off the runtime that drives the store's connections.
    let reports = tokio::task::spawn_blocking(move || run_workers(&spec)).await??;
    let mut versions: Vec<u32> = reports.iter().flat_map(|r| r.versions.clone()).collect();
    versions.sort_unstable();
    ensure!(versions == (1..=2 * PER_PROCESS as u32).collect::<Vec<_>>(), "versions {versions:?}");
    let registered: Vec<u32> = store.model_versions("spam").await?.iter().map(|v| v.version).collect();
    ensure!(registered == versions, "the registry holds {registered:?}");
    // A lost race is a conditional insert of a number the other process took a moment before:
    // the proof that they ran at once (on a loaded machine one may still finish first).
    let lost: Vec<u64> = reports.iter().map(|r| r.lost_races).collect();
    ensure!(lost.iter().sum::<u64>() > 0, "no race was lost, so none was tested: {reports:?}");
    let span = |r: &WorkerReport| (r.versions.iter().min().copied(), r.versions.iter().max().copied());
    let ((a_min, a_max), (b_min, b_max)) = (span(&reports[0]), span(&reports[1]));
    let interleaved = a_min.max(b_min) < a_max.min(b_max);
    eprintln!(
        "two processes registered {} versions (1..={}), no gap or duplicate, interleaved: {interleaved}; races lost and retried: {lost:?}",
        versions.len(),
        versions.len()
    );
    Ok(())
}

/// What one registration worker printed: the versions it got and the races it lost.
#[derive(Debug)]
struct WorkerReport {
    versions: Vec<u32>,
    lost_races: u64,
}

/// Starts two workers, waits until both have connected, releases both at once through their
/// stdin and reads their reports.
fn run_workers(spec: &str) -> Result<Vec<WorkerReport>> {
    let spawn = |prefix: &str| {
        Command::new(std::env::current_exe()?)
            .args([
                "cassandra::registration_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, format!("{spec}|{prefix}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a registration worker")
    };
    let mut workers = [spawn("a")?, spawn("b")?];
    let mut outputs = Vec::new();
    for worker in &mut workers {
        let mut out = BufReader::new(worker.stdout.take().context("worker stdout")?);
        let mut seen = String::new();
        while !seen.contains(READY) {
            ensure!(out.read_line(&mut seen)? > 0, "the worker ended before connecting: {seen}");
        }
        outputs.push((out, seen));
    }
    for worker in &mut workers {
        writeln!(worker.stdin.take().context("worker stdin")?, "go")?;
    }
    let mut reports = Vec::new();
    for (worker, (mut out, mut stdout)) in workers.into_iter().zip(outputs) {
        out.read_to_string(&mut stdout)?;
        let done = worker.wait_with_output()?;
        ensure!(done.status.success(), "worker failed: {stdout}\n{}", String::from_utf8_lossy(&done.stderr));
        // libtest prints the test's name on the same line, before the report.
        let report = stdout
            .split_once("WORKER ")
            .and_then(|(_, rest)| rest.lines().next())
            .with_context(|| format!("no report from the worker: {stdout}"))?;
        let (mine, races) = report.split_once(" lost_races=").context("malformed worker report")?;
        reports.push(WorkerReport {
            versions: mine.split(',').map(str::parse::<u32>).collect::<Result<_, _>>()?,
            lost_races: races.parse()?,
        });
    }
    Ok(reports)
}

/// One of the two processes above (run only by it: it does nothing without [`WORKER_ENV`]).
/// It connects, says [`READY`], and registers once a line arrives on its stdin.
#[tokio::test]
#[ignore = "a worker process of two_processes_register_versions_without_gaps_or_duplicates"]
async fn registration_worker() -> Result<()> {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return Ok(()) };
    let parts: Vec<&str> = spec.split('|').collect();
    let [nodes, keyspace, password_file, prefix] = parts[..] else {
        anyhow::bail!("malformed {WORKER_ENV}: {spec}")
    };
    let config = tests::cassandra::store_config_at(nodes, keyspace, password_file);
    let store = ScyllaStore::connect(&config).await?;
    println!("{READY}");
    std::io::stdout().flush()?;
    std::io::stdin().read_line(&mut String::new())?;
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

/// Whether each connection of `user` to the node is encrypted, as the node reports them.
async fn connections_encrypted(node: &Cassandra, user: &str) -> Result<Vec<bool>> {
    let session = node.superuser().await?;
    let rows = session
        .query_unpaged("SELECT username, ssl_enabled FROM system_views.clients", ())
        .await?
        .into_rows_result()?;
    let mut out = Vec::new();
    for row in rows.rows::<(Option<String>, Option<bool>)>()? {
        let (name, ssl) = row?;
        if name.as_deref() == Some(user) {
            out.push(ssl.unwrap_or(false));
        }
    }
    Ok(out)
}

/// With `store.tls_ca_file` set, every connection of the store is TLS (the node lists them as
/// encrypted; a store without it is listed as plaintext), a node whose certificate another
/// CA signed is refused, and a CA file without a certificate is refused before connecting.
#[tokio::test]
async fn tls_to_the_node_is_verified_and_encrypted() -> Result<()> {
    let node = Cassandra::shared()?;
    let dir = tempfile::tempdir()?;
    let password = dir.path().join("password");
    std::fs::write(&password, "tls-pass\n")?;
    let login = |user: &str, ca: &str| StoreConfig {
        username: user.into(),
        password_file: password.display().to_string(),
        tls_ca_file: ca.into(),
        ..node.store_config("tls")
    };
    let ca = node.ca_file().display().to_string();
    for user in ["driftwood_tls", "driftwood_plain"] {
        node.create_role(user, "tls-pass").await?;
    }
    let tls = ScyllaStore::connect(&login("driftwood_tls", &ca)).await?;
    tls.register_model(suite::mv("spam", "r1")).await?;
    let plain = ScyllaStore::connect(&login("driftwood_plain", "")).await?;
    plain.register_model(suite::mv("spam", "r2")).await?;
    let (encrypted, plaintext) = (
        connections_encrypted(node, "driftwood_tls").await?,
        connections_encrypted(node, "driftwood_plain").await?,
    );
    eprintln!("connections: with tls_ca_file {encrypted:?}, without {plaintext:?}");
    ensure!(!encrypted.is_empty() && encrypted.iter().all(|&e| e), "TLS store: {encrypted:?}");
    ensure!(!plaintext.is_empty() && plaintext.iter().all(|&e| !e), "plaintext store: {plaintext:?}");

    let other = dir.path().join("other-ca");
    std::fs::create_dir_all(&other)?;
    tests::make_tls(&other)?;
    let wrong = login("driftwood_tls", &other.join("ca.pem").display().to_string());
    let error = match ScyllaStore::connect(&wrong).await {
        Ok(_) => anyhow::bail!("a node signed by another CA was trusted"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(error.contains(&node.addr), "the error names no node: {error}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "")?;
    let error = match ScyllaStore::connect(&login("driftwood_tls", &empty.display().to_string())).await {
        Ok(_) => anyhow::bail!("an empty CA file was accepted"),
        Err(e) => e,
    };
    ensure!(matches!(error, metastore::Error::Tls { .. }), "{error}");
    ensure!(error.to_string().contains("empty.pem"), "{error}");
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
