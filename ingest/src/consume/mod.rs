//! Reading a topic as micro-batches of Arrow RecordBatches.
//!
//! A [`BatchReader`] closes a batch at whichever limit comes first: rows, payload bytes, or the
//! wait since the batch's first record. Records that cannot be decoded are sent to the
//! dead-letter topic *before* the batch is returned, so once the caller commits a batch's
//! offset ranges every record in them is accounted for — as a row or as a dead letter. A
//! [`MessageReader`] reads the pipeline's own JSON topics as owned messages the caller decodes.
//!
//! Both readers share one poll loop (`poll`: limits, idle detection, cancellation, offset
//! ranges); `resume` is where a partition restarts (tansu's fetch quirk, rebalances),
//! `batch_reader` decodes in parallel into Arrow, `dead` sends what cannot be decoded, `tail`
//! reads the newest records of each partition (the UI's view of the dead-letter topic).
//! Nothing here knows about cleaning or snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod batch_reader;
mod dead;
mod message_reader;
mod poll;
mod resume;
mod tail;

pub use batch_reader::{BatchLimits, BatchReader, ConsumedBatch, LAG_INTERVAL};
pub use dead::{DeadLetter, DeadLetters};
pub use message_reader::{MessageReader, RawMessage};
pub use poll::consumer_config;
pub use resume::{ReaderContext, Resume, Verdict};
pub use tail::{TailRecord, tail};

/// A following reader returns an empty batch after this long without records.
pub const QUIET: Duration = Duration::from_secs(1);

/// An until-idle reader is caught up only after this long without any record or end-of-
/// partition event: tansu 0.6 reports the high watermark (in ListOffsets *and* in fetch
/// responses) as the base offset of the last record batch + 1, so partition EOF can arrive
/// while a large batch's records are still to come. Apache Kafka reports the exact watermark, so
/// there the settle only adds its 1.5 s to the end of a read (one code path for both brokers).
pub const SETTLE: Duration = Duration::from_millis(1500);

/// Offsets `[first, next)` of one partition consumed into a batch (rows and dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub first: i64,
    pub next: i64,
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
