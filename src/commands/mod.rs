//! One function per CLI command: open what it needs ([`crate::open`]), call the crate that
//! owns the work or start a service ([`crate::services`]), print with [`crate::report`].

mod data;
mod keys;
mod models;
mod publish;
mod runs;
mod train;

use anyhow::{Context, Result, bail};
use schemas::Config;
use stream::job::SnapshotOptions;

use crate::cli::{AuthCommand, Command};
use crate::runtime::shutdown_token;
use crate::services::{self, with_metrics_endpoint};
use crate::{open, report};

/// Runs one command to its end.
pub async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Topics => {
            let topics = config.topics();
            ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
            println!("topics ready: {}", topics.all().join(", "));
        }
        Command::Publish(args) => publish::run(&config, args).await?,
        Command::Snapshot { follow, scored: true, tag, .. } => {
            let opts = SnapshotOptions { tags: tag, ..SnapshotOptions::from_config(&config, !follow) };
            let report = services::snapshot::run_scored(&config, &opts, &shutdown_token()).await?;
            print!("{}", report::scored_snapshot(&report));
        }
        Command::Snapshot { follow, group, tag, scored: false } => {
            let opts = SnapshotOptions {
                group,
                tags: tag,
                ..SnapshotOptions::from_config(&config, !follow && !group)
            };
            let registry = prometheus::Registry::new();
            let report = services::snapshot::run(&config, opts, registry, &shutdown_token()).await?;
            print!("{}", report::snapshot(&report, &config.topics().raw));
        }
        Command::Spec { first_default } => {
            let spec = match first_default {
                true => stream::clean::CleanSpec::first_default(),
                false => open::plan(&config)?.spec().clone(),
            };
            print!("# cleaning spec {}\n{}", spec.hash(), spec.to_toml());
        }
        Command::Data(cmd) => data::run(&config, cmd).await?,
        Command::Train { data, dataset, model, alias } => {
            train::train(&config, train::Train { data, dataset, model, alias }).await?
        }
        Command::Tune { space, data, dataset, parallel, cpus, register, alias } => {
            let tune = train::Tune { space, data, dataset, parallel, cpus, register, alias };
            train::tune(&config, tune).await?
        }
        Command::Lineage { model, prediction, json } => {
            let (meta, snapshots) = (open::metadata(&config).await?, open::snapshots(&config)?);
            let lineage = match (&prediction, &model) {
                (Some(id), _) => {
                    let scored = &config.snapshot.scored_dataset;
                    trainer::lineage::of_prediction(
                        meta.as_ref(),
                        &snapshots,
                        scored,
                        &config.topics().raw,
                        id,
                    )
                    .await?
                }
                (None, Some(m)) => {
                    let (name, version) = m.split_once('@').unwrap_or((m, "production"));
                    trainer::lineage::of_model(meta.as_ref(), &snapshots, name, version).await?
                }
                (None, None) => bail!("name a model or --prediction ID"),
            };
            match json {
                true => println!("{}", serde_json::to_string_pretty(&lineage)?),
                false => print!("{}", report::lineage(&lineage)),
            }
        }
        Command::Models(cmd) => models::run(&config, cmd).await?,
        Command::Runs(cmd) => runs::run(&config, cmd).await?,
        Command::Serve { no_scorer } => {
            let serve = services::serve::Serve {
                store: open::metadata(&config).await?,
                metrics: serving::metrics::Metrics::new(),
                scorer: !no_scorer && config.serve.scorer,
                auth: open::auth(&config)?,
            };
            services::serve::run(&config, serve, shutdown_token()).await?;
        }
        Command::Drift { until_idle } => {
            let (token, registry) = (shutdown_token(), prometheus::Registry::new());
            let store = open::metadata(&config).await?;
            let job = services::drift::run(&config, store, Some(&registry), until_idle, token.clone());
            with_metrics_endpoint(&config, registry.clone(), &token, !until_idle, job).await?;
        }
        Command::Retrainer => {
            let (token, registry) = (shutdown_token(), prometheus::Registry::new());
            let store = open::metadata(&config).await?;
            let job = services::retrainer::run(&config, store, Some(&registry), token.clone());
            with_metrics_endpoint(&config, registry.clone(), &token, true, job).await?;
        }
        Command::Flight => services::flight::run(&config, open::auth(&config)?, shutdown_token()).await?,
        Command::Auth(AuthCommand::HashPassword) => {
            let password = read_secret_stdin()?;
            println!("{}", serving::auth::hash_password(&password)?);
        }
        Command::Auth(AuthCommand::Token { user }) => {
            use schemas::auth::Authenticator;
            let password = read_secret_stdin()?;
            let issued = open::auth(&config)?.login(&user, &password)?;
            println!("{}", issued.token);
        }
        Command::Keys(command) => keys::run(&config, command).await?,
        Command::Up => services::up::run(&config, shutdown_token()).await?,
    }
    Ok(())
}

/// Who the audit log names for an action taken with the CLI: `cli:<login>`.
fn cli_actor() -> String {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn read_secret_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading stdin")?;
    let secret = line.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        bail!("expected the password on stdin");
    }
    Ok(secret)
}
