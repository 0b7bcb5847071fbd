//! Event-time order across partitions: records of several partitions come out in timestamp
//! order, as Kafka Streams merges a task's partitions. A record is released only when every
//! partition that may still deliver an earlier one has a record buffered — or has been idle for
//! `max_idle` (`max.task.idle.ms`), or (replaying) has been read to its end offset — so a
//! replay of a topic gives the windows watching it live gives, whichever partition the consumer
//! happens to read first.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// One partition's buffered records and what is known of its end.
struct Lane<T> {
    queue: VecDeque<(i64, i64, T)>,
    /// Next offset expected (one past the last pushed).
    next: i64,
    /// Replaying: the partition's end offset; nothing past it will come.
    end: Option<i64>,
    last_arrival: Instant,
}

impl<T> Lane<T> {
    /// Whether an earlier record may still arrive on this lane.
    fn blocks(&self, now: Instant, max_idle: Duration) -> bool {
        self.queue.is_empty()
            && self.end.is_none_or(|end| self.next < end)
            && now.duration_since(self.last_arrival) < max_idle
    }
}

/// Merges records of several partitions into timestamp order (ties: by partition, then offset).
pub struct EventTimeMerge<T> {
    lanes: BTreeMap<i32, Lane<T>>,
    max_idle: Duration,
    /// Per partition, the offset after the last record released (for committing).
    released: BTreeMap<i32, i64>,
}

impl<T> EventTimeMerge<T> {
    /// `partitions`: each partition with the offset it is read from and, when replaying to a
    /// known end, its end offset.
    pub fn new(
        partitions: impl IntoIterator<Item = (i32, i64, Option<i64>)>,
        max_idle: Duration,
        now: Instant,
    ) -> Self {
        let lanes = partitions
            .into_iter()
            .map(|(p, next, end)| (p, Lane { queue: VecDeque::new(), next, end, last_arrival: now }))
            .collect();
        EventTimeMerge { lanes, max_idle, released: BTreeMap::new() }
    }

    /// Buffers a record read from `partition` at `offset` with event time `ts_ms`.
    pub fn push(&mut self, partition: i32, offset: i64, ts_ms: i64, item: T, now: Instant) {
        let lane = self.lanes.entry(partition).or_insert_with(|| Lane {
            queue: VecDeque::new(),
            next: 0,
            end: None,
            last_arrival: now,
        });
        lane.queue.push_back((ts_ms, offset, item));
        lane.next = offset + 1;
        lane.last_arrival = now;
    }

    /// The records that can go now, in event-time order.
    pub fn ready(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        while !self.lanes.values().any(|l| l.blocks(now, self.max_idle)) {
            let Some(item) = self.pop_earliest() else { break };
            out.push(item);
        }
        out
    }

    /// Every buffered record, in event-time order (the end of a replay, or shutting down).
    pub fn finish(&mut self) -> Vec<T> {
        std::iter::from_fn(|| self.pop_earliest()).collect()
    }

    /// Per partition, the offset after the last record released so far.
    pub fn released(&self) -> &BTreeMap<i32, i64> {
        &self.released
    }

    /// Records buffered, not yet released.
    pub fn buffered(&self) -> usize {
        self.lanes.values().map(|l| l.queue.len()).sum()
    }

    fn pop_earliest(&mut self) -> Option<T> {
        let (&p, _) = self
            .lanes
            .iter()
            .filter_map(|(p, l)| l.queue.front().map(|(ts, off, _)| (p, (*ts, *p, *off))))
            .min_by_key(|(_, key)| *key)?;
        let (_, offset, item) = self.lanes.get_mut(&p)?.queue.pop_front()?;
        self.released.insert(p, offset + 1);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(1);

    #[test]
    fn uneven_reads_come_out_in_event_time_order() {
        let t0 = Instant::now();
        let mut m = EventTimeMerge::new([(0, 0, None), (1, 0, None)], IDLE, t0);
        // Partition 0 is read far ahead of partition 1: nothing goes until 1 delivers.
        for (off, ts) in [10, 20, 30, 40].into_iter().enumerate() {
            m.push(0, off as i64, ts, format!("p0@{ts}"), t0);
        }
        assert!(m.ready(t0).is_empty());
        m.push(1, 0, 15, "p1@15".to_string(), t0);
        assert_eq!(m.ready(t0), ["p0@10", "p1@15"], "then partition 1 is empty again and may have more");
        m.push(1, 1, 35, "p1@35".to_string(), t0);
        assert_eq!(m.ready(t0), ["p0@20", "p0@30", "p1@35"]);
        assert_eq!(m.released(), &BTreeMap::from([(0, 3), (1, 2)]));
        // Partition 1 stays quiet past the idle bound: partition 0 goes on alone.
        assert!(m.ready(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(m.ready(t0 + IDLE), ["p0@40"]);
        assert_eq!(m.buffered(), 0);
    }

    #[test]
    fn a_replay_does_not_wait_for_partitions_read_to_their_end() {
        let t0 = Instant::now();
        // Partition 2 holds nothing (retention removed offsets 0..5); partition 1 ends after two.
        let mut m = EventTimeMerge::new([(0, 0, Some(3)), (1, 0, Some(2)), (2, 5, Some(5))], IDLE, t0);
        m.push(0, 0, 1, 'a', t0);
        m.push(0, 1, 4, 'd', t0);
        m.push(1, 0, 2, 'b', t0);
        assert_eq!(m.ready(t0), ['a', 'b']);
        m.push(1, 1, 3, 'c', t0);
        assert_eq!(m.ready(t0), ['c', 'd'], "partition 1 is done; partition 0 waits for its last record");
        m.push(0, 2, 9, 'e', t0);
        assert_eq!(m.ready(t0), ['e']);
    }

    #[test]
    fn finish_drains_in_order_keeping_each_partitions_own_order() {
        let t0 = Instant::now();
        let mut m = EventTimeMerge::new([(0, 0, None), (1, 0, None), (2, 0, None)], IDLE, t0);
        m.push(1, 7, 5, "1:7", t0);
        m.push(0, 3, 5, "0:3", t0);
        m.push(1, 8, 5, "1:8", t0);
        m.push(0, 4, 2, "0:4", t0);
        assert!(m.ready(t0).is_empty(), "partition 2 may still send something earlier");
        // A partition's records keep their offset order (a late timestamp stays behind); equal
        // timestamps go by partition.
        assert_eq!(m.finish(), ["0:3", "0:4", "1:7", "1:8"]);
    }
}
