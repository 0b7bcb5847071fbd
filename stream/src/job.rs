//! The snapshot job: consume `text.raw`, clean, write Parquet objects, commit versions.
//!
//! Exactly-once into snapshots without broker transactions: the offsets a version consumed are
//! part of its manifest, committed atomically with the objects; a worker starts each partition
//! at the latest manifest's offset. Rows are written to one object per partition, so the store
//! can refuse a partition range another worker already committed (after a rebalance, or a
//! concurrent run) without losing the others; the job then continues that partition where the
//! latest version ends. A crash between consuming and committing loses nothing (the records
//! are read again) and duplicates nothing (uncommitted objects are never referenced). Dead
//! letters are acknowledged before a batch counts, so they are at-least-once on the dead-letter
//! topic.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use chrono::Utc;
use ingest::consume::{BatchLimits, BatchReader, DeadLetter, DeadLetters, Mode, OffsetRange, OffsetSource};
use ingest::control::ControlProducer;
use schemas::Config;
use schemas::events::ControlEvent;
use schemas::records::{DeadReason, clean_schema, col};
use tokio_util::sync::CancellationToken;

use crate::clean::{CleanPlan, content_hash};
use crate::store::{
    Derivation, Draft, DraftPart, Manifest, ObjectWriter, RAW_SPEC, RawLink, SnapshotStore, SourceOffsets,
};
use crate::{Error, Result};

/// How a snapshot run behaves.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Stop once caught up with the topic's end as seen at start; otherwise follow the topic
    /// until cancelled, committing periodically.
    pub until_idle: bool,
    /// Share the partitions with other workers through a consumer group
    /// (`<group_id>.snapshot`) instead of reading every partition.
    pub group: bool,
    pub commit_max_rows: usize,
    pub commit_interval: Duration,
    /// Tags recorded in the manifests this run commits.
    pub tags: Vec<String>,
    /// The raw dataset the records as read are committed to before each version, which then
    /// records the raw version it was cleaned from (`snapshot.raw_dataset`: a name, or `auto`
    /// — see [`crate::derive::raw_dataset_for`]); None: no raw data.
    pub raw_dataset: Option<String>,
    /// Where to record ingest and snapshot metrics.
    pub metrics: Option<crate::metrics::SnapshotMetrics>,
}

impl SnapshotOptions {
    pub fn from_config(config: &Config, until_idle: bool) -> Self {
        SnapshotOptions {
            until_idle,
            group: false,
            commit_max_rows: config.snapshot.commit_max_rows,
            commit_interval: Duration::from_secs(config.snapshot.commit_interval_secs),
            tags: Vec::new(),
            raw_dataset: Some(config.snapshot.raw_dataset.clone()).filter(|d| !d.is_empty()),
            metrics: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    pub commits: Vec<Manifest>,
    /// The raw versions committed (before the processed ones).
    pub raw_commits: Vec<Manifest>,
    /// Records read from the topic (valid ones, before cleaning filters).
    pub records: u64,
    /// Rows the cleaning plan's filters dropped (sent to the dead-letter topic as `filtered`).
    pub filtered: u64,
    /// Rows dropped as duplicates of a text already in the dataset.
    pub duplicates: u64,
    /// Dead letters, by reason code.
    pub dead: BTreeMap<String, u64>,
    /// Partition ranges refused because another writer had committed them.
    pub rejected: u64,
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
    let dataset = config.snapshot.dataset.clone();
    let latest = store.latest(&dataset)?;
    if let Some(m) = &latest
        && m.spec_hash != plan.hash()
    {
        let first_default = m.spec_hash == crate::clean::CleanSpec::first_default().hash();
        return Err(Error::Conflict(format!(
            "dataset `{dataset}` was cleaned with spec {} but the configured plan is {}; \
             set snapshot.dataset to a new name or restore the spec{}",
            &m.spec_hash[..12],
            &plan.hash()[..12],
            if first_default {
                " (it is the first built-in default: `driftwood spec --first-default > spec.toml` \
                 and clean.spec = \"spec.toml\" keep writing it)"
            } else {
                ""
            }
        )));
    }
    store.save_spec(plan.spec())?;
    let mut seen = match (&latest, plan.dedupe()) {
        (Some(m), true) => crate::derive::content_hashes(store, m)?,
        _ => HashSet::new(),
    };
    let raw = match opts.raw_dataset.as_deref() {
        Some(configured) => Some(crate::derive::raw_dataset_for(store, configured, &dataset)?),
        None => None,
    };
    let ctx = Commit {
        store,
        topic: &topics.raw,
        dataset: &dataset,
        plan: &plan,
        opts,
        control,
        raw: raw.as_deref(),
    };
    let mut report = SnapshotReport::default();
    // Whatever the raw dataset holds beyond this one (a crash between the two commits, another
    // worker, a new dataset on an old raw history) is cleaned from it before reading the topic.
    ctx.follow_raw(&mut seen, &mut report).await?;
    let latest = store.latest(&dataset)?;
    let mode = if opts.group {
        let (store, dataset, topic) = (store.clone(), dataset.clone(), topics.raw.clone());
        let offsets = OffsetSource(Arc::new(move |p| match store.latest(&dataset) {
            Ok(m) => m.and_then(|m| m.resume_offsets(&topic).get(&p).copied()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the latest manifest; starting at the group offset");
                None
            }
        }));
        Mode::GroupAt { group_id: config.groups().snapshot(), offsets }
    } else {
        let start = latest.as_ref().map(|m| m.resume_offsets(&topics.raw)).unwrap_or_default();
        Mode::Assigned { start, until_idle: opts.until_idle }
    };
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let dead = DeadLetters::new(producer, topics.dead.clone());
    let mut reader = BatchReader::new(
        &config.kafka,
        &topics.raw,
        mode,
        BatchLimits::from(&config.ingest),
        Some(dead.clone()),
    )
    .await?;

    let mut pending = Pending::default();
    let mut last_commit = Instant::now();
    loop {
        // In follow mode an empty batch comes back when the topic is quiet, so the commit
        // interval is honoured without cancelling a read in progress.
        let Some(consumed) = reader.next_batch(cancel).await? else { break };
        if let Some(m) = &opts.metrics {
            m.records.inc_by((consumed.batch_rows() + consumed.rejected.len()) as u64);
            m.bytes.inc_by(consumed.bytes);
            for (reason, n) in &consumed.dead {
                m.dead_letters.with_label_values(&[reason.code()]).inc_by(*n);
            }
            if let Some(lag) = reader.lag().await {
                m.set_lag(&lag);
            }
        }
        report.records += consumed.batch_rows() as u64;
        for (reason, n) in &consumed.dead {
            *report.dead.entry(reason.code().to_string()).or_default() += n;
        }
        let rows = consumed.batch_rows();
        let (task_plan, batch) = (plan.clone(), consumed.batch.clone());
        let cleaned = tokio::task::spawn_blocking(move || task_plan.apply(&batch))
            .await
            .map_err(|e| Error::Internal(format!("cleaning task failed: {e}")))??;
        let mut letters = filtered_letters(&consumed.batch, &cleaned, &topics.raw)?;
        let kept = cleaned.kept()?;
        let before_dedupe = kept.num_rows();
        let kept = if plan.dedupe() {
            let unique = pending.dedupe(&kept, &seen)?;
            if unique.true_count() < kept.num_rows() {
                let raw_kept = filter_record_batch(&consumed.batch, &cleaned.keep)?;
                letters.extend(dead_rows(&raw_kept, &topics.raw, |i| {
                    (!unique.value(i)).then(|| {
                        (DeadReason::Duplicate, "the cleaned text is already in the dataset".to_string())
                    })
                })?);
            }
            filter_record_batch(&kept, &unique)?
        } else {
            kept
        };
        if !letters.is_empty() {
            dead.send_all(&letters).await?;
            for l in &letters {
                *report.dead.entry(l.reason.code().to_string()).or_default() += 1;
                if let Some(m) = &opts.metrics {
                    m.dead_letters.with_label_values(&[l.reason.code()]).inc();
                }
            }
        }
        report.duplicates += (before_dedupe - kept.num_rows()) as u64;
        report.filtered += (rows - before_dedupe) as u64;
        let raw = ctx.raw.is_some().then_some(&consumed.batch);
        pending.add(store, &kept, raw, &consumed.ranges)?;
        let due = pending.rows() >= opts.commit_max_rows
            || (!opts.until_idle && !pending.is_empty() && last_commit.elapsed() >= opts.commit_interval);
        if due {
            ctx.commit(std::mem::take(&mut pending), &mut seen, &mut reader, &mut report).await?;
            last_commit = Instant::now();
        }
    }
    ctx.commit(pending, &mut seen, &mut reader, &mut report).await?;
    Ok(report)
}

/// Dead letters for the rows the plan's filters dropped.
fn filtered_letters(
    raw: &RecordBatch,
    cleaned: &crate::clean::CleanOutput,
    topic: &str,
) -> Result<Vec<DeadLetter>> {
    if cleaned.keep.true_count() == raw.num_rows() {
        return Ok(Vec::new());
    }
    let cleaned_texts = strings(&cleaned.batch, col::TEXT)?;
    dead_rows(raw, topic, |i| {
        (!cleaned.keep.value(i)).then(|| {
            let n = cleaned_texts.value(i).chars().count();
            let detail = if n == 0 {
                "empty after cleaning".to_string()
            } else {
                format!("{n} characters after cleaning, outside the spec's length limits")
            };
            (DeadReason::Filtered, detail)
        })
    })
}

/// Dead letters for the rows of `raw` (raw schema) that `verdict` rejects: the record as
/// read, in JSON, keyed by id.
fn dead_rows(
    raw: &RecordBatch,
    topic: &str,
    verdict: impl Fn(usize) -> Option<(DeadReason, String)>,
) -> Result<Vec<DeadLetter>> {
    let ids = strings(raw, col::ID)?;
    let texts = strings(raw, col::TEXT)?;
    let labels = strings(raw, col::LABEL)?;
    let partitions = raw
        .column(raw.schema().index_of(col::PARTITION)?)
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| Error::Internal("kafka_partition is not Int32".into()))?;
    let offsets = raw
        .column(raw.schema().index_of(col::OFFSET)?)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or_else(|| Error::Internal("kafka_offset is not Int64".into()))?;
    let mut out = Vec::new();
    for i in 0..raw.num_rows() {
        let Some((reason, detail)) = verdict(i) else { continue };
        let record = serde_json::json!({
            "id": ids.value(i),
            "text": texts.value(i),
            "label": labels.is_valid(i).then(|| labels.value(i)),
        });
        out.push(DeadLetter {
            key: Some(ids.value(i).as_bytes().to_vec()),
            value: serde_json::to_vec(&record).expect("JSON serializes"),
            reason,
            detail,
            source_topic: topic.to_string(),
            partition: partitions.value(i),
            offset: offsets.value(i),
        });
    }
    Ok(out)
}

pub(crate) fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    let idx = batch.schema().index_of(name)?;
    batch
        .column(idx)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Internal(format!("column {name} is not Utf8")))
}

/// Rows and offsets of one partition since the last commit.
struct PartitionPending {
    writer: Option<ObjectWriter>,
    /// The records as read, for the raw dataset.
    raw: Option<ObjectWriter>,
    range: OffsetRange,
    hashes: Vec<u64>,
}

/// Everything consumed since the last commit, per partition.
#[derive(Default)]
struct Pending {
    parts: BTreeMap<i32, PartitionPending>,
    /// Every pending part's content hashes, kept as rows are added (for `dedupe`).
    hashes: HashSet<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    fn rows(&self) -> usize {
        self.parts.values().map(|p| p.writer.as_ref().map_or(0, |w| w.rows() as usize)).sum()
    }

    /// Which rows to keep: those whose text was not seen in the dataset, in this pending data,
    /// or earlier in the batch.
    fn dedupe(&self, batch: &RecordBatch, seen: &HashSet<u64>) -> Result<BooleanArray> {
        let mut in_batch = HashSet::new();
        let texts = strings(batch, col::TEXT)?;
        let keep: BooleanArray = texts
            .iter()
            .map(|t| {
                let h = content_hash(t.unwrap_or_default());
                Some(!seen.contains(&h) && !self.hashes.contains(&h) && in_batch.insert(h))
            })
            .collect();
        Ok(keep)
    }

    /// Adds kept rows and the records as read (`raw`), split by partition, and the consumed
    /// ranges.
    fn add(
        &mut self,
        store: &SnapshotStore,
        kept: &RecordBatch,
        raw: Option<&RecordBatch>,
        ranges: &BTreeMap<i32, OffsetRange>,
    ) -> Result<()> {
        for (p, r) in ranges {
            self.parts
                .entry(*p)
                .and_modify(|e| {
                    e.range.first = e.range.first.min(r.first);
                    e.range.next = e.range.next.max(r.next);
                })
                .or_insert(PartitionPending { writer: None, raw: None, range: *r, hashes: Vec::new() });
        }
        if let Some(raw) = raw {
            for (p, rows) in by_partition(raw)? {
                let part = self.part(p)?;
                if part.raw.is_none() {
                    part.raw = Some(store.object_writer(clean_schema())?);
                }
                part.raw.as_mut().expect("just created").write(&rows)?;
            }
        }
        for (p, rows) in by_partition(kept)? {
            let part = self.part(p)?;
            if part.writer.is_none() {
                part.writer = Some(store.object_writer(clean_schema())?);
            }
            part.writer.as_mut().expect("just created").write(&rows)?;
            let hashes: Vec<u64> =
                strings(&rows, col::TEXT)?.iter().map(|t| content_hash(t.unwrap_or_default())).collect();
            part.hashes.extend(&hashes);
            self.hashes.extend(hashes);
        }
        Ok(())
    }

    fn part(&mut self, p: i32) -> Result<&mut PartitionPending> {
        self.parts
            .get_mut(&p)
            .ok_or_else(|| Error::Internal(format!("a row of partition {p} outside the consumed ranges")))
    }
}

/// The rows of `batch` per Kafka partition, in order.
fn by_partition(batch: &RecordBatch) -> Result<Vec<(i32, RecordBatch)>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let partitions = batch
        .column(batch.schema().index_of(col::PARTITION)?)
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| Error::Internal("kafka_partition is not Int32".into()))?;
    let distinct: std::collections::BTreeSet<i32> = partitions.values().iter().copied().collect();
    distinct
        .into_iter()
        .map(|p| {
            let mask: BooleanArray = partitions.iter().map(|v| Some(v == Some(p))).collect();
            Ok((p, filter_record_batch(batch, &mask)?))
        })
        .collect()
}

/// What a commit needs to know.
struct Commit<'a> {
    store: &'a SnapshotStore,
    topic: &'a str,
    dataset: &'a str,
    plan: &'a Arc<CleanPlan>,
    opts: &'a SnapshotOptions,
    control: Option<&'a ControlProducer>,
    /// The raw dataset, resolved.
    raw: Option<&'a str>,
}

/// Attempts at deriving from the raw dataset while other writers keep committing.
const DERIVE_ATTEMPTS: usize = 10;

impl Commit<'_> {
    /// Commits a version when anything was consumed (even if every record was dropped or dead,
    /// so the offsets move on). Ranges another writer already committed are dropped and their
    /// partitions continued where the latest version ends.
    ///
    /// With a raw dataset, the records as read are committed there first; the cleaned rows
    /// then commit linked to that raw version. When another writer went first (a raw range
    /// refused, or the dataset no longer linked to the raw version before ours), the cleaned
    /// rows of this commit are dropped and the dataset is derived from the raw dataset instead,
    /// which holds these records (ours or the other writer's) — see [`crate::derive`].
    async fn commit(
        &self,
        pending: Pending,
        seen: &mut HashSet<u64>,
        reader: &mut BatchReader,
        report: &mut SnapshotReport,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        let mut raw_parts = Vec::new();
        let mut hashes: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
        for (p, part) in pending.parts {
            let consumed = SourceOffsets {
                topic: self.topic.to_string(),
                partition: p,
                first: part.range.first,
                next: part.range.next,
            };
            hashes.insert(p, part.hashes);
            if self.raw.is_some() {
                raw_parts.push(DraftPart { consumed: Some(consumed.clone()), file: finish(part.raw)? });
            }
            parts.push(DraftPart { consumed: Some(consumed), file: finish(part.writer)? });
        }
        let mut derivation = None;
        if let Some(raw) = self.raw {
            let draft = Draft {
                dataset: raw.to_string(),
                spec_hash: RAW_SPEC.to_string(),
                schema: clean_schema(),
                parts: raw_parts,
                tags: Vec::new(),
                replace_files: false,
                imported: vec![],
                raw: None,
            };
            let committed = self.commit_draft(draft).await?;
            self.continue_rejected(&committed.rejected, reader, report)?;
            let clean = committed.rejected.is_empty();
            if let Some(r) = committed.manifest {
                tracing::info!(dataset = %raw, version = r.short_id(), seq = r.seq, rows_added = r.added.rows, "raw data committed");
                derivation = clean.then(|| Derivation { link: RawLink::of(&r), after: r.parent.clone() });
                report.raw_commits.push(r);
            }
            if derivation.is_none() {
                return self.follow_raw(seen, report).await;
            }
        }
        let draft = Draft {
            dataset: self.dataset.to_string(),
            spec_hash: self.plan.hash().to_string(),
            schema: clean_schema(),
            parts,
            tags: self.opts.tags.clone(),
            replace_files: false,
            imported: vec![],
            raw: derivation,
        };
        let started = Instant::now();
        let committed = self.commit_draft(draft).await?;
        if committed.stale {
            return self.follow_raw(seen, report).await;
        }
        for r in &committed.rejected {
            hashes.remove(&r.consumed.partition);
        }
        self.continue_rejected(&committed.rejected, reader, report)?;
        seen.extend(hashes.into_values().flatten());
        if let Some(manifest) = committed.manifest {
            if let Some(m) = &self.opts.metrics {
                m.commit_seconds.observe(started.elapsed().as_secs_f64());
            }
            self.committed(manifest, report).await;
        }
        Ok(())
    }

    async fn commit_draft(&self, draft: Draft) -> Result<crate::store::Committed> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(draft, Utc::now()))
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))?
    }

    /// Moves the reader past ranges another writer committed first.
    fn continue_rejected(
        &self,
        rejected: &[crate::store::Rejected],
        reader: &mut BatchReader,
        report: &mut SnapshotReport,
    ) -> Result<()> {
        for r in rejected {
            report.rejected += 1;
            let continued = reader.seek(r.consumed.partition, r.resume_at)?;
            tracing::warn!(
                partition = r.consumed.partition,
                first = r.consumed.first,
                resume_at = r.resume_at,
                continued,
                "another writer committed this range first; dropped it"
            );
        }
        Ok(())
    }

    /// Brings the dataset up to the raw dataset's latest version by cleaning what it lacks
    /// ([`crate::derive::catch_up`]), again while other writers move either.
    async fn follow_raw(&self, seen: &mut HashSet<u64>, report: &mut SnapshotReport) -> Result<()> {
        let Some(raw) = self.raw else { return Ok(()) };
        for _ in 0..DERIVE_ATTEMPTS {
            let Some(upto) = self.store.latest(raw)? else { return Ok(()) };
            let (store, plan, dataset) = (self.store.clone(), self.plan.clone(), self.dataset.to_string());
            let tags = self.opts.tags.clone();
            let mut taken = std::mem::take(seen);
            let (result, back) = tokio::task::spawn_blocking(move || {
                let r = crate::derive::catch_up(
                    &store,
                    &plan,
                    &dataset,
                    &upto,
                    &mut taken,
                    &tags,
                    &mut |_, _| {},
                );
                (r, taken)
            })
            .await
            .map_err(|e| Error::Internal(format!("derive task failed: {e}")))?;
            *seen = back;
            let caught = result?;
            report.filtered += caught.filtered;
            report.duplicates += caught.duplicates;
            if let Some(m) = caught.manifest {
                tracing::info!(dataset = self.dataset, raw = %raw, raw_rows = caught.raw_rows, "derived from raw data");
                self.committed(m, report).await;
                return Ok(());
            }
            if !caught.stale {
                return Ok(());
            }
        }
        Err(Error::Conflict(format!(
            "dataset `{}` kept moving while it was derived from raw dataset `{raw}` ({DERIVE_ATTEMPTS} attempts); retry",
            self.dataset
        )))
    }

    /// Logs, counts and announces a committed version.
    async fn committed(&self, manifest: Manifest, report: &mut SnapshotReport) {
        if let Some(m) = &self.opts.metrics {
            m.commits.inc();
            m.rows_added.inc_by(manifest.added.rows);
            m.rows.set(manifest.rows as i64);
        }
        tracing::info!(
            dataset = self.dataset,
            version = manifest.short_id(),
            seq = manifest.seq,
            rows_added = manifest.added.rows,
            rows = manifest.rows,
            "snapshot committed"
        );
        if let Some(control) = self.control {
            let event = ControlEvent::SnapshotCommitted {
                dataset: self.dataset.to_string(),
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
        report.commits.push(manifest);
    }
}

fn finish(writer: Option<ObjectWriter>) -> Result<Option<crate::store::FileEntry>> {
    writer.map(ObjectWriter::finish).transpose().map(Option::flatten)
}
