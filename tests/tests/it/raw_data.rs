//! Raw data and a change of cleaning spec on a running pipeline, through the `driftwood` binary
//! on tansu: the snapshot job keeps the records as read in the raw dataset; `data reprocess`
//! cleans that history with a new spec into a new dataset while the old job still runs; a
//! snapshot job on the new dataset follows the raw data and the topic from there. Every id is
//! in the new dataset once, cleaned by the new spec; the old dataset is untouched after its
//! job stops; the same spec on the same raw version writes the same objects; a model trained
//! on the new dataset is only served with the new spec.
//!
//! The change is the one the default spec made: `strip_email_headers` (the first default)
//! dropped the first paragraph of `Note: …`; `strip_message_headers` keeps it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use ingest::source;
use schemas::records::RawRecord;
use stream::clean::{CleanPlan, CleanSpec};
use stream::store::{Manifest, SnapshotStore};
use tests::{TestEnv, corpus_dir, driftwood, outgoing, publish, spawn_driftwood};

/// A text that starts like a header but is not one, unique per `tag`.
fn note(tag: &str) -> RawRecord {
    RawRecord {
        id: format!("note-{tag}"),
        text: format!(
            "Note: you have won a free prize {tag}, click here to claim your money now\n\nthanks {tag}"
        ),
        label: Some("spam".into()),
        source: None,
        ts: None,
        meta: None,
    }
}

/// Id → text of every row of a version.
fn rows(store: &SnapshotStore, m: &Manifest) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for batch in store.read(m) {
        let batch = batch?;
        let col = |i: usize| batch.column(i).as_any().downcast_ref::<StringArray>().expect("utf8").clone();
        let (ids, texts) = (col(0), col(1));
        out.extend((0..ids.len()).map(|i| (ids.value(i).to_string(), texts.value(i).to_string())));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_spec_rebuilds_the_history_from_raw_data_and_follows_the_topic() -> anyhow::Result<()> {
    let env = TestEnv::start("rawdata")?;
    let mut config = env.config();
    config.snapshot.commit_interval_secs = 1;
    config.train.epochs = 3;
    config.serve.listen = tests::free_addr()?;
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let dir = env.dir().to_path_buf();
    // The old spec, as a user keeps writing a dataset made with the first default.
    let old_spec = driftwood(&config, &["spec", "--first-default"])?;
    std::fs::write(dir.join("old-spec.toml"), &old_spec)?;
    std::fs::write(dir.join("new-spec.toml"), CleanSpec::default().to_toml())?;
    let new_spec_file = dir.join("new-spec.toml").display().to_string();
    let old = format!("--set=clean.spec={}", dir.join("old-spec.toml").display());
    let new = format!("--set=clean.spec={new_spec_file}");
    let old = old.as_str();
    let new = new.as_str();
    let old_plan = CleanPlan::compile(CleanSpec::first_default())?;
    let new_plan = CleanPlan::compile(CleanSpec::default())?;
    assert!(old_spec.starts_with(&format!("# cleaning spec {}", old_plan.hash())), "{old_spec}");

    // Corpus texts that are distinct and kept under both specs, so every id must land once.
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    tests::shuffle(&mut corpus, 21);
    let (mut seen_old, mut seen_new) = (HashSet::new(), HashSet::new());
    corpus.retain(|r| {
        let t = [r.text.as_str()];
        match (old_plan.clean_texts(&t).remove(0), new_plan.clean_texts(&t).remove(0)) {
            (Some(a), Some(b)) => seen_old.insert(a) & seen_new.insert(b),
            _ => false,
        }
    });
    corpus.truncate(1200);
    let batches: Vec<Vec<RawRecord>> = corpus
        .chunks(300)
        .zip(["a", "b", "c", "d"])
        .map(|(chunk, tag)| chunk.iter().cloned().chain([note(tag)]).collect())
        .collect();
    let all: BTreeSet<String> = batches.iter().flatten().map(|r| r.id.clone()).collect();
    assert_eq!(all.len(), 1204);
    let raw_topic = config.topics().raw;
    let store = SnapshotStore::open(&dir)?;

    // 1. The old pipeline: a snapshot of batch a, then a job following the topic.
    publish(&config, &raw_topic, outgoing(&batches[0])).await?;
    driftwood(&config, &["snapshot", old])?;
    let raw_v1 = store.resolve("text_raw", "latest")?;
    assert_eq!((raw_v1.rows, raw_v1.spec_hash.as_str()), (301, "raw"));
    let text_v1 = store.resolve("text", "latest")?;
    assert_eq!(text_v1.raw.as_ref().map(|l| l.version.as_str()), Some(raw_v1.id.as_str()));
    let old_job = spawn_driftwood(&config, &["snapshot", "--follow", old], "old-job.log")?;
    publish(&config, &raw_topic, outgoing(&batches[1])).await?;
    wait_for(&store, "text_raw", 602).await?;

    // 2. The new spec: reprocess the raw history while the old job runs, then follow.
    let out = driftwood(&config, &["data", "reprocess", "--spec", &new_spec_file, "--dataset", "text2"])?;
    assert!(out.contains("committed text2 v1"), "{out}");
    let text2_v1 = store.resolve("text2", "v1")?;
    let from = text2_v1.raw.clone().expect("linked to raw");
    assert_eq!(text2_v1.sources, store.resolve("text_raw", &from.version)?.sources);
    let new_job = spawn_driftwood(
        &config,
        &["snapshot", "--follow", "--set=snapshot.dataset=text2", new],
        "new-job.log",
    )?;
    publish(&config, &raw_topic, outgoing(&batches[2])).await?;
    wait_for(&store, "text", 903).await?;
    drop(old_job);
    let old_versions: Vec<String> = store.versions("text")?.into_iter().map(|m| m.id).collect();
    publish(&config, &raw_topic, outgoing(&batches[3])).await?;
    wait_for(&store, "text2", 1204).await?;
    drop(new_job);

    // Every id once in the new dataset, cleaned by the new spec; it follows the raw data.
    let text2 = store.resolve("text2", "latest")?;
    let new_rows = rows(&store, &text2)?;
    let ids: Vec<&String> = new_rows.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), all.len(), "no id twice");
    assert_eq!(ids.into_iter().cloned().collect::<BTreeSet<_>>(), all);
    let by_id: BTreeMap<&str, &str> = new_rows.iter().map(|(i, t)| (i.as_str(), t.as_str())).collect();
    for tag in ["a", "b", "c", "d"] {
        let expected =
            format!("note: you have won a free prize {tag}, click here to claim your money now thanks {tag}");
        assert_eq!(by_id[format!("note-{tag}").as_str()], expected);
    }
    let raw = store.resolve("text_raw", "latest")?;
    assert_eq!(text2.raw.as_ref().map(|l| &l.version), Some(&raw.id));
    assert_eq!(text2.sources, raw.sources);
    assert!(store.versions("text2")?.iter().all(|m| m.spec_hash == new_plan.hash()));

    // The old dataset: untouched since its job stopped, cleaned by the old spec throughout.
    let now: Vec<String> = store.versions("text")?.into_iter().map(|m| m.id).collect();
    assert_eq!(now, old_versions);
    assert!(store.versions("text")?.iter().all(|m| m.spec_hash == old_plan.hash()));
    let old_rows = rows(&store, &store.resolve("text", "latest")?)?;
    let old_by_id: BTreeMap<&str, &str> = old_rows.iter().map(|(i, t)| (i.as_str(), t.as_str())).collect();
    assert_eq!(old_by_id["note-a"], "thanks a");

    // What the new spec changed, row by row: the notes, nothing else.
    let diff = driftwood(&config, &["data", "diff", "text@latest", "text2@latest", "--examples", "10"])?;
    let changed: usize = old_by_id.keys().filter(|id| id.starts_with("note-")).count();
    assert!(diff.contains(&format!("~{changed} changed")), "{diff}");
    assert!(diff.contains(&format!("+{} added", all.len() - old_rows.len())), "{diff}");

    // Reproducible: the same spec on the same raw version writes the same objects.
    let from_ref = format!("text_raw@v{}", from.seq);
    driftwood(
        &config,
        &["data", "reprocess", "--from", &from_ref, "--spec", &new_spec_file, "--dataset", "again"],
    )?;
    assert_eq!(store.resolve("again", "v1")?.files, text2_v1.files);
    let again = driftwood(
        &config,
        &["data", "reprocess", "--from", &from_ref, "--spec", &new_spec_file, "--dataset", "again"],
    )?;
    assert!(again.contains("already up to date"), "{again}");
    let err = driftwood(&config, &["data", "reprocess", "--from", &from_ref, "--dataset", "again", old])
        .unwrap_err();
    assert!(format!("{err:#}").contains("was cleaned with spec"), "{err:#}");

    // A model trained on the new dataset is served with the new spec only.
    driftwood(&config, &["train", "--dataset", "text2", "--alias", "production", new])?;
    let input = dir.join("texts.jsonl");
    std::fs::write(&input, "{\"text\": \"Note: claim your free prize now\\n\\nthanks\"}\n")?;
    let input = input.display().to_string();
    let refused = driftwood(&config, &["models", "predict", "spam", "--input", &input, old]).unwrap_err();
    assert!(format!("{refused:#}").contains("spec"), "{refused:#}");
    let scored = driftwood(&config, &["models", "predict", "spam", "--input", &input, new])?;
    assert!(scored.contains("\"label\""), "{scored}");
    let trained = driftwood(&config, &["train", "--dataset", "text_raw"]).unwrap_err();
    assert!(format!("{trained:#}").contains("is raw data"), "{trained:#}");

    // Lineage of a real prediction: the scorer (new spec) scores the topic, the scored snapshot
    // keeps the predictions; `lineage` and the REST route walk back to the raw offsets and spec.
    let server = spawn_driftwood(&config, &["serve", new], "serve.log")?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while store.latest("scored")?.map_or(0, |m| m.rows) < all.len() as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the scorer did not score every record in 90 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
        driftwood(&config, &["snapshot", "--scored"])?;
    }
    let lineage: serde_json::Value =
        serde_json::from_str(&driftwood(&config, &["lineage", "--prediction", "note-d", "--json"])?)?;
    let prediction = &lineage["prediction"];
    assert_eq!(
        (prediction["id"].as_str(), lineage["model"]["name"].as_str()),
        (Some("note-d"), Some("spam"))
    );
    assert_eq!(lineage["data"]["dataset"], "text2");
    assert_eq!(lineage["data"]["id"], lineage["run"]["data_version"]);
    assert_eq!(lineage["raw"]["dataset"], "text_raw");
    assert_eq!(lineage["spec"]["hash"].as_str(), Some(new_plan.hash()));
    assert!(
        lineage["spec"]["toml"].as_str().is_some_and(|t| t.contains("strip_message_headers")),
        "{lineage}"
    );
    // The raw version named holds the record at the offset the scorer read it from.
    let raw_version =
        store.resolve("text_raw", prediction["raw_version"].as_str().expect("a raw version"))?;
    let (partition, offset) = (prediction["raw_partition"].as_i64(), prediction["raw_offset"].as_i64());
    assert!(raw_version.added.consumed.iter().any(|c| Some(i64::from(c.partition)) == partition
        && offset.is_some_and(|o| (c.first..c.next).contains(&o))));
    let text = driftwood(&config, &["lineage", "spam@production"])?;
    assert!(text.contains("data        text2 v") && text.contains("raw data    text_raw v"), "{text}");
    let url = format!("http://{}/v1/lineage/predictions/note-d", config.serve.listen);
    let over_rest: serde_json::Value = reqwest::get(&url).await?.error_for_status()?.json().await?;
    assert_eq!(over_rest["raw"]["id"], lineage["raw"]["id"]);
    let missing = reqwest::get(format!("http://{}/v1/lineage/predictions/nope", config.serve.listen)).await?;
    assert_eq!(missing.status(), 404);
    drop(server);
    Ok(())
}

/// Waits (≤ 90 s) until the latest version of `dataset` holds `rows` rows.
async fn wait_for(store: &SnapshotStore, dataset: &str, rows: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have = store.latest(dataset)?.map_or(0, |m| m.rows);
        if have >= rows {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{dataset} has {have} rows after 90 s, expected {rows}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `data import` through the binary: a folder of corpus mails (folder names as labels) and a
/// CSV with bad rows become raw versions whose sources are the files' hashes, cleaned into the
/// dataset with the configured spec; the refused rows are in the rejects file with their
/// reasons; importing again adds nothing; lineage names the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_imported_as_raw_data_and_cleaned_into_a_dataset() -> anyhow::Result<()> {
    let env = TestEnv::start("import")?; // a broker for the training run's control events
    let config = env.config();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let dir = env.dir();
    let mails = dir.join("mails");
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    tests::shuffle(&mut corpus, 5);
    for (i, r) in corpus.iter().take(40).enumerate() {
        let folder = mails.join(r.label.as_deref().unwrap_or("unlabelled"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(format!("{i:03}.eml")), &r.text)?;
    }
    let csv = dir.join("extra.csv");
    std::fs::write(
        &csv,
        "text,label\n\"Note: free prize\n\nclaim now\",spam\n\"  \",ham\ntoo,many,fields\n",
    )?;
    let rejects = dir.join("rejects.jsonl");
    let rejects_arg = rejects.display().to_string();
    let out = driftwood(&config, &["data", "import", mails.to_str().unwrap(), "--dataset", "mail"])?;
    assert!(out.contains("40 rows imported, 0 refused"), "{out}");
    assert!(out.contains("committed mail_raw v1") && out.contains("committed mail v1"), "{out}");
    let out = driftwood(
        &config,
        &["data", "import", csv.to_str().unwrap(), "--dataset", "mail", "--rejects", &rejects_arg],
    )?;
    assert!(out.contains("1 rows imported, 2 refused"), "{out}");
    let refused: Vec<serde_json::Value> =
        std::fs::read_to_string(&rejects)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let codes: Vec<&str> = refused.iter().map(|v| v["reason"].as_str().unwrap_or_default()).collect();
    assert_eq!(codes, ["blank_text", "bad_field"]);
    let store = SnapshotStore::open(dir)?;
    let raw = store.resolve("mail_raw", "latest")?;
    assert_eq!((raw.rows, raw.added.imported.len()), (41, 1));
    assert_eq!(store.resolve("mail_raw", "v1")?.added.imported.len(), 40);
    let mail = store.resolve("mail", "latest")?;
    assert_eq!(mail.raw.as_ref().map(|l| &l.version), Some(&raw.id));
    let cleaned = rows(&store, &mail)?;
    assert!(cleaned.iter().any(|(_, t)| t == "note: free prize claim now"), "the new default keeps the note");
    assert!(cleaned.iter().any(|(id, _)| id.starts_with("ham/") || id.starts_with("spam/")));
    // Again: nothing new.
    let again = driftwood(&config, &["data", "import", mails.to_str().unwrap(), "--dataset", "mail"])?;
    assert!(again.contains("nothing new to import") && again.contains("already up to date"), "{again}");
    assert_eq!(store.versions("mail_raw")?.len(), 2);
    // A model trained on it: lineage walks back to each imported file's hash.
    driftwood(&config, &["train", "--dataset", "mail", "--model", "logreg"])?;
    let text = driftwood(&config, &["lineage", "spam@latest"])?;
    let csv_sha = schemas::sha256_hex(&std::fs::read(&csv)?);
    assert!(text.contains("raw data    mail_raw v2") && text.contains("from 41 imported files"), "{text}");
    assert!(text.contains(&format!("extra.csv sha256 {} (1 rows)", &csv_sha[..12])), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&driftwood(&config, &["lineage", "spam@latest", "--json"])?)?;
    let imported = json["raw"]["imported"].as_array().map_or(0, Vec::len);
    assert_eq!(imported, 41, "{json}");
    Ok(())
}

/// `snapshot.raw_retention_secs`: `data gc` expires the raw objects older than the retention
/// (they had been cleaned) and deletes them; manifests, the processed dataset and lineage stay;
/// the raw dataset reads as what is kept; a remote receives the expiry records, not the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_data_past_its_retention_is_expired_by_gc() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = tests::config_for("127.0.0.1:9", dir.path(), "retention");
    let old = dir.path().join("old.jsonl");
    let new = dir.path().join("new.jsonl");
    std::fs::write(&old, "{\"id\":\"a\",\"text\":\"Old One\"}\n{\"id\":\"b\",\"text\":\"Old Two\"}\n")?;
    std::fs::write(&new, "{\"id\":\"c\",\"text\":\"New Three\"}\n")?;
    driftwood(&config, &["data", "import", old.to_str().unwrap(), "--dataset", "t"])?;
    std::thread::sleep(Duration::from_secs(4));
    driftwood(&config, &["data", "import", new.to_str().unwrap(), "--dataset", "t"])?;
    let store = SnapshotStore::open(dir.path())?;
    let (r1, r2) = (store.resolve("t_raw", "v1")?, store.resolve("t_raw", "v2")?);

    // Retention off (the default): gc keeps every raw object.
    let kept = driftwood(&config, &["data", "gc"])?;
    assert!(!kept.contains("raw data older") && kept.contains("removed 0 unreferenced objects"), "{kept}");
    config.snapshot.raw_retention_secs = 3;
    let out = driftwood(&config, &["data", "gc"])?;
    assert!(out.contains(&format!("expired {} objects (2 rows)", r1.files.len())), "{out}");
    assert!(out.contains(&format!("removed {} unreferenced objects", r1.files.len())), "{out}");
    assert!(r1.files.iter().all(|f| store.is_expired(&f.hash) && !store.has_object(&f.hash)));
    assert_eq!(store.resolve("t_raw", "v2")?, r2, "manifests stay");
    assert_eq!(rows(&store, &r2)?, [("c".to_string(), "New Three".to_string())]);
    let processed = rows(&store, &store.resolve("t", "latest")?)?;
    assert_eq!(processed.len(), 3, "the processed rows stay: {processed:?}");
    driftwood(&config, &["data", "verify", "latest", "--dataset", "t_raw"])?;
    let lineage = driftwood(&config, &["data", "show", "t_raw@v1"])?;
    assert!(lineage.contains("old.jsonl"), "the sources are still named: {lineage}");

    // A remote gets the expiry records instead of the objects, and so does a pull from it.
    let remote = format!("file://{}", dir.path().join("remote").display());
    let pushed = driftwood(&config, &["data", "push", "--remote", &remote, "--dataset", "t"])?;
    assert!(pushed.contains(&format!("{} expiry records", r1.files.len())), "{pushed}");
    let other = tempfile::tempdir()?;
    let elsewhere = tests::config_for("127.0.0.1:9", other.path(), "retention");
    driftwood(&elsewhere, &["data", "pull", "--remote", &remote, "--dataset", "t"])?;
    let theirs = SnapshotStore::open(other.path())?;
    assert_eq!(rows(&theirs, &theirs.resolve("t_raw", "latest")?)?.len(), 1);
    assert!(r1.files.iter().all(|f| theirs.is_expired(&f.hash)));
    Ok(())
}
