//! The snapshot job: consume `text.raw`, clean, write Parquet objects, commit versions.
//!
//! Exactly-once into snapshots without broker transactions: the offsets a version consumed are
//! part of its manifest, committed atomically with the objects; on start the job resumes from
//! the latest manifest's offsets. A crash between consuming and committing loses nothing (the
//! records are read again) and duplicates nothing (the uncommitted objects are never
//! referenced). Dead letters are acknowledged before the batch is counted, so they are
//! at-least-once on the dead-letter topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ingest::consume::{BatchLimits, BatchReader, DeadLetters, Mode, OffsetRange};
use ingest::control::ControlProducer;
use schemas::Config;
use schemas::events::ControlEvent;
use schemas::records::clean_schema;
use tokio_util::sync::CancellationToken;

use crate::clean::CleanPlan;
use crate::store::{Draft, Manifest, ObjectWriter, SnapshotStore, SourceOffsets};
use crate::{Error, Result};

/// How a snapshot run behaves.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Stop once caught up with the topic's end as seen at start (one version); otherwise
    /// follow the topic until cancelled, committing periodically.
    pub until_idle: bool,
    pub commit_max_rows: usize,
    pub commit_interval: Duration,
    /// Tags recorded in the manifests this run commits.
    pub tags: Vec<String>,
}

impl SnapshotOptions {
    pub fn from_config(config: &Config, until_idle: bool) -> Self {
        SnapshotOptions {
            until_idle,
            commit_max_rows: config.snapshot.commit_max_rows,
            commit_interval: Duration::from_secs(config.snapshot.commit_interval_secs),
            tags: Vec::new(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    pub commits: Vec<Manifest>,
    /// Records read from the topic (valid ones, before cleaning filters).
    pub records: u64,
    /// Rows the cleaning plan dropped.
    pub filtered: u64,
    /// Dead letters, by reason code.
    pub dead: BTreeMap<String, u64>,
}

/// Runs the snapshot job for `config.snapshot.dataset`.
pub async fn run_snapshot(
    config: &Config,
    plan: Arc<CleanPlan>,
    store: &SnapshotStore,
    opts: &SnapshotOptions,
    control: Option<&ControlProducer>,
    cancel: &CancellationToken,
) -> Result<SnapshotReport> {
    let topics = config.topics();
    let dataset = &config.snapshot.dataset;
    let latest = store.latest(dataset)?;
    if let Some(m) = &latest
        && m.spec_hash != plan.hash()
    {
        return Err(Error::Conflict(format!(
            "dataset `{dataset}` was cleaned with spec {} but the configured plan is {}; \
                 set snapshot.dataset to a new name or restore the spec",
            &m.spec_hash[..12],
            &plan.hash()[..12]
        )));
    }
    let start = latest.as_ref().map(|m| m.resume_offsets(&topics.raw)).unwrap_or_default();
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let dead = DeadLetters::new(producer, topics.dead.clone());
    let mut reader = BatchReader::new(
        &config.kafka,
        &topics.raw,
        Mode::Assigned { start, until_idle: opts.until_idle },
        BatchLimits::from(&config.ingest),
        Some(dead),
    )
    .await?;

    let mut report = SnapshotReport::default();
    let mut pending = Pending::new(store)?;
    let mut last_commit = Instant::now();
    while let Some(consumed) = reader.next_batch(cancel).await? {
        report.records += consumed.batch.num_rows() as u64;
        for (reason, n) in &consumed.dead {
            *report.dead.entry(reason.code().to_string()).or_default() += n;
        }
        let rows = consumed.batch_rows();
        let (task_plan, batch) = (plan.clone(), consumed.batch);
        let kept = tokio::task::spawn_blocking(move || task_plan.apply(&batch)?.kept())
            .await
            .map_err(|e| Error::Internal(format!("cleaning task failed: {e}")))??;
        report.filtered += (rows - kept.num_rows()) as u64;
        pending.writer.write(&kept)?;
        pending.add_ranges(&consumed.ranges);
        let due = pending.writer.rows() as usize >= opts.commit_max_rows
            || (!opts.until_idle && last_commit.elapsed() >= opts.commit_interval);
        if due {
            if let Some(m) = pending.commit(store, &topics.raw, dataset, &plan, opts, control).await? {
                report.commits.push(m);
            }
            pending = Pending::new(store)?;
            last_commit = Instant::now();
        }
    }
    if let Some(m) = pending.commit(store, &topics.raw, dataset, &plan, opts, control).await? {
        report.commits.push(m);
    }
    Ok(report)
}

/// Rows and offsets consumed since the last commit.
struct Pending {
    writer: ObjectWriter,
    ranges: BTreeMap<i32, OffsetRange>,
}

impl Pending {
    fn new(store: &SnapshotStore) -> Result<Pending> {
        Ok(Pending { writer: store.object_writer(clean_schema())?, ranges: BTreeMap::new() })
    }

    fn add_ranges(&mut self, ranges: &BTreeMap<i32, OffsetRange>) {
        for (p, r) in ranges {
            self.ranges
                .entry(*p)
                .and_modify(|e| {
                    e.first = e.first.min(r.first);
                    e.next = e.next.max(r.next);
                })
                .or_insert(*r);
        }
    }

    /// Commits a version when anything was consumed (even if every record was dropped or dead,
    /// so the offsets move on).
    async fn commit(
        self,
        store: &SnapshotStore,
        topic: &str,
        dataset: &str,
        plan: &CleanPlan,
        opts: &SnapshotOptions,
        control: Option<&ControlProducer>,
    ) -> Result<Option<Manifest>> {
        if self.ranges.is_empty() {
            return Ok(None);
        }
        let file = self.writer.finish()?;
        let draft = Draft {
            dataset: dataset.to_string(),
            spec_hash: plan.hash().to_string(),
            schema: clean_schema(),
            new_files: file.into_iter().collect(),
            consumed: self
                .ranges
                .iter()
                .map(|(p, r)| SourceOffsets {
                    topic: topic.to_string(),
                    partition: *p,
                    first: r.first,
                    next: r.next,
                })
                .collect(),
            tags: opts.tags.clone(),
        };
        let store = store.clone();
        let manifest = tokio::task::spawn_blocking(move || store.commit(draft, Utc::now()))
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
        tracing::info!(
            dataset,
            version = manifest.short_id(),
            seq = manifest.seq,
            rows_added = manifest.added.rows,
            rows = manifest.rows,
            "snapshot committed"
        );
        if let Some(control) = control {
            let event = ControlEvent::SnapshotCommitted {
                dataset: dataset.to_string(),
                version: manifest.id.clone(),
                parent: manifest.parent.clone(),
                rows_added: manifest.added.rows,
                rows: manifest.rows,
            };
            // The version is committed; a lost notification must not fail the job.
            if let Err(e) = control.send(event).await {
                tracing::warn!(error = %e, "could not publish SnapshotCommitted");
            }
        }
        Ok(Some(manifest))
    }
}
