//! The drift monitor replaying a scored topic of four partitions (`driftwood drift
//! --until-idle`): its windows follow event time, not the order the consumer happens to read
//! the partitions in, so a clean stream followed by a drifted one gives clean windows, then
//! drifted ones — what watching it live gave.

use std::collections::BTreeMap;
use std::time::Duration;

use drift::profile::ReferenceProfile;
use ingest::source::Outgoing;
use schemas::records::{SCORED_FORMAT_VERSION, ScoreStatus, ScoredRecord};
use tests::{TestEnv, publish};

fn scored(i: usize, f: f64) -> Outgoing {
    let r = ScoredRecord {
        v: SCORED_FORMAT_VERSION,
        id: format!("r{i}"),
        status: ScoreStatus::Scored,
        reason: None,
        model: "spam".into(),
        model_version: 1,
        label: Some("ham".into()),
        truth: None,
        probabilities: BTreeMap::new(),
        features: BTreeMap::from([("f".to_string(), f)]),
        partition: 0,
        offset: i as i64,
        scored_at: 0,
        latency_us: 0,
    };
    Outgoing { key: Some(r.id.clone().into_bytes()), value: serde_json::to_vec(&r).expect("serializes") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_over_four_partitions_gives_event_time_windows() -> anyhow::Result<()> {
    let env = TestEnv::start("replay")?;
    let mut config = env.config();
    assert_eq!(config.kafka.partitions, 4);
    (config.drift.window, config.drift.slide, config.drift.window_secs) = (100, 0, 0);
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let like = |i: usize| (i % 100) as f64;
    let rows: Vec<BTreeMap<String, f64>> =
        (0..1000).map(|i| BTreeMap::from([("f".to_string(), like(i))])).collect();
    // 400 records like the reference, then 400 far from it, keyed by id over four partitions.
    publish(&config, &topics.scored, (0..400).map(|i| scored(i, like(i))).collect()).await?;
    tokio::time::sleep(Duration::from_millis(50)).await; // the drifted ones are later
    publish(&config, &topics.scored, (400..800).map(|i| scored(i, 1000.0 + like(i))).collect()).await?;

    let watch = drift::window::Watch {
        model: "spam".into(),
        version: 1,
        reference: ReferenceProfile::build(&rows),
        reference_accuracy: None,
    };
    let references: drift::monitor::References = std::sync::Arc::new(|_, _| Box::pin(async { None }));
    let monitor = drift::monitor::Monitor {
        config: &config,
        watch,
        references,
        until_idle: true,
        outputs: Default::default(),
    };
    let mut psi = Vec::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    drift::monitor::run_monitor(monitor, &cancel, |r, _| psi.push(r.psi["f"])).await?;
    let drifting: Vec<bool> = psi.iter().map(|&p| p > config.drift.psi_threshold).collect();
    assert_eq!(drifting, [false, false, false, false, true, true, true, true], "PSI per window: {psi:?}");
    Ok(())
}
