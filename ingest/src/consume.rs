//! Reading a topic as micro-batches of Arrow RecordBatches.
//!
//! A [`BatchReader`] closes a batch at whichever limit comes first: rows, payload bytes, or the
//! wait since the batch's first record. Records that cannot be decoded are sent to the
//! dead-letter topic *before* the batch is returned, so once the caller commits a batch's
//! offset ranges every record in them is accounted for — as a row or as a dead letter.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::future::try_join_all;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::{IngestConfig, KafkaConfig};
use schemas::records::{DeadReason, dead_letter_header as hdr};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::batch::RawBatchBuilder;
use crate::decode::{Provenance, decode};
use crate::kafka::{METADATA_TIMEOUT, client_config, metadata_client, partitions};
use crate::{Error, Result};

/// How long one poll waits before checking cancellation and the idle condition.
const POLL: Duration = Duration::from_millis(250);

/// Micro-batch limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
    /// Larger record values are dead letters.
    pub max_record_bytes: usize,
}

impl From<&IngestConfig> for BatchLimits {
    fn from(c: &IngestConfig) -> Self {
        BatchLimits {
            max_rows: c.batch_max_rows,
            max_bytes: c.batch_max_bytes,
            max_wait: Duration::from_millis(c.batch_max_wait_ms),
            max_record_bytes: c.max_record_bytes,
        }
    }
}

/// Offsets `[first, next)` of one partition consumed into a batch (rows and dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub first: i64,
    pub next: i64,
}

/// One micro-batch and what it covers.
#[derive(Debug, Clone)]
pub struct ConsumedBatch {
    /// Valid records, raw schema.
    pub batch: RecordBatch,
    /// Offset ranges per partition covered by this batch.
    pub ranges: BTreeMap<i32, OffsetRange>,
    /// Dead letters of this batch, by reason.
    pub dead: BTreeMap<DeadReason, u64>,
    /// The records that could not be decoded (already sent to the dead-letter topic when the
    /// reader has a sink).
    pub rejected: Vec<DeadLetter>,
    /// Value bytes consumed (valid and dead).
    pub bytes: u64,
}

impl ConsumedBatch {
    /// Valid rows in the batch.
    pub fn batch_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn dead_total(&self) -> u64 {
        self.dead.values().sum()
    }
}

/// Sends undecodable records, with their reason, to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// One dead letter: the original key and value plus why and where.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub reason: DeadReason,
    pub detail: String,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        DeadLetters { producer, topic: topic.into() }
    }

    /// Sends all letters and waits until the broker has acknowledged every one.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> Result<()> {
        let sends = letters.iter().map(|l| {
            let partition = l.partition.to_string();
            let offset = l.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: hdr::REASON, value: Some(l.reason.code()) })
                .insert(Header { key: hdr::DETAIL, value: Some(l.detail.as_str()) })
                .insert(Header { key: hdr::SOURCE_TOPIC, value: Some(l.source_topic.as_str()) })
                .insert(Header { key: hdr::SOURCE_PARTITION, value: Some(partition.as_str()) })
                .insert(Header { key: hdr::SOURCE_OFFSET, value: Some(offset.as_str()) });
            let mut record = FutureRecord::to(&self.topic).payload(&l.value).headers(headers);
            if let Some(k) = l.key.as_deref() {
                record = record.key(k);
            }
            async move {
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| Error::kafka("sending a dead letter")(e))
            }
        });
        try_join_all(sends).await.map(|_| ())
    }
}

/// Where a reader starts and when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Explicit assignment of every partition, starting at the given next offsets (partitions
    /// not listed start at the beginning). With `until_idle`, the reader ends once it has
    /// reached the high watermarks seen at start.
    Assigned { start: BTreeMap<i32, i64>, until_idle: bool },
    /// Consumer-group subscription; offsets are committed with [`BatchReader::commit`].
    Group { group_id: String },
}

/// Reads `topic` in micro-batches. Without a dead-letter sink, undecodable records are only
/// returned in [`ConsumedBatch::rejected`] (the scorer reports them; the snapshot job owns the
/// dead-letter topic).
pub struct BatchReader {
    consumer: StreamConsumer,
    topic: String,
    limits: BatchLimits,
    dead: Option<DeadLetters>,
    /// Next offset per partition to reach before the reader is idle (assigned mode).
    idle_target: Option<BTreeMap<i32, i64>>,
    /// Next offset per partition after the last record read.
    positions: BTreeMap<i32, i64>,
    /// Partitions whose end was reached (partition EOF) since their last record.
    at_eof: std::collections::BTreeSet<i32>,
}

impl BatchReader {
    pub async fn new(
        kafka: &KafkaConfig,
        topic: &str,
        mode: Mode,
        limits: BatchLimits,
        dead: Option<DeadLetters>,
    ) -> Result<Self> {
        let (consumer, positions, idle_target) = open_consumer(kafka, topic, mode).await?;
        Ok(BatchReader {
            consumer,
            topic: topic.to_string(),
            limits,
            dead,
            idle_target,
            positions,
            at_eof: Default::default(),
        })
    }

    /// Next offset per partition after everything read so far (assigned mode: includes the
    /// start offsets).
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    fn idle(&self) -> bool {
        idle(&self.idle_target, &self.positions, &self.at_eof)
    }

    /// The next micro-batch, `None` when cancelled or (with `until_idle`) caught up.
    /// A batch may hold zero rows when all its records were dead letters.
    pub async fn next_batch(&mut self, cancel: &CancellationToken) -> Result<Option<ConsumedBatch>> {
        let mut builder = RawBatchBuilder::new();
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut ranges: BTreeMap<i32, OffsetRange> = BTreeMap::new();
        let mut bytes = 0u64;
        let mut deadline: Option<Instant> = None;
        loop {
            if builder.rows() >= self.limits.max_rows || builder.bytes() >= self.limits.max_bytes {
                break;
            }
            if ranges.is_empty() && (cancel.is_cancelled() || self.idle()) {
                return Ok(None);
            }
            if !ranges.is_empty() && self.idle() {
                break;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) if !w.is_zero() => w.min(POLL),
                    _ => break,
                },
                None => POLL,
            };
            let msg = tokio::select! {
                _ = cancel.cancelled(), if ranges.is_empty() => return Ok(None),
                r = tokio::time::timeout(wait, self.consumer.recv()) => r,
            };
            let msg = match msg {
                Err(_elapsed) => continue,
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p);
                    continue;
                }
                Ok(Err(e)) => return Err(Error::kafka(format!("reading {}", self.topic))(e)),
                Ok(Ok(m)) => m,
            };
            self.at_eof.remove(&msg.partition());
            deadline.get_or_insert_with(|| Instant::now() + self.limits.max_wait);
            let at = Provenance {
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp_ms: msg.timestamp().to_millis(),
            };
            bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
            match decode(msg.key(), msg.payload(), at, self.limits.max_record_bytes) {
                Ok(record) => builder.push(&record, at),
                Err(rej) => letters.push(DeadLetter {
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    reason: rej.reason,
                    detail: rej.detail,
                    source_topic: self.topic.clone(),
                    partition: at.partition,
                    offset: at.offset,
                }),
            }
            ranges
                .entry(at.partition)
                .and_modify(|r| r.next = at.offset + 1)
                .or_insert(OffsetRange { first: at.offset, next: at.offset + 1 });
            self.positions.insert(at.partition, at.offset + 1);
        }
        if let Some(sink) = &self.dead {
            sink.send_all(&letters).await?;
        }
        let mut dead = BTreeMap::new();
        for l in &letters {
            *dead.entry(l.reason).or_insert(0) += 1;
        }
        Ok(Some(ConsumedBatch { batch: builder.finish(), ranges, dead, rejected: letters, bytes }))
    }

    /// Commits (group mode) the next offsets after `ranges`, synchronously.
    pub fn commit(&self, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
        commit_ranges(&self.consumer, &self.topic, ranges)
    }
}

/// Caught up: every partition has reached the watermark seen at start *and* reported its end
/// (partition EOF) after its last record.
fn idle(
    targets: &Option<BTreeMap<i32, i64>>,
    positions: &BTreeMap<i32, i64>,
    at_eof: &std::collections::BTreeSet<i32>,
) -> bool {
    targets.as_ref().is_some_and(|targets| {
        targets.iter().all(|(p, t)| {
            let pos = positions.get(p).copied().unwrap_or(0);
            pos >= *t && at_eof.contains(p)
        })
    })
}

type Opened = (StreamConsumer, BTreeMap<i32, i64>, Option<BTreeMap<i32, i64>>);

/// A consumer on `topic` in `mode`, with its start positions and (until-idle) targets.
async fn open_consumer(kafka: &KafkaConfig, topic: &str, mode: Mode) -> Result<Opened> {
    let group = match &mode {
        Mode::Group { group_id } => group_id.clone(),
        Mode::Assigned { .. } => format!("{}.reader", kafka.group_id),
    };
    let mut cfg = client_config(kafka);
    cfg.set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", (64 << 20).to_string())
        .set("max.partition.fetch.bytes", (16 << 20).to_string())
        .set("fetch.wait.max.ms", "100");
    if matches!(mode, Mode::Assigned { until_idle: true, .. }) {
        // tansu 0.6 under-reports the high watermark in ListOffsets (it lags by up to one
        // record batch), while the fetch response's watermark is right: the end of a
        // partition is where librdkafka reports partition EOF.
        cfg.set("enable.partition.eof", "true");
    }
    let consumer: StreamConsumer = cfg.create().map_err(Error::kafka("creating a consumer"))?;
    match mode {
        Mode::Group { .. } => {
            consumer.subscribe(&[topic]).map_err(Error::kafka(format!("subscribing to {topic}")))?;
            Ok((consumer, BTreeMap::new(), None))
        }
        Mode::Assigned { start, until_idle } => {
            let (tpl, positions, targets) = assignment(kafka, topic, &start).await?;
            consumer.assign(&tpl).map_err(Error::kafka(format!("assigning partitions of {topic}")))?;
            Ok((consumer, positions, until_idle.then_some(targets)))
        }
    }
}

fn commit_ranges(consumer: &StreamConsumer, topic: &str, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, r) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(r.next))
            .map_err(Error::kafka("building a commit"))?;
    }
    consumer.commit(&tpl, CommitMode::Sync).map_err(Error::kafka(format!("committing offsets of {topic}")))
}

/// One record as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

/// Reads a topic of the pipeline's own JSON payloads (scored records, labels, control events)
/// in micro-batches of owned messages; the caller decodes them.
pub struct MessageReader {
    consumer: StreamConsumer,
    topic: String,
    idle_target: Option<BTreeMap<i32, i64>>,
    positions: BTreeMap<i32, i64>,
    at_eof: std::collections::BTreeSet<i32>,
}

impl MessageReader {
    pub async fn new(kafka: &KafkaConfig, topic: &str, mode: Mode) -> Result<Self> {
        let (consumer, positions, idle_target) = open_consumer(kafka, topic, mode).await?;
        Ok(MessageReader {
            consumer,
            topic: topic.to_string(),
            idle_target,
            positions,
            at_eof: Default::default(),
        })
    }

    fn idle(&self) -> bool {
        idle(&self.idle_target, &self.positions, &self.at_eof)
    }

    /// Up to `max` messages, waiting at most `max_wait` after the first; `None` when cancelled
    /// or (assigned, until idle) caught up.
    pub async fn next(
        &mut self,
        max: usize,
        max_wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<Option<(Vec<RawMessage>, BTreeMap<i32, OffsetRange>)>> {
        let mut out = Vec::new();
        let mut ranges: BTreeMap<i32, OffsetRange> = BTreeMap::new();
        let mut deadline: Option<Instant> = None;
        while out.len() < max {
            if out.is_empty() && (cancel.is_cancelled() || self.idle()) {
                return Ok(None);
            }
            if !out.is_empty() && self.idle() {
                break;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) if !w.is_zero() => w.min(POLL),
                    _ => break,
                },
                None => POLL,
            };
            let msg = tokio::select! {
                _ = cancel.cancelled(), if out.is_empty() => return Ok(None),
                r = tokio::time::timeout(wait, self.consumer.recv()) => r,
            };
            let msg = match msg {
                Err(_elapsed) => continue,
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_eof.insert(p);
                    continue;
                }
                Ok(Err(e)) => return Err(Error::kafka(format!("reading {}", self.topic))(e)),
                Ok(Ok(m)) => m,
            };
            self.at_eof.remove(&msg.partition());
            deadline.get_or_insert_with(|| Instant::now() + max_wait);
            let (partition, offset) = (msg.partition(), msg.offset());
            ranges
                .entry(partition)
                .and_modify(|r| r.next = offset + 1)
                .or_insert(OffsetRange { first: offset, next: offset + 1 });
            self.positions.insert(partition, offset + 1);
            out.push(RawMessage {
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                partition,
                offset,
                timestamp_ms: msg.timestamp().to_millis(),
            });
        }
        Ok(Some((out, ranges)))
    }

    /// Commits (group mode) the next offsets after `ranges`.
    pub fn commit(&self, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
        commit_ranges(&self.consumer, &self.topic, ranges)
    }
}

/// The assignment of every partition of `topic` starting at `start` (else the beginning), the
/// resulting positions, and the high watermarks to reach.
async fn assignment(
    kafka: &KafkaConfig,
    topic: &str,
    start: &BTreeMap<i32, i64>,
) -> Result<(TopicPartitionList, BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let kafka = kafka.clone();
    let topic = topic.to_string();
    let start = start.clone();
    tokio::task::spawn_blocking(move || {
        let client = metadata_client(&kafka)?;
        let mut tpl = TopicPartitionList::new();
        let mut positions = BTreeMap::new();
        let mut targets = BTreeMap::new();
        for p in partitions(&client, &topic)? {
            let (low, high) = client
                .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                .map_err(Error::kafka(format!("fetching watermarks of {topic}/{p}")))?;
            let from = start.get(&p).copied().unwrap_or(low).max(low);
            tpl.add_partition_offset(&topic, p, Offset::Offset(from))
                .map_err(Error::kafka("building an assignment"))?;
            positions.insert(p, from);
            targets.insert(p, high);
        }
        Ok((tpl, positions, targets))
    })
    .await
    .map_err(|e| Error::Internal(format!("watermark task failed: {e}")))?
}
