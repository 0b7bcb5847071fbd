//! librdkafka clients built from the configuration, and topic administration.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use schemas::config::{IngestConfig, KafkaConfig};

use crate::{Error, Result};

/// Timeout of metadata and admin requests.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Common client settings plus the configured passthrough properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    c.set("client.id", "driftwood");
    c.set("log_level", "3");
    for (k, v) in &kafka.client {
        c.set(k, v);
    }
    c
}

/// An idempotent producer with the configured batching and compression.
pub fn producer(kafka: &KafkaConfig, ingest: &IngestConfig) -> Result<FutureProducer> {
    let mut c = client_config(kafka);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", ingest.linger_ms.to_string())
        .set("compression.type", ingest.compression.as_librdkafka())
        .set("message.max.bytes", (ingest.max_record_bytes + 64 * 1024).max(1_000_000).to_string())
        .set("queue.buffering.max.messages", "200000")
        .set("delivery.timeout.ms", "60000");
    c.create().map_err(Error::kafka("creating a producer"))
}

/// A consumer for metadata and watermark queries.
pub fn metadata_client(kafka: &KafkaConfig) -> Result<BaseConsumer> {
    client_config(kafka).create().map_err(Error::kafka("creating a metadata client"))
}

/// Partition ids of `topic`, sorted; an error if the topic does not exist.
pub fn partitions(client: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = client
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(Error::kafka(format!("fetching metadata of {topic}")))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::Input(format!("topic {topic} does not exist")))?;
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        return Err(Error::Input(format!("topic {topic} is not available: {code}")));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(Error::Input(format!("topic {topic} does not exist or has no partitions")));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates the topics that do not exist yet (idempotent).
pub async fn ensure_topics(kafka: &KafkaConfig, names: &[&str]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka).create().map_err(Error::kafka("creating an admin client"))?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, kafka.partitions, TopicReplication::Fixed(kafka.replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin.create_topics(topics.iter(), &opts).await.map_err(Error::kafka("creating topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Kafka {
                    context: format!("creating topic {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}
