//! librdkafka clients built from the configuration, and topic administration.

use std::collections::BTreeMap;
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

/// Whether an offset commit failed because the group moved on without this member — its
/// membership expired (a broker outage outlasted the session) or a rebalance is under way. The
/// consumer rejoins by itself, and the partitions' next owner resumes from the last committed
/// offsets, so the uncommitted records are read again (which at-least-once allows).
pub fn is_rebalanced(error: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error,
        rdkafka::error::KafkaError::ConsumerCommit(
            C::UnknownMemberId | C::IllegalGeneration | C::RebalanceInProgress
        )
    )
}

/// Whether a consumer error is one librdkafka recovers from by itself — a broker down or
/// unreachable, a leader or coordinator moving, a request timing out — so a reader should
/// carry on polling rather than stop. Fatal errors never are.
pub fn is_transient(error: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    use rdkafka::error::KafkaError as K;
    let code = match error {
        K::MessageConsumption(code) | K::ConsumerCommit(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::OperationTimedOut
            | C::TimedOutQueue
            | C::RequestTimedOut
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::OffsetNotAvailable
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::RebalanceInProgress
            | C::NotController
            | C::KafkaStorageError
    )
}

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
    producer_config(kafka, ingest).create().map_err(Error::kafka("creating a producer"))
}

fn producer_config(kafka: &KafkaConfig, ingest: &IngestConfig) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", ingest.linger_ms.to_string())
        .set("compression.type", ingest.compression.as_librdkafka())
        .set("message.max.bytes", (ingest.max_record_bytes + 64 * 1024).max(1_000_000).to_string())
        .set("queue.buffering.max.messages", "200000")
        .set("delivery.timeout.ms", "60000");
    c
}

/// How long a transaction step (init, offsets, commit, abort) may take.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A transactional producer (`transactional.id` set, transactions initialised, which fences
/// an older instance with the same id). Blocks up to [`TRANSACTION_TIMEOUT`].
pub fn transactional_producer(
    kafka: &KafkaConfig,
    ingest: &IngestConfig,
    transactional_id: &str,
) -> Result<FutureProducer> {
    use rdkafka::producer::Producer;
    // A broker that takes a transaction's offsets but cannot end it (tansu 0.6) would commit
    // the offsets of records nobody ever sees: refuse to start on one.
    if broker_supports(kafka, API_END_TXN) == Some(false) {
        return Err(Error::Input(format!(
            "the broker at {} does not support transactions (no EndTxn in its ApiVersions); \
             turn serve.scorer_transactions off",
            kafka.brokers
        )));
    }
    let mut c = producer_config(kafka, ingest);
    c.set("transactional.id", transactional_id).set("transaction.timeout.ms", "60000");
    let producer: FutureProducer = c.create().map_err(Error::kafka("creating a transactional producer"))?;
    producer
        .init_transactions(TRANSACTION_TIMEOUT)
        .map_err(Error::kafka(format!("initialising transactions (transactional.id {transactional_id})")))?;
    Ok(producer)
}

/// Kafka API key of EndTxn (KIP-98).
pub const API_END_TXN: i16 = 26;

/// Whether the first broker of `kafka.brokers` advertises `api_key` in its ApiVersions (v0,
/// over plain TCP). `None` when that cannot be asked: a TLS or SASL listener, or no answer.
pub fn broker_supports(kafka: &KafkaConfig, api_key: i16) -> Option<bool> {
    use std::io::{Read, Write};
    let protocol = kafka.client.get("security.protocol").map(|p| p.to_ascii_lowercase());
    if protocol.is_some_and(|p| p != "plaintext") {
        return None;
    }
    let broker = kafka.brokers.split(',').next()?.trim();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(broker).ok()?.next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, METADATA_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(METADATA_TIMEOUT)).ok()?;
    // ApiVersions v0: api_key 18, version 0, correlation id, client id; no body.
    let client = b"driftwood";
    let mut request = Vec::new();
    request.extend_from_slice(&18i16.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&1i32.to_be_bytes());
    request.extend_from_slice(&(client.len() as i16).to_be_bytes());
    request.extend_from_slice(client);
    stream.write_all(&(request.len() as i32).to_be_bytes()).ok()?;
    stream.write_all(&request).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let size = usize::try_from(i32::from_be_bytes(size)).ok()?.min(1 << 20);
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).ok()?;
    api_versions_has(&body, api_key)
}

/// Parses an ApiVersions v0 response body (correlation id, error code, then `[key, min, max]`).
fn api_versions_has(body: &[u8], api_key: i16) -> Option<bool> {
    let i16_at = |at: usize| body.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let error = i16_at(4)?;
    if error != 0 {
        return None;
    }
    let count =
        usize::try_from(body.get(6..10).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))?).ok()?;
    if body.len() < 10 + count * 6 {
        return None; // truncated
    }
    let keys = (0..count).map(|i| i16_at(10 + i * 6)).collect::<Option<Vec<_>>>()?;
    Some(keys.contains(&api_key))
}

/// Starts a transaction on a [`transactional_producer`].
pub fn begin_transaction(producer: &FutureProducer) -> Result<()> {
    use rdkafka::producer::Producer;
    producer.begin_transaction().map_err(Error::kafka("beginning a transaction"))
}

/// Adds `offsets` of `group` to the open transaction and commits it: the records sent since
/// [`begin_transaction`] become visible to `read_committed` consumers together with the
/// consumer's progress. Blocks up to twice [`TRANSACTION_TIMEOUT`].
pub fn commit_transaction(
    producer: &FutureProducer,
    offsets: &rdkafka::TopicPartitionList,
    group: &rdkafka::consumer::ConsumerGroupMetadata,
) -> Result<()> {
    use rdkafka::producer::Producer;
    producer
        .send_offsets_to_transaction(offsets, group, TRANSACTION_TIMEOUT)
        .map_err(Error::kafka("adding the consumed offsets to the transaction"))?;
    producer.commit_transaction(TRANSACTION_TIMEOUT).map_err(Error::kafka("committing the transaction"))
}

/// Aborts the open transaction: its records are never seen by `read_committed` consumers and
/// the consumer's committed offsets stay where they were.
pub fn abort_transaction(producer: &FutureProducer) -> Result<()> {
    use rdkafka::producer::Producer;
    producer.abort_transaction(TRANSACTION_TIMEOUT).map_err(Error::kafka("aborting the transaction"))
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

/// The (low, high) watermarks of every partition of `topic`: its first retained offset and
/// the offset its next record gets.
pub async fn watermarks(kafka: &KafkaConfig, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let (kafka, topic) = (kafka.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client = metadata_client(&kafka)?;
        partitions(&client, &topic)?
            .into_iter()
            .map(|p| {
                let marks = client
                    .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                    .map_err(Error::kafka(format!("fetching watermarks of {topic}/{p}")))?;
                Ok((p, marks))
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Internal(format!("watermark task failed: {e}")))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_response_is_parsed() {
        // correlation id 1, no error, two keys: Produce (0) v0..9 and EndTxn (26) v0..3.
        let mut body = Vec::new();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        for (key, max) in [(0i16, 9i16), (26, 3)] {
            body.extend_from_slice(&key.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
            body.extend_from_slice(&max.to_be_bytes());
        }
        assert_eq!(api_versions_has(&body, API_END_TXN), Some(true));
        assert_eq!(api_versions_has(&body, 18), Some(false));
        // Truncated: no answer rather than a wrong one.
        assert_eq!(api_versions_has(&body[..body.len() - 2], API_END_TXN), None);
        // An error code: no answer.
        body[5] = 35;
        assert_eq!(api_versions_has(&body, 0), None);
    }

    #[test]
    fn broker_outages_are_transient_and_fatal_errors_are_not() {
        use rdkafka::error::KafkaError as K;
        assert!(is_transient(&K::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(is_transient(&K::MessageConsumption(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_transient(&K::ConsumerCommit(RDKafkaErrorCode::CoordinatorNotAvailable)));
        assert!(!is_transient(&K::MessageConsumptionFatal(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!is_transient(&K::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed)));
        assert!(!is_transient(&K::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId)));
        assert!(!is_transient(&K::PartitionEOF(0)));
    }

    #[test]
    fn a_commit_the_group_moved_past_is_a_rebalance() {
        use rdkafka::error::KafkaError as K;
        assert!(is_rebalanced(&K::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId)));
        assert!(is_rebalanced(&K::ConsumerCommit(RDKafkaErrorCode::IllegalGeneration)));
        assert!(!is_rebalanced(&K::ConsumerCommit(RDKafkaErrorCode::FencedInstanceId)));
        assert!(!is_rebalanced(&K::ConsumerCommit(RDKafkaErrorCode::GroupAuthorizationFailed)));
        assert!(!is_rebalanced(&K::MessageConsumption(RDKafkaErrorCode::UnknownMemberId)));
    }
}
