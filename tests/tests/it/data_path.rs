//! The data path on real parts: exactly-once snapshots across kill -9, every bad input
//! accounted for (published by Python's confluent-kafka too), several workers in one
//! consumer group, late labels and diffs (remotes: `remotes`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use ingest::source::Outgoing;
use schemas::records::RawRecord;
use stream::clean::{CleanPlan, CleanSpec};
use stream::job::{SnapshotOptions, run_snapshot};
use stream::store::{Manifest, SnapshotStore};
use tests::{TestEnv, driftwood_bin, env_for, publish, python, read_all, snapshot_until_idle, unique_text};
use tokio_util::sync::CancellationToken;

pub(super) fn records(range: std::ops::Range<usize>) -> Vec<Outgoing> {
    range
        .map(|i| {
            Outgoing::from_record(&RawRecord {
                id: format!("r{i}"),
                text: unique_text(i),
                label: Some(if i % 3 == 0 { "spam" } else { "ham" }.into()),
                source: None,
                ts: None,
                meta: None,
            })
        })
        .collect()
}

/// Ids (with multiplicity) of a version, and a hash of every row.
pub(super) fn rows_of(
    store: &SnapshotStore,
    m: &Manifest,
) -> anyhow::Result<(BTreeMap<String, usize>, String)> {
    let mut ids = BTreeMap::new();
    let mut lines = Vec::new();
    for batch in store.read(m) {
        let batch: RecordBatch = batch?;
        let id = batch.column(0).as_string::<i32>();
        let text = batch.column(1).as_string::<i32>();
        let label = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            *ids.entry(id.value(i).to_string()).or_default() += 1;
            lines.push(format!(
                "{}\t{}\t{:?}",
                id.value(i),
                text.value(i),
                label.is_valid(i).then(|| label.value(i))
            ));
        }
    }
    lines.sort();
    Ok((ids, schemas::sha256_hex(lines.join("\n").as_bytes())))
}

fn plan() -> Arc<CleanPlan> {
    Arc::new(CleanPlan::compile(CleanSpec::default()).expect("default spec compiles"))
}

tests::on_both_brokers! {
    async fn kill_9_never_loses_or_duplicates_a_row(on) {
        let env = TestEnv::on(on, "crash")?;
        let mut config = env.config();
        config.ingest.batch_max_rows = 50;
        config.snapshot.commit_max_rows = 200;
        config.snapshot.commit_interval_secs = 1;
        let topics = config.topics();
        ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
        let store = SnapshotStore::open(env.dir())?;
        let bin = driftwood_bin()?;
        let mut published = 0usize;
        let chunk = 6000;
        let mut kills_mid_run = 0;
        let mut seed = Instant::now().elapsed().subsec_nanos() as u64 | 1;
        let mut attempts = 0;
        while kills_mid_run < 5 {
            attempts += 1;
            anyhow::ensure!(attempts < 40, "could not kill the job mid-run 5 times");
            let done = store.latest("text")?.map_or(0, |m| m.rows as usize);
            if done >= published {
                publish(&config, &topics.raw, records(published..published + chunk)).await?;
                published += chunk;
            }
            let mut child = Command::new(&bin)
                .args(["snapshot", "--follow"])
                .current_dir(env.dir())
                .envs(env_for(&config))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let wait = Duration::from_millis(300 + seed % 900);
            tokio::time::sleep(wait).await;
            let before = store.latest("text")?.map_or(0, |m| m.rows as usize);
            child.kill()?; // SIGKILL
            child.wait()?;
            let after = store.latest("text")?.map_or(0, |m| m.rows as usize);
            eprintln!("killed after {wait:?}: {before}..{after} of {published} rows committed");
            if after < published {
                kills_mid_run += 1;
            }
        }
        // Finally let a run finish.
        let status = Command::new(&bin)
            .arg("snapshot")
            .current_dir(env.dir())
            .envs(env_for(&config))
            .stdout(Stdio::null())
            .status()?;
        assert!(status.success());
        let versions = store.versions("text")?;
        let latest = versions.last().expect("versions exist");
        let (ids, _) = rows_of(&store, latest)?;
        assert_eq!(ids.len(), published, "every published id is in the latest version");
        assert!(ids.values().all(|&n| n == 1), "no id twice");
        let expected: BTreeSet<String> = (0..published).map(|i| format!("r{i}")).collect();
        assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected);
        // Every version is a prefix-closed union: each row added exactly once along the chain.
        let added: u64 = versions.iter().map(|m| m.added.rows).sum();
        assert_eq!(added as usize, published);
        eprintln!("{} versions, {kills_mid_run} kills mid-run in {attempts} runs", versions.len());
        Ok(())
    }
}

tests::on_both_brokers! {
    async fn every_bad_record_is_accounted_for(on) {
        let env = TestEnv::on(on, "bad")?;
        let mut config = env.config();
        config.ingest.max_record_bytes = 64 * 1024;
        let topics = config.topics();
        ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

        // Python's confluent-kafka publishes the bad corpus.
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/publish_bad.py");
        let out = Command::new(python()?)
            .args([script, &config.kafka.brokers, &topics.raw, &config.ingest.max_record_bytes.to_string()])
            .output()?;
        anyhow::ensure!(out.status.success(), "publish_bad.py: {}", String::from_utf8_lossy(&out.stderr));
        let expect: BTreeMap<String, String> = serde_json::from_slice(&out.stdout)?;
        let kinds: BTreeSet<&str> = expect.values().map(String::as_str).filter(|r| *r != "snapshot").collect();
        assert!(expect.len() - 4 >= 12 && kinds.len() >= 10, "{kinds:?}");

        let store = SnapshotStore::open(env.dir())?;
        let report = snapshot_until_idle(&config, &store).await?;
        let m = report.commits.last().expect("a version");
        let (ids, _) = rows_of(&store, m)?;
        let dead = read_all(&config, &topics.dead).await?;
        let mut outcome: BTreeMap<String, String> = BTreeMap::new();
        for d in &dead {
            let key = String::from_utf8_lossy(d.key.as_deref().unwrap_or_default()).to_string();
            let reason = d.header(schemas::records::dead_letter_header::REASON).unwrap_or("?").to_string();
            assert_eq!(d.header(schemas::records::dead_letter_header::SOURCE_TOPIC), Some(topics.raw.as_str()));
            assert!(d.header(schemas::records::dead_letter_header::DETAIL).is_some_and(|s| !s.is_empty()));
            assert!(outcome.insert(key.clone(), reason).is_none(), "{key} dead-lettered twice");
        }
        for id in ids.keys() {
            assert!(
                outcome.insert(id.clone(), "snapshot".into()).is_none(),
                "{id} both in the snapshot and dead"
            );
        }
        assert_eq!(outcome, expect, "every record is in the snapshot or dead with its specific reason");
        // The original bytes travel with a dead letter.
        let utf16 = dead.iter().find(|d| d.key.as_deref() == Some(b"py-utf16")).expect("dead letter");
        assert_eq!(
            utf16.value.as_deref(),
            Some(
                &"hello".encode_utf16().flat_map(u16::to_le_bytes).fold(vec![0xff, 0xfe], |mut v, b| {
                    v.push(b);
                    v
                })[..]
            )
        );
        Ok(())
    }
}

tests::on_both_brokers! {
    async fn two_workers_in_a_group_share_the_partitions(on) {
        let env = TestEnv::on(on, "workers")?;
        let mut config = env.config();
        config.snapshot.commit_max_rows = 300;
        config.snapshot.commit_interval_secs = 1;
        let topics = config.topics();
        ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
        let store = SnapshotStore::open(env.dir())?;
        let cancel = CancellationToken::new();
        let mut opts = SnapshotOptions::from_config(&config, false);
        opts.group = true;
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (config, store, opts, cancel) = (config.clone(), store.clone(), opts.clone(), cancel.clone());
                tokio::spawn(async move { run_snapshot(&config, plan(), &store, &opts, None, &cancel).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(5)).await; // both join the group
        let n = 4000;
        publish(&config, &topics.raw, records(0..n)).await?;
        let t = Instant::now();
        while store.latest("text")?.map_or(0, |m| m.rows as usize) < n && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cancel.cancel();
        let mut commits_per_worker = Vec::new();
        for w in workers {
            let report = w.await??;
            commits_per_worker.push(report.commits.len());
        }
        let latest = store.latest("text")?.expect("a version");
        let (ids, _) = rows_of(&store, &latest)?;
        assert_eq!(ids.len(), n);
        assert!(ids.values().all(|&c| c == 1), "no id twice");
        eprintln!("commits per worker: {commits_per_worker:?}");
        assert!(commits_per_worker.iter().all(|&c| c > 0), "both workers committed: {commits_per_worker:?}");
        let partitions: BTreeSet<i32> = latest.sources.iter().map(|s| s.partition).collect();
        assert_eq!(partitions.len(), 4);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_labels_join_by_id_and_diff_shows_the_change() -> anyhow::Result<()> {
    let env = TestEnv::start("labels")?;
    let config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let store = SnapshotStore::open(env.dir())?;
    let unlabeled: Vec<Outgoing> = (0..500)
        .map(|i| {
            Outgoing::from_record(&RawRecord {
                id: format!("u{i}"),
                text: unique_text(i),
                label: None,
                source: None,
                ts: None,
                meta: None,
            })
        })
        .collect();
    publish(&config, &topics.raw, unlabeled).await?;

    snapshot_until_idle(&config, &store).await?;
    // Labels for ids 0..200, one relabelled later (the latest wins), one unknown id, one bad.
    let mut labels: Vec<Outgoing> = (0..200)
        .map(|i| Outgoing {
            key: Some(format!("u{i}").into_bytes()),
            value: serde_json::to_vec(&serde_json::json!({"id": format!("u{i}"), "label": "ham"})).unwrap(),
        })
        .collect();
    labels.push(Outgoing { key: Some(b"u7".to_vec()), value: br#"{"id":"u7","label":"spam"}"#.to_vec() });
    labels.push(Outgoing { key: None, value: br#"{"id":"nobody","label":"spam"}"#.to_vec() });
    labels.push(Outgoing { key: None, value: br#"{"label":"spam"}"#.to_vec() });
    publish(&config, &topics.labels, labels).await?;
    let report = stream::labels::join_labels(&config, &store, "text", &CancellationToken::new()).await?;
    assert_eq!((report.labels_read, report.dead, report.rows_labeled), (202, 1, 200));
    let v2 = report.version.expect("a labelled version");
    assert_eq!((v2.seq, v2.rows), (2, 500));
    let mut got: BTreeMap<String, Option<String>> = BTreeMap::new();
    for batch in store.read(&v2) {
        let batch = batch?;
        let id = batch.column(0).as_string::<i32>();
        let label = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            got.insert(id.value(i).into(), label.is_valid(i).then(|| label.value(i).to_string()));
        }
    }
    assert_eq!(got["u7"].as_deref(), Some("spam"));
    assert_eq!(got["u8"].as_deref(), Some("ham"));
    assert_eq!(got["u300"], None);
    let v1 = store.resolve("text", "v1")?;
    let d = stream::diff::diff(&store, &v1, &v2, 3).await?;
    assert_eq!((d.added, d.removed, d.changed, d.unchanged), (0, 0, 200, 300));
    // No new labels: nothing to commit.
    let again = stream::labels::join_labels(&config, &store, "text", &CancellationToken::new()).await?;
    assert!(again.version.is_none());
    // More texts: the diff shows them as added.
    publish(&config, &topics.raw, records(1000..1100)).await?;
    snapshot_until_idle(&config, &store).await?;
    let v3 = store.resolve("text", "latest")?;
    let d = stream::diff::diff(&store, &v2, &v3, 3).await?;
    assert_eq!((d.added, d.removed, d.changed), (100, 0, 0));
    assert_eq!(d.examples_added.len(), 3);
    Ok(())
}
