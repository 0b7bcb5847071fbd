//! A model trained and exported by PyTorch (`torch.jit.save`, `tests/py/torchscript_model.py`)
//! under the `driftwood-hashed-bag-v1` contract is registered with `driftwood models register`,
//! predicts in Rust what it predicted in Python (within 1e-5), and is served by the REST API
//! like a native model; modules that break the contract are refused.

use std::process::Command;

use metastore::SqliteStore;
use schemas::Split;
use stream::clean::{CleanPlan, CleanSpec};
use stream::store::SnapshotStore;
use tests::{TestEnv, corpus_dir, driftwood, outgoing, publish, python, run_ok, shuffle};
use trainer::features::{HashingConfig, featurize};

fn features(hashing: &HashingConfig, text: &str) -> serde_json::Value {
    let mut f = Vec::new();
    featurize(hashing, text, &mut f);
    serde_json::json!(f.iter().map(|(b, w)| serde_json::json!([b, w])).collect::<Vec<_>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pytorch_module_is_registered_served_and_predicts_as_in_python() -> anyhow::Result<()> {
    let env = TestEnv::start("script")?;
    let mut config = env.config();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let mut corpus = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 8);
    corpus.truncate(700);
    publish(&config, &config.topics().raw, outgoing(&corpus)).await?;
    driftwood(&config, &["snapshot"])?;

    // Features of the snapshot's (cleaned) texts, by Driftwood's featurizer, for PyTorch.
    let hashing = HashingConfig { bits: 16, max_ngram: 2 };
    let labels = ["ham", "spam"];
    let store = SnapshotStore::open(env.dir())?;
    let latest = store.latest("text")?.expect("a version");
    let (mut train, mut eval_texts) = (Vec::new(), Vec::new());
    for batch in store.read(&latest) {
        let batch = batch?;
        let col = |n: &str| {
            arrow::array::AsArray::as_string::<i32>(batch.column_by_name(n).expect("column")).clone()
        };
        let (ids, texts, ls) = (col("id"), col("text"), col("label"));
        for i in 0..batch.num_rows() {
            let split = Split::of(ids.value(i), config.train.validation_fraction, config.train.test_fraction);
            let y = labels.iter().position(|l| *l == ls.value(i)).expect("corpus labels");
            if split == Split::Train {
                train.push(serde_json::json!({"features": features(&hashing, texts.value(i)), "label": y}));
            } else if split == Split::Test && eval_texts.len() < 60 {
                eval_texts.push(texts.value(i).to_string());
            }
        }
    }
    let eval: Vec<_> = eval_texts.iter().map(|t| features(&hashing, t)).collect();
    let input = env.dir().join("features.json");
    std::fs::write(
        &input,
        serde_json::to_vec(
            &serde_json::json!({"buckets": 1 << hashing.bits, "labels": labels, "train": train, "eval": eval}),
        )?,
    )?;
    let (module, expected) = (env.dir().join("model.pt"), env.dir().join("predictions.json"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/torchscript_model.py");
    run_ok(Command::new(python()?).arg(&script).args([&input, &module, &expected]))?;
    let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(&expected)?)?;
    let expected: Vec<Vec<f32>> = serde_json::from_value(expected["probabilities"].clone())?;

    // Registered through the CLI: evaluated, profiled, versioned like a trained model.
    let out = driftwood(
        &config,
        &[
            "models",
            "register",
            "spam",
            "--torchscript",
            &module.display().to_string(),
            "--labels",
            "ham,spam",
            "--hash-bits",
            "16",
            "--alias",
            "production",
        ],
    )?;
    assert!(out.contains("registered spam v1 (torchscript"), "{out}");
    let meta = SqliteStore::in_data_dir(env.dir())?;
    let mv = trainer::registry::resolve(&meta, "spam", "production").await?;
    assert_eq!(mv.family, "torchscript");
    assert!(mv.metrics["test_accuracy"] > 0.9, "{:?}", mv.metrics);
    let card = trainer::artifact::read_card(std::path::Path::new(&mv.artifact_dir))?;
    assert!(!card.reference.features.is_empty(), "a reference profile for the drift monitor");

    // The same probabilities in Rust as in Python.
    let model = trainer::model::load(&mv, None)?;
    let refs: Vec<&str> = eval_texts.iter().map(String::as_str).collect();
    let got = model.predict(&refs)?;
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .flat_map(|(g, e)| g.iter().zip(e).map(|(a, b)| (a - b).abs()))
        .fold(0f32, f32::max);
    eprintln!("{} texts, largest difference Rust vs Python {worst:e}", got.len());
    assert!(worst <= 1e-5, "Rust and Python disagree by {worst}");

    // Served by the REST API like a native model.
    config.serve.listen = tests::free_addr()?;
    let _server = tests::spawn_driftwood(&config, &["serve", "--no-scorer"], "serve.log")?;
    let base = format!("http://{}", config.serve.listen);
    tests::wait_ready(&base).await?;
    let raw = "WIN a FREE prize now!!! Click http://win.example.com to claim $1000";
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/predict"))
        .json(&serde_json::json!({"text": raw}))
        .send()
        .await?
        .json()
        .await?;
    let cleaned = CleanPlan::compile(CleanSpec::default())?.clean_texts(&[raw]);
    let local = model.predict(&[cleaned[0].as_deref().expect("kept")])?;
    let served = r["predictions"][0]["probabilities"]["spam"].as_f64().expect("probabilities");
    assert_eq!(r["version"], 1);
    assert!((served - f64::from(local[0][1])).abs() < 1e-5, "{r}");

    // Modules that break the contract are refused with the reason, and nothing is registered.
    let wrong = env.dir().join("wrong.pt");
    run_ok(
        Command::new(python()?)
            .arg(&script)
            .args([&input, &wrong, &env.dir().join("w.json")])
            .args(["--classes", "3"]),
    )?;
    let register = |module: &std::path::Path| {
        let module = module.display().to_string();
        let args = [
            "models",
            "register",
            "spam",
            "--torchscript",
            &module,
            "--labels",
            "ham,spam",
            "--hash-bits",
            "16",
        ];
        driftwood(&config, &args).unwrap_err().to_string()
    };
    let err = register(&wrong);
    assert!(err.contains("needs [2, 2]"), "{err}");
    let junk = env.dir().join("junk.pt");
    std::fs::write(&junk, b"not a module")?;
    let err = register(&junk);
    assert!(err.contains("not a TorchScript module"), "{err}");
    assert_eq!(metastore::MetadataStore::model_versions(&meta, "spam").await?.len(), 1);
    Ok(())
}
