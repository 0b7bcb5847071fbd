//! The one configuration type.
//!
//! Sources, later ones winning: built-in defaults (work locally as they are), the TOML file
//! (`driftwood.toml`), `DRIFTWOOD_<SECTION>_<KEY>` environment variables (`DRIFTWOOD_DATA_DIR`
//! for top-level keys), then `--set section.key=value` flags. Everything is merged as TOML values,
//! deserialized with `deny_unknown_fields`, then validated; every error names the offending key.
//!
//! This module does no I/O: the caller reads the file and passes the environment.
//!
//! Each section lives in its own module with its defaults and its own `validate`; a validated
//! `Config` holds typed values (socket addresses, optional paths, enums), so no caller parses or
//! re-checks a setting. Unset optional strings are written `""` in TOML and read as `None`.

mod data;
mod drift;
mod kafka;
mod optional;
mod overrides;
mod serve;
mod train;

use serde::{Deserialize, Serialize};

pub use data::{CleanConfig, EncryptionConfig, SnapshotConfig, StoreBackend, StoreConfig};
pub use drift::DriftConfig;
pub use kafka::{Compression, IngestConfig, KafkaConfig, is_secret_property};
pub use overrides::Override;
pub use serve::{AuthConfig, FlightConfig, ServeConfig, TlsConfig};
pub use train::{RetrainConfig, TrainConfig};

use overrides::{apply_override, env_overrides, merge, set_override};

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
    "DRIFTWOOD_AZURITE_BIN",
    "DRIFTWOOD_FAKE_GCS_BIN",
    "DRIFTWOOD_CHROMIUM",
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

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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

    /// Semantic checks a deserializer cannot express, section by section.
    pub fn validate(&self) -> Result<()> {
        if self.data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        self.kafka.validate()?;
        self.ingest.validate()?;
        self.snapshot.validate()?;
        self.store.validate()?;
        self.train.validate()?;
        self.retrain.validate()?;
        self.serve.validate()?;
        self.flight.validate()?;
        self.auth.validate()?;
        self.tls.validate()?;
        self.drift.validate()?;
        Ok(())
    }

    pub fn topics(&self) -> crate::Topics {
        crate::Topics::with_prefix(&self.kafka.topic_prefix)
    }

    /// The consumer groups of every job, from `kafka.group_id`.
    pub fn groups(&self) -> crate::topics::Groups {
        crate::topics::Groups::with_base(&self.kafka.group_id)
    }
}

/// A check that a count is not zero.
pub(crate) fn positive(key: &str, v: usize) -> Result<()> {
    if v == 0 { Err(invalid(key, "must be greater than 0")) } else { Ok(()) }
}

/// Dataset and model names: they become directory names, table names and metric values.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
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
        let shipped = include_str!("../../../driftwood.toml");
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
    fn optional_settings_are_unset_when_empty_and_typed_when_given() {
        let c = load("[snapshot]\nremote = \"\"\n[clean]\nspec = \" \"\n", &[], &[]).unwrap();
        assert_eq!((c.snapshot.remote, c.clean.spec, c.serve.metrics_listen), (None, None, None));
        let sets = [
            "serve.metrics_listen=127.0.0.1:9101",
            "snapshot.remote=file:///backups",
            "clean.spec=specs/v2.toml",
            "serve.scorer_transactional_id=pod-1",
        ];
        let c = load("", &[], &sets).unwrap();
        assert_eq!(c.serve.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(c.snapshot.remote.as_deref(), Some("file:///backups"));
        assert_eq!(c.clean.spec, Some(std::path::PathBuf::from("specs/v2.toml")));
        assert_eq!(c.serve.scorer_transactional_id.as_deref(), Some("pod-1"));
        let c = load("", &[("DRIFTWOOD_SERVE_LISTEN", "0.0.0.0:9000")], &[]).unwrap();
        assert_eq!(c.serve.listen, "0.0.0.0:9000".parse().unwrap());
        check_err("", &[], &["serve.metrics_listen=localhost"], "serve.metrics_listen");
        check_err("", &[("DRIFTWOOD_FLIGHT_LISTEN", "50051")], &[], "flight.listen");
        // A typed config writes back to the same file text.
        let text = toml::to_string(&c).unwrap();
        assert_eq!(load(&text, &[], &[]).unwrap(), c);
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
