//! The closed loop on real parts: drift in live text is caught, a retrain happens by itself,
//! the better model is promoted and hot-reloaded while the REST API keeps answering — and
//! traffic without drift raises nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::source::{self, Outgoing};
use metastore::{MetadataStore, SqliteStore};
use schemas::Split;
use schemas::events::{ControlEvent, ControlMessage, Decoded};
use schemas::records::RawRecord;
use stream::clean::{CleanPlan, CleanSpec};
use tests::{TestEnv, corpus_dir, outgoing, publish, read_all, shuffle};
use tokio_util::sync::CancellationToken;

fn events(messages: &[ingest::consume::RawMessage]) -> Vec<ControlEvent> {
    messages
        .iter()
        .filter_map(|m| match ControlMessage::decode(m.value.as_deref()?) {
            Ok(Decoded::Event(e)) => Some(e.event),
            _ => None,
        })
        .collect()
}

/// Accuracy of a registered version on labelled raw records (cleaned by the plan first).
fn accuracy(
    store_version: &metastore::ModelVersion,
    plan: &CleanPlan,
    rows: &[RawRecord],
) -> anyhow::Result<f64> {
    let model = trainer::model::load(store_version, None)?;
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let cleaned = plan.clean_texts(&texts);
    let (mut right, mut total) = (0usize, 0usize);
    for (row, text) in rows.iter().zip(&cleaned) {
        let Some(text) = text else { continue };
        let p = model.predict(&[text.as_str()])?;
        let best = p[0].iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
        total += 1;
        right += usize::from(model.labels()[best] == *row.label.as_deref().unwrap_or_default());
    }
    Ok(right as f64 / total.max(1) as f64)
}

tests::on_both_brokers! {
    async fn drift_retrains_promotes_and_hot_reloads_by_itself(on) {
        let env = TestEnv::on(on, "loop")?;
        let config = tests::closed_loop_config(&env)?;
        let topics = config.topics();
        ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

        // Period 1 is history: snapshotted from an earlier topic, trained on, promoted. (Live
        // traffic is new text; replaying the training rows themselves would show as drift of the
        // out-of-vocabulary rate, which is 0 on training rows by construction.)
        let mut history = config.clone();
        history.kafka.topic_prefix = "loop-history".into();
        ingest::kafka::ensure_topics(&history.kafka, &history.topics().all()).await?;
        let mut period1 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
        shuffle(&mut period1, 11);
        publish(&history, &history.topics().raw, outgoing(&period1)).await?;
        tests::driftwood(&history, &["snapshot"])?;
        tests::driftwood(&history, &["train", "--alias", "production"])?;

        // Everything runs in one `driftwood up`.
        let mut up = tests::spawn_driftwood(&config, &["up"], "up.log")?;
        let base = format!("http://{}", config.serve.listen);
        let http = reqwest::Client::new();
        tests::wait_ready(&base).await?;
        // Clients keep calling the API through the swap.
        let stop = CancellationToken::new();
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let versions_seen = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u64>::new()));
        let client = {
            let (stop, ok, failed, versions_seen, http, base) =
                (stop.clone(), ok.clone(), failed.clone(), versions_seen.clone(), http.clone(), base.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let body = serde_json::json!({"texts": ["win a free prize now, click here", "meeting notes attached"]});
                    match http.post(format!("{base}/v1/predict")).json(&body).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                let version = v["version"].as_u64().unwrap_or_default();
                                *versions_seen.lock().expect("lock").entry(version).or_default() += 1;
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };

        // Period 2, with its labels.
        let mut period2 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_2)?;
        shuffle(&mut period2, 12);
        publish(&config, &topics.raw, outgoing(&period2)).await?;

        let meta = SqliteStore::in_data_dir(env.dir())?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let promoted = loop {
            let current = meta.get_alias("spam", "production").await?;
            if current.is_some_and(|v| v > 1) {
                break current.expect("checked");
            }
            if Instant::now() > deadline {
                let _ = up.0.kill();
                let log = std::fs::read_to_string(env.dir().join("up.log")).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                anyhow::bail!("no retrained model was promoted in time; up.log ends:\n{tail}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        // Let the server pick the new version up under load.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !versions_seen.lock().expect("lock").contains_key(&u64::from(promoted)) {
            anyhow::ensure!(Instant::now() < deadline, "the API never served v{promoted}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        client.await?;
        // The monitor's gauges and counters are on the same /metrics.
        let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
        assert!(metrics.contains(r#"driftwood_drift_statistic{feature="chars",statistic="psi"}"#), "{metrics}");
        assert!(metrics.contains("driftwood_drift_retrain_requests_total 1"), "{metrics}");
        assert!(metrics.contains("driftwood_drift_detected_total{"), "{metrics}");
        assert!(metrics.contains(r#"driftwood_retrain_total{outcome="promoted"} 1"#), "{metrics}");
        assert!(metrics.contains(r#"driftwood_training_runs_total{status="finished"} 1"#), "{metrics}");
        assert!(metrics.contains("driftwood_training_duration_seconds_count 1"), "{metrics}");
        drop(up); // SIGTERM, and wait for it to stop

        // The events tell the story: drift within two windows of period 2, a request, a promotion.
        let control = events(&read_all(&config, &topics.control).await?);
        let requested: Vec<u64> = control
            .iter()
            .filter_map(|e| match e {
                ControlEvent::DriftDetected { version: 1, window, .. } => Some(*window),
                _ => None,
            })
            .collect();
        let first = *requested.first().expect("drift was detected");
        assert!(first <= 1, "drift confirmed at window {first}, not within the first two windows of period 2");
        assert!(control.iter().any(|e| matches!(e, ControlEvent::RetrainRequested { version: 1, .. })));
        let finished = control
            .iter()
            .find_map(|e| match e {
                ControlEvent::RetrainFinished { promoted: true, metrics, candidate, .. } => {
                    Some((metrics, *candidate))
                }
                _ => None,
            })
            .expect("a RetrainFinished event for the promotion");
        assert_eq!(finished.1, Some(promoted));
        assert!(finished.0["candidate_accuracy"] > finished.0["production_accuracy"], "{:?}", finished.0);

        // Independently: on a period-2 holdout (the test split by id, never trained on), the
        // promoted model beats the old one.
        let plan = CleanPlan::compile(CleanSpec::default())?;
        let holdout: Vec<RawRecord> = period2
            .iter()
            .filter(|r| {
                Split::of(&r.id, config.train.validation_fraction, config.train.test_fraction) == Split::Test
            })
            .cloned()
            .collect();
        let old = meta.get_model_version("spam", 1).await?;
        let new = meta.get_model_version("spam", promoted).await?;
        let (old_acc, new_acc) = (accuracy(&old, &plan, &holdout)?, accuracy(&new, &plan, &holdout)?);
        eprintln!(
            "period-2 holdout ({} rows): v1 accuracy {old_acc:.4}, v{promoted} {new_acc:.4}",
            holdout.len()
        );
        assert!(new_acc > old_acc, "v{promoted} {new_acc} should beat v1 {old_acc}");

        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        eprintln!(
            "REST during the loop: {ok} ok, {failed} failed, versions {:?}",
            versions_seen.lock().expect("lock")
        );
        assert_eq!(failed, 0, "no request may fail during the swap");
        assert!(ok > 50);
        let audit = meta.audit_log(50).await?;
        let promotion = audit.iter().find(|a| a.action == "retrain.promoted").expect("a retrain.promoted audit");
        // The candidate waited for the snapshot job: it trained on a version covering all of
        // period 2, not on whatever part of it was committed when the drift was confirmed.
        let trained_on = promotion.details["outcome"]["data_version"].as_str().expect("a data version");
        let manifest = stream::store::SnapshotStore::open(env.dir())?.resolve("text", trained_on)?;
        let ends: BTreeMap<i32, i64> = ingest::kafka::watermarks(&config.kafka, &topics.raw)
            .await?
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect();
        // (tansu's high watermark can trail the last batch, so "covers" is at least, not equal.)
        let covered = manifest.resume_offsets(&topics.raw);
        for (p, end) in &ends {
            assert!(covered.get(p).is_some_and(|c| c >= end), "trained on {trained_on}: {covered:?} < {ends:?}");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_out_traffic_raises_no_drift_over_twenty_windows() -> anyhow::Result<()> {
    let env = TestEnv::start("quiet")?;
    let config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let cancel = CancellationToken::new();

    // Train on period 1 in-process.
    let mut period1 = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut period1, 21);
    publish(&config, &topics.raw, outgoing(&period1)).await?;
    let plan = Arc::new(CleanPlan::compile(CleanSpec::default())?);
    let store = stream::store::SnapshotStore::open(env.dir())?;
    tests::snapshot_until_idle(&config, &store).await?;
    let meta: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_data_dir(env.dir())?);
    let req = trainer::train::TrainRequest {
        dataset: config.snapshot.dataset.clone(),
        version: "latest".into(),
        params: config.train.clone(),
        data_dir: env.dir().to_path_buf(),
        alias: Some("production".into()),
        actor: "test".into(),
    };
    let trained = trainer::train::train(meta.as_ref(), &store, &req, None).await?;

    // Live traffic: the held-out (validation + test) records, reshuffled and repeated under
    // new ids, for 20 windows of 500.
    let held_out: Vec<&RawRecord> = period1
        .iter()
        .filter(|r| {
            Split::of(&r.id, config.train.validation_fraction, config.train.test_fraction) != Split::Train
        })
        .collect();
    assert!(held_out.len() > 200, "{}", held_out.len());
    let mut live: Vec<RawRecord> = Vec::new();
    let mut round = 0;
    while live.len() < 20 * config.drift.window {
        let mut copy: Vec<RawRecord> =
            held_out.iter().map(|r| RawRecord { id: format!("{}-{round}", r.id), ..(*r).clone() }).collect();
        shuffle(&mut copy, 100 + round);
        live.extend(copy);
        round += 1;
    }
    live.truncate(20 * config.drift.window);
    // Half the labels arrive late, on text.labels, instead of inline.
    let mut late: Vec<Outgoing> = Vec::new();
    for r in live.iter_mut().step_by(2) {
        let label = r.label.take().expect("corpus records are labelled");
        let value = serde_json::to_vec(&schemas::records::LabelRecord { id: r.id.clone(), label })?;
        late.push(Outgoing { key: Some(r.id.clone().into_bytes()), value });
    }
    let inline = live.len() - late.len();
    // Score only the live traffic: a fresh raw topic prefix keeps period 1 out of the windows.
    let mut live_config = config.clone();
    live_config.kafka.topic_prefix = "quiet-live".into();
    let live_topics = live_config.topics();
    ingest::kafka::ensure_topics(&live_config.kafka, &live_topics.all()).await?;
    publish(&live_config, &live_topics.raw, outgoing(&live)).await?;
    publish(&live_config, &live_topics.labels, late).await?;
    let mv = trainer::registry::resolve(meta.as_ref(), "spam", "production").await?;
    let handle = serving::handle::ModelHandle::start(
        Some(trainer::model::load(&mv, None)?),
        plan.clone(),
        serving::handle::BatchingConfig { max_batch: 256, max_wait: Duration::from_millis(2), queue: 1024 },
    )?;
    let scorer = serving::scorer::Scorer {
        config: live_config.clone(),
        plan: plan.clone(),
        model: handle,
        metrics: serving::metrics::Metrics::new(),
        predlog: None,
    };
    scorer.run(true, &cancel).await?;

    let windows = tests::drift_windows(&live_config, "spam", &trained.card).await?;
    assert_eq!(windows.len(), 20);
    for (report, decision) in &windows {
        assert!(decision.drift.is_empty() && !decision.retrain, "false alarm: {report:?}");
    }
    let signals: usize = windows.iter().map(|(r, _)| r.signals.len()).sum();
    eprintln!("20 windows, {signals} single-window signals, no confirmed drift");
    // Accuracy per window on inline and late labels, close to the model's test accuracy.
    let labelled: u64 = windows.iter().filter_map(|(r, _)| r.accuracy).map(|a| a.labelled).sum();
    assert!(labelled > inline as u64, "late labels were joined: {labelled} labelled, {inline} inline");
    for (report, _) in &windows {
        let a = report.accuracy.expect("every window has labelled records");
        assert!(a.accuracy > 0.9, "{a:?}");
    }
    eprintln!("{labelled} labelled predictions ({inline} inline, the rest joined from text.labels)");
    Ok(())
}
