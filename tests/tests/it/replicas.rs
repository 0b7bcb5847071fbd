//! Two `driftwood serve` replicas (REST API + scorer each) sharing one data dir and metadata
//! store: the scorers split text.raw's partitions through their consumer group, both write
//! their predictions to the one prediction log, and a promotion made through one replica is
//! served by both within seconds. Run on each store backend: the SQLite file, and Apache
//! Cassandra (`tests::cassandra`, the ScyllaDB backend) that every process connects to over TCP.

use std::process::Command;
use std::time::{Duration, Instant};

use schemas::metric_names::{SCORER_ASSIGNED_PARTITIONS, SCORER_RECORDS_TOTAL};
use tests::cassandra::Cassandra;
use tests::{Killed, TestEnv, corpus_dir, driftwood, driftwood_bin, env_for, outgoing, publish, shuffle};

/// `driftwood serve` on its own port (the shared config file names no port: an environment
/// override does, so the replicas cannot race on it).
fn replica(config: &schemas::Config, i: usize) -> anyhow::Result<(Killed, String)> {
    let addr = format!("127.0.0.1:{}", tests::free_port()?);
    let log = std::fs::File::create(std::path::Path::new(&config.data_dir).join(format!("serve{i}.log")))?;
    let child = Command::new(driftwood_bin()?)
        .arg("serve")
        .envs(env_for(config))
        .env("DRIFTWOOD_SERVE_LISTEN", &addr)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok((Killed(child), format!("http://{addr}")))
}

/// The model version `base` answers predictions with.
async fn served_version(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let r = http
        .post(format!("{base}/v1/predict"))
        .json(&serde_json::json!({"text": "hello there"}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "{base}: {}", r.status());
    Ok(r.json::<serde_json::Value>().await?["version"].as_u64().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_sqlite() -> anyhow::Result<()> {
    two_replicas_share_partitions_the_prediction_log_and_promotions(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_cassandra() -> anyhow::Result<()> {
    let store = Cassandra::shared()?.store_config("replicas");
    two_replicas_share_partitions_the_prediction_log_and_promotions(Some(store)).await
}

async fn two_replicas_share_partitions_the_prediction_log_and_promotions(
    store: Option<schemas::config::StoreConfig>,
) -> anyhow::Result<()> {
    let env = TestEnv::start("replicas")?;
    let mut config = env.config();
    if let Some(store) = store {
        config.store = store;
    }
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    tests::train_production(&config, 400).await?;
    // A second version to promote later (same data, not yet an alias).
    let mut history = config.clone();
    history.kafka.topic_prefix = "replicas-history".into();
    driftwood(&history, &["train"])?;

    let replicas = vec![replica(&config, 0)?, replica(&config, 1)?];
    for (_, base) in &replicas {
        tests::wait_ready(base).await?;
    }
    let http = reqwest::Client::new();
    // Both scorers hold partitions (the group has rebalanced) before the burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut held = Vec::new();
        for (_, base) in &replicas {
            held.push(tests::metric_sum(base, SCORER_ASSIGNED_PARTITIONS).await);
        }
        if held.iter().all(|&n| n > 0) && held.iter().sum::<u64>() == config.kafka.partitions as u64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "partitions held: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The stream: both scorers take part, every record is scored.
    let mut corpus = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_2)?;
    shuffle(&mut corpus, 3);
    corpus.truncate(2000);
    let ids: std::collections::BTreeSet<String> = corpus.iter().map(|r| r.id.clone()).collect();
    publish(&config, &topics.raw, outgoing(&corpus)).await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let scored: std::collections::BTreeSet<String> = tests::read_all(&config, &topics.scored)
            .await?
            .into_iter()
            .filter_map(|m| String::from_utf8(m.key?).ok())
            .collect();
        if ids.is_subset(&scored) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{} of {} scored", scored.len(), ids.len());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut per_replica = Vec::new();
    for (_, base) in &replicas {
        per_replica
            .push(tests::metric_sum(base, &format!("{SCORER_RECORDS_TOTAL}{{status=\"scored\"}}")).await);
    }
    eprintln!("scored per replica: {per_replica:?}");
    assert!(per_replica.iter().all(|&n| n > 0), "both scorers share the partitions: {per_replica:?}");

    // REST on both replicas; every prediction, stream and REST, lands in the one store.
    for (_, base) in &replicas {
        for i in 0..10 {
            let body = serde_json::json!({"texts": [format!("replica request {i}")]});
            assert_eq!(http.post(format!("{base}/v1/predict")).json(&body).send().await?.status(), 200);
        }
    }
    let meta = metastore::open(&config, env.dir()).await?;
    let expected: u64 = per_replica.iter().sum::<u64>() + 20;
    let deadline = Instant::now() + Duration::from_secs(30);
    while meta.prediction_count("spam").await? < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {expected} predictions logged",
            meta.prediction_count("spam").await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(meta.prediction_count("spam").await?, expected, "each prediction logged once");

    // A promotion through replica 0 reaches replica 1 within seconds.
    for (_, base) in &replicas {
        assert_eq!(served_version(&http, base).await?, 1);
    }
    let promoted = http
        .post(format!("{}/v1/models/spam/promote", replicas[0].1))
        .json(&serde_json::json!({"version": 2, "alias": "production", "reason": "replica test"}))
        .send()
        .await?;
    assert_eq!(promoted.status(), 200, "{}", promoted.text().await?);
    let started = Instant::now();
    for (_, base) in &replicas {
        while served_version(&http, base).await? != 2 {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(15), "{base} still serves v1");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("both replicas serve v2 {:.1} s after the promotion", started.elapsed().as_secs_f64());
    Ok(())
}
