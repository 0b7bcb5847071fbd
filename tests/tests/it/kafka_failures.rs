//! Broker failures on a 3-node Apache Kafka cluster (RF 3, `min.insync.replicas = 2`): while
//! records stream into `text.raw` and the snapshot job (`snapshot --follow`), the scorer and
//! the REST API (`serve`) run, one broker is SIGKILLed, later started again, and then all three
//! are killed and started together. Every service recovers by itself: the snapshot holds every
//! published id exactly once, the scored topic holds every raw record (at least once), REST
//! predictions never fail (they do not need the broker), `/readyz` stays 200 while one broker
//! is down, answers 503 while every broker is down and 200 again after.
//!
//! tansu cannot show this: it is one process with no replication.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use stream::store::SnapshotStore;
use tests::free_addr;
use tests::kafka::Kafka;

const RECORDS: usize = 6_000;
const STEP: usize = 100;
const PACE: Duration = Duration::from_millis(500);

/// What the REST prober saw: predictions answered and failed, readiness answers by status.
#[derive(Default)]
struct Probes {
    predicted: AtomicUsize,
    failed: AtomicUsize,
    ready: AtomicUsize,
    not_ready: AtomicUsize,
    /// When `/readyz` changed its answer (seconds since the probe started, ready).
    changes: std::sync::Mutex<Vec<(f64, bool)>>,
}

/// Posts a prediction and asks `/readyz` every 100 ms until `stop`, on a thread and runtime of
/// its own: the test's tasks make blocking librdkafka calls (metadata, watermarks) that stall a
/// worker thread for seconds while every broker is down, and the prober must not stall with them.
fn probe(base: String, probes: Arc<Probes>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            let body = serde_json::json!({"text": "Win a FREE prize now, click here"});
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let answer = client.post(format!("{base}/v1/predict")).json(&body).send().await;
                let counter = match answer {
                    Ok(r) if r.status() == 200 => &probes.predicted,
                    _ => &probes.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let ready =
                    client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200);
                let counter = if ready { &probes.ready } else { &probes.not_ready };
                counter.fetch_add(1, Ordering::Relaxed);
                {
                    let mut changes = probes.changes.lock().expect("probe log");
                    if changes.last().is_none_or(|(_, was)| *was != ready) {
                        changes.push((started.elapsed().as_secs_f64(), ready));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

fn snapshot_ids(store: &SnapshotStore, dataset: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut ids = BTreeMap::new();
    if let Some(latest) = store.latest(dataset)? {
        for batch in store.read(&latest) {
            let batch = batch?;
            let id = batch.column(0).as_string::<i32>();
            for i in 0..batch.num_rows() {
                *ids.entry(id.value(i).to_string()).or_default() += 1;
            }
        }
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_survive_broker_crashes_and_a_full_cluster_restart() -> anyhow::Result<()> {
    let _serial = tests::kafka::SERIAL.lock().await;
    let mut kafka = Kafka::start(3)?;
    let dir = tempfile::tempdir()?;
    let mut config = tests::config_for(&kafka.brokers, dir.path(), "fail");
    config.kafka.replication_factor = 3;
    config.kafka.resume_rewind = 0; // Apache Kafka returns the batch that contains the offset.
    config.kafka.client.insert("session.timeout.ms".into(), "6000".into());
    config.kafka.client.insert("heartbeat.interval.ms".into(), "1000".into());
    config.ingest.batch_max_rows = 100;
    config.snapshot.commit_interval_secs = 2;
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    tests::train_production(&config, 600).await?;
    // The stream's snapshot in a dataset of its own (the training history is in `text`).
    config.snapshot.dataset = "stream".into();
    config.serve.listen = free_addr()?;
    let base = format!("http://{}", config.serve.listen);
    let _serve = tests::spawn_driftwood(&config, &["serve"], "serve.log")?;
    let mut snapshot_config = config.clone();
    snapshot_config.serve.metrics_listen = None;
    let _snapshot = tests::spawn_driftwood(&snapshot_config, &["snapshot", "--follow"], "snapshot.log")?;
    tests::wait_ready(&base).await?;

    let probes = Arc::new(Probes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(base.clone(), probes.clone(), stop.clone());
    let stream = tests::paced_stream(&config, RECORDS, STEP, PACE);

    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    kafka.kill(1);
    eprintln!("broker 2 killed");
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| kafka.restart(1))?;
    eprintln!("broker 2 restarted");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let not_ready_before = probes.not_ready.load(Ordering::Relaxed);
    // The outage begins once no broker accepts a connection (a loaded machine takes seconds
    // to tear three JVMs down).
    let kills_at = t0.elapsed().as_secs_f64();
    let outage_from = tokio::task::block_in_place(|| {
        let killing = Instant::now();
        for i in 0..3 {
            kafka.kill(i);
        }
        eprintln!("all three brokers killed and gone in {:?}", killing.elapsed());
        // A killed JVM's sockets close once all its threads are torn down: wait for that.
        let refused = |addr: &str| std::net::TcpStream::connect(addr).is_err();
        while !kafka.brokers.split(',').all(refused) {
            assert!(
                killing.elapsed() < Duration::from_secs(30),
                "the killed brokers still accept connections"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("all three brokers refuse connections {:?} after the kills", killing.elapsed());
        let outage_from = t0.elapsed().as_secs_f64();
        // The outage lasts long enough for the readiness check to see it.
        std::thread::sleep(Duration::from_secs(12));
        outage_from
    });
    tokio::task::block_in_place(|| kafka.restart_all())?;
    // The outage lasts until the brokers answer again: until they are back, and the probe's
    // next round has seen them.
    let not_ready_in_outage = probes.not_ready.load(Ordering::Relaxed) - not_ready_before;
    let outage_to = t0.elapsed().as_secs_f64();
    eprintln!("all three brokers restarted");
    stream.await??;

    let store = SnapshotStore::open(dir.path())?;
    wait_for("the snapshot holding every id", Duration::from_secs(300), async || {
        Ok(store.latest("stream")?.map_or(0, |m| m.rows as usize) >= RECORDS)
    })
    .await?;
    let all_scored = wait_for("every raw record scored", Duration::from_secs(300), async || {
        Ok(tests::scored_ids(&config, None).await?.len() >= RECORDS)
    })
    .await;
    if let Err(e) = all_scored {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        anyhow::bail!(
            "{e}; the scorer's log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    tests::wait_ready(&base).await?;
    stop.store(true, Ordering::Relaxed);
    prober.join().map_err(|_| anyhow::anyhow!("the prober panicked"))?;

    let expected: Vec<String> = (0..RECORDS).map(|i| format!("r{i:05}")).collect();
    let in_snapshot = snapshot_ids(&store, "stream")?;
    assert_eq!(
        in_snapshot.keys().cloned().collect::<Vec<_>>(),
        expected,
        "every published id is in the snapshot"
    );
    let twice: Vec<_> = in_snapshot.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ids in the snapshot more than once: {twice:?}");
    let scored = tests::scored_ids(&config, None).await?;
    assert_eq!(scored.keys().cloned().collect::<Vec<_>>(), expected, "every raw record is scored");
    let duplicates: usize = scored.values().map(|n| n - 1).sum();
    let (predicted, failed) =
        (probes.predicted.load(Ordering::Relaxed), probes.failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "REST predictions failed during the broker failures ({predicted} answered)");
    let probe_log: Vec<String> = std::fs::read_to_string(dir.path().join("serve.log"))?
        .lines()
        .filter(|l| l.contains("reachability"))
        .map(str::to_string)
        .collect();
    assert!(
        not_ready_in_outage > 0,
        "/readyz never reported the outage from {outage_from:.1} s to {outage_to:.1} s: {:?} ({} ready, {} not); the probe logged {probe_log:?}",
        probes.changes.lock(),
        probes.ready.load(Ordering::Relaxed),
        probes.not_ready.load(Ordering::Relaxed),
    );
    let changes = probes.changes.lock().expect("probe log").clone();
    // Two brokers of three serve the cluster: one down is no reason to take the API out of
    // a load balancer.
    let early: Vec<_> = changes.iter().filter(|(at, ready)| !ready && *at < kills_at - 0.5).collect();
    assert!(early.is_empty(), "/readyz turned 503 with one broker of three down: {changes:?}");
    // The probe asks every 2 s, a request and a retry of 2 s each: the outage shows within 6 s
    // (12 s allowed on a loaded machine).
    let turned_unready =
        changes.iter().find(|(at, ready)| !ready && *at >= kills_at - 1.0).map(|(at, _)| *at);
    assert!(
        turned_unready.is_some_and(|at| at <= outage_from + 12.0),
        "/readyz turned 503 at {turned_unready:?}, the brokers were killed at {kills_at:.1} s and all refused connections at {outage_from:.1} s: {changes:?}"
    );
    eprintln!(
        "3-broker cluster, one broker killed and restarted, then all three: {RECORDS} ids in the snapshot \
         exactly once, every raw record scored ({duplicates} scored twice, at least once allows it), \
         {predicted} REST predictions and 0 failed; all brokers down from {outage_from:.1} s to {outage_to:.1} s, \
         /readyz 503 {not_ready_in_outage} times in that time ({} in all), its answers changed at {changes:?}",
        probes.not_ready.load(Ordering::Relaxed)
    );
    Ok(())
}
