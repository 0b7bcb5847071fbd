//! Between Rust values and CQL ones: timestamps (milliseconds), the day and hour buckets of
//! time-bucketed tables, versions as `int`, the `[applied]` column of lightweight transactions,
//! sortable sequence keys and their shard, and the row tuples the queries read. No session, no
//! statements.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlTimestamp, CqlValue, Row};

use crate::{Error, ModelVersion, Result};

/// Wraps a driver error with what was being done.
pub(crate) fn cql<E: std::error::Error + Send + Sync + 'static>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Cql { context: context.to_string(), source: Box::new(e) }
}

pub(crate) fn ts(t: DateTime<Utc>) -> CqlTimestamp {
    CqlTimestamp(t.timestamp_millis())
}

pub(super) fn from_ts(t: CqlTimestamp) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(t.0)
        .single()
        .ok_or_else(|| Error::Corrupt(format!("timestamp {} ms is out of range", t.0)))
}

pub(super) fn day_of(t: DateTime<Utc>) -> i32 {
    t.timestamp().div_euclid(86_400) as i32
}

pub(super) fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3_600)
}

pub(super) fn version_i32(v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Input(format!("version {v} is out of range")))
}

/// Whether a conditional write was applied: the `[applied]` column of its answer. A server
/// that answers a condition without one does not implement lightweight transactions, and the
/// store's cross-replica guarantees (version numbers, alias moves) would not hold on it.
pub(super) fn applied(result: QueryResult) -> Result<bool> {
    let unsupported = || {
        Error::Corrupt("the CQL server answered a conditional write without `[applied]`: it does not implement lightweight transactions, which this store needs".into())
    };
    if !result.is_rows() {
        return Err(unsupported());
    }
    let rows = result.into_rows_result().map_err(cql("conditional write"))?;
    let first = rows.maybe_first_row::<Row>().map_err(cql("conditional write"))?;
    match first.and_then(|r| r.columns.into_iter().next().flatten()) {
        Some(CqlValue::Boolean(b)) => Ok(b),
        _ => Err(unsupported()),
    }
}

/// Sortable unique sequence keys: time, a per-process random tag and a counter.
pub(super) struct Sequence {
    tag: u64,
    next: AtomicU64,
}

impl Sequence {
    pub(super) fn new() -> Sequence {
        let tag = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Sequence { tag, next: AtomicU64::new(0) }
    }

    pub(super) fn at(&self, t: DateTime<Utc>) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = t.timestamp_nanos_opt().unwrap_or_default().max(0);
        format!("{nanos:020}-{n:012}-{:016x}", self.tag)
    }
}

pub(super) type RunRow = (
    String,
    String,
    Option<String>,
    String,
    CqlTimestamp,
    Option<CqlTimestamp>,
    Option<BTreeMap<String, String>>,
    Option<BTreeMap<String, String>>,
    Option<String>,
    Option<String>,
);

pub(super) type MvRow = (
    String,
    i32,
    String,
    String,
    String,
    String,
    Option<BTreeMap<String, f64>>,
    String,
    String,
    CqlTimestamp,
);

pub(super) fn mv_from_row(row: MvRow) -> Result<ModelVersion> {
    let (
        name,
        version,
        run_id,
        family,
        data_version,
        spec_hash,
        metrics,
        artifact_dir,
        artifact_sha256,
        created_at,
    ) = row;
    Ok(ModelVersion {
        name,
        version: version as u32,
        run_id,
        family,
        data_version,
        spec_hash,
        metrics: metrics.unwrap_or_default(),
        artifact_dir,
        artifact_sha256,
        created_at: from_ts(created_at)?,
    })
}

/// A stable spread of sequence keys over shards (FNV-1a).
pub(super) fn shard_of(seq: &str) -> u64 {
    seq.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
