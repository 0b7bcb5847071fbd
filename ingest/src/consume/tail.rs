//! The newest records of a topic: the last `n` of each partition, with their headers and
//! timestamps — what the web UI shows of the dead-letter topic. A plain assigned consumer (no
//! group, nothing committed), reading from `high − n − kafka.resume_rewind` (tansu 0.6 returns
//! only record batches starting at or after the fetch offset) up to the high watermark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::KafkaConfig;

use crate::{Error, Result};

/// One record as read.
#[derive(Debug, Clone)]
pub struct TailRecord {
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp, ms since the epoch, when it has one.
    pub timestamp_ms: Option<i64>,
    pub headers: BTreeMap<String, String>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// The last `n` records of each partition of `topic` (oldest first within a partition), read
/// within `deadline`; a partition the broker does not finish in time gives what it gave.
pub fn tail(kafka: &KafkaConfig, topic: &str, n: usize, deadline: Duration) -> Result<Vec<TailRecord>> {
    let started = Instant::now();
    let consumer: BaseConsumer = crate::kafka::client_config(kafka)
        .set("group.id", "driftwood-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(Error::kafka("creating a tail reader"))?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in crate::kafka::partitions(&consumer, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_err(Error::kafka(format!("reading the watermarks of {topic}[{p}]")))?;
        if high <= low {
            continue;
        }
        let start = (high - n as i64 - kafka.resume_rewind).max(low);
        assignment
            .add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(Error::kafka("assigning a partition"))?;
        ends.insert(p, (high - n as i64).max(low)..high);
    }
    if ends.is_empty() {
        return Ok(vec![]);
    }
    consumer.assign(&assignment).map_err(Error::kafka(format!("assigning {topic}")))?;
    let mut out: BTreeMap<(i32, i64), TailRecord> = BTreeMap::new();
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) && started.elapsed() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.map_err(Error::kafka(format!("reading {topic}")))?;
        let (p, offset) = (msg.partition(), msg.offset());
        let Some(wanted) = ends.get(&p) else { continue };
        if offset + 1 >= wanted.end {
            done.insert(p, true);
        }
        if !wanted.contains(&offset) {
            continue;
        }
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| Some((h.key.to_string(), String::from_utf8_lossy(h.value?).into_owned())))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            (p, offset),
            TailRecord {
                partition: p,
                offset,
                timestamp_ms: msg.timestamp().to_millis(),
                headers,
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            },
        );
    }
    Ok(out.into_values().collect())
}
