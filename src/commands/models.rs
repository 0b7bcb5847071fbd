//! `driftwood models ...`: the registry — list, show, promote, roll back, register a
//! TorchScript module — and batch scoring with a registered version.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use schemas::Config;
use serving::handle::{BatchingConfig, ModelHandle};
use trainer::registry::AliasChange;

use super::cli_actor;
use crate::cli::ModelsCommand;
use crate::{open, report};

pub(super) async fn run(config: &Config, cmd: ModelsCommand) -> Result<()> {
    let store = open::metadata(config).await?;
    match cmd {
        ModelsCommand::List => {
            for name in store.model_names().await? {
                let aliases = store.aliases(&name).await?;
                print!("{}", report::model_versions(&name, &store.model_versions(&name).await?, &aliases));
            }
        }
        ModelsCommand::Show { name, version } => {
            let mv = trainer::registry::resolve(store.as_ref(), &name, &version).await?;
            let card = trainer::artifact::read_card(Path::new(&mv.artifact_dir))?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": mv, "card": card}))?);
        }
        ModelsCommand::Predict { name, version, input, batch } => {
            let mv = trainer::registry::resolve(store.as_ref(), &name, &version).await?;
            trainer::set_threads(config.train.threads);
            let model = trainer::model::load(&mv, open::keyring(config)?.as_deref())?;
            // The model thread, as for REST and the scorer; one chunk is one forward pass.
            let batching = BatchingConfig { max_batch: batch.max(1), max_wait: Duration::ZERO, queue: 4 };
            let handle = ModelHandle::start(Some(model), open::plan(config)?, batching)?;
            let text = match &input {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
                }
                None => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
            };
            let texts = serving::batch::parse_texts(&text)?;
            let started = Instant::now();
            let n = serving::batch::score(&handle, texts, batch, &mut std::io::stdout().lock()).await?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{name} v{} ({}): {n} texts in {secs:.2} s, {:.1} texts/s",
                mv.version,
                mv.family,
                n as f64 / secs.max(1e-9)
            );
        }
        ModelsCommand::Promote { name, version, alias } => {
            let control = open::control(config)?;
            let actor = cli_actor();
            let change =
                AliasChange { name: &name, alias: &alias, actor: &actor, reason: "promoted by hand" };
            let previous =
                trainer::registry::promote(store.as_ref(), Some(&control), &change, version).await?;
            println!(
                "{name}@{alias}: v{version} (was {})",
                previous.map_or("none".into(), |p| format!("v{p}"))
            );
        }
        ModelsCommand::Register { name, torchscript, labels, hash_bits, max_ngram, data, alias } => {
            if !(1..=2).contains(&max_ngram) {
                bail!("--max-ngram must be 1 or 2");
            }
            if !schemas::config::HASH_BITS.contains(&hash_bits) {
                bail!("--hash-bits must be between 8 and 26");
            }
            let req = trainer::import::ImportRequest {
                name,
                module: torchscript,
                labels,
                hashing: trainer::features::HashingConfig { bits: hash_bits, max_ngram },
                dataset: config.snapshot.dataset.clone(),
                version: data,
                split: config.train.clone(),
                data_dir: open::data_dir(config),
                actor: cli_actor(),
            };
            let snapshots = open::snapshots(config)?;
            let control = open::control(config)?;
            let trained = trainer::import::import(store.as_ref(), &snapshots, &req).await?;
            let mv = trainer::train::register(
                store.as_ref(),
                Some(&control),
                &trained,
                Some(&alias),
                &cli_actor(),
            )
            .await?;
            println!(
                "registered {} v{} (torchscript, run {}): test accuracy {:.4} on {} rows",
                mv.name, mv.version, trained.run.run_id, trained.evaluation.accuracy, trained.evaluation.n
            );
        }
        ModelsCommand::Rollback { name, alias, reason } => {
            let control = open::control(config)?;
            let actor = cli_actor();
            let change = AliasChange { name: &name, alias: &alias, actor: &actor, reason: &reason };
            let (from, to) = trainer::registry::rollback(store.as_ref(), Some(&control), &change).await?;
            println!("{name}@{alias}: v{to} (was v{from})");
        }
    }
    Ok(())
}
