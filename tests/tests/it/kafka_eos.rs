//! The scorer's delivery modes on Apache Kafka, with crashes: records stream into `text.raw`
//! while `driftwood serve` (the scorer) is SIGKILLed at random moments five times and started
//! again. In exactly-once mode (`serve.scorer_transactions`) a `read_committed` reader of
//! `text.scored` sees exactly one scored record per raw record, and the batches the kills cut
//! off were written but aborted (a `read_uncommitted` reader sees them). In at-least-once mode
//! the same crashes leave duplicates; how many is measured and printed, not asserted.
//!
//! tansu cannot show this: it has no transactions, and it never evicts a crashed group member
//! (see `scorer_restart`). Apache Kafka evicts it after `session.timeout.ms` (6 s here).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tests::kafka::Kafka;
use tests::{Killed, free_addr};

const RECORDS: usize = 12_000;
/// Records published per [`PACE`]: the stream lasts 120 s, longer than the five (or up to ten)
/// kill-and-restart cycles (each waits out the session timeout before its rebalance).
const STEP: usize = 100;
const PACE: Duration = Duration::from_secs(1);
/// The scorer's counter of scored records (a batch is counted once its transaction commits).
const SCORED: &str = "driftwood_scorer_records_total{status=\"scored\"}";
const KILLS: usize = 5;
/// Exactly-once mode kills again (up to this many times in all) until a kill has cut off an
/// open transaction: the moment one is seen open is already a few milliseconds old at the kill.
const MAX_KILLS: usize = 10;

/// A small deterministic generator for the kill moments (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The scored topic's ends as both kinds of reader see them.
struct Watermarks {
    committed: BaseConsumer,
    uncommitted: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl Watermarks {
    fn new(config: &schemas::Config) -> anyhow::Result<Watermarks> {
        let client = |isolation: &str| -> anyhow::Result<BaseConsumer> {
            let mut c = ingest::kafka::client_config(&config.kafka);
            c.set("isolation.level", isolation);
            Ok(c.create()?)
        };
        Ok(Watermarks {
            committed: client("read_committed")?,
            uncommitted: client("read_uncommitted")?,
            topic: config.topics().scored,
            partitions: config.kafka.partitions,
        })
    }

    /// Whether a transaction is open with records on the broker: on some partition the last
    /// stable offset (the end a `read_committed` reader sees) is below the high watermark.
    fn open_transaction(&self) -> anyhow::Result<bool> {
        let timeout = Duration::from_secs(5);
        tokio::task::block_in_place(|| {
            for p in 0..self.partitions {
                let (_, stable) = self.committed.fetch_watermarks(&self.topic, p, timeout)?;
                let (_, high) = self.uncommitted.fetch_watermarks(&self.topic, p, timeout)?;
                if stable < high {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

/// Whether a kill has left records of a transaction that will never commit: still open on the
/// broker (until the next scorer's start aborts it) or already aborted and scored again.
async fn open_or_aborted(config: &schemas::Config, watermarks: &Watermarks) -> anyhow::Result<bool> {
    Ok(watermarks.open_transaction()?
        || repeated(&tests::scored_ids(config, Some("read_uncommitted")).await?) > 0)
}

/// What one mode's run saw.
struct Outcome {
    committed: BTreeMap<String, usize>,
    uncommitted: BTreeMap<String, usize>,
    scored_before_kills: Vec<usize>,
}

/// Streams [`RECORDS`] raw records while killing the scorer [`KILLS`] times, then lets a last
/// scorer finish and stops it gracefully.
async fn crash_run(kafka: &Kafka, prefix: &str, transactions: bool, seed: u64) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let mut config = tests::config_for(&kafka.brokers, dir.path(), prefix);
    config.kafka.resume_rewind = 0; // Apache Kafka returns the batch that contains the offset.
    config.kafka.client.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.client.insert("heartbeat.interval.ms".into(), "1000".into());
    config.ingest.batch_max_rows = 50;
    config.serve.scorer_transactions = transactions;
    config.serve.scorer_transactional_id = Some(format!("{prefix}-scorer"));
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    tests::train_production(&config, 600).await?;

    // The stream, for the whole run.
    let stream = tests::paced_stream(&config, RECORDS, STEP, PACE);
    let mut rng = Lcg(seed);
    let watermarks = Watermarks::new(&config)?;
    let mut scored_before_kills = Vec::new();
    let mut kill = 0;
    let mut aborted_seen = false;
    while kill < KILLS || (transactions && !aborted_seen && kill < MAX_KILLS) {
        // A backlog builds up while no scorer runs (and, after a kill, while the group waits
        // out the dead member's session): the next scorer catches up on it in back-to-back
        // transactions of `batch_max_rows`, and is killed at a random moment of that catch-up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        config.serve.listen = free_addr()?;
        let base = format!("http://{}", config.serve.listen);
        let mut scorer = tests::spawn_driftwood(&config, &["serve"], &format!("serve-{kill}.log"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        // At-least-once: a random moment once it has scored something. Exactly-once: the moment
        // a transaction is seen open with records on the broker, so that the kill aborts it.
        while tests::metric_sum(&base, SCORED).await == 0
            || (transactions && !watermarks.open_transaction()?)
        {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join(format!("serve-{kill}.log")))?;
                anyhow::bail!(
                    "scorer {kill} scored nothing (or in no open transaction) in 60 s; its log:\n{log}"
                );
            }
            if !transactions {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if !transactions {
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        }
        scorer.0.kill()?; // SIGKILL, from this process: no fork between the look and the kill
        scorer.0.wait()?;
        scored_before_kills.push(tests::scored_ids(&config, Some("read_committed")).await?.len());
        if transactions && !aborted_seen {
            // Records of an aborted transaction, once re-scored, are seen twice uncommitted.
            aborted_seen = open_or_aborted(&config, &watermarks).await?;
        }
        kill += 1;
    }
    stream.await??;
    config.serve.listen = free_addr()?;
    let last = tests::spawn_driftwood(&config, &["serve"], "serve-last.log")?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while tests::scored_ids(&config, Some("read_committed")).await?.len() < RECORDS {
        anyhow::ensure!(Instant::now() < deadline, "the last scorer did not catch up");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Late duplicates would arrive just after: give them the time to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(last)?;
    let committed = tests::scored_ids(&config, Some("read_committed")).await?;
    let uncommitted = tests::scored_ids(&config, Some("read_uncommitted")).await?;
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("r{i:05}")).collect();
    assert_eq!(committed.keys().cloned().collect::<Vec<_>>(), expected, "every raw record is scored");
    Ok(Outcome { committed, uncommitted, scored_before_kills })
}

fn stop(mut p: Killed) -> anyhow::Result<()> {
    tests::run_ok(Command::new("kill").args(["-TERM", &p.0.id().to_string()]))?;
    let status = p.0.wait()?;
    anyhow::ensure!(status.success(), "driftwood serve exited with {status}");
    Ok(())
}

fn repeated(ids: &BTreeMap<String, usize>) -> usize {
    ids.values().map(|n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_scoring_survives_crashes_and_at_least_once_shows_what_it_allows() -> anyhow::Result<()>
{
    let _serial = tests::kafka::SERIAL.lock().await;
    let kafka = Kafka::shared()?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    eprintln!("kill moments seed: {seed}");

    let eos = crash_run(kafka, "eos", true, seed).await?;
    assert_eq!(repeated(&eos.committed), 0, "exactly-once: a read_committed reader saw a record twice");
    let aborted = repeated(&eos.uncommitted);
    assert!(
        aborted > 0,
        "the kills cut off no transaction (scored at the kills: {:?})",
        eos.scored_before_kills
    );

    let alo = crash_run(kafka, "alo", false, seed).await?;
    let duplicates = repeated(&alo.committed);
    eprintln!(
        "{} (exactly-once run) and {} (at-least-once run) SIGKILLs while {RECORDS} records streamed in: exactly-once {} duplicates seen \
         read_committed ({aborted} records of aborted transactions visible read_uncommitted; scored \
         at the kills {:?}); at-least-once {duplicates} duplicates (scored at the kills {:?})",
        eos.scored_before_kills.len(),
        alo.scored_before_kills.len(),
        repeated(&eos.committed),
        eos.scored_before_kills,
        alo.scored_before_kills
    );
    Ok(())
}
