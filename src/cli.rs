//! The command line: clap types only. What each command does lives in [`crate::commands`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "driftwood", version, about = "Streaming text data and inference pipeline")]
pub struct Cli {
    /// Configuration file (default: ./driftwood.toml when present; env DRIFTWOOD_CONFIG).
    #[arg(long, global = true, env = "DRIFTWOOD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override a setting: `--set section.key=value` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Shorthand for `--set data_dir=...`.
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
    /// Shorthand for `--set kafka.brokers=...`.
    #[arg(long, global = true)]
    pub brokers: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Print the configured cleaning spec (clean.spec, else the built-in default) as TOML,
    /// headed by its hash.
    Spec {
        /// Print the first built-in default instead (strip_email_headers), the spec of datasets
        /// made before the second: save it and set clean.spec to keep writing them.
        #[arg(long)]
        first_default: bool,
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
        /// Model family: logreg, bilstm or minilm (default: train.model).
        #[arg(long)]
        model: Option<schemas::Family>,
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
    /// Where a model version, or one prediction, came from: model version → run → data version
    /// → raw version (Kafka offsets) → cleaning spec.
    Lineage {
        /// MODEL or MODEL@VERSION (a version, v<N>, an alias; default production).
        #[arg(required_unless_present = "prediction")]
        model: Option<String>,
        /// The record id of a prediction on the scored dataset (snapshot.scored_dataset).
        #[arg(long, conflicts_with = "model")]
        prediction: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
pub enum AuthCommand {
    /// Print an argon2id hash of a password read from stdin (for the users file).
    HashPassword,
    /// Log in with a user's password (stdin) and print an access token.
    Token { user: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
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
pub struct PublishArgs {
    /// SpamAssassin corpus directory (folders as labels).
    #[arg(long, group = "source")]
    pub corpus: Option<PathBuf>,
    /// Corpus folders to send (default: easy-ham-1,spam-1).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// JSONL file: one record per line, sent verbatim.
    #[arg(long, group = "source")]
    pub jsonl: Option<PathBuf>,
    /// Directory tree of text files, one record per file.
    #[arg(long, group = "source")]
    pub dir: Option<PathBuf>,
    /// With --dir: the first-level folder name is the label.
    #[arg(long)]
    pub labels_from_dirs: bool,
    /// Read records from stdin, one per line.
    #[arg(long, group = "source")]
    pub stdin: bool,
    /// Send to the labels topic instead of text.raw.
    #[arg(long)]
    pub labels: bool,
    /// Send at most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// List the versions of a dataset.
    List {
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Show one version's manifest (VERSION: vN, an id, a tag, latest, or DATASET@VERSION).
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
    /// Rows added, removed and changed (by id) from version A to version B. Either may be
    /// DATASET@VERSION, e.g. two datasets cleaned from the same raw data with two specs.
    Diff {
        a: String,
        b: String,
        #[arg(long)]
        dataset: Option<String>,
        /// Example ids to show per kind.
        #[arg(long, default_value_t = 5)]
        examples: usize,
    },
    /// Write a version's Parquet files and manifest into a directory (VERSION may be
    /// DATASET@VERSION).
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
    /// Clean a raw version into a dataset with a spec: a new dataset from the raw history, or
    /// the raw versions a dataset derived before lacks. The same spec on the same raw version
    /// writes the same objects and version. `snapshot` then follows the topic into it.
    Reprocess {
        /// The raw version: DATASET@VERSION (`text_raw@v3`) or a VERSION of snapshot.dataset's raw
        /// dataset.
        #[arg(long, default_value = "latest")]
        from: String,
        /// Cleaning spec (TOML); default: clean.spec, else the built-in default.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// The dataset to write.
        #[arg(long)]
        dataset: String,
        /// Tag to record in the version.
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Import files as raw data, then clean them into a dataset: CSV with a header (`text`,
    /// optional `id`, `label`, `source`), Parquet (the same columns), JSON lines (records as on
    /// Kafka), or a folder of text files (the folder names are the labels). Local, file:// or
    /// s3:// (an s3 URL ending with `/` is a folder). Files already imported are skipped.
    Import {
        source: String,
        /// The dataset to clean into (default: snapshot.dataset).
        #[arg(long)]
        dataset: Option<String>,
        /// The raw dataset to import into (default: the one the dataset was cleaned from, else
        /// `<dataset>_raw`).
        #[arg(long)]
        raw: Option<String>,
        /// Cleaning spec (TOML); default: clean.spec, else the built-in default.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Where refused rows are written (default: <data_dir>/rejects/<raw dataset>-<time>.jsonl).
        #[arg(long)]
        rejects: Option<PathBuf>,
    },
    /// Remove objects no version references, and raw objects past `snapshot.raw_retention_secs`.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every object of a version (VERSION may be DATASET@VERSION).
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
pub enum ModelsCommand {
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
pub enum RunsCommand {
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

impl Cli {
    /// The configuration: the file (`--config`, else `./driftwood.toml` when present), then
    /// `DRIFTWOOD_*` env, then `--set` flags and their shorthands.
    pub fn load_config(&self) -> anyhow::Result<schemas::Config> {
        use anyhow::Context;
        let path = self.config.clone().or_else(|| {
            let default = PathBuf::from("driftwood.toml");
            default.is_file().then_some(default)
        });
        let text = match &path {
            Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let mut sets = self.sets.clone();
        if let Some(d) = &self.data_dir {
            sets.push(format!("data_dir={d}"));
        }
        if let Some(b) = &self.brokers {
            sets.push(format!("kafka.brokers={b}"));
        }
        schemas::Config::load(text.as_deref(), std::env::vars(), &sets).with_context(|| match &path {
            Some(p) => format!("invalid configuration ({})", p.display()),
            None => "invalid configuration".to_string(),
        })
    }
}
