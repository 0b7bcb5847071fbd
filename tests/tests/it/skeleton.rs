//! The walking skeleton on real parts: a tansu broker, the SpamAssassin corpus, libtorch.
//!
//! publish → snapshot → train → REST predict → online scorer → drift, asserting what each stage
//! must guarantee.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use ingest::source::{self, Outgoing};
use metastore::{MetadataStore, SqliteStore};
use schemas::records::{ScoreStatus, ScoredRecord};
use stream::clean::{CleanPlan, CleanSpec};
use stream::job::{SnapshotOptions, run_snapshot};
use stream::store::SnapshotStore;
use tests::{TestEnv, corpus_dir, read_all};
use tokio_util::sync::CancellationToken;

const SPAM: &str = "Subject: You have WON!!!\n\nCongratulations! You have been selected to receive a \
    $1,000,000 cash prize. Click here http://win-big.example.com/claim to claim your FREE money now. \
    Limited time offer, act now! To be removed from our mailing list reply REMOVE.";
const HAM: &str = "Subject: Re: build script fix\n\nHi all, I pushed the fix for the build script to CVS \
    last night. Could someone on the list test it on Red Hat 7.3 before we tag the release? \
    Thanks, Tom";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_on_real_parts() -> anyhow::Result<()> {
    let env = TestEnv::start("skeleton")?;
    let config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

    // 1. Publish the corpus (period 1) plus records that must become dead letters.
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    assert_eq!(corpus.len(), 3000);
    // Live traffic interleaves ham and spam (the corpus is grouped by folder).
    tests::shuffle(&mut corpus, 7);
    let mut outgoing: Vec<ingest::Result<Outgoing>> =
        corpus.iter().map(|r| Ok(Outgoing::from_record(r))).collect();
    let bad: Vec<&[u8]> =
        vec![b"{\"text\": ", b"[1,2,3]", b"{\"id\":\"x\"}", &[0xff, 0xfe, 0x00], b"{\"text\": 7}"];
    outgoing.extend(bad.iter().map(|b| Ok(Outgoing { key: None, value: b.to_vec() })));
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let progress = ingest::publish::progress_bar(None, "test");
    let cancel = CancellationToken::new();
    let summary = ingest::publish::publish(&producer, &topics.raw, outgoing, &progress, &cancel).await?;
    assert_eq!((summary.sent, summary.failed), (3005, 0), "{summary}");

    // 2. Snapshot: exactly the valid records, by id; the bad ones are dead letters.
    let plan = Arc::new(CleanPlan::compile(CleanSpec::default())?);
    let store = SnapshotStore::open(env.dir())?;
    let opts = SnapshotOptions::from_config(&config, true);
    let report = run_snapshot(&config, plan.clone(), &store, &opts, None, &cancel).await?;
    assert_eq!(report.commits.len(), 1);
    let v1 = &report.commits[0];
    // The plan dedupes by cleaned text; the corpus repeats some messages across folders.
    let texts: Vec<&str> = corpus.iter().map(|r| r.text.as_str()).collect();
    let distinct: BTreeSet<String> = plan.clean_texts(&texts).into_iter().flatten().collect();
    let duplicates = 3000 - distinct.len() as u64;
    assert!(duplicates > 0, "the corpus has repeated texts");
    assert_eq!((v1.seq, v1.rows), (1, distinct.len() as u64));
    assert_eq!(report.duplicates, duplicates);
    assert_eq!(report.dead.get("duplicate"), Some(&duplicates), "{:?}", report.dead);
    assert_eq!(report.dead.values().sum::<u64>(), 5 + duplicates, "{:?}", report.dead);
    let mut ids = BTreeSet::new();
    for batch in store.read(v1) {
        let batch = batch?;
        let col = batch.column(0).as_any().downcast_ref::<StringArray>().expect("id column");
        for i in 0..col.len() {
            assert!(ids.insert(col.value(i).to_string()), "duplicate id {}", col.value(i));
        }
    }
    let published: BTreeSet<String> = corpus.iter().map(|r| r.id.clone()).collect();
    assert!(ids.is_subset(&published));
    // A second run finds nothing new: offsets were committed with the version.
    let again = run_snapshot(&config, plan.clone(), &store, &opts, None, &cancel).await?;
    assert!(again.commits.is_empty());
    assert_eq!(again.records, 0);
    let dead = read_all(&config, &topics.dead).await?;
    assert_eq!(dead.len() as u64, 5 + duplicates);
    // Every published id is in the version or a dead letter, never both.
    let dead_ids: BTreeSet<String> =
        dead.iter().filter_map(|d| d.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned())).collect();
    assert!(ids.is_disjoint(&dead_ids));
    assert_eq!(ids.union(&dead_ids).cloned().collect::<BTreeSet<_>>(), published);

    // 3. Train logreg on version 1 and register it as production.
    let meta: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_data_dir(env.dir())?);
    let req = trainer::train::TrainRequest {
        dataset: config.snapshot.dataset.clone(),
        version: "v1".into(),
        params: config.train.clone(),
        data_dir: env.dir().to_path_buf(),
        alias: Some("production".into()),
        actor: "test".into(),
    };
    let trained = trainer::train::train(meta.as_ref(), &store, &req, None).await?;
    assert!(trained.evaluation.accuracy >= 0.95, "held-out accuracy {}", trained.evaluation.accuracy);
    assert_eq!(trained.model.version, 1);
    assert_eq!(meta.get_alias("spam", "production").await?, Some(1));
    assert_eq!(trained.card.spec_hash, plan.hash());

    // 4. Serve: POST /v1/predict answers a spam and a ham text correctly.
    let mv = trainer::registry::resolve(meta.as_ref(), "spam", "production").await?;
    let model = trainer::model::load(&mv, None)?;
    let batching =
        serving::handle::BatchingConfig { max_batch: 64, max_wait: Duration::from_millis(2), queue: 256 };
    let handle = serving::handle::ModelHandle::start(Some(model), plan.clone(), batching)?;
    let metrics = serving::metrics::Metrics::new();
    let state = serving::api::AppState {
        model: handle.clone(),
        metrics: metrics.clone(),
        store: meta.clone(),
        ..tests::app_state(
            env.dir(),
            Arc::new(serving::auth::JwtAuth::from_config(&schemas::config::AuthConfig::default())?),
        )?
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = cancel.child_token();
    let s = stop.clone();
    let api = tokio::spawn(serving::api::serve(listener, serving::api::router(state), async move {
        s.cancelled().await
    }));
    let http = reqwest::Client::new();
    let body: serde_json::Value = http
        .post(format!("http://{addr}/v1/predict"))
        .json(&serde_json::json!({ "texts": [SPAM, HAM] }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(body["model"], "spam");
    assert_eq!(body["version"], 1);
    assert_eq!(body["predictions"][0]["label"], "spam", "{body}");
    assert_eq!(body["predictions"][1]["label"], "ham", "{body}");
    let p_spam = body["predictions"][0]["probabilities"]["spam"].as_f64().unwrap_or_default();
    assert!(p_spam > 0.5, "{body}");
    // A malformed request is a 400 with a JSON error.
    let bad = http.post(format!("http://{addr}/v1/predict")).body("{\"txt\": 1}").send().await?;
    assert_eq!(bad.status(), 400);
    let err: serde_json::Value = bad.json().await?;
    assert_eq!(err["error_type"], "bad_request");
    let too_many = http
        .post(format!("http://{addr}/v1/predict"))
        .json(&serde_json::json!({ "texts": vec!["x"; 17] }))
        .send()
        .await?;
    assert_eq!(too_many.status(), 413);
    let ready = http.get(format!("http://{addr}/readyz")).send().await?;
    assert_eq!(ready.status(), 200);

    // 4b. Dynamic batching, on a second model thread whose `max_wait` (10 s) would show if a
    // batch waited for it: a lone request is answered alone and at once; requests sent together
    // share forward passes, never more than `max_batch` texts each.
    let slow =
        serving::handle::BatchingConfig { max_batch: 16, max_wait: Duration::from_secs(10), queue: 256 };
    let batched =
        serving::handle::ModelHandle::start(Some(trainer::model::load(&mv, None)?), plan.clone(), slow)?;
    let started = std::time::Instant::now();
    let alone = batched.predict_raw(vec![SPAM.to_string()]).await?;
    assert!(started.elapsed() < Duration::from_secs(5), "a lone request waited {:?}", started.elapsed());
    assert_eq!((alone.batch_texts, alone.predictions.len()), (1, 1));
    let together = futures::future::try_join_all(
        (0..200).map(|i| batched.predict_raw(vec![if i % 2 == 0 { SPAM } else { HAM }.to_string()])),
    )
    .await?;
    assert!(started.elapsed() < Duration::from_secs(5), "200 requests took {:?}", started.elapsed());
    for (i, answer) in together.iter().enumerate() {
        let label = answer.predictions[0].as_ref().map(|p| p.label.as_str());
        assert_eq!(label, Some(if i % 2 == 0 { "spam" } else { "ham" }), "request {i}");
        assert!((1..=16).contains(&answer.batch_texts), "{} texts in one pass", answer.batch_texts);
    }
    assert!(together.iter().any(|a| a.batch_texts > 1), "no two of 200 requests shared a forward pass");

    // 5. The online scorer: one scored record per raw record (valid or not), with the version.
    let scorer = serving::scorer::Scorer {
        config: config.clone(),
        plan: plan.clone(),
        model: handle.clone(),
        metrics: metrics.clone(),
        predlog: None,
    };
    let scored_report = scorer.run(true, &cancel).await?;
    assert_eq!(scored_report.scored + scored_report.skipped, 3005);
    let scored: Vec<ScoredRecord> = read_all(&config, &topics.scored)
        .await?
        .iter()
        .map(|m| serde_json::from_slice(m.value.as_deref().unwrap_or_default()).expect("scored record"))
        .collect();
    assert_eq!(scored.len(), 3005);
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &scored {
        *per_id.entry(r.id.as_str()).or_default() += 1;
        assert_eq!((r.model.as_str(), r.model_version), ("spam", 1));
    }
    for id in &published {
        assert_eq!(per_id.get(id.as_str()), Some(&1), "id {id}");
    }
    let valid_scored: Vec<&ScoredRecord> =
        scored.iter().filter(|r| r.status == ScoreStatus::Scored).collect();
    assert_eq!(valid_scored.len(), 3000);
    let skipped_invalid = scored
        .iter()
        .filter(|r| r.reason.as_deref().is_some_and(|x| x.starts_with("invalid_record")))
        .count();
    assert_eq!(skipped_invalid, 5);

    // 6. Drift: PSI per window against the training reference; period-1 data is not drifting.
    let reports: Vec<_> =
        tests::drift_windows(&config, "spam", &trained.card).await?.into_iter().map(|(r, _)| r).collect();
    assert_eq!(reports.len(), 6);
    for r in &reports {
        assert!(r.psi.contains_key("chars"), "{r:?}");
        assert!(r.psi["chars"] < 0.2, "period-1 traffic should not drift: {r:?}");
        // This traffic replays the training rows, whose out-of-vocabulary rate is 0 by
        // construction (the reference comes from held-out rows): that, and only that, drifts.
        assert!(
            r.signals.iter().all(|s| s.feature == "oov_rate"),
            "period-1 traffic should not drift: {r:?}"
        );
        assert!(r.psi["oov_rate"] > 0.2, "{r:?}");
    }

    stop.cancel();
    api.await??;
    Ok(())
}
