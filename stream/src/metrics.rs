//! Prometheus metrics of the ingest side of the snapshot job and of the snapshot store,
//! registered into the process's registry.

use std::collections::BTreeMap;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use schemas::metric_names as m;

/// Handles to the snapshot job's metrics.
#[derive(Clone)]
pub struct SnapshotMetrics {
    pub records: IntCounter,
    pub bytes: IntCounter,
    pub dead_letters: IntCounterVec,
    pub commits: IntCounter,
    pub rows_added: IntCounter,
    pub rows: IntGauge,
    pub commit_seconds: Histogram,
    pub lag: IntGaugeVec,
}

impl std::fmt::Debug for SnapshotMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotMetrics")
    }
}

impl SnapshotMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<SnapshotMetrics> {
        let records =
            IntCounter::new(m::INGEST_RECORDS_TOTAL, "Records read from text.raw by the snapshot job")?;
        let bytes = IntCounter::new(m::INGEST_BYTES_TOTAL, "Payload bytes read from text.raw")?;
        let dead_letters = IntCounterVec::new(
            Opts::new(m::INGEST_DEAD_LETTERS_TOTAL, "Dead letters by reason"),
            &["reason"],
        )?;
        let commits = IntCounter::new(m::SNAPSHOT_COMMITS_TOTAL, "Snapshot versions committed")?;
        let rows_added = IntCounter::new(m::SNAPSHOT_ROWS_ADDED_TOTAL, "Rows added by committed versions")?;
        let rows = IntGauge::new(m::SNAPSHOT_ROWS, "Rows in the latest committed version")?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(m::SNAPSHOT_COMMIT_DURATION_SECONDS, "Time to write and commit a version")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                m::SNAPSHOT_LAG_RECORDS,
                "Records between the snapshot job's position and the partition end",
            ),
            &["partition"],
        )?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(rows_added.clone()))?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        // Every reason appears from the start, so rates and alerts see 0 rather than nothing.
        for reason in schemas::records::DeadReason::ALL {
            dead_letters.with_label_values(&[reason.code()]);
        }
        Ok(SnapshotMetrics { records, bytes, dead_letters, commits, rows_added, rows, commit_seconds, lag })
    }

    /// Sets the lag per partition (from [`ingest::consume::BatchReader::lag`]).
    pub fn set_lag(&self, lag: &BTreeMap<i32, i64>) {
        for (p, records) in lag {
            self.lag.with_label_values(&[p.to_string().as_str()]).set(*records);
        }
    }
}
