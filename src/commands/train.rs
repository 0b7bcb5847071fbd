//! `driftwood train` and `driftwood tune`: a run (or a search of child runs) on a data version,
//! registered as a model version.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use schemas::Config;
use trainer::train::TrainRequest;

use super::cli_actor;
use crate::{open, report};

/// The flags of `train`.
pub(super) struct Train {
    pub data: String,
    pub dataset: Option<String>,
    pub model: Option<schemas::Family>,
    pub alias: Option<String>,
}

/// The flags of `tune`.
pub(super) struct Tune {
    pub space: PathBuf,
    pub data: String,
    pub dataset: Option<String>,
    pub parallel: usize,
    pub cpus: Option<usize>,
    pub register: bool,
    pub alias: Option<String>,
}

fn request(config: &Config, dataset: Option<String>, version: String, alias: Option<String>) -> TrainRequest {
    TrainRequest {
        dataset: dataset.unwrap_or_else(|| config.snapshot.dataset.clone()),
        version,
        params: config.train.clone(),
        data_dir: open::data_dir(config),
        alias,
        actor: cli_actor(),
    }
}

pub(super) async fn train(config: &Config, args: Train) -> Result<()> {
    let mut req = request(config, args.dataset, args.data, args.alias);
    if let Some(m) = args.model {
        req.params.model = m;
    }
    let store = open::metadata(config).await?;
    let snapshots = open::snapshots(config)?;
    let control = open::control(config)?;
    let progress = ingest::publish::progress_bar(None, "training");
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    progress.set_message(format!("training {} on {} {}", req.params.model, req.dataset, req.version));
    progress.enable_steady_tick(Duration::from_millis(120));
    let out = trainer::train::train(store.as_ref(), &snapshots, &req, Some(&control)).await;
    progress.finish_and_clear();
    print!("{}", report::trained(&out?));
    Ok(())
}

pub(super) async fn tune(config: &Config, args: Tune) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.space).with_context(|| format!("reading {}", args.space.display()))?;
    let req = trainer::tune::TuneRequest {
        base: request(config, args.dataset, args.data, None),
        space: trainer::tune::SearchSpace::parse(&text)?,
        parallel: args.parallel,
        cpus: args.cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let store = open::metadata(config).await?;
    let snapshots = open::snapshots(config)?;
    let control = open::control(config)?;
    let out = trainer::tune::tune(store.as_ref(), &snapshots, &req, Some(&control)).await?;
    print!("{}", report::tuned(&out, &req.space.metric));
    if args.register {
        let best = &out.trials[out.best.context("no trial finished")?];
        let mv = trainer::train::register(
            store.as_ref(),
            Some(&control),
            best,
            args.alias.as_deref(),
            &cli_actor(),
        )
        .await?;
        println!("registered {} v{}", mv.name, mv.version);
    }
    Ok(())
}
