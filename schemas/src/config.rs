//! The one configuration type.
//!
//! Sources, later ones winning: built-in defaults (work locally as they are), the TOML file
//! (`driftwood.toml`), `DRIFTWOOD_<SECTION>_<KEY>` environment variables (`DRIFTWOOD_DATA_DIR`
//! for top-level keys), then `--set section.key=value` flags. Everything is merged as TOML values,
//! deserialized with `deny_unknown_fields`, then validated; every error names the offending key.
//!
//! This module does no I/O: the caller reads the file and passes the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// log2 of the hashing buckets a hashed-feature model may use: 256 to 64 Mi buckets.
pub const HASH_BITS: std::ops::RangeInclusive<u32> = 8..=26;
/// Environment variables with the `DRIFTWOOD_` prefix that belong to the tooling (scripts,
/// tests), not to the configuration; they are ignored by [`Config::load`].
pub const TOOLING_ENV: &[&str] = &[
    "DRIFTWOOD_CONFIG",
    "DRIFTWOOD_LOG",
    "DRIFTWOOD_CACHE",
    "DRIFTWOOD_TANSU_BIN",
    "DRIFTWOOD_CORPUS_DIR",
    "DRIFTWOOD_MINILM_DIR",
    "DRIFTWOOD_PYTHON",
    "DRIFTWOOD_DEV_DIR",
    // The keyring itself (TOML text), for deployments that pass secrets as environment.
    "DRIFTWOOD_ENCRYPTION_KEYS",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file does not parse.
    #[error("config file is not valid TOML: {0}")]
    Syntax(String),
    /// A value has the wrong type or an unknown key was given.
    #[error("invalid config at `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// An override (env var or `--set`) names no known key or is malformed.
    #[error("{origin}: {message}")]
    Override { origin: String, message: String },
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

/// Top-level configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where snapshots, artifacts and the embedded metadata store live.
    pub data_dir: String,
    /// `text` (human) or `json` (structured) logs.
    pub log_format: LogFormat,
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub snapshot: SnapshotConfig,
    pub clean: CleanConfig,
    pub train: TrainConfig,
    pub serve: ServeConfig,
    pub drift: DriftConfig,
    pub retrain: RetrainConfig,
    pub flight: FlightConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub encryption: EncryptionConfig,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Prefix of every topic name (`<prefix>.text.raw`, ...).
    pub topic_prefix: String,
    /// Base consumer group id; each service appends its role (`<group_id>.snapshot`, ...).
    pub group_id: String,
    /// Partitions of topics Driftwood creates.
    pub partitions: i32,
    /// Replication factor of topics Driftwood creates.
    pub replication_factor: i32,
    /// How many records before a resume offset a reader starts fetching (and skips up to the
    /// resume offset). tansu 0.6 only returns record batches whose *base* offset is at or
    /// after the fetch offset, so fetching from inside a batch silently skips the rest of that
    /// batch (or returns nothing for the last one); starting a batch earlier avoids that. If
    /// the first record read is still past the resume offset the reader doubles the distance.
    /// 0 on Apache Kafka, which returns the containing batch.
    pub resume_rewind: i64,
    /// Extra librdkafka properties passed through verbatim (e.g. `security.protocol`).
    pub client: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Larger values go to the dead-letter topic.
    pub max_record_bytes: usize,
    /// Micro-batch limits of the consumer.
    pub batch_max_rows: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait_ms: u64,
    /// Producer batching and compression.
    pub linger_ms: u64,
    pub compression: Compression,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Dataset name the snapshot job writes.
    pub dataset: String,
    /// In follow mode, commit a version after this many new rows...
    pub commit_max_rows: usize,
    /// ...or after this many seconds with at least one new row.
    pub commit_interval_secs: u64,
    /// Dataset the scored-topic snapshot job (`snapshot --scored`) writes.
    pub scored_dataset: String,
    /// Default remote of `data push`/`data pull`: `file:///dir` or `s3://bucket/prefix`.
    pub remote: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {
    /// Path of a cleaning spec (TOML); empty means the built-in default spec.
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Registered model name.
    pub name: String,
    /// Model family: `logreg`, `bilstm` or `minilm`.
    pub model: crate::Family,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// log2 of the number of hashing buckets of `logreg`.
    pub hash_bits: u32,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
    /// libtorch intra-op threads; 0 means all cores.
    pub threads: usize,
    /// `bilstm`: the `tokenizer.json` (the MiniLM WordPiece tokenizer, `scripts/setup`), the
    /// longest token sequence kept, and the layer sizes.
    pub tokenizer: String,
    pub max_tokens: usize,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    /// `minilm`: the pretrained MiniLM-L6 directory (`model.safetensors`, `config.json`,
    /// `tokenizer.json`; `scripts/setup` installs it) and how many of its top encoder layers
    /// are fine-tuned with the head (0: the head only).
    pub pretrained: String,
    pub finetune_layers: usize,
}

/// The Arrow Flight SQL server over data versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Address of the Flight SQL (gRPC) endpoint.
    pub listen: String,
    /// Open prepared statements kept per server; creating one more closes the oldest.
    pub max_prepared: usize,
    /// Memory for decoded versions (MiB of Arrow buffers): a version is loaded in the
    /// background when first queried, and later queries of it skip Parquet decoding. Least
    /// recently used versions leave first; 0 turns the cache off.
    pub cache_mb: usize,
}

/// Authentication and authorization of every API (REST and Flight SQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Off: every request is treated as an anonymous admin (local development only; a warning
    /// is logged). On: every request needs a valid bearer token with the route's role.
    pub enabled: bool,
    /// `iss` and `aud` of issued tokens; tokens with other values are refused.
    pub issuer: String,
    pub audience: String,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: u64,
    /// RS256 private keys (PEM files, PKCS#8 or PKCS#1, at least 2048 bits). The last one signs
    /// new tokens; all of them verify, so appending a key rotates without logging anyone out.
    pub signing_keys: Vec<String>,
    /// TOML file of users and service clients with argon2 password hashes and roles (see the
    /// README); a file because it holds secrets' hashes.
    pub users_file: String,
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_property(key: &str) -> bool {
    ["password", "secret", "key.pem", "token"].iter().any(|s| key.contains(s))
}

/// Secrets among the passthrough properties are shown as `<redacted>`.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: BTreeMap<&str, &str> = self
            .client
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_id", &self.group_id)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("resume_rewind", &self.resume_rewind)
            .field("client", &client)
            .finish()
    }
}

/// TLS of the servers (REST API, Flight SQL). Both files empty: plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain and private key.
    pub cert_file: String,
    pub key_file: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Encryption at rest (snapshot objects, model weights). The keyring comes from `key_file`
/// or, when that is empty, from the `DRIFTWOOD_ENCRYPTION_KEYS` environment variable (the
/// same TOML text); neither: data is written in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Path of the keyring file (`driftwood keys add` writes it; keep it out of git, mode 0600).
    pub key_file: String,
}

/// Which backend holds runs, the registry, audit records and the prediction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// SQLite, one file in the data dir: one machine.
    Sqlite,
    /// ScyllaDB or Cassandra (CQL v4), shared by every replica.
    Scylla,
}

/// The metadata store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// Contact points of the ScyllaDB cluster, comma-separated `host:port`.
    pub nodes: String,
    /// Keyspace of the tables; created (with `replication`) and migrated on start.
    pub keyspace: String,
    /// Replication map of the keyspace when it is created, in CQL, e.g.
    /// `{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}`.
    pub replication: String,
    /// Seconds prediction-log rows live; 0 keeps them.
    pub prediction_ttl_secs: u64,
    /// Seconds step-metric history rows live; 0 keeps them (a run's latest values stay).
    pub metric_ttl_secs: u64,
    /// Prediction-log partitions per model and hour (spreads one hour's writes over nodes).
    pub prediction_shards: u32,
    /// CQL user; empty: no authentication.
    pub username: String,
    /// File holding the CQL password (secrets only by file or env:
    /// `DRIFTWOOD_STORE_PASSWORD_FILE`).
    pub password_file: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            nodes: "127.0.0.1:9042".into(),
            keyspace: "driftwood".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            prediction_ttl_secs: 30 * 24 * 3600,
            metric_ttl_secs: 0,
            prediction_shards: 8,
            username: String::new(),
            password_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address of the REST API.
    pub listen: String,
    /// Registered model to serve and the alias to follow.
    pub model: String,
    pub alias: String,
    /// Dynamic batching: largest batch, and longest wait for one to fill. A batch closes
    /// earlier when the queue is empty and no request is being cleaned.
    pub max_batch: usize,
    pub max_wait_ms: u64,
    /// Largest number of texts in one predict request.
    pub max_request_texts: usize,
    /// Requests handled at once; more are answered 429 at once instead of queueing.
    pub max_concurrent_requests: usize,
    /// A request taking longer is answered 503 (`timeout`).
    pub request_timeout_ms: u64,
    /// Where `snapshot --follow`, `drift` and `retrainer` (which have no REST API) serve
    /// `/metrics`, e.g. `127.0.0.1:9101`; empty: not served.
    pub metrics_listen: String,
    /// Run the Kafka scorer next to the API.
    pub scorer: bool,
    /// Exactly-once scorer: scored records and the consumed offsets are committed in one Kafka
    /// transaction. Needs a broker with transactions (Apache Kafka ≥ 2.5); tansu 0.6 refuses
    /// them. Off: at-least-once (offsets committed after the records are acknowledged).
    pub scorer_transactions: bool,
    /// `transactional.id` of this scorer instance; unique per instance (e.g. the pod name).
    /// Empty: `<kafka.group_id>.scorer.<$HOSTNAME or "local">`.
    pub scorer_transactional_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Records per (tumbling) window.
    pub window: usize,
    /// Sliding windows: report every `slide` records over the last `window` (0: tumbling).
    /// `window` must be a multiple of it.
    pub slide: usize,
    /// Also close a (tumbling) window after this many seconds (0: by count only)...
    pub window_secs: u64,
    /// ...if it holds at least this many records.
    pub min_records: usize,
    /// PSI above which a feature is drifting.
    pub psi_threshold: f64,
    /// PSI above which a shift is worth a log line (and the class-mix PSI a chi-square needs).
    pub psi_warn: f64,
    /// KS: drifting when the p-value is below this...
    pub ks_p_value: f64,
    /// ...and D is at least this large (a large window makes tiny shifts significant).
    pub ks_min_effect: f64,
    /// Chi-square of the predicted classes: drifting below this p-value.
    pub chi_square_p_value: f64,
    /// Concept drift: a window's accuracy on labelled records (inline `label`s, or late ones
    /// from text.labels joined by id) drifting when more than this below the model's test
    /// accuracy...
    pub accuracy_drop: f64,
    /// ...over at least this many labelled records.
    pub min_labelled: usize,
    /// The label join keeps at most this many unmatched predictions and labels...
    pub label_join_capacity: usize,
    /// ...each for at most this long.
    pub label_ttl_secs: u64,
    /// Drift is confirmed after this many consecutive drifting windows.
    pub consecutive: usize,
    /// After a retrain request, this many windows pass before the next one.
    pub cooldown_windows: usize,
    /// Publish DriftDetected / RetrainRequested on the control topic.
    pub publish_events: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Retrain on RetrainRequested (`driftwood retrainer`, and in `driftwood up`).
    pub enabled: bool,
    /// Promote the candidate only if its holdout accuracy beats production's by this much.
    pub margin: f64,
    /// Fewer recent labelled holdout rows than this: no retrain (not enough evidence).
    pub min_holdout: usize,
    /// Before training, wait up to this long for the snapshot job to cover everything that was
    /// on the raw topic when the request arrived, so the candidate sees the drifted text
    /// (0: train on whatever the latest version is).
    pub catch_up_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: "./driftwood-data".into(),
            log_format: LogFormat::Text,
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            snapshot: SnapshotConfig::default(),
            clean: CleanConfig::default(),
            train: TrainConfig::default(),
            serve: ServeConfig::default(),
            drift: DriftConfig::default(),
            retrain: RetrainConfig::default(),
            flight: FlightConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            encryption: EncryptionConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "driftwood".into(),
            group_id: "driftwood".into(),
            partitions: 4,
            replication_factor: 1,
            resume_rewind: 10_000,
            client: BTreeMap::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_record_bytes: 1 << 20,
            batch_max_rows: 8192,
            batch_max_bytes: 16 << 20,
            batch_max_wait_ms: 200,
            linger_ms: 5,
            compression: Compression::Lz4,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dataset: "text".into(),
            commit_max_rows: 100_000,
            commit_interval_secs: 30,
            scored_dataset: "scored".into(),
            remote: String::new(),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            name: "spam".into(),
            model: crate::Family::LogReg,
            epochs: 30,
            batch_size: 256,
            learning_rate: 0.5,
            weight_decay: 0.0,
            hash_bits: 18,
            validation_fraction: 0.1,
            test_fraction: 0.2,
            seed: 42,
            threads: 0,
            tokenizer: String::new(),
            max_tokens: 128,
            embedding_dim: 64,
            hidden_size: 64,
            pretrained: String::new(),
            finetune_layers: 0,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            model: "spam".into(),
            alias: "production".into(),
            max_batch: 64,
            max_wait_ms: 2,
            max_request_texts: 256,
            max_concurrent_requests: 512,
            request_timeout_ms: 60_000,
            metrics_listen: String::new(),
            scorer: true,
            scorer_transactions: false,
            scorer_transactional_id: String::new(),
        }
    }
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig { listen: "127.0.0.1:50051".into(), max_prepared: 1024, cache_mb: 1024 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            issuer: "driftwood".into(),
            audience: "driftwood".into(),
            token_ttl_secs: 3600,
            signing_keys: Vec::new(),
            users_file: String::new(),
        }
    }
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig { enabled: true, margin: 0.01, min_holdout: 50, catch_up_secs: 60 }
    }
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window: 500,
            slide: 0,
            window_secs: 0,
            min_records: 100,
            psi_threshold: 0.2,
            psi_warn: 0.1,
            ks_p_value: 0.01,
            ks_min_effect: 0.1,
            chi_square_p_value: 0.01,
            accuracy_drop: 0.05,
            min_labelled: 50,
            label_join_capacity: 100_000,
            label_ttl_secs: 86_400,
            consecutive: 2,
            cooldown_windows: 10,
            publish_events: true,
        }
    }
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone)]
pub struct Override {
    /// `DRIFTWOOD_KAFKA_BROKERS` or `--set kafka.brokers=...`.
    pub origin: String,
    /// Key path, e.g. `["kafka", "brokers"]`.
    pub path: Vec<String>,
    pub raw: String,
}

impl Config {
    /// Builds the configuration from the file text (if any), the environment and `--set` flags.
    pub fn load<I>(file_text: Option<&str>, env: I, sets: &[String]) -> Result<Config>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let defaults =
            toml::Table::try_from(Config::default()).map_err(|e| invalid("<defaults>", e.to_string()))?;
        let mut merged = defaults.clone();
        if let Some(text) = file_text {
            let file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
            merge(&mut merged, file);
        }
        let mut overrides = env_overrides(&defaults, env)?;
        for set in sets {
            overrides.push(set_override(set)?);
        }
        for o in overrides {
            apply_override(&mut merged, &defaults, o)?;
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks a deserializer cannot express.
    pub fn validate(&self) -> Result<()> {
        let positive = |key: &str, v: usize| {
            if v == 0 { Err(invalid(key, "must be greater than 0")) } else { Ok(()) }
        };
        if self.data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        let prefix_ok = !self.kafka.topic_prefix.is_empty()
            && self.kafka.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(invalid("kafka.topic_prefix", "use ASCII letters, digits, '.', '_' or '-'"));
        }
        if self.store.backend == StoreBackend::Scylla {
            if self.store.nodes.split(',').all(|n| n.trim().is_empty()) {
                return Err(invalid("store.nodes", "name at least one `host:port` for the scylla backend"));
            }
            let ks = &self.store.keyspace;
            let ks_ok = (1..=48).contains(&ks.len())
                && ks.starts_with(|c: char| c.is_ascii_lowercase())
                && ks.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ks_ok {
                return Err(invalid(
                    "store.keyspace",
                    "use 1-48 lowercase ASCII letters, digits or '_', starting with a letter",
                ));
            }
            let r = self.store.replication.trim();
            if !(r.starts_with('{') && r.ends_with('}') && r.contains("'class'")) {
                return Err(invalid(
                    "store.replication",
                    "a CQL map with a 'class', e.g. {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
                ));
            }
            if self.store.prediction_shards == 0 {
                return Err(invalid("store.prediction_shards", "must be at least 1"));
            }
        }
        if self.kafka.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if self.kafka.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if self.kafka.resume_rewind < 0 {
            return Err(invalid("kafka.resume_rewind", "must not be negative"));
        }
        positive("ingest.max_record_bytes", self.ingest.max_record_bytes)?;
        positive("ingest.batch_max_rows", self.ingest.batch_max_rows)?;
        positive("ingest.batch_max_bytes", self.ingest.batch_max_bytes)?;
        positive("snapshot.commit_max_rows", self.snapshot.commit_max_rows)?;
        if !valid_name(&self.snapshot.dataset) {
            return Err(invalid("snapshot.dataset", "use lowercase letters, digits, '_' or '-'"));
        }
        if !valid_name(&self.train.name) {
            return Err(invalid("train.name", "use lowercase letters, digits, '_' or '-'"));
        }
        positive("train.epochs", self.train.epochs)?;
        positive("train.batch_size", self.train.batch_size)?;
        if self.train.learning_rate.is_nan() || self.train.learning_rate <= 0.0 {
            return Err(invalid("train.learning_rate", "must be greater than 0"));
        }
        if !HASH_BITS.contains(&self.train.hash_bits) {
            return Err(invalid("train.hash_bits", "must be between 8 and 26"));
        }
        let fractions_ok = (0.0..1.0).contains(&self.train.validation_fraction)
            && (0.0..1.0).contains(&self.train.test_fraction)
            && self.train.validation_fraction + self.train.test_fraction < 1.0;
        if !fractions_ok {
            return Err(invalid(
                "train.validation_fraction",
                "validation and test fractions must be in [0, 1) and sum to less than 1",
            ));
        }
        self.serve
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("serve.listen", format!("not a socket address: {e}")))?;
        positive("serve.max_batch", self.serve.max_batch)?;
        self.flight
            .listen
            .parse::<SocketAddr>()
            .map_err(|e| invalid("flight.listen", format!("not a socket address: {e}")))?;
        positive("flight.max_prepared", self.flight.max_prepared)?;
        if !valid_name(&self.snapshot.scored_dataset) || self.snapshot.scored_dataset == self.snapshot.dataset
        {
            return Err(invalid(
                "snapshot.scored_dataset",
                "use lowercase letters, digits, '_' or '-', and a name other than snapshot.dataset",
            ));
        }
        if self.auth.enabled && (self.auth.signing_keys.is_empty() || self.auth.users_file.is_empty()) {
            return Err(invalid("auth.enabled", "needs auth.signing_keys and auth.users_file"));
        }
        if self.auth.token_ttl_secs == 0 {
            return Err(invalid("auth.token_ttl_secs", "must be greater than 0"));
        }
        if self.tls.cert_file.is_empty() != self.tls.key_file.is_empty() {
            return Err(invalid("tls.cert_file", "set both tls.cert_file and tls.key_file, or neither"));
        }
        positive("serve.max_request_texts", self.serve.max_request_texts)?;
        positive("serve.max_concurrent_requests", self.serve.max_concurrent_requests)?;
        if self.serve.request_timeout_ms == 0 {
            return Err(invalid("serve.request_timeout_ms", "must be greater than 0"));
        }
        positive("drift.window", self.drift.window)?;
        positive("drift.consecutive", self.drift.consecutive)?;
        if self.drift.slide > 0 && !self.drift.window.is_multiple_of(self.drift.slide) {
            return Err(invalid("drift.slide", "must divide drift.window (or be 0 for tumbling windows)"));
        }
        for (key, v) in [
            ("drift.ks_p_value", self.drift.ks_p_value),
            ("drift.chi_square_p_value", self.drift.chi_square_p_value),
            ("drift.ks_min_effect", self.drift.ks_min_effect),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(invalid(key, "must be between 0 and 1"));
            }
        }
        if !(self.retrain.margin.is_finite() && self.retrain.margin >= 0.0) {
            return Err(invalid("retrain.margin", "must be 0 or more"));
        }
        if self.drift.psi_threshold.is_nan() || self.drift.psi_threshold <= 0.0 {
            return Err(invalid("drift.psi_threshold", "must be greater than 0"));
        }
        Ok(())
    }

    pub fn topics(&self) -> crate::Topics {
        crate::Topics::with_prefix(&self.kafka.topic_prefix)
    }

    /// The consumer groups of every job, from `kafka.group_id`.
    pub fn groups(&self) -> crate::topics::Groups {
        crate::topics::Groups::with_base(&self.kafka.group_id)
    }

    /// The listen address, validated by [`Config::validate`].
    pub fn serve_addr(&self) -> SocketAddr {
        self.serve.listen.parse().expect("validated in Config::validate")
    }

    /// The Flight SQL listen address, validated by [`Config::validate`].
    pub fn flight_addr(&self) -> SocketAddr {
        self.flight.listen.parse().expect("validated in Config::validate")
    }
}

/// Dataset and model names: they become directory names, table names and metric values.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn env_overrides<I>(defaults: &toml::Table, env: I) -> Result<Vec<Override>>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut out = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("DRIFTWOOD_") && !TOOLING_ENV.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = name["DRIFTWOOD_".len()..].to_ascii_lowercase();
        let section = defaults.iter().find_map(|(k, v)| {
            let tail = rest.strip_prefix(k.as_str())?.strip_prefix('_')?;
            matches!(v, toml::Value::Table(_)).then(|| (k.clone(), tail.to_string()))
        });
        let path = match section {
            Some((section, key)) => vec![section, key],
            None => vec![rest],
        };
        out.push(Override { origin: name, path, raw });
    }
    Ok(out)
}

fn set_override(set: &str) -> Result<Override> {
    let origin = format!("--set {set}");
    let (key, raw) = set.split_once('=').ok_or_else(|| ConfigError::Override {
        origin: origin.clone(),
        message: "expected key=value".into(),
    })?;
    let key = key.trim();
    // librdkafka property names contain dots: everything after `kafka.client.` is one key.
    let path: Vec<String> = match key.strip_prefix("kafka.client.") {
        Some(property) => vec!["kafka".into(), "client".into(), property.into()],
        None => key.split('.').map(str::to_string).collect(),
    };
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Override { origin, message: "empty key segment".into() });
    }
    Ok(Override { origin, path, raw: raw.to_string() })
}

fn apply_override(merged: &mut toml::Table, defaults: &toml::Table, o: Override) -> Result<()> {
    let unknown = |o: &Override| ConfigError::Override {
        origin: o.origin.clone(),
        message: format!("no setting named `{}`", o.path.join(".")),
    };
    // Find the default value to learn the expected type; maps (kafka.client) accept any key.
    let mut default: Option<&toml::Value> = None;
    let mut table = defaults;
    for (i, seg) in o.path.iter().enumerate() {
        match table.get(seg) {
            Some(toml::Value::Table(t)) if i + 1 < o.path.len() => table = t,
            Some(v) if i + 1 == o.path.len() => default = Some(v),
            None if i + 1 == o.path.len() && i > 0 && table.is_empty() => default = None,
            _ => return Err(unknown(&o)),
        }
    }
    let value = match default {
        Some(toml::Value::String(_)) | None => toml::Value::String(o.raw.clone()),
        Some(_) => parse_scalar(&o.raw),
    };
    let mut target = merged;
    for seg in &o.path[..o.path.len() - 1] {
        let entry = target.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        target = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(unknown(&o)),
        };
    }
    target.insert(o.path[o.path.len() - 1].clone(), value);
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<Config> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(Some(file), env, &sets)
    }

    fn check_err(file: &str, env: &[(&str, &str)], sets: &[&str], expected: &str) {
        let err = load(file, env, sets).expect_err("config should be refused").to_string();
        assert!(err.contains(expected), "error `{err}` should contain `{expected}`");
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[], &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn the_scylla_store_is_checked() {
        let env = [("DRIFTWOOD_STORE_BACKEND", "scylla"), ("DRIFTWOOD_STORE_NODES", "db-1:9042,db-2:9042")];
        let c = load("", &env, &[]).unwrap();
        assert_eq!((c.store.backend, c.store.nodes.as_str()), (StoreBackend::Scylla, "db-1:9042,db-2:9042"));
        let scylla = ["store.backend=scylla"];
        check_err("", &[], &["store.backend=scylla", "store.nodes= , "], "store.nodes");
        check_err("", &[], &[scylla[0], "store.keyspace=Drift-wood"], "store.keyspace");
        check_err("", &[], &[scylla[0], "store.keyspace=a; DROP"], "store.keyspace");
        check_err("", &[], &[scylla[0], "store.replication=3"], "store.replication");
        check_err("", &[], &[scylla[0], "store.prediction_shards=0"], "store.prediction_shards");
        check_err("", &[], &["store.backend=postgres"], "store");
        // The embedded backend ignores the ScyllaDB keys.
        assert!(load("", &[], &["store.keyspace=Whatever"]).is_ok());
    }

    #[test]
    fn the_shipped_config_file_is_the_defaults() {
        let shipped = include_str!("../../driftwood.toml");
        assert_eq!(load(shipped, &[], &[]).unwrap(), Config::default());
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = "data_dir = \"/a\"\n[kafka]\nbrokers = \"file:1\"\npartitions = 2\n";
        let c = load(file, &[], &[]).unwrap();
        assert_eq!((c.data_dir.as_str(), c.kafka.brokers.as_str(), c.kafka.partitions), ("/a", "file:1", 2));

        let env = [
            ("DRIFTWOOD_KAFKA_BROKERS", "env:1"),
            ("DRIFTWOOD_DATA_DIR", "/b"),
            ("DRIFTWOOD_KAFKA_PARTITIONS", "8"),
        ];
        let c = load(file, &env, &[]).unwrap();
        assert_eq!((c.data_dir.as_str(), c.kafka.brokers.as_str(), c.kafka.partitions), ("/b", "env:1", 8));

        let c = load(file, &env, &["kafka.brokers=flag:1"]).unwrap();
        assert_eq!(c.kafka.brokers, "flag:1");
    }

    #[test]
    fn env_strings_that_look_like_numbers_stay_strings() {
        let c = load("", &[("DRIFTWOOD_SNAPSHOT_DATASET", "2024")], &[]).unwrap();
        assert_eq!(c.snapshot.dataset, "2024");
    }

    #[test]
    fn passthrough_client_properties() {
        let c = load("[kafka.client]\n\"security.protocol\" = \"ssl\"\n", &[], &[]).unwrap();
        assert_eq!(c.kafka.client.get("security.protocol").map(String::as_str), Some("ssl"));
        let c = load("", &[], &["kafka.client.fetch.wait.max.ms=10"]).unwrap();
        assert_eq!(c.kafka.client.get("fetch.wait.max.ms").map(String::as_str), Some("10"));
    }

    #[test]
    fn tooling_variables_are_not_config() {
        assert!(load("", &[("DRIFTWOOD_CACHE", "/x"), ("DRIFTWOOD_CONFIG", "f")], &[]).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        check_err("[kafka]\nbrokerz = \"x\"\n", &[], &[], "kafka");
        check_err("[kafka]\nbrokerz = \"x\"\n", &[], &[], "brokerz");
        check_err("[kafka]\npartitions = \"four\"\n", &[], &[], "kafka.partitions");
        check_err("[kafka]\npartitions = 0\n", &[], &[], "kafka.partitions");
        check_err("[serve]\nlisten = \"nowhere\"\n", &[], &[], "serve.listen");
        check_err("[ingest]\ncompression = \"brotli\"\n", &[], &[], "ingest.compression");
        check_err("", &[("DRIFTWOOD_KAFKA_BROKERZ", "x")], &[], "DRIFTWOOD_KAFKA_BROKERZ");
        check_err("", &[("DRIFTWOOD_NOPE", "x")], &[], "DRIFTWOOD_NOPE");
        check_err("", &[("DRIFTWOOD_TRAIN_EPOCHS", "many")], &[], "train.epochs");
        check_err("", &[], &["serve"], "--set serve");
        check_err("", &[], &["serve.nope=1"], "serve.nope");
        check_err("data_dir = [", &[], &[], "not valid TOML");
        check_err(
            "[train]\nvalidation_fraction = 0.6\ntest_fraction = 0.5\n",
            &[],
            &[],
            "train.validation_fraction",
        );
    }

    #[test]
    fn kafka_secrets_never_show_in_debug_output() {
        let mut kafka = KafkaConfig::default();
        for (k, v) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.username", "svc"),
            ("sasl.password", "hunter2-sasl"),
            ("ssl.key.password", "hunter2-key"),
            ("sasl.oauthbearer.client.secret", "hunter2-oauth"),
        ] {
            kafka.client.insert(k.into(), v.into());
        }
        let config = Config { kafka, ..Config::default() };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("sasl_ssl") && shown.contains("\"svc\"") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
