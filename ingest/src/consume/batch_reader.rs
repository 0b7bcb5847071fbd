//! [`BatchReader`]: a topic of raw text records as micro-batches of Arrow rows, decoded in
//! consecutive parts on as many cores, with undecodable records sent to the dead-letter sink
//! before the batch is returned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use schemas::config::{IngestConfig, KafkaConfig};
use schemas::records::DeadReason;
use tokio_util::sync::CancellationToken;

use super::poll::{PollLimits, Poller};
use super::{DeadLetter, DeadLetters, Mode, OffsetRange, QUIET};
use crate::Result;
use crate::batch::{Provenance, RawBatchBuilder, RowBuffer, RowSink};
use crate::decode::Decoder;
use crate::kafka::{METADATA_TIMEOUT, metadata_client};

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

/// Reads `topic` in micro-batches. Without a dead-letter sink, undecodable records are only
/// returned in [`ConsumedBatch::rejected`] (the scorer reports them; the snapshot job owns the
/// dead-letter topic).
pub struct BatchReader {
    poller: Poller,
    limits: BatchLimits,
    dead: Option<DeadLetters>,
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
        Ok(BatchReader {
            poller: Poller::open(kafka, topic, mode).await?,
            limits,
            dead,
            kafka: kafka.clone(),
            metadata: None,
            lag_refreshed: None,
            workers: (0..decode_threads()).map(|_| Default::default()).collect(),
        })
    }

    /// The partitions of the topic assigned to this reader now (by its group, or all of them
    /// in assigned mode), sorted.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.poller.assigned_partitions()
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
        let topic = self.poller.topic().to_string();
        let partitions = self.poller.positions().keys().copied().collect::<Vec<_>>();
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
                    .filter_map(|(p, end)| self.poller.positions().get(&p).map(|pos| (p, (end - pos).max(0))))
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
        self.poller.positions()
    }

    /// The next micro-batch, `None` when cancelled or (with `until_idle`) caught up.
    /// A batch may hold zero rows when all its records were dead letters, and a reader that
    /// follows a topic returns an empty batch after [`QUIET`] without records, so callers can
    /// act on time (e.g. commit) without cancelling a read in progress.
    pub async fn next_batch(&mut self, cancel: &CancellationToken) -> Result<Option<ConsumedBatch>> {
        // Records stay in librdkafka's buffers until the batch is complete, then are decoded
        // straight into column builders, in consecutive parts on as many cores.
        let limits = PollLimits {
            max_records: self.limits.max_rows,
            max_bytes: self.limits.max_bytes as u64,
            max_wait: self.limits.max_wait,
            quiet: Some(QUIET),
        };
        let Some(polled) = self.poller.poll(limits, cancel).await? else { return Ok(None) };
        let (ranges, bytes) = (polled.ranges, polled.bytes);
        let (batch, letters) = decode_parts(
            &mut self.workers,
            &polled.messages,
            bytes as usize,
            polled.topic,
            self.limits.max_record_bytes,
        );
        drop(polled.messages);
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
        self.poller.commit(ranges)
    }

    /// The offsets `ranges` end at and the consumer group's metadata: what a transactional
    /// producer commits together with the records it made from them.
    pub fn transaction_offsets(
        &self,
        ranges: &BTreeMap<i32, OffsetRange>,
    ) -> Result<(TopicPartitionList, rdkafka::consumer::ConsumerGroupMetadata)> {
        self.poller.transaction_offsets(ranges)
    }

    /// Continues `partition` at `offset` if it is still assigned to this reader (after another
    /// writer committed past what this one read). Returns whether it was.
    pub fn seek(&mut self, partition: i32, offset: i64) -> Result<bool> {
        self.poller.seek(partition, offset)
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
