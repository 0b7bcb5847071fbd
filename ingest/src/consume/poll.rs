//! The one poll loop of every reader: a consumer on one topic, how far it has read, and
//! [`Poller::poll`], which gathers records until a limit (records, bytes, the wait since the
//! first record), cancellation, the quiet time of a following reader or the end of an
//! until-idle read. What a record becomes (Arrow rows, owned messages) is the caller's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use schemas::config::KafkaConfig;
use tokio_util::sync::CancellationToken;

use super::resume::{ReaderContext, Resume, take};
use super::{Mode, OffsetRange, SETTLE};
use crate::kafka::{
    METADATA_TIMEOUT, client_config, is_rebalanced, is_transient, metadata_client, partitions,
};
use crate::{Error, Result};

/// How long one poll waits before checking cancellation and the idle condition.
const POLL: Duration = Duration::from_millis(250);
/// How often a reader logs that the broker is (still) unavailable.
const TRANSIENT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// When one poll ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct PollLimits {
    pub(super) max_records: usize,
    /// Value bytes.
    pub(super) max_bytes: u64,
    /// After the first record.
    pub(super) max_wait: Duration,
    /// A following reader (not until idle) returns an empty poll after this long without
    /// records; `None` waits for records or cancellation.
    pub(super) quiet: Option<Duration>,
}

/// Records of one poll, still in librdkafka's buffers, and the offsets they cover.
pub(super) struct Polled<'a> {
    pub(super) topic: &'a str,
    pub(super) messages: Vec<BorrowedMessage<'a>>,
    pub(super) ranges: BTreeMap<i32, OffsetRange>,
    /// Value bytes of `messages`.
    pub(super) bytes: u64,
}

/// How far a reader has read.
struct Progress {
    topic: String,
    /// Next offset per partition to reach before the reader is idle (assigned, until idle).
    idle_target: Option<BTreeMap<i32, i64>>,
    /// Next offset per partition after the last record read.
    positions: BTreeMap<i32, i64>,
    /// Partitions whose end was reached (partition EOF) since their last record.
    at_eof: BTreeSet<i32>,
    /// When the last record or end-of-partition event arrived.
    last_activity: Instant,
    /// When a transient broker error was last logged (they repeat every poll in an outage).
    last_transient_warning: Option<Instant>,
}

impl Progress {
    fn idle(&self) -> bool {
        idle(&self.idle_target, &self.positions, &self.at_eof, self.last_activity)
    }

    /// Logs a transient broker error at most every [`TRANSIENT_WARNING_EVERY`]: librdkafka
    /// reconnects and retries by itself, so the reader carries on.
    fn transient(&mut self, error: &KafkaError) {
        if self.last_transient_warning.is_none_or(|t| t.elapsed() >= TRANSIENT_WARNING_EVERY) {
            tracing::warn!(topic = %self.topic, error = %error, "broker unavailable; the reader retries");
            self.last_transient_warning = Some(Instant::now());
        }
    }

    /// At the end of partition `p`, the consumer's own position: past the last record read and
    /// any transaction markers after it. A topic written in transactions (the exactly-once
    /// scorer's) ends in a commit or abort marker, an offset no record is delivered for, so
    /// positions taken from records alone would stop one short of the watermark forever (on
    /// Apache Kafka; tansu has no transactions).
    fn past_control_records(&mut self, consumer: &StreamConsumer<ReaderContext>, p: i32) {
        let Ok(assigned) = consumer.position() else { return };
        let at = assigned.elements_for_topic(&self.topic).into_iter().find(|e| e.partition() == p);
        if let Some(Offset::Offset(end)) = at.map(|e| e.offset()) {
            let pos = self.positions.entry(p).or_insert(end);
            *pos = (*pos).max(end);
        }
    }
}

/// A consumer on one topic and its progress.
pub(super) struct Poller {
    consumer: StreamConsumer<ReaderContext>,
    progress: Progress,
}

impl Poller {
    pub(super) async fn open(kafka: &KafkaConfig, topic: &str, mode: Mode) -> Result<Poller> {
        let (consumer, positions, idle_target) = open_consumer(kafka, topic, mode).await?;
        let progress = Progress {
            topic: topic.to_string(),
            idle_target,
            positions,
            at_eof: BTreeSet::new(),
            last_activity: Instant::now(),
            last_transient_warning: None,
        };
        Ok(Poller { consumer, progress })
    }

    pub(super) fn topic(&self) -> &str {
        &self.progress.topic
    }

    pub(super) fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.progress.positions
    }

    /// The next records, `None` when cancelled or (until idle) caught up. Cancellation ends
    /// only a poll that has no record yet: records read are always returned.
    pub(super) async fn poll(
        &mut self,
        limits: PollLimits,
        cancel: &CancellationToken,
    ) -> Result<Option<Polled<'_>>> {
        let Poller { consumer, progress } = self;
        let consumer: &StreamConsumer<ReaderContext> = consumer;
        let mut messages: Vec<BorrowedMessage<'_>> = Vec::new();
        let mut ranges: BTreeMap<i32, OffsetRange> = BTreeMap::new();
        let mut bytes = 0u64;
        let mut deadline: Option<Instant> = None;
        let started = Instant::now();
        loop {
            if messages.len() >= limits.max_records || bytes >= limits.max_bytes {
                break;
            }
            if ranges.is_empty() && (cancel.is_cancelled() || progress.idle()) {
                return Ok(None);
            }
            if !ranges.is_empty() && progress.idle() {
                break;
            }
            if ranges.is_empty()
                && progress.idle_target.is_none()
                && limits.quiet.is_some_and(|q| started.elapsed() >= q)
            {
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
                r = tokio::time::timeout(wait, consumer.recv()) => r,
            };
            let msg = match msg {
                Err(_elapsed) => continue,
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    progress.at_eof.insert(p);
                    progress.last_activity = Instant::now();
                    progress.past_control_records(consumer, p);
                    continue;
                }
                Ok(Err(e)) if is_transient(&e) => {
                    progress.transient(&e);
                    continue;
                }
                Ok(Err(e)) => return Err(Error::kafka(format!("reading {}", progress.topic))(e)),
                Ok(Ok(m)) => m,
            };
            progress.last_activity = Instant::now();
            let (partition, offset) = (msg.partition(), msg.offset());
            if !take(consumer, &progress.topic, partition, offset)? {
                continue;
            }
            progress.at_eof.remove(&partition);
            deadline.get_or_insert_with(|| Instant::now() + limits.max_wait);
            bytes += msg.payload().map_or(0, <[u8]>::len) as u64;
            ranges
                .entry(partition)
                .and_modify(|r| r.next = offset + 1)
                .or_insert(OffsetRange { first: offset, next: offset + 1 });
            progress.positions.insert(partition, offset + 1);
            messages.push(msg);
        }
        Ok(Some(Polled { topic: &progress.topic, messages, ranges, bytes }))
    }

    /// The partitions of the topic assigned to this reader now (by its group, or all of them
    /// in assigned mode), sorted.
    pub(super) fn assigned_partitions(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements().iter().filter(|e| e.topic() == self.topic()).map(|e| e.partition()).collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// Commits (group mode) the next offsets after `ranges`, synchronously.
    pub(super) fn commit(&self, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let topic = self.topic();
        let tpl = offsets_list(topic, ranges)?;
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            // The broker is away: the next commit carries these offsets too (they are the
            // group's position, not a delta); a crash before it re-reads them, which
            // at-least-once allows.
            Err(e) if is_transient(&e) => {
                tracing::warn!(topic, error = %e, "offsets not committed: broker unavailable; the next commit carries them");
                Ok(())
            }
            // The group moved on without this member (seen on Apache Kafka when a broker
            // outage outlasted the session): it rejoins, and whoever owns the partitions then
            // resumes from the last committed offsets.
            Err(e) if is_rebalanced(&e) => {
                tracing::warn!(topic, error = %e, "offsets not committed: the group rebalanced; these records are read again");
                Ok(())
            }
            r => r.map_err(Error::kafka(format!("committing offsets of {topic}"))),
        }
    }

    /// The offsets `ranges` end at and the consumer group's metadata.
    pub(super) fn transaction_offsets(
        &self,
        ranges: &BTreeMap<i32, OffsetRange>,
    ) -> Result<(TopicPartitionList, rdkafka::consumer::ConsumerGroupMetadata)> {
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| Error::Input("transactions need a consumer group".into()))?;
        Ok((offsets_list(self.topic(), ranges)?, group))
    }

    /// Continues `partition` at `offset` if it is still assigned. Returns whether it was.
    pub(super) fn seek(&mut self, partition: i32, offset: i64) -> Result<bool> {
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
        let topic = &self.progress.topic;
        self.consumer
            .seek(topic, partition, Offset::Offset(from), Duration::from_secs(10))
            .map_err(Error::kafka(format!("seeking {topic}/{partition}")))?;
        self.progress.positions.insert(partition, offset);
        Ok(true)
    }
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

/// A consumer on `topic` in `mode`, with its start positions and (until-idle) targets.
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

/// The offsets to commit after `ranges`: each partition's next offset.
fn offsets_list(topic: &str, ranges: &BTreeMap<i32, OffsetRange>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (p, r) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(r.next))
            .map_err(Error::kafka("building a commit"))?;
    }
    Ok(tpl)
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
