//! One seed, one model: training every family twice on the same data version with the same
//! seed, through the `driftwood` binary, registers byte-identical weights.

use ingest::source;
use metastore::SqliteStore;
use tests::{TestEnv, corpus_dir, driftwood, outgoing, publish, shuffle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_trains_the_same_weights_from_the_same_seed() -> anyhow::Result<()> {
    let env = TestEnv::start("repro")?;
    let mut config = env.config();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let minilm = tests::minilm_dir()?;
    config.train.tokenizer = minilm.join("tokenizer.json").display().to_string();
    config.train.pretrained = minilm.display().to_string();
    config.train.finetune_layers = 1;
    config.train.epochs = 2;
    config.train.max_tokens = 32;
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 12);
    corpus.truncate(300);
    publish(&config, &config.topics().raw, outgoing(&corpus)).await?;
    driftwood(&config, &["snapshot"])?;
    let meta = SqliteStore::in_data_dir(env.dir())?;
    for family in ["logreg", "bilstm", "minilm"] {
        let mut hashes = Vec::new();
        for seed in ["7", "7", "8"] {
            driftwood(&config, &["train", "--model", family, "--set", &format!("train.seed={seed}")])?;
            hashes.push(trainer::registry::resolve(&meta, "spam", "latest").await?.artifact_sha256);
        }
        assert_eq!(hashes[0], hashes[1], "{family}: one seed, two models");
        assert_ne!(hashes[0], hashes[2], "{family}: another seed, the same model");
    }
    Ok(())
}
