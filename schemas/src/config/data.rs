//! The `snapshot`, `clean`, `encryption` and `store` sections: where data versions, their
//! cleaning spec, their keys and the metadata live.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Result, invalid, positive, valid_name};

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
    /// Raw dataset the snapshot job commits the records as read to, before cleaning (each
    /// version of `dataset` records the raw version it was cleaned from). `auto`: the one the
    /// dataset's latest version was cleaned from, else `<dataset>_raw`; empty: no raw data.
    pub raw_dataset: String,
    /// Seconds raw data is kept: `data gc` expires raw objects committed longer ago (once a
    /// processed dataset has been cleaned from them) and deletes them; the manifests stay. 0
    /// keeps all raw data.
    pub raw_retention_secs: u64,
    /// Default remote of `data push`/`data pull`: `file:///dir` or `s3://bucket/prefix`;
    /// unset: those commands need `--remote`.
    #[serde(with = "super::optional")]
    pub remote: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanConfig {
    /// Path of a cleaning spec (TOML); unset means the built-in default spec.
    #[serde(with = "super::optional")]
    pub spec: Option<PathBuf>,
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
    /// PEM file of the CA that signed the nodes' certificates; set: every connection is TLS
    /// (OpenSSL) and a node's certificate must be valid for its IP address (the driver
    /// verifies the address it dialled). Empty: plaintext.
    pub tls_ca_file: String,
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
            tls_ca_file: String::new(),
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
            raw_dataset: "auto".into(),
            raw_retention_secs: 0,
            remote: None,
        }
    }
}

impl SnapshotConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("snapshot.commit_max_rows", self.commit_max_rows)?;
        if !valid_name(&self.dataset) {
            return Err(invalid("snapshot.dataset", "use lowercase letters, digits, '_' or '-'"));
        }
        if !valid_name(&self.scored_dataset) || self.scored_dataset == self.dataset {
            return Err(invalid(
                "snapshot.scored_dataset",
                "use lowercase letters, digits, '_' or '-', and a name other than snapshot.dataset",
            ));
        }
        let raw = &self.raw_dataset;
        if !raw.is_empty()
            && raw != "auto"
            && (!valid_name(raw) || raw == &self.dataset || raw == &self.scored_dataset)
        {
            return Err(invalid(
                "snapshot.raw_dataset",
                "use `auto`, \"\" for no raw data, or lowercase letters, digits, '_' or '-' naming \
                 a dataset other than the other two",
            ));
        }
        Ok(())
    }
}

impl StoreConfig {
    /// The ScyllaDB keys are checked only when that backend is chosen.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.backend != StoreBackend::Scylla {
            return Ok(());
        }
        if self.nodes.split(',').all(|n| n.trim().is_empty()) {
            return Err(invalid("store.nodes", "name at least one `host:port` for the scylla backend"));
        }
        let ks = &self.keyspace;
        let ks_ok = (1..=48).contains(&ks.len())
            && ks.starts_with(|c: char| c.is_ascii_lowercase())
            && ks.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ks_ok {
            return Err(invalid(
                "store.keyspace",
                "use 1-48 lowercase ASCII letters, digits or '_', starting with a letter",
            ));
        }
        let r = self.replication.trim();
        if !(r.starts_with('{') && r.ends_with('}') && r.contains("'class'")) {
            return Err(invalid(
                "store.replication",
                "a CQL map with a 'class', e.g. {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}",
            ));
        }
        if self.prediction_shards == 0 {
            return Err(invalid("store.prediction_shards", "must be at least 1"));
        }
        Ok(())
    }
}
