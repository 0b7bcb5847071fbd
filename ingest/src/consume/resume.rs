//! Where a partition resumes: [`Resume`] (fetch early, skip what precedes the resume offset,
//! seek further back if the broker skipped past it) and the consumer context that applies it
//! — with the caller's [`OffsetSource`] or the group's committed offsets — on every rebalance.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::OffsetSource;
use crate::kafka::METADATA_TIMEOUT;
use crate::{Error, Result};

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
    pub(super) topic: String,
    pub(super) offsets: Option<OffsetSource>,
    pub(super) resume: Resume,
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
pub(super) fn take(
    consumer: &StreamConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<bool> {
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
