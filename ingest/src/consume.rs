//! Reading a topic as micro-batches of Arrow RecordBatches.
//!
//! A [`BatchReader`] closes a batch at whichever limit comes first: rows, payload bytes, or the
//! wait since the batch's first record. Records that cannot be decoded are sent to the
//! dead-letter topic *before* the batch is returned, so once the caller commits a batch's
//! offset ranges every record in them is accounted for — as a row or as a dead letter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use futures::future::try_join_all;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::{IngestConfig, KafkaConfig};
use schemas::records::{DeadReason, dead_letter_header as hdr};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::batch::{RawBatchBuilder, RowBuffer, RowSink};
use crate::decode::{Decoder, Provenance};
use crate::kafka::{METADATA_TIMEOUT, client_config, metadata_client, partitions};
use crate::{Error, Result};

/// How long one poll waits before checking cancellation and the idle condition.
const POLL: Duration = Duration::from_millis(250);

/// A following reader returns an empty batch after this long without records.
pub const QUIET: Duration = Duration::from_secs(1);

/// An until-idle reader is caught up only after this long without any record or end-of-
/// partition event: tansu 0.6 reports the high watermark (in ListOffsets *and* in fetch
/// responses) as the base offset of the last record batch + 1, so partition EOF can arrive
/// while a large batch's records are still to come.
pub const SETTLE: Duration = Duration::from_millis(1500);

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

/// Where a partition assigned by the group should start: `Some(next offset)` from the caller's
/// own bookkeeping (e.g. a snapshot manifest), or `None` for the group's committed offset.
#[derive(Clone)]
pub struct OffsetSource(pub Arc<dyn Fn(i32) -> Option<i64> + Send + Sync>);

impl std::fmt::Debug for OffsetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OffsetSource")
    }
}

/// Where a reader starts and when it stops.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Explicit assignment of every partition, starting at the given next offsets (partitions
    /// not listed start at the beginning). With `until_idle`, the reader ends once it has
    /// reached the end of every partition as seen at start.
    Assigned { start: BTreeMap<i32, i64>, until_idle: bool },
    /// Consumer-group subscription; offsets are committed with [`BatchReader::commit`].
    Group { group_id: String },
    /// Consumer-group subscription where each newly assigned partition starts at the offset
    /// `offsets` gives (the group's committed offsets are not used).
    GroupAt { group_id: String, offsets: OffsetSource },
}

/// Resume offsets a reader has not reached yet, per partition.
///
/// tansu 0.6 answers a fetch only with record batches whose base offset is at or after the
/// fetch offset, so resuming inside a batch would skip the rest of it. A reader therefore
/// fetches from `resume_rewind` records earlier, skips records before the resume offset, and
/// if the first record it sees is still past the resume offset (a larger batch), seeks back
/// twice as far, down to offset 0.
#[derive(Debug, Default)]
pub struct Resume {
    rewind: i64,
    wants: std::sync::Mutex<BTreeMap<i32, Want>>,
}

#[derive(Debug, Clone, Copy)]
struct Want {
    want: i64,
    from: i64,
}

/// What to do with a record just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Before the resume offset: already processed.
    Skip,
    /// Past the resume offset on the first read: seek the partition back to this offset.
    Rewind(i64),
}

impl Resume {
    pub fn new(rewind: i64) -> Self {
        Resume { rewind: rewind.max(0), wants: Default::default() }
    }

    fn wants(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Want>> {
        self.wants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The offset to fetch `partition` from in order to resume at `want`.
    pub fn start(&self, partition: i32, want: i64) -> i64 {
        let from = (want - self.rewind).max(0);
        if from < want {
            self.wants().insert(partition, Want { want, from });
        } else {
            self.wants().remove(&partition);
        }
        from
    }

    /// Forgets `partition` (revoked).
    pub fn forget(&self, partition: i32) {
        self.wants().remove(&partition);
    }

    /// Judges the record at `offset` of `partition`.
    pub fn check(&self, partition: i32, offset: i64) -> Verdict {
        let mut wants = self.wants();
        let Some(w) = wants.get_mut(&partition) else { return Verdict::Take };
        if offset < w.want {
            return Verdict::Skip;
        }
        if offset == w.want || w.from == 0 {
            // Reached, or a genuine gap (compaction, transaction markers) seen from offset 0.
            wants.remove(&partition);
            return Verdict::Take;
        }
        let distance = ((w.want - w.from) * 2).max(1);
        w.from = (w.want - distance).max(0);
        tracing::warn!(
            partition,
            offset,
            resume = w.want,
            from = w.from,
            "the broker skipped past the resume offset; fetching from further back"
        );
        Verdict::Rewind(w.from)
    }
}

/// The consumer context: applies [`OffsetSource`] (or the group's committed offsets) through
/// [`Resume`] when the group assigns partitions.
pub struct ReaderContext {
    topic: String,
    offsets: Option<OffsetSource>,
    resume: Resume,
}

impl ReaderContext {
    /// Where each newly assigned partition resumes: the caller's offsets, else the group's
    /// committed ones; rewritten to fetch offsets through [`Resume`].
    fn resume_assigned(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let wanted: Vec<(i32, i64)> = match &self.offsets {
            Some(source) => partitions.iter().filter_map(|&p| (source.0)(p).map(|o| (p, o))).collect(),
            None => match consumer.committed_offsets(tpl.clone(), METADATA_TIMEOUT) {
                Ok(committed) => committed
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect(),
                Err(e) => {
                    // librdkafka then starts at the committed offsets itself, unrewound.
                    tracing::warn!(error = %e, "could not read the group's committed offsets");
                    Vec::new()
                }
            },
        };
        for (p, want) in wanted {
            let from = self.resume.start(p, want);
            let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(from));
        }
    }
}

impl rdkafka::ClientContext for ReaderContext {}

impl rdkafka::consumer::ConsumerContext for ReaderContext {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let result = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.resume_assigned(consumer, tpl);
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(topic = %self.topic, ?partitions, "partitions revoked");
                partitions.iter().for_each(|&p| self.resume.forget(p));
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying a rebalance failed");
        }
    }
}

/// Applies [`Resume::check`] to a record just read: `true` to process it; otherwise it is
/// dropped (and on [`Verdict::Rewind`] the partition is sought back).
fn take(consumer: &StreamConsumer<ReaderContext>, topic: &str, partition: i32, offset: i64) -> Result<bool> {
    match consumer.context().resume.check(partition, offset) {
        Verdict::Take => Ok(true),
        Verdict::Skip => Ok(false),
        Verdict::Rewind(from) => {
            consumer
                .seek(topic, partition, Offset::Offset(from), Duration::from_secs(10))
                .map_err(Error::kafka(format!("seeking {topic}/{partition} back")))?;
            Ok(false)
        }
    }
}

/// Reads `topic` in micro-batches. Without a dead-letter sink, undecodable records are only
/// returned in [`ConsumedBatch::rejected`] (the scorer reports them; the snapshot job owns the
/// dead-letter topic).
pub struct BatchReader {
    consumer: StreamConsumer<ReaderContext>,
    topic: String,
    limits: BatchLimits,
    dead: Option<DeadLetters>,
    /// Next offset per partition to reach before the reader is idle (assigned mode).
    idle_target: Option<BTreeMap<i32, i64>>,
    /// Next offset per partition after the last record read.
    positions: BTreeMap<i32, i64>,
    /// Partitions whose end was reached (partition EOF) since their last record.
    at_eof: std::collections::BTreeSet<i32>,
    /// When the last record or end-of-partition event arrived.
    last_activity: Instant,
    /// For [`BatchReader::lag`]: the settings, a metadata client made once, the last refresh.
    kafka: KafkaConfig,
    metadata: Option<Arc<rdkafka::consumer::BaseConsumer>>,
    lag_refreshed: Option<Instant>,
    /// One per core: [`decode_parts`].
    workers: Vec<(Decoder, RowBuffer)>,
}

/// How often [`BatchReader::lag`] asks the broker for the partition ends.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);

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
            last_activity: Instant::now(),
            kafka: kafka.clone(),
            metadata: None,
            lag_refreshed: None,
            workers: (0..decode_threads()).map(|_| Default::default()).collect(),
        })
    }

    /// The partitions of the topic assigned to this reader now (by its group, or all of them
    /// in assigned mode), sorted.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// Records between this reader's position and the end of each partition it has read,
    /// refreshed at most every [`LAG_INTERVAL`] (`None` in between, or when the broker does
    /// not answer). On tansu 0.6 the end can under-report by up to one record batch.
    pub async fn lag(&mut self) -> Option<BTreeMap<i32, i64>> {
        if self.lag_refreshed.is_some_and(|t| t.elapsed() < LAG_INTERVAL) {
            return None;
        }
        self.lag_refreshed = Some(Instant::now());
        let client = match &self.metadata {
            Some(c) => c.clone(),
            None => match metadata_client(&self.kafka) {
                Ok(c) => self.metadata.insert(Arc::new(c)).clone(),
                Err(e) => {
                    tracing::debug!(error = %e, "lag not updated");
                    return None;
                }
            },
        };
        let (topic, partitions) = (self.topic.clone(), self.positions.keys().copied().collect::<Vec<_>>());
        let ends = tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .map(|p| client.fetch_watermarks(&topic, p, METADATA_TIMEOUT).map(|(_, high)| (p, high)))
                .collect::<Result<BTreeMap<i32, i64>, _>>()
        })
        .await;
        match ends {
            Ok(Ok(ends)) => Some(
                ends.into_iter()
                    .filter_map(|(p, end)| self.positions.get(&p).map(|pos| (p, (end - pos).max(0))))
                    .collect(),
            ),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "lag not updated");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "lag task failed");
                None
            }
        }
    }

    /// Next offset per partition after everything read so far (assigned mode: includes the
    /// start offsets).
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    fn idle(&self) -> bool {
        idle(&self.idle_target, &self.positions, &self.at_eof, self.last_activity)
    }

    /// The next micro-batch, `None` when cancelled or (with `until_idle`) caught up.
    /// A batch may hold zero rows when all its records were dead letters, and a reader that
    /// follows a topic returns an empty batch after [`QUIET`] without records, so callers can
    /// act on time (e.g. commit) without cancelling a read in progress.
    pub async fn next_batch(&mut self, cancel: &CancellationToken) -> Result<Option<ConsumedBatch>> {
        // Records stay in librdkafka's buffers until the batch is complete, then are decoded
        // straight into column builders, in consecutive parts on as many cores.
        let mut received: Vec<BorrowedMessage<'_>> = Vec::new();
        let mut ranges: BTreeMap<i32, OffsetRange> = BTreeMap::new();
        let mut bytes = 0u64;
        let mut deadline: Option<Instant> = None;
        let started = Instant::now();
        loop {
            if received.len() >= self.limits.max_rows || bytes >= self.limits.max_bytes as u64 {
                break;
            }
            if ranges.is_empty() && (cancel.is_cancelled() || self.idle()) {
                return Ok(None);
            }
            if !ranges.is_empty() && self.idle() {
                break;
            }
            if ranges.is_empty() && self.idle_target.is_none() && started.elapsed() >= QUIET {
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
                    self.last_activity = Instant::now();
                    continue;
                }
                Ok(Err(e)) => return Err(Error::kafka(format!("reading {}", self.topic))(e)),
                Ok(Ok(m)) => m,
            };
            self.last_activity = Instant::now();
            if !take(&self.consumer, &self.topic, msg.partition(), msg.offset())? {
                continue;
            }
            self.at_eof.remove(&msg.partition());
            deadline.get_or_insert_with(|| Instant::now() + self.limits.max_wait);
            let at = Provenance {
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp_ms: msg.timestamp().to_millis(),
            };
            bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
            ranges
                .entry(at.partition)
                .and_modify(|r| r.next = at.offset + 1)
                .or_insert(OffsetRange { first: at.offset, next: at.offset + 1 });
            self.positions.insert(at.partition, at.offset + 1);
            received.push(msg);
        }
        let (batch, letters) = decode_parts(
            &mut self.workers,
            &received,
            bytes as usize,
            &self.topic,
            self.limits.max_record_bytes,
        );
        drop(received);
        if let Some(sink) = &self.dead {
            sink.send_all(&letters).await?;
        }
        let mut dead = BTreeMap::new();
        for l in &letters {
            *dead.entry(l.reason).or_insert(0) += 1;
        }
        Ok(Some(ConsumedBatch { batch, ranges, dead, rejected: letters, bytes }))
    }

    /// Commits (group mode) the next offsets after `ranges`, synchronously.
    pub fn commit(&self, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
        commit_ranges(&self.consumer, &self.topic, ranges)
    }

    /// The offsets `ranges` end at and the consumer group's metadata: what a transactional
    /// producer commits together with the records it made from them.
    pub fn transaction_offsets(
        &self,
        ranges: &BTreeMap<i32, OffsetRange>,
    ) -> Result<(TopicPartitionList, rdkafka::consumer::ConsumerGroupMetadata)> {
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Error::Input("transactions need a consumer group".into()))?;
        Ok((offsets_list(&self.topic, ranges)?, group))
    }

    /// Continues `partition` at `offset` if it is still assigned to this reader (after another
    /// writer committed past what this one read). Returns whether it was.
    pub fn seek(&mut self, partition: i32, offset: i64) -> Result<bool> {
        let assigned = self
            .consumer
            .assignment()
            .map_err(Error::kafka("reading the assignment"))?
            .elements()
            .iter()
            .any(|e| e.partition() == partition);
        if !assigned {
            return Ok(false);
        }
        let from = self.consumer.context().resume.start(partition, offset);
        self.consumer
            .seek(&self.topic, partition, Offset::Offset(from), Duration::from_secs(10))
            .map_err(Error::kafka(format!("seeking {}/{partition}", self.topic)))?;
        self.positions.insert(partition, offset);
        Ok(true)
    }
}

/// Below this many records a part of a batch is not worth a thread of its own.
const PARALLEL_DECODE_MIN: usize = 256;

fn decode_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Decodes `received` (`payload` value bytes in all) in order into one raw-schema batch, and
/// its dead letters. The first part
/// is decoded on this thread into the batch's builders (sized for the whole batch), the others
/// on one thread each into their worker's [`RowBuffer`] (memory kept from batch to batch), then
/// appended.
fn decode_parts(
    workers: &mut [(Decoder, RowBuffer)],
    received: &[BorrowedMessage<'_>],
    payload: usize,
    topic: &str,
    max_record_bytes: usize,
) -> (RecordBatch, Vec<DeadLetter>) {
    let parts = received.len().div_ceil(PARALLEL_DECODE_MIN).clamp(1, workers.len());
    let mut chunks = received.chunks(received.len().div_ceil(parts).max(1));
    let first = chunks.next().unwrap_or_default();
    let ((first_decoder, _), others) = workers.split_first_mut().expect("at least one decoder");
    let mut builder = RawBatchBuilder::with_capacity(received.len(), payload);
    let (mut letters, others) = std::thread::scope(|scope| {
        let others: Vec<_> = others
            .iter_mut()
            .zip(chunks)
            .map(|((decoder, rows), part)| {
                scope.spawn(move || {
                    rows.clear();
                    let letters = decode_part(decoder, rows, part, topic, max_record_bytes);
                    let rows: &RowBuffer = rows;
                    (rows, letters)
                })
            })
            .collect();
        let letters = decode_part(first_decoder, &mut builder, first, topic, max_record_bytes);
        (
            letters,
            others.into_iter().map(|h| h.join().expect("a decoding thread panicked")).collect::<Vec<_>>(),
        )
    });
    for (rows, more) in others {
        builder.append_rows(rows);
        letters.extend(more);
    }
    (builder.finish(), letters)
}

/// Decodes `part` in order into `sink`; its dead letters.
fn decode_part(
    decoder: &mut Decoder,
    sink: &mut impl RowSink,
    part: &[BorrowedMessage<'_>],
    topic: &str,
    max_record_bytes: usize,
) -> Vec<DeadLetter> {
    let mut letters = Vec::new();
    for m in part {
        let at = Provenance {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
        };
        if let Err(rej) = decoder.decode_into(sink, m.key(), m.payload(), at, max_record_bytes) {
            letters.push(DeadLetter {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                reason: rej.reason,
                detail: rej.detail,
                source_topic: topic.to_string(),
                partition: at.partition,
                offset: at.offset,
            });
        }
    }
    letters
}

/// Caught up: every partition has reached the watermark seen at start, reported its end
/// (partition EOF) after its last record, and nothing arrived for [`SETTLE`].
fn idle(
    targets: &Option<BTreeMap<i32, i64>>,
    positions: &BTreeMap<i32, i64>,
    at_eof: &std::collections::BTreeSet<i32>,
    last_activity: Instant,
) -> bool {
    targets.as_ref().is_some_and(|targets| {
        last_activity.elapsed() >= SETTLE
            && targets.iter().all(|(p, t)| {
                let pos = positions.get(p).copied().unwrap_or(0);
                pos >= *t && at_eof.contains(p)
            })
    })
}

type Opened = (StreamConsumer<ReaderContext>, BTreeMap<i32, i64>, Option<BTreeMap<i32, i64>>);

/// A consumer on `topic` in `mode`, with its start positions and (until-idle) targets.
/// The consumer settings every Driftwood reader uses: manual commits, from the earliest
/// offset, large fetches (also what the benchmark's bare loops use, to compare like with like).
pub fn consumer_config(kafka: &KafkaConfig, group: &str) -> rdkafka::ClientConfig {
    let mut cfg = client_config(kafka);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", (64 << 20).to_string())
        .set("max.partition.fetch.bytes", (16 << 20).to_string())
        .set("fetch.wait.max.ms", "100");
    cfg
}

async fn open_consumer(kafka: &KafkaConfig, topic: &str, mode: Mode) -> Result<Opened> {
    let group = match &mode {
        Mode::Group { group_id } | Mode::GroupAt { group_id, .. } => group_id.clone(),
        Mode::Assigned { .. } => schemas::topics::Groups::with_base(&kafka.group_id).reader(),
    };
    let mut cfg = consumer_config(kafka, &group);
    if matches!(mode, Mode::Assigned { until_idle: true, .. }) {
        // tansu 0.6 under-reports the high watermark in ListOffsets (it lags by up to one
        // record batch), while the fetch response's watermark is right: the end of a
        // partition is where librdkafka reports partition EOF.
        cfg.set("enable.partition.eof", "true");
    }
    let offsets = match &mode {
        Mode::GroupAt { offsets, .. } => Some(offsets.clone()),
        _ => None,
    };
    let context =
        ReaderContext { topic: topic.to_string(), offsets, resume: Resume::new(kafka.resume_rewind) };
    let consumer: StreamConsumer<ReaderContext> =
        cfg.create_with_context(context).map_err(Error::kafka("creating a consumer"))?;
    match mode {
        Mode::Group { .. } | Mode::GroupAt { .. } => {
            consumer.subscribe(&[topic]).map_err(Error::kafka(format!("subscribing to {topic}")))?;
            Ok((consumer, BTreeMap::new(), None))
        }
        Mode::Assigned { start, until_idle } => {
            let (tpl, positions, targets) =
                assignment(kafka, topic, &start, &consumer.context().resume).await?;
            consumer.assign(&tpl).map_err(Error::kafka(format!("assigning partitions of {topic}")))?;
            Ok((consumer, positions, until_idle.then_some(targets)))
        }
    }
}

fn commit_ranges(
    consumer: &StreamConsumer<ReaderContext>,
    topic: &str,
    ranges: &BTreeMap<i32, OffsetRange>,
) -> Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    let tpl = offsets_list(topic, ranges)?;
    consumer.commit(&tpl, CommitMode::Sync).map_err(Error::kafka(format!("committing offsets of {topic}")))
}

/// The offsets to commit after `ranges`: each partition's next offset.
fn offsets_list(topic: &str, ranges: &BTreeMap<i32, OffsetRange>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (p, r) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(r.next))
            .map_err(Error::kafka("building a commit"))?;
    }
    Ok(tpl)
}

/// One record as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// Headers, in order (e.g. the reason of a dead letter).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawMessage {
    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads a topic of the pipeline's own JSON payloads (scored records, labels, control events)
/// in micro-batches of owned messages; the caller decodes them.
pub struct MessageReader {
    consumer: StreamConsumer<ReaderContext>,
    topic: String,
    idle_target: Option<BTreeMap<i32, i64>>,
    positions: BTreeMap<i32, i64>,
    at_eof: std::collections::BTreeSet<i32>,
    last_activity: Instant,
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
            last_activity: Instant::now(),
        })
    }

    fn idle(&self) -> bool {
        idle(&self.idle_target, &self.positions, &self.at_eof, self.last_activity)
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
                    self.last_activity = Instant::now();
                    continue;
                }
                Ok(Err(e)) => return Err(Error::kafka(format!("reading {}", self.topic))(e)),
                Ok(Ok(m)) => m,
            };
            self.last_activity = Instant::now();
            if !take(&self.consumer, &self.topic, msg.partition(), msg.offset())? {
                continue;
            }
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
                headers: msg
                    .headers()
                    .map(|h| {
                        h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
                    })
                    .unwrap_or_default(),
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
    resume: &Resume,
) -> Result<(TopicPartitionList, BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let kafka_ = kafka.clone();
    let topic_ = topic.to_string();
    let start = start.clone();
    let (positions, targets) = tokio::task::spawn_blocking(move || {
        let (kafka, topic) = (kafka_, topic_);
        let client = metadata_client(&kafka)?;
        let mut positions = BTreeMap::new();
        let mut targets = BTreeMap::new();
        for p in partitions(&client, &topic)? {
            let (low, high) = client
                .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                .map_err(Error::kafka(format!("fetching watermarks of {topic}/{p}")))?;
            positions.insert(p, start.get(&p).copied().unwrap_or(low).max(low));
            targets.insert(p, high);
        }
        Ok::<_, Error>((positions, targets))
    })
    .await
    .map_err(|e| Error::Internal(format!("watermark task failed: {e}")))??;
    let mut tpl = TopicPartitionList::new();
    for (&p, &want) in &positions {
        tpl.add_partition_offset(topic, p, Offset::Offset(resume.start(p, want)))
            .map_err(Error::kafka("building an assignment"))?;
    }
    Ok((tpl, positions, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_skips_up_to_the_offset_then_takes_everything() {
        let r = Resume::new(100);
        assert_eq!(r.start(0, 250), 150);
        assert_eq!(r.check(0, 150), Verdict::Skip);
        assert_eq!(r.check(0, 249), Verdict::Skip);
        assert_eq!(r.check(0, 250), Verdict::Take);
        assert_eq!(r.check(0, 251), Verdict::Take);
        // Other partitions are untouched.
        assert_eq!(r.check(1, 0), Verdict::Take);
    }

    #[test]
    fn resume_rewinds_twice_as_far_when_the_broker_skips_past() {
        let r = Resume::new(100);
        assert_eq!(r.start(0, 1000), 900);
        assert_eq!(r.check(0, 1200), Verdict::Rewind(800));
        assert_eq!(r.check(0, 1200), Verdict::Rewind(600));
        assert_eq!(r.check(0, 700), Verdict::Skip);
        assert_eq!(r.check(0, 1000), Verdict::Take);
    }

    #[test]
    fn resume_accepts_a_gap_seen_from_offset_zero() {
        let r = Resume::new(100);
        assert_eq!(r.start(0, 60), 0);
        assert_eq!(r.check(0, 70), Verdict::Take);
        assert_eq!(r.check(0, 5), Verdict::Take, "nothing is pending any more");
    }

    #[test]
    fn no_rewind_means_no_bookkeeping() {
        let r = Resume::new(0);
        assert_eq!(r.start(3, 42), 42);
        assert_eq!(r.check(3, 99), Verdict::Take);
        let r = Resume::new(10);
        r.start(3, 42);
        r.forget(3);
        assert_eq!(r.check(3, 0), Verdict::Take);
    }
}
