//! The online scorer over a restart of its process (`driftwood serve`), on tansu and on Apache
//! Kafka: a graceful restart (SIGTERM in the middle of a burst) leaves exactly one scored record
//! per raw record, and the scored snapshot holds one row per record. The transactional
//! (exactly-once) mode refuses to start on tansu, which cannot end transactions, and loses
//! nothing; on Kafka it takes over from the at-least-once scorer's commits without a gap or a
//! duplicate, and hands back the same way.
//!
//! Crashes (SIGKILL) are in `kafka_eos`, on Kafka only: tansu 0.6 never evicts a crashed group
//! member (tried `session.timeout.ms` = 6 s and static membership), so a restarted scorer gets
//! no partitions there.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use ingest::source::Outgoing;
use tests::{Killed, TestEnv, free_addr, publish};

/// Waits until `done` holds for the scored ids (polling the topic).
async fn wait_scored(
    config: &schemas::Config,
    what: &str,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ids = tests::scored_ids(config, None).await?;
        if done(&ids) {
            return Ok(ids);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = (1..=2)
                .filter_map(|n| {
                    let path = std::path::Path::new(&config.data_dir).join(format!("serve-{n}.log"));
                    let text = std::fs::read_to_string(path).ok()?;
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    Some(format!(
                        "serve-{n}.log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ))
                })
                .collect();
            anyhow::bail!("timed out waiting for {what}: {} ids scored\n{}", ids.len(), logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Records the scorer at `base` has written (its `/metrics`); 0 until it answers.
async fn scorer_count(base: &str) -> u64 {
    tests::metric_sum(base, schemas::metric_names::SCORER_RECORDS_TOTAL).await
}

/// Starts a scorer, waits until it is ready, publishes `burst` and returns once the scorer has
/// written some of it but (normally) not all: where a stop lands mid-stream.
async fn start_and_burst(
    config: &schemas::Config,
    log: &str,
    burst: Vec<Outgoing>,
) -> anyhow::Result<Killed> {
    let p = tests::spawn_driftwood(config, &["serve"], log)?;
    let base = format!("http://{}", config.serve.listen);
    tests::wait_ready(&base).await?;
    let n = burst.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let sender = tokio::spawn({
        let (config, topic) = (config.clone(), config.topics().raw);
        async move { publish(&config, &topic, burst).await }
    });
    while scorer_count(&base).await < n / 10 {
        anyhow::ensure!(Instant::now() < deadline, "the scorer never started on the burst");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.await??;
    Ok(p)
}

/// SIGTERM and wait for a clean exit.
fn stop(mut p: Killed) -> anyhow::Result<()> {
    tests::run_ok(Command::new("kill").args(["-TERM", &p.0.id().to_string()]))?;
    let status = p.0.wait()?;
    anyhow::ensure!(status.success(), "driftwood serve exited with {status}");
    Ok(())
}

tests::on_both_brokers! {
    async fn one_scored_record_per_raw_record_over_restarts(on) {
        let env = TestEnv::on(on, "restart")?;
        let mut config = env.config();
        // Small batches: many commits, so a stop lands between (and during) them.
        config.ingest.batch_max_rows = 100;
        config.serve.listen = free_addr()?;
        ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;

        // A model to score with, trained on part of the corpus under another prefix.
        tests::train_production(&config, 800).await?;

        // Graceful restart: SIGTERM while a burst is being scored, then started again.
        let raw_topic = config.topics().raw;
        let first = start_and_burst(&config, "serve-1.log", tests::numbered_raw(0..10_000)).await?;
        stop(first)?;
        let at_stop = tests::scored_ids(&config, None).await?.len();
        publish(&config, &raw_topic, tests::numbered_raw(10_000..11_000)).await?;
        let second = tests::spawn_driftwood(&config, &["serve"], "serve-2.log")?;
        let ids = wait_scored(&config, "every record", |ids| ids.len() >= 11_000).await?;
        // Late duplicates would arrive just after: give them the time to.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop(second)?;
        assert_eq!(tests::scored_ids(&config, None).await?, ids, "records scored after every id was seen");
        let expected: Vec<String> = (0..11_000).map(|i| format!("r{i:05}")).collect();
        assert_eq!(ids.keys().cloned().collect::<Vec<_>>(), expected);
        let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).collect();
        assert!(repeated.is_empty(), "scored more than once over a graceful restart: {repeated:?}");
        eprintln!("graceful restart: {at_stop} of 10000 scored when stopped; each of 11000 ids exactly once");

        // The scored snapshot (which would also absorb the duplicates a crash can leave) has one
        // row per record.
        tests::driftwood(&config, &["snapshot", "--scored"])?;
        let store = stream::store::SnapshotStore::open(env.dir())?;
        let latest = store.latest(&config.snapshot.scored_dataset)?.expect("a scored version");
        assert_eq!(latest.rows, 11_000, "scored snapshot rows");
        let mut seen = std::collections::BTreeSet::new();
        for batch in store.read(&latest) {
            let batch = batch?;
            let idx = batch.schema().index_of("id")?;
            let ids = batch
                .column(idx)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("id is Utf8")
                .clone();
            seen.extend(ids.iter().flatten().map(str::to_string));
        }
        assert_eq!(seen.len(), 11_000);

        // The exactly-once mode (Kafka transactions) on the same topics.
        let mut transactional = config.clone();
        transactional.serve.scorer_transactions = true;
        publish(&config, &raw_topic, tests::numbered_raw(11_000..11_500)).await?;
        let mut p = tests::spawn_driftwood(&transactional, &["serve"], "serve-txn.log")?;
        if on == tests::On::Tansu {
            // tansu 0.6 takes a transaction's offsets but refuses EndTxn, so the records would
            // vanish while their offsets move. The scorer asks the broker's ApiVersions first
            // and refuses to start; nothing is consumed.
            assert_eq!(ingest::kafka::broker_supports(&config.kafka, ingest::kafka::API_END_TXN), Some(false));
            assert_eq!(ingest::kafka::broker_supports(&config.kafka, 0), Some(true), "Produce");
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(s) = p.0.try_wait()? {
                    break s;
                }
                anyhow::ensure!(Instant::now() < deadline, "the transactional scorer did not stop");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let log = std::fs::read_to_string(env.dir().join("serve-txn.log"))?;
            assert!(!status.success(), "{log}");
            assert!(log.contains("does not support transactions"), "{log}");
            assert_eq!(tests::scored_ids(&config, None).await?.len(), 11_000);
        } else {
            // Apache Kafka has transactions: the transactional scorer takes over from the
            // group's committed offsets and scores exactly the new records, once each.
            assert_eq!(ingest::kafka::broker_supports(&config.kafka, ingest::kafka::API_END_TXN), Some(true));
            let ids = wait_scored(&config, "the records for the transactional scorer", |ids| {
                ids.len() >= 11_500
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stop(p)?;
            assert_eq!(tests::scored_ids(&config, Some("read_committed")).await?, ids);
            assert!(ids.values().all(|n| *n == 1), "duplicates after the switch to transactions");
        }
        // The at-least-once scorer then scores exactly the records published meanwhile, once each.
        let total = if on == tests::On::Tansu { 11_500 } else { 12_000 };
        publish(&config, &raw_topic, tests::numbered_raw(11_500..total)).await?;
        let after = tests::spawn_driftwood(&config, &["serve"], "serve-after-txn.log")?;
        let ids = wait_scored(&config, "the records published meanwhile", |ids| ids.len() >= total).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop(after)?;
        assert_eq!(tests::scored_ids(&config, None).await?, ids);
        assert_eq!(ids.len(), total);
        assert!(ids.values().all(|n| *n == 1), "duplicates after the transactional step");
        Ok(())
    }
}
