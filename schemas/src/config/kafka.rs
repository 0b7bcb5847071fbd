//! The `kafka` and `ingest` sections: brokers, topics, consumer groups, client passthrough,
//! consumer micro-batches and producer batching.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Result, invalid, positive};

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
    /// 0 on Apache Kafka, which returns the containing batch (the `resume_offset` test shows
    /// both brokers with and without it).
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

impl KafkaConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        let prefix_ok = !self.topic_prefix.is_empty()
            && self.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !prefix_ok {
            return Err(invalid("kafka.topic_prefix", "use ASCII letters, digits, '.', '_' or '-'"));
        }
        if self.partitions < 1 {
            return Err(invalid("kafka.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be at least 1"));
        }
        if self.resume_rewind < 0 {
            return Err(invalid("kafka.resume_rewind", "must not be negative"));
        }
        Ok(())
    }
}

impl IngestConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("ingest.max_record_bytes", self.max_record_bytes)?;
        positive("ingest.batch_max_rows", self.batch_max_rows)?;
        positive("ingest.batch_max_bytes", self.batch_max_bytes)
    }
}
