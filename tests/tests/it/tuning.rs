//! Training beyond the single binary model: a 3-class task with per-class metrics, and a grid
//! search whose trials run concurrently as child runs, compared side by side and the best one
//! registered — all through the `driftwood` binary on the SpamAssassin corpus.

use std::collections::BTreeSet;

use ingest::source;
use metastore::{MetadataStore, RunStatus, SqliteStore};
use tests::{TestEnv, corpus_dir, driftwood, outgoing, publish, shuffle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_classes_train_with_per_class_metrics() -> anyhow::Result<()> {
    let env = TestEnv::start("three")?;
    let config = env.config();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    // Labels by folder: easy-ham, hard-ham (ham that looks like spam), spam.
    let mut records = Vec::new();
    for (group, n) in [("easy-ham-1", 600), ("hard-ham-1", 250), ("spam-1", 400)] {
        let mut rs = source::corpus(&corpus_dir()?, &[group])?;
        shuffle(&mut rs, 9);
        rs.truncate(n);
        for r in &mut rs {
            r.label = Some(group.trim_end_matches("-1").to_string());
        }
        records.extend(rs);
    }
    shuffle(&mut records, 10);
    publish(&config, &config.topics().raw, outgoing(&records)).await?;
    driftwood(&config, &["snapshot"])?;
    let out = driftwood(&config, &["train", "--alias", "production"])?;
    eprintln!("{out}");

    let meta = SqliteStore::in_data_dir(env.dir())?;
    let mv = trainer::registry::resolve(&meta, "spam", "production").await?;
    let card = trainer::artifact::read_card(std::path::Path::new(&mv.artifact_dir))?;
    assert_eq!(card.labels, ["easy-ham", "hard-ham", "spam"]);
    let eval = card.evaluation.expect("an evaluation");
    assert_eq!(eval.per_class.len(), 3);
    assert_eq!(eval.confusion.len(), 3);
    for (label, c) in &eval.per_class {
        assert!(c.support > 0 && c.recall > 0.5, "{label}: {c:?}");
        assert!(out.contains(&format!("{label:>12}: precision")), "the CLI reports {label}: {out}");
    }
    let majority = eval.per_class.values().map(|c| c.support).max().unwrap_or(0) as f64 / eval.n as f64;
    assert!(eval.accuracy > majority + 0.25, "accuracy {} vs majority baseline {majority}", eval.accuracy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_search_runs_concurrent_child_trials_and_registers_the_best() -> anyhow::Result<()> {
    let env = TestEnv::start("tune")?;
    let config = env.config();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 4);
    corpus.truncate(800);
    publish(&config, &config.topics().raw, outgoing(&corpus)).await?;
    driftwood(&config, &["snapshot"])?;

    let space = env.dir().join("space.toml");
    std::fs::write(
        &space,
        "strategy = \"grid\"\nmetric = \"validation_accuracy\"\n\n[params]\n\
         learning_rate = [0.02, 0.3]\nhash_bits = [12, 16]\nepochs = [4]\n",
    )?;
    let out = driftwood(
        &config,
        &[
            "tune",
            "--space",
            &space.display().to_string(),
            "--parallel",
            "2",
            "--register",
            "--alias",
            "candidate",
        ],
    )?;
    eprintln!("{out}");
    let parent_id = out
        .split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .map(|w| w.trim_end_matches(':').to_string())
        .expect("the tuning run id");

    let meta = SqliteStore::in_data_dir(env.dir())?;
    let parent = meta.get_run(&parent_id).await?;
    assert_eq!(parent.tags.get("kind").map(String::as_str), Some("tuning"));
    assert_eq!(parent.status, RunStatus::Finished);
    let children: Vec<_> = meta
        .list_runs(Some("spam"))
        .await?
        .into_iter()
        .filter(|r| r.parent_run_id.as_deref() == Some(parent_id.as_str()))
        .collect();
    assert_eq!(children.len(), 4);
    let grid: BTreeSet<(String, String)> =
        children.iter().map(|r| (r.params["learning_rate"].clone(), r.params["hash_bits"].clone())).collect();
    assert_eq!(grid.len(), 4, "every grid point once: {grid:?}");
    assert!(
        children
            .iter()
            .all(|r| r.status == RunStatus::Finished && r.metrics.contains_key("validation_accuracy"))
    );
    // Concurrent: at least two trials were running at the same time.
    let overlap = children.iter().enumerate().any(|(i, a)| {
        children[i + 1..].iter().any(|b| {
            a.started_at < b.ended_at.expect("finished") && b.started_at < a.ended_at.expect("finished")
        })
    });
    assert!(overlap, "no two trials overlapped in time");

    // The best by validation accuracy is reported, recorded and registered.
    let top = children.iter().map(|r| r.metrics["validation_accuracy"]).fold(f64::MIN, f64::max);
    let best_id =
        out.split("best: run ").nth(1).and_then(|t| t.split_whitespace().next()).expect("a best run");
    let best = children.iter().find(|r| r.run_id == best_id).expect("the best is one of the trials");
    assert_eq!(best.metrics["validation_accuracy"], top, "ties go to the first trial, never a worse one");
    assert_eq!(parent.metrics["best_validation_accuracy"], top);
    let candidate = trainer::registry::resolve(&meta, "spam", "candidate").await?;
    assert_eq!(candidate.run_id, best.run_id);
    assert_eq!(meta.model_versions("spam").await?.len(), 1, "only the best trial is registered");
    trainer::model::load(&candidate, None)?;

    // `runs compare` puts the trials side by side: the differing params and the metrics.
    let table = driftwood(&config, &["runs", "compare", &parent_id])?;
    eprintln!("{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["learning_rate", "hash_bits", "validation_accuracy", "test_accuracy"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(!header.contains("epochs"), "a param equal in every trial is not a column: {header}");
    for child in &children {
        assert!(table.lines().any(|l| l.starts_with(&child.run_id)), "{table}");
    }
    let err = driftwood(&config, &["runs", "compare", &best.run_id]).unwrap_err().to_string();
    assert!(err.contains("no child runs"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bilstm_trains_end_to_end_and_beats_the_majority_baseline() -> anyhow::Result<()> {
    let env = TestEnv::start("lstm")?;
    let mut config = env.config();
    config.train.model = schemas::Family::BiLstm;
    config.train.tokenizer = tests::minilm_dir()?.join("tokenizer.json").display().to_string();
    config.train.epochs = 10;
    config.train.batch_size = 32;
    config.train.learning_rate = 0.01;
    config.train.max_tokens = 96;
    config.train.embedding_dim = 48;
    config.train.hidden_size = 48;
    tests::tokenizer_family_end_to_end(&config, 1200, async |_, _| Ok(())).await
}
