//! `driftwood`: the one binary. Each subcommand parses flags, builds the configuration and
//! hands over to a crate; no pipeline logic lives here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use schemas::Config;
use schemas::config::LogFormat;
use stream::clean::{CleanPlan, CleanSpec};
use stream::crypto::Keyring;
use stream::job::{SnapshotOptions, run_snapshot};
use stream::store::SnapshotStore;
use tokio_util::sync::CancellationToken;
use trainer::store::MetadataStore;

#[derive(Parser)]
#[command(name = "driftwood", version, about = "Streaming text data and inference pipeline")]
struct Cli {
    /// Configuration file (default: ./driftwood.toml when present; env DRIFTWOOD_CONFIG).
    #[arg(long, global = true, env = "DRIFTWOOD_CONFIG")]
    config: Option<PathBuf>,
    /// Override a setting: `--set section.key=value` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Shorthand for `--set data_dir=...`.
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Shorthand for `--set kafka.brokers=...`.
    #[arg(long, global = true)]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the Driftwood topics (idempotent).
    Topics,
    /// Send records to a topic (default: text.raw).
    Publish(PublishArgs),
    /// Consume text.raw, clean, and commit a snapshot version.
    Snapshot {
        /// Keep following the topic, committing periodically, until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Share the partitions with other snapshot workers through a consumer group (implies
        /// --follow).
        #[arg(long)]
        group: bool,
        /// Tag to record in the versions this run commits.
        #[arg(long)]
        tag: Vec<String>,
        /// Snapshot the predictions on text.scored into snapshot.scored_dataset instead.
        #[arg(long, conflicts_with = "group")]
        scored: bool,
    },
    /// Data versions.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model on a data version and register it.
    Train {
        /// Data version: latest, v<N>, a tag or an id.
        #[arg(long, default_value = "latest")]
        data: String,
        /// Dataset (default: snapshot.dataset).
        #[arg(long)]
        dataset: Option<String>,
        /// Model family (default: train.model).
        #[arg(long)]
        model: Option<String>,
        /// Alias to point at the new version (default: candidate).
        #[arg(long)]
        alias: Option<String>,
    },
    /// Search hyper-parameters: grid or random trials, run concurrently as child runs.
    Tune {
        /// The search space (TOML: strategy, metric, goal, trials, seed, [params]).
        #[arg(long)]
        space: PathBuf,
        /// Data version: latest, v<N>, a tag or an id.
        #[arg(long, default_value = "latest")]
        data: String,
        /// Dataset (default: snapshot.dataset).
        #[arg(long)]
        dataset: Option<String>,
        /// Trials at once (default: 2, at most the number of trials).
        #[arg(long, default_value_t = 2)]
        parallel: usize,
        /// Cores for the whole search (default: all); each trial gets cpus / parallel threads.
        #[arg(long)]
        cpus: Option<usize>,
        /// Register the best trial as a model version (alias: --alias, default candidate).
        #[arg(long)]
        register: bool,
        #[arg(long, requires = "register")]
        alias: Option<String>,
    },
    /// Registered models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Tracked runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Serve the REST API and run the online scorer.
    Serve {
        /// Do not run the Kafka scorer.
        #[arg(long)]
        no_scorer: bool,
    },
    /// Watch text.scored for drift against the served model's reference profile.
    Drift {
        /// Read the scored topic from the beginning to its current end, then stop.
        #[arg(long)]
        until_idle: bool,
    },
    /// Retrain, gate and promote on RetrainRequested events (the closed loop's trainer).
    Retrainer,
    /// Serve every data version and the predictions over Arrow Flight SQL.
    Flight,
    /// Authentication helpers.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Encryption keys at rest: the keyring and re-encryption.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run snapshot (follow, text and scored), serve + scorer, drift, the retrainer and
    /// Flight SQL in one process.
    Up,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print an argon2id hash of a password read from stdin (for the users file).
    HashPassword,
    /// Log in with a user's password (stdin) and print an access token.
    Token { user: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the keyring's key ids (never the keys) and which one is active.
    List,
    /// Add a new random key and make it active (creating the key file if needed); new data
    /// is encrypted with it, old data stays readable with the old keys.
    Add {
        /// Id of the new key (1-64 of A-Z a-z 0-9 _ . -).
        id: String,
    },
    /// Re-encrypt: re-seal every data key of the snapshot store under the active key, so that
    /// older keys can be removed. Version ids do not change.
    Reencrypt,
    /// Remove a key that no longer seals anything (run `reencrypt` first).
    Remove { id: String },
}

#[derive(Args)]
struct PublishArgs {
    /// SpamAssassin corpus directory (folders as labels).
    #[arg(long, group = "source")]
    corpus: Option<PathBuf>,
    /// Corpus folders to send (default: easy-ham-1,spam-1).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// JSONL file: one record per line, sent verbatim.
    #[arg(long, group = "source")]
    jsonl: Option<PathBuf>,
    /// Directory tree of text files, one record per file.
    #[arg(long, group = "source")]
    dir: Option<PathBuf>,
    /// With --dir: the first-level folder name is the label.
    #[arg(long)]
    labels_from_dirs: bool,
    /// Read records from stdin, one per line.
    #[arg(long, group = "source")]
    stdin: bool,
    /// Send to the labels topic instead of text.raw.
    #[arg(long)]
    labels: bool,
    /// Send at most this many records.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
enum DataCommand {
    /// List the versions of a dataset.
    List {
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Show one version's manifest.
    Show {
        version: String,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Tag a version.
    Tag {
        tag: String,
        version: String,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Rows added, removed and changed (by id) from version A to version B.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        dataset: Option<String>,
        /// Example ids to show per kind.
        #[arg(long, default_value_t = 5)]
        examples: usize,
    },
    /// Write a version's Parquet files and manifest into a directory.
    Checkout {
        version: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Upload versions and the objects the remote lacks.
    Push {
        /// Remote URL (default: snapshot.remote).
        #[arg(long)]
        remote: Option<String>,
        /// Push up to this version (default: all).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Download the versions and objects the local store lacks.
    Pull {
        #[arg(long)]
        remote: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Remove objects no version references.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every object of a version.
    Verify {
        #[arg(default_value = "latest")]
        version: String,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Join the labels published on text.labels onto the latest version (a new version).
    Label {
        #[arg(long)]
        dataset: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// List models, versions and aliases.
    List,
    /// Show one version (default: production).
    Show {
        name: String,
        #[arg(default_value = "production")]
        version: String,
    },
    /// Point an alias (default: production) at a version.
    Promote {
        name: String,
        version: u32,
        #[arg(long, default_value = "production")]
        alias: String,
    },
    /// Point an alias (default: production) back at the version it served before the current one.
    Rollback {
        name: String,
        #[arg(long, default_value = "production")]
        alias: String,
        #[arg(long, default_value = "rolled back by hand")]
        reason: String,
    },
    /// Batch scoring with a registered version: JSON lines of `{"text": ...}` (or plain strings)
    /// on stdin or from --input, cleaned with the configured spec, one JSON line per text out
    /// (`{"label", "confidence", "probabilities"}`, `null` where cleaning drops the text);
    /// throughput on stderr.
    Predict {
        name: String,
        #[arg(default_value = "production")]
        version: String,
        /// Input file (default: stdin).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Texts scored at once.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Register a TorchScript module exported from PyTorch (torch.jit.save) that follows the
    /// driftwood-hashed-bag-v1 contract (README, "TorchScript models").
    Register {
        name: String,
        /// The torch.jit.save file.
        #[arg(long)]
        torchscript: PathBuf,
        /// Class labels in the order of the module's output columns.
        #[arg(long, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        /// log2 of the hashing buckets the module was trained with.
        #[arg(long)]
        hash_bits: u32,
        /// Longest word n-gram hashed (1 or 2).
        #[arg(long, default_value_t = 2)]
        max_ngram: u32,
        /// Data version to evaluate and profile the module on: latest, v<N>, a tag or an id.
        #[arg(long, default_value = "latest")]
        data: String,
        /// Alias to point at the new version.
        #[arg(long, default_value = "candidate")]
        alias: String,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// List runs.
    List,
    /// Show a run with its params and metrics.
    Show { run_id: String },
    /// Params and final metrics of runs side by side; one tuning run compares its trials.
    Compare {
        #[arg(required = true)]
        run_ids: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    ingest::alloc::tune();
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli, config)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let path = cli.config.clone().or_else(|| {
        let default = PathBuf::from("driftwood.toml");
        default.is_file().then_some(default)
    });
    let text = match &path {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let mut sets = cli.sets.clone();
    if let Some(d) = &cli.data_dir {
        sets.push(format!("data_dir={d}"));
    }
    if let Some(b) = &cli.brokers {
        sets.push(format!("kafka.brokers={b}"));
    }
    let config = Config::load(text.as_deref(), std::env::vars(), &sets).with_context(|| match &path {
        Some(p) => format!("invalid configuration ({})", p.display()),
        None => "invalid configuration".to_string(),
    })?;
    Ok(config)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTWOOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Cancelled on SIGINT or SIGTERM: every task honours it and stops cleanly.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

fn plan(config: &Config) -> Result<Arc<CleanPlan>> {
    let spec = if config.clean.spec.is_empty() {
        CleanSpec::default()
    } else {
        let text = std::fs::read_to_string(&config.clean.spec)
            .with_context(|| format!("reading cleaning spec {}", config.clean.spec))?;
        CleanSpec::from_toml(&text)?
    };
    Ok(Arc::new(CleanPlan::compile(spec)?))
}

fn remote_url(config: &Config, remote: Option<String>) -> Result<String> {
    match remote.unwrap_or_else(|| config.snapshot.remote.clone()) {
        r if r.is_empty() => bail!("no remote: pass --remote URL or set snapshot.remote"),
        r => Ok(r),
    }
}

fn data_dir(config: &Config) -> PathBuf {
    PathBuf::from(&config.data_dir)
}

/// The keyring of `[encryption]` (or `DRIFTWOOD_ENCRYPTION_KEYS`), if one is configured.
fn keyring(config: &Config) -> Result<Option<Arc<Keyring>>> {
    let env = std::env::var(stream::crypto::KEYS_ENV).ok();
    Ok(Keyring::load(&config.encryption, env)?.map(Arc::new))
}

/// The snapshot store of the data dir, encrypting with the configured keyring.
fn snapshots(config: &Config) -> Result<SnapshotStore> {
    Ok(SnapshotStore::open(&data_dir(config))?.with_keyring(keyring(config)?))
}

async fn metadata(config: &Config) -> Result<Arc<dyn MetadataStore>> {
    Ok(trainer::store::open(config, &data_dir(config)).await?)
}

/// Runs `job` while serving `registry` on `serve.metrics_listen` (when `serve` and the key is
/// set); then cancels `token` and waits for the endpoint to stop.
async fn with_metrics_endpoint<T>(
    config: &Config,
    registry: prometheus::Registry,
    token: &CancellationToken,
    serve: bool,
    job: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let endpoint = if serve && !config.serve.metrics_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.serve.metrics_listen)
            .await
            .with_context(|| format!("binding serve.metrics_listen = {}", config.serve.metrics_listen))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
        let t = token.clone();
        let router = serving::api::metrics_router(registry);
        Some(tokio::spawn(serving::api::serve(listener, router, async move { t.cancelled().await })))
    } else {
        None
    };
    let result = job.await;
    token.cancel();
    if let Some(endpoint) = endpoint {
        endpoint.await??;
    }
    result
}

/// Who the audit log names for an action taken with the CLI: `cli:<login>`.
fn cli_actor() -> String {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn control(config: &Config) -> Result<ingest::control::ControlProducer> {
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    Ok(ingest::control::ControlProducer::new(producer, config.topics().control))
}

async fn run(cli: Cli, config: Config) -> Result<()> {
    match cli.command {
        Command::Topics => {
            let topics = config.topics();
            ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
            println!("topics ready: {}", topics.all().join(", "));
        }
        Command::Publish(args) => publish(&config, args).await?,
        Command::Snapshot { follow, scored: true, tag, .. } => {
            let store = snapshots(&config)?;
            let mut opts = SnapshotOptions::from_config(&config, !follow);
            opts.tags = tag;
            let report =
                stream::scored::run_scored_snapshot(&config, &store, &opts, &shutdown_token()).await?;
            print_commits(&report.commits);
            println!(
                "read {} scored records, {} duplicates, {} dead letters",
                report.records, report.duplicates, report.dead
            );
        }
        Command::Snapshot { follow, group, tag, scored: false } => {
            let store = snapshots(&config)?;
            let mut opts = SnapshotOptions::from_config(&config, !follow && !group);
            opts.group = group;
            opts.tags = tag;
            let control = control(&config)?;
            let token = shutdown_token();
            let registry = prometheus::Registry::new();
            opts.metrics = Some(stream::metrics::SnapshotMetrics::register(&registry)?);
            let follow = !opts.until_idle;
            // At a terminal: records read and rate, from the job's own counter.
            let progress = ingest::publish::progress_bar(None, "snapshot: records read");
            let ticker = opts.metrics.clone().map(|m| {
                let (progress, token) = (progress.clone(), token.clone());
                tokio::spawn(async move {
                    while !token.is_cancelled() {
                        progress.set_position(m.records.get());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            });
            let job = async {
                Ok(run_snapshot(&config, plan(&config)?, &store, &opts, Some(&control), &token).await?)
            };
            let report = with_metrics_endpoint(&config, registry, &token, follow, job).await;
            if let Some(ticker) = ticker {
                ticker.await?;
            }
            progress.finish_and_clear();
            let report = report?;
            print_commits(&report.commits);
            if report.commits.is_empty() {
                println!("nothing new on {}", config.topics().raw);
            }
            let dead: u64 = report.dead.values().sum();
            println!(
                "read {} records, {} dropped by cleaning, {} duplicates, {} dead letters {:?}",
                report.records, report.filtered, report.duplicates, dead, report.dead
            );
        }
        Command::Data(cmd) => data(&config, cmd).await?,
        Command::Train { data, dataset, model, alias } => {
            let mut params = config.train.clone();
            if let Some(m) = model {
                params.model = m;
            }
            let req = trainer::train::TrainRequest {
                dataset: dataset.unwrap_or_else(|| config.snapshot.dataset.clone()),
                version: data,
                params,
                data_dir: data_dir(&config),
                alias,
                actor: cli_actor(),
            };
            let store = metadata(&config).await?;
            let snapshots = snapshots(&config)?;
            let control = control(&config)?;
            let progress = ingest::publish::progress_bar(None, "training");
            progress.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            progress.set_message(format!("training {} on {} {}", req.params.model, req.dataset, req.version));
            progress.enable_steady_tick(Duration::from_millis(120));
            let out = trainer::train::train(store.as_ref(), &snapshots, &req, Some(&control)).await;
            progress.finish_and_clear();
            let out = out?;
            let e = &out.evaluation;
            println!(
                "run {}: trained {} v{} on {} ({} train / {} validation / {} test rows) in {:.1}s",
                out.run.run_id,
                out.model.name,
                out.model.version,
                &out.model.data_version[..12],
                out.rows[0],
                out.rows[1],
                out.rows[2],
                out.seconds
            );
            println!("test accuracy {:.4}, macro F1 {:.4}", e.accuracy, e.macro_f1);
            for (label, c) in &e.per_class {
                println!(
                    "  {label:>12}: precision {:.4} recall {:.4} f1 {:.4} (n={})",
                    c.precision, c.recall, c.f1, c.support
                );
            }
        }
        Command::Tune { space, data, dataset, parallel, cpus, register, alias } => {
            let text =
                std::fs::read_to_string(&space).with_context(|| format!("reading {}", space.display()))?;
            let space = trainer::tune::SearchSpace::parse(&text)?;
            let req = trainer::tune::TuneRequest {
                base: trainer::train::TrainRequest {
                    dataset: dataset.unwrap_or_else(|| config.snapshot.dataset.clone()),
                    version: data,
                    params: config.train.clone(),
                    data_dir: data_dir(&config),
                    alias: None,
                    actor: cli_actor(),
                },
                space,
                parallel,
                cpus: cpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            let store = metadata(&config).await?;
            let snapshots = snapshots(&config)?;
            let control = control(&config)?;
            let out = trainer::tune::tune(store.as_ref(), &snapshots, &req, Some(&control)).await?;
            let metric = &req.space.metric;
            println!(
                "tuning run {}: {} trials finished, {} failed",
                out.parent.run_id,
                out.trials.len(),
                out.failed.len()
            );
            for (params, why) in &out.failed {
                println!("  failed {params:?}: {why}");
            }
            let best = &out.trials[out.best.expect("tune returns a best trial")];
            println!("best: run {} {metric} {:.4}", best.run.run_id, best.run.metrics[metric]);
            if register {
                let mv = trainer::train::register(
                    store.as_ref(),
                    Some(&control),
                    best,
                    alias.as_deref(),
                    &cli_actor(),
                )
                .await?;
                println!("registered {} v{}", mv.name, mv.version);
            }
        }
        Command::Models(cmd) => models(&config, cmd).await?,
        Command::Runs(cmd) => runs(&config, cmd).await?,
        Command::Serve { no_scorer } => {
            let token = shutdown_token();
            let metrics = serving::metrics::Metrics::new();
            let auth = auth(&config)?;
            serve(&config, metadata(&config).await?, metrics, !no_scorer && config.serve.scorer, auth, token)
                .await?;
        }
        Command::Drift { until_idle } => {
            let (token, registry) = (shutdown_token(), prometheus::Registry::new());
            let job = drift(&config, metadata(&config).await?, Some(&registry), until_idle, token.clone());
            with_metrics_endpoint(&config, registry.clone(), &token, !until_idle, job).await?;
        }
        Command::Retrainer => {
            let (token, registry) = (shutdown_token(), prometheus::Registry::new());
            let job = retrainer(&config, metadata(&config).await?, Some(&registry), token.clone());
            with_metrics_endpoint(&config, registry.clone(), &token, true, job).await?;
        }
        Command::Flight => {
            let token = shutdown_token();
            flight(&config, auth(&config)?, token).await?;
        }
        Command::Auth(AuthCommand::HashPassword) => {
            let password = read_secret_stdin()?;
            println!("{}", serving::auth::hash_password(&password).map_err(anyhow::Error::msg)?);
        }
        Command::Auth(AuthCommand::Token { user }) => {
            use schemas::auth::Authenticator;
            let password = read_secret_stdin()?;
            let issued = auth(&config)?.login(&user, &password)?;
            println!("{}", issued.token);
        }
        Command::Keys(command) => keys(&config, command).await?,
        Command::Up => up(&config).await?,
    }
    Ok(())
}

/// `driftwood keys ...`: every change is audited with the CLI user.
async fn keys(config: &Config, command: KeysCommand) -> Result<()> {
    let audit = |action: &str, details: serde_json::Value| trainer::store::AuditRecord {
        at: chrono::Utc::now(),
        actor: cli_actor(),
        action: action.into(),
        details,
    };
    match command {
        KeysCommand::List => {
            let Some(keyring) = keyring(config)? else {
                println!("no keyring: data at rest is not encrypted (set [encryption] key_file)");
                return Ok(());
            };
            let usage = snapshots(config)?.key_usage()?;
            for id in keyring.ids() {
                let active = if id == keyring.active() { " (active)" } else { "" };
                let sealed = usage.get(id).copied().unwrap_or_default();
                println!("{id}{active}: seals {sealed} data keys");
            }
            for (id, n) in usage.iter().filter(|(id, _)| !keyring.ids().any(|k| k == id.as_str())) {
                println!("{id} (NOT IN THE KEYRING): seals {n} data keys, unreadable");
            }
        }
        KeysCommand::Add { id } => {
            let path = key_file(config)?;
            let keyring = if path.exists() {
                let mut k = Keyring::load(&config.encryption, None)?.expect("the key file is set");
                k.add(&id)?;
                k
            } else {
                Keyring::generate(&id)?
            };
            write_secret_file(&path, keyring.to_toml().as_bytes())?;
            metadata(config)
                .await?
                .append_audit(&audit("keys.add", serde_json::json!({ "key": id, "key_file": path })))
                .await?;
            println!("key {id} added to {} and active; new data is encrypted with it", path.display());
        }
        KeysCommand::Reencrypt => {
            let store = snapshots(config)?;
            let keyring = store.keyring().cloned().context("no keyring: set [encryption] key_file")?;
            let report = store.rewrap()?;
            let weights = trainer::model::reencrypt_weights(&data_dir(config).join("artifacts"), &keyring)?;
            metadata(config).await?
                .append_audit(&audit(
                    "keys.reencrypt",
                    serde_json::json!({ "active": keyring.active(), "snapshots": report, "weights": weights }),
                ))
                .await?;
            let moved: u64 = report.rewrapped.values().sum();
            println!(
                "snapshot data keys: {moved} re-sealed ({:?}), {} already under {}",
                report.rewrapped,
                report.current,
                keyring.active()
            );
            let sealed: u64 = weights.resealed.values().sum();
            println!(
                "model weights: {sealed} sealed anew ({:?}), {} already under {}",
                weights.resealed,
                weights.current,
                keyring.active()
            );
        }
        KeysCommand::Remove { id } => {
            let path = key_file(config)?;
            let mut keyring = Keyring::load(&config.encryption, None)?.expect("the key file is set");
            let still = snapshots(config)?.key_usage()?.get(&id).copied().unwrap_or_default();
            if still > 0 {
                bail!("key {id} still seals {still} data keys: run `driftwood keys reencrypt` first");
            }
            keyring.remove(&id)?;
            write_secret_file(&path, keyring.to_toml().as_bytes())?;
            metadata(config)
                .await?
                .append_audit(&audit("keys.remove", serde_json::json!({ "key": id, "key_file": path })))
                .await?;
            println!("key {id} removed from {}", path.display());
        }
    }
    Ok(())
}

/// The configured key file (`keys add` and `keys remove` edit it).
fn key_file(config: &Config) -> Result<PathBuf> {
    if config.encryption.key_file.is_empty() {
        bail!("set [encryption] key_file (DRIFTWOOD_ENCRYPTION_KEY_FILE) to where the keyring lives");
    }
    Ok(PathBuf::from(&config.encryption.key_file))
}

/// Writes a secret atomically, readable by its owner only.
fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("keys")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn publish(config: &Config, args: PublishArgs) -> Result<()> {
    use ingest::source::{self, Outgoing};
    let records: Vec<ingest::Result<Outgoing>> = if let Some(dir) = &args.corpus {
        let groups: Vec<&str> = if args.groups.is_empty() {
            source::CORPUS_PERIOD_1.to_vec()
        } else {
            args.groups.iter().map(String::as_str).collect()
        };
        source::corpus(dir, &groups)?.iter().map(|r| Ok(Outgoing::from_record(r))).collect()
    } else if let Some(file) = &args.jsonl {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        source::lines(std::io::BufReader::new(f)).collect()
    } else if let Some(dir) = &args.dir {
        source::text_dir(dir, args.labels_from_dirs)?.into_iter().map(Ok).collect()
    } else if args.stdin {
        source::lines(std::io::stdin().lock()).collect()
    } else {
        bail!("give a source: --corpus DIR, --jsonl FILE, --dir DIR or --stdin");
    };
    let records: Vec<_> = records.into_iter().take(args.limit.unwrap_or(usize::MAX)).collect();
    let topics = config.topics();
    let topic = if args.labels { &topics.labels } else { &topics.raw };
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let progress = ingest::publish::progress_bar(Some(records.len() as u64), "publishing");
    let summary = ingest::publish::publish(&producer, topic, records, &progress, &shutdown_token()).await?;
    println!("{topic}: {summary}");
    if let Some(e) = &summary.first_error {
        bail!("{} records failed, first error: {e}", summary.failed);
    }
    Ok(())
}

async fn data(config: &Config, cmd: DataCommand) -> Result<()> {
    let store = snapshots(config)?;
    let default = || config.snapshot.dataset.clone();
    match cmd {
        DataCommand::List { dataset } => {
            let datasets = match dataset {
                Some(d) => vec![d],
                None => store.datasets()?,
            };
            for d in datasets {
                let tags = store.tags(&d)?;
                println!("dataset {d}");
                println!(
                    "  {:>4}  {:12}  {:25}  {:>9}  {:>9}  {:12}  tags",
                    "seq", "id", "created", "rows", "added", "parent"
                );
                for m in store.versions(&d)? {
                    let mut t: Vec<&str> =
                        tags.iter().filter(|(_, id)| **id == m.id).map(|(t, _)| t.as_str()).collect();
                    t.extend(m.tags.iter().map(String::as_str));
                    println!(
                        "  {:>4}  {:12}  {:25}  {:>9}  {:>9}  {:12}  {}",
                        format!("v{}", m.seq),
                        m.short_id(),
                        m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        m.rows,
                        format!("+{}", m.added.rows),
                        m.parent.as_deref().map_or("-", |p| &p[..12]),
                        t.join(",")
                    );
                }
            }
        }
        DataCommand::Show { version, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        DataCommand::Tag { tag, version, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let m = store.tag(&d, &tag, &version)?;
            println!("tagged {d} v{} {} as {tag}", m.seq, m.short_id());
        }
        DataCommand::Diff { a, b, dataset, examples } => {
            let d = dataset.unwrap_or_else(default);
            let (ma, mb) = (store.resolve(&d, &a)?, store.resolve(&d, &b)?);
            let diff = stream::diff::diff(&store, &ma, &mb, examples).await?;
            println!(
                "{d} v{} → v{}: +{} added, -{} removed, ~{} changed, {} unchanged",
                ma.seq, mb.seq, diff.added, diff.removed, diff.changed, diff.unchanged
            );
            for (what, ids) in [
                ("added", &diff.examples_added),
                ("removed", &diff.examples_removed),
                ("changed", &diff.examples_changed),
            ] {
                if !ids.is_empty() {
                    println!("  {what}: {}", ids.join(", "));
                }
            }
        }
        DataCommand::Checkout { version, out, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            let files = store.checkout(&m, &out)?;
            println!(
                "checked out v{} {} ({} rows) into {}: {} files",
                m.seq,
                m.short_id(),
                m.rows,
                out.display(),
                files.len()
            );
        }
        DataCommand::Push { remote, version, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let url = remote_url(config, remote)?;
            let upto = version.map(|v| store.resolve(&d, &v)).transpose()?;
            let r = stream::remote::Remote::open(&url)?.push(&store, &d, upto.as_ref()).await?;
            println!(
                "pushed {d} to {url}: {} versions, {} objects ({} bytes), {} objects already there",
                r.versions, r.objects, r.bytes, r.skipped
            );
        }
        DataCommand::Pull { remote, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let url = remote_url(config, remote)?;
            let r = stream::remote::Remote::open(&url)?.pull(&store, &d).await?;
            println!(
                "pulled {d} from {url}: {} versions, {} objects ({} bytes), {} objects already here",
                r.versions, r.objects, r.bytes, r.skipped
            );
        }
        DataCommand::Gc { dry_run } => {
            let r = store.gc(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} unreferenced objects ({} bytes) and {} data keys, kept {}",
                r.removed, r.bytes, r.keys_removed, r.kept
            );
        }
        DataCommand::Verify { version, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            store.verify(&m)?;
            println!("v{} {}: {} objects verified", m.seq, m.short_id(), m.files.len());
        }
        DataCommand::Label { dataset } => {
            let d = dataset.unwrap_or_else(default);
            let r = stream::labels::join_labels(config, &store, &d, &shutdown_token()).await?;
            match &r.version {
                Some(m) => println!(
                    "{} labels read ({} dead letters); {} rows labeled; committed {d} v{} {}",
                    r.labels_read,
                    r.dead,
                    r.rows_labeled,
                    m.seq,
                    m.short_id()
                ),
                None => println!("no new labels on {}", config.topics().labels),
            }
        }
    }
    Ok(())
}

async fn models(config: &Config, cmd: ModelsCommand) -> Result<()> {
    let store = metadata(config).await?;
    match cmd {
        ModelsCommand::List => {
            for name in store.model_names().await? {
                let aliases = store.aliases(&name).await?;
                println!("model {name}");
                for mv in store.model_versions(&name).await? {
                    let a: Vec<&str> =
                        aliases.iter().filter(|(_, v)| **v == mv.version).map(|(a, _)| a.as_str()).collect();
                    println!(
                        "  v{:<3} {:8} data {}  test_accuracy {:.4}  run {}  {}",
                        mv.version,
                        mv.family,
                        &mv.data_version[..12],
                        mv.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN),
                        mv.run_id,
                        a.join(",")
                    );
                }
            }
        }
        ModelsCommand::Show { name, version } => {
            let mv = trainer::registry::resolve(store.as_ref(), &name, &version).await?;
            let card = trainer::model::read_card(Path::new(&mv.artifact_dir))?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"version": mv, "card": card}))?);
        }
        ModelsCommand::Predict { name, version, input, batch } => {
            let mv = trainer::registry::resolve(store.as_ref(), &name, &version).await?;
            let keys = keyring(config)?;
            trainer::set_threads(config.train.threads);
            let model = trainer::model::load(&mv, keys.as_deref())?;
            let plan = plan(config)?;
            if let Some(why) = model.spec_mismatch(&plan) {
                bail!("{why}");
            }
            let text = match &input {
                Some(path) => {
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
                }
                None => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
            };
            let mut texts = Vec::new();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let value: serde_json::Value =
                    serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
                match value.get("text").unwrap_or(&value).as_str() {
                    Some(t) => texts.push(t.to_string()),
                    None => bail!("line {}: expected {{\"text\": \"...\"}} or a JSON string", n + 1),
                }
            }
            let started = std::time::Instant::now();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for chunk in texts.chunks(batch.max(1)) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let cleaned = plan.clean_texts(&refs);
                let kept: Vec<&str> = cleaned.iter().flatten().map(String::as_str).collect();
                let mut probs = model.predict(&kept)?.into_iter();
                for c in &cleaned {
                    let line = match c {
                        None => serde_json::Value::Null,
                        Some(_) => {
                            let p = probs.next().context("one prediction per kept text")?;
                            let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0);
                            serde_json::json!({
                                "label": model.labels()[best], "confidence": p[best], "probabilities": p
                            })
                        }
                    };
                    writeln!(out, "{line}")?;
                }
            }
            out.flush()?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{name} v{} ({}): {} texts in {secs:.2} s, {:.1} texts/s",
                mv.version,
                mv.family,
                texts.len(),
                texts.len() as f64 / secs.max(1e-9)
            );
        }
        ModelsCommand::Promote { name, version, alias } => {
            let control = control(config)?;
            let previous = trainer::registry::promote(
                store.as_ref(),
                Some(&control),
                &name,
                version,
                &alias,
                &cli_actor(),
                "promoted by hand",
            )
            .await?;
            println!(
                "{name}@{alias}: v{version} (was {})",
                previous.map_or("none".into(), |p| format!("v{p}"))
            );
        }
        ModelsCommand::Register { name, torchscript, labels, hash_bits, max_ngram, data, alias } => {
            if !(1..=2).contains(&max_ngram) {
                bail!("--max-ngram must be 1 or 2");
            }
            if !(8..=26).contains(&hash_bits) {
                bail!("--hash-bits must be between 8 and 26");
            }
            let req = trainer::torchscript::ImportRequest {
                name,
                module: torchscript,
                labels,
                hashing: trainer::features::HashingConfig { bits: hash_bits, max_ngram },
                dataset: config.snapshot.dataset.clone(),
                version: data,
                split: config.train.clone(),
                data_dir: data_dir(config),
                actor: cli_actor(),
            };
            let snapshots = snapshots(config)?;
            let control = control(config)?;
            let trained = trainer::torchscript::import(store.as_ref(), &snapshots, &req).await?;
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
            let control = control(config)?;
            let (from, to) = trainer::registry::rollback(
                store.as_ref(),
                Some(&control),
                &name,
                &alias,
                &cli_actor(),
                &reason,
            )
            .await?;
            println!("{name}@{alias}: v{to} (was v{from})");
        }
    }
    Ok(())
}

async fn runs(config: &Config, cmd: RunsCommand) -> Result<()> {
    let store = metadata(config).await?;
    match cmd {
        RunsCommand::List => {
            for r in store.list_runs(None).await? {
                println!(
                    "{}  {:10}  {:8}  {}  test_accuracy {:.4}",
                    r.run_id,
                    r.experiment,
                    format!("{:?}", r.status).to_lowercase(),
                    r.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN)
                );
            }
        }
        RunsCommand::Show { run_id } => {
            println!("{}", serde_json::to_string_pretty(&store.get_run(&run_id).await?)?);
        }
        RunsCommand::Compare { run_ids } => {
            let mut runs = Vec::new();
            for id in &run_ids {
                runs.push(store.get_run(id).await?);
            }
            if let [parent] = runs.as_slice() {
                let children: Vec<_> = store
                    .list_runs(Some(&parent.experiment))
                    .await?
                    .into_iter()
                    .filter(|r| r.parent_run_id.as_deref() == Some(parent.run_id.as_str()))
                    .collect();
                if children.is_empty() {
                    bail!("run {} has no child runs: name two or more runs to compare", parent.run_id);
                }
                runs = children;
                runs.sort_by_key(|r| r.started_at);
            }
            print!("{}", trainer::tune::compare_table(&runs));
        }
    }
    Ok(())
}

async fn serve(
    config: &Config,
    store: Arc<dyn MetadataStore>,
    metrics: serving::metrics::Metrics,
    scorer: bool,
    auth: Arc<serving::auth::JwtAuth>,
    token: CancellationToken,
) -> Result<()> {
    use serving::handle::{BatchingConfig, ModelHandle};
    let plan = plan(config)?;
    let batching = BatchingConfig {
        max_batch: config.serve.max_batch,
        max_wait: Duration::from_millis(config.serve.max_wait_ms),
        queue: 1024,
    };
    let handle = ModelHandle::start(None, plan.clone(), batching)?;
    let (predlog, predlog_task) =
        serving::predlog::PredictionLog::start(store.clone(), metrics.clone(), token.clone());
    let (name, alias) = (config.serve.model.clone(), config.serve.alias.clone());
    // One keyring for the snapshot store and the model weights.
    let snapshots = Arc::new(snapshots(config)?);
    let keyring = snapshots.keyring().cloned();
    match serving::reload::reload_once(store.as_ref(), &handle, &name, &alias, keyring.clone()).await {
        Ok(Some(v)) => tracing::info!(model = %name, version = v, "serving"),
        Ok(None) => {
            tracing::warn!(model = %name, alias = %alias, "no model yet; /readyz stays 503 until one is promoted")
        }
        Err(e) => tracing::error!(error = %e, "could not load the model; waiting for another version"),
    }
    let reload = tokio::spawn(serving::reload::follow_alias(
        store.clone(),
        handle.clone(),
        name,
        alias,
        keyring,
        Duration::from_secs(2),
        token.clone(),
    ));
    let state = serving::api::AppState {
        model: handle.clone(),
        metrics: metrics.clone(),
        predlog: Some(predlog.clone()),
        max_texts: config.serve.max_request_texts,
        auth,
        limits: serving::api::Limits::from_config(&config.serve),
        broker: Some(serving::api::BrokerHealth::probe(&config.kafka, token.clone())?),
        store: store.clone(),
        snapshots,
        control: Some(Arc::new(control(config)?)),
    };
    let listener = tokio::net::TcpListener::bind(config.serve_addr())
        .await
        .with_context(|| format!("binding {}", config.serve.listen))?;
    tracing::info!(addr = %listener.local_addr()?, tls = config.tls.enabled(), "REST API listening");
    let t = token.clone();
    let (router, shutdown) = (serving::api::router(state), async move { t.cancelled().await });
    let api = if config.tls.enabled() {
        let tls = serving::tls::server_config(&config.tls).map_err(anyhow::Error::msg)?;
        let listener = serving::tls::TlsListener::new(listener, tls)?;
        tokio::spawn(serving::api::serve(listener, router, shutdown))
    } else {
        tokio::spawn(serving::api::serve(listener, router, shutdown))
    };
    let scorer_task = scorer.then(|| {
        let s = serving::scorer::Scorer {
            config: config.clone(),
            plan,
            model: handle,
            metrics,
            predlog: Some(predlog),
        };
        let t = token.clone();
        tokio::spawn(async move { s.run(false, &t).await })
    });
    if let Some(task) = scorer_task
        && let Err(e) = task.await?
    {
        token.cancel();
        api.await??;
        bail!("scorer failed: {e}");
    }
    api.await??;
    reload.await?;
    predlog_task.await?;
    Ok(())
}

async fn drift(
    config: &Config,
    store: Arc<dyn MetadataStore>,
    registry: Option<&prometheus::Registry>,
    until_idle: bool,
    token: CancellationToken,
) -> Result<()> {
    let (name, alias) = (&config.serve.model, &config.serve.alias);
    let mv = trainer::registry::resolve(store.as_ref(), name, alias).await?;
    let card = trainer::model::read_card(Path::new(&mv.artifact_dir))?;
    let watch = watch_of(&mv.name, mv.version, card);
    let references: drift::monitor::References = Arc::new(move |model: String, version: u32| {
        let store = store.clone();
        Box::pin(async move {
            let mv = store.get_model_version(&model, version).await.ok()?;
            trainer::model::read_card(Path::new(&mv.artifact_dir)).ok().map(|c| watch_of(&model, version, c))
        })
    });
    let d = &config.drift;
    println!(
        "watching {} v{} (windows of {} records; PSI > {}, KS p < {} with D >= {}, {} consecutive windows)",
        mv.name, mv.version, d.window, d.psi_threshold, d.ks_p_value, d.ks_min_effect, d.consecutive
    );
    let control = if d.publish_events && !until_idle { Some(control(config)?) } else { None };
    let metrics = registry.map(drift::metrics::DriftMetrics::register).transpose()?;
    drift::monitor::run_monitor(
        config,
        watch,
        references,
        until_idle,
        drift::monitor::Outputs { control: control.as_ref(), metrics: metrics.as_ref() },
        &token,
        |r, decision| {
            let psi: Vec<String> = r.psi.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            let ks: Vec<String> = r.ks.iter().map(|(k, v)| format!("{k} {:.3}", v.d)).collect();
            let mut flag = String::new();
            if !r.signals.is_empty() {
                let names: Vec<String> =
                    r.signals.iter().map(|s| format!("{} {}", s.feature, s.statistic)).collect();
                flag = format!("  drifting: {}", names.join(", "));
            }
            if decision.retrain {
                flag.push_str("  → RetrainRequested");
            }
            println!(
                "v{} window {:>3} ({} records): PSI {} | KS D {}{}",
                r.version,
                r.index,
                r.records,
                psi.join(", "),
                ks.join(", "),
                flag
            );
        },
    )
    .await?;
    Ok(())
}

/// What the drift monitor watches for a model version: its card's reference profile and test
/// accuracy.
fn watch_of(model: &str, version: u32, card: trainer::card::ModelCard) -> drift::monitor::Watch {
    drift::monitor::Watch {
        model: model.to_string(),
        version,
        reference_accuracy: card.metrics.get("test_accuracy").copied(),
        reference: card.reference,
    }
}

async fn retrainer(
    config: &Config,
    store: Arc<dyn MetadataStore>,
    registry: Option<&prometheus::Registry>,
    token: CancellationToken,
) -> Result<()> {
    let outcomes = prometheus::IntCounterVec::new(
        prometheus::Opts::new(schemas::metric_names::RETRAIN_TOTAL, "Retrain requests handled by outcome"),
        &["outcome"],
    )?;
    for outcome in ["promoted", "declined", "failed"] {
        outcomes.with_label_values(&[outcome]);
    }
    use schemas::metric_names as m;
    let runs = prometheus::IntCounterVec::new(
        prometheus::Opts::new(m::TRAINING_RUNS_TOTAL, "Training runs by the retrainer, by status"),
        &["status"],
    )?;
    let duration = prometheus::Histogram::with_opts(
        prometheus::HistogramOpts::new(
            m::TRAINING_DURATION_SECONDS,
            "Duration of the retrainer's training runs",
        )
        .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
    )?;
    let accuracy = prometheus::GaugeVec::new(
        prometheus::Opts::new(
            m::TRAINING_HOLDOUT_ACCURACY,
            "Recent-holdout accuracy of the last retrain, by role",
        ),
        &["role"],
    )?;
    for status in ["finished", "failed"] {
        runs.with_label_values(&[status]);
    }
    if let Some(registry) = registry {
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(accuracy.clone()))?;
    }
    let snapshots = snapshots(config)?;
    let control = control(config)?;
    let retrainer = trainer::retrain::Retrainer {
        data_dir: data_dir(config),
        base: config.train.clone(),
        policy: config.retrain.clone(),
        actor: "retrainer".into(),
        source: Some(trainer::retrain::SnapshotSource {
            kafka: config.kafka.clone(),
            topic: config.topics().raw,
        }),
    };
    println!("retrainer: waiting for RetrainRequested on {}", config.topics().control);
    trainer::retrain::run_retrainer(
        config,
        &retrainer,
        store.as_ref(),
        &snapshots,
        Some(&control),
        &token,
        |outcome| match outcome {
            Ok(o) => {
                let label = if o.promoted { "promoted" } else { "declined" };
                outcomes.with_label_values(&[label]).inc();
                if let Some(seconds) = o.train_seconds {
                    runs.with_label_values(&["finished"]).inc();
                    duration.observe(seconds);
                }
                for (role, value) in
                    [("candidate", o.candidate_accuracy), ("production", o.production_accuracy)]
                {
                    if let Some(v) = value {
                        accuracy.with_label_values(&[role]).set(v);
                    }
                }
                println!("retrain {} v{}: {label} ({})", o.model, o.production, o.reason);
            }
            Err(e) => {
                outcomes.with_label_values(&["failed"]).inc();
                runs.with_label_values(&["failed"]).inc();
                println!("retrain failed: {e}");
            }
        },
    )
    .await?;
    Ok(())
}

fn print_commits(commits: &[stream::store::Manifest]) {
    for m in commits {
        println!(
            "committed {} v{} {}: +{} rows, {} rows in all",
            m.dataset,
            m.seq,
            m.short_id(),
            m.added.rows,
            m.rows
        );
    }
}

/// The process's authenticator (users, keys); a warning when authentication is off.
fn auth(config: &Config) -> Result<Arc<serving::auth::JwtAuth>> {
    if !config.auth.enabled {
        tracing::warn!(
            "auth.enabled = false: every request is treated as an anonymous admin (local use only)"
        );
    }
    Ok(Arc::new(serving::auth::JwtAuth::from_config(&config.auth)?))
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

/// The Flight SQL server until `token` is cancelled.
async fn flight(config: &Config, auth: Arc<serving::auth::JwtAuth>, token: CancellationToken) -> Result<()> {
    let store = snapshots(config)?;
    let service = stream::flight::FlightSql::new(
        store,
        &config.snapshot.dataset,
        auth,
        config.flight.max_prepared,
        config.flight.cache_mb << 20,
    );
    stream::flight::serve(config.flight_addr(), config.tls.clone(), service, token).await?;
    Ok(())
}

async fn up(config: &Config) -> Result<()> {
    let token = shutdown_token();
    let store = metadata(config).await?;
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    // One registry for every component of this process, served on /metrics.
    let metrics = serving::metrics::Metrics::new();
    let snapshot = {
        let (config, token) = (config.clone(), token.clone());
        let snapshot_metrics = stream::metrics::SnapshotMetrics::register(&metrics.registry)?;
        tokio::spawn(async move {
            let store = snapshots(&config)?;
            let control = control(&config)?;
            let opts = SnapshotOptions {
                metrics: Some(snapshot_metrics),
                ..SnapshotOptions::from_config(&config, false)
            };
            run_snapshot(&config, plan(&config)?, &store, &opts, Some(&control), &token).await?;
            anyhow::Ok(())
        })
    };
    let scored_snapshot = {
        let (config, token) = (config.clone(), token.clone());
        tokio::spawn(async move {
            let store = snapshots(&config)?;
            let opts = SnapshotOptions::from_config(&config, false);
            stream::scored::run_scored_snapshot(&config, &store, &opts, &token).await?;
            anyhow::Ok(())
        })
    };
    let auth = auth(config)?;
    let flight_task = {
        let (config, token, auth) = (config.clone(), token.clone(), auth.clone());
        tokio::spawn(async move {
            // The other services keep running without Flight SQL; say so at once.
            flight(&config, auth, token)
                .await
                .inspect_err(|e| tracing::error!(error = %e, "Flight SQL server stopped"))
        })
    };
    let drift_task = {
        let (config, token, store, registry) =
            (config.clone(), token.clone(), store.clone(), metrics.registry.clone());
        tokio::spawn(async move {
            // Wait for a served model; the monitor then follows newer versions by itself.
            while !token.is_cancelled() {
                if store.get_alias(&config.serve.model, &config.serve.alias).await?.is_some() {
                    return drift(&config, store, Some(&registry), false, token).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            anyhow::Ok(())
        })
    };
    let retrain_task = {
        let (config, token, store, registry) =
            (config.clone(), token.clone(), store.clone(), metrics.registry.clone());
        tokio::spawn(async move {
            if config.retrain.enabled {
                retrainer(&config, store, Some(&registry), token).await
            } else {
                anyhow::Ok(())
            }
        })
    };
    let serve_result = serve(config, store, metrics, config.serve.scorer, auth, token.clone()).await;
    token.cancel();
    snapshot.await??;
    scored_snapshot.await??;
    flight_task.await??;
    drift_task.await??;
    retrain_task.await??;
    serve_result
}
