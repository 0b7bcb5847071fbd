//! The scored snapshot job: predictions from `text.scored` into versions of the scored dataset
//! (`snapshot.scored_dataset`), so they are queryable next to the data versions (Flight SQL).
//!
//! Same guarantees as the text snapshot job: the offsets a version consumed are in its
//! manifest, committed atomically with the objects; a restart resumes from the latest
//! manifest. The scorer is at-least-once, so a record may be on the topic twice: rows are
//! deduplicated by `(id, model, model_version)` across the whole dataset. A payload that is not
//! a scored record goes to the dead-letter topic with the reason.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Float64Builder, Int32Builder, Int64Array, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondBuilder,
};
use chrono::Utc;
use ingest::consume::{DeadLetter, DeadLetters, MessageReader, Mode, OffsetRange, RawMessage};
use schemas::Config;
use schemas::records::{DeadReason, ScoreStatus, ScoredRecord, TS_TZ, scored_col, scored_schema};
use tokio_util::sync::CancellationToken;

use crate::job::SnapshotOptions;
use crate::store::{Draft, DraftPart, Manifest, ObjectWriter, SnapshotStore, SourceOffsets};
use crate::{Error, Result};

/// Recorded as the scored dataset's `spec_hash`: rows are scored records of this format, not
/// cleaned text.
pub const SCORED_SPEC: &str = "scored-record-v1";

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ScoredReport {
    pub commits: Vec<Manifest>,
    /// Messages read from the scored topic.
    pub records: u64,
    /// Rows dropped because the dataset already had `(id, model, model_version)`.
    pub duplicates: u64,
    /// Messages that were not scored records (sent to the dead-letter topic).
    pub dead: u64,
}

struct Part {
    writer: Option<ObjectWriter>,
    range: OffsetRange,
}

/// Runs the scored snapshot job until idle (`opts.until_idle`) or cancelled.
pub async fn run_scored_snapshot(
    config: &Config,
    store: &SnapshotStore,
    opts: &SnapshotOptions,
    cancel: &CancellationToken,
) -> Result<ScoredReport> {
    let topics = config.topics();
    let dataset = config.snapshot.scored_dataset.clone();
    let latest = store.latest(&dataset)?;
    let mut seen = match &latest {
        Some(m) => {
            let (store, m) = (store.clone(), m.clone());
            tokio::task::spawn_blocking(move || existing_keys(&store, &m))
                .await
                .map_err(|e| Error::Internal(format!("reading the scored keys failed: {e}")))??
        }
        None => HashSet::new(),
    };
    let start = latest.as_ref().map(|m| m.resume_offsets(&topics.scored)).unwrap_or_default();
    let mut reader = MessageReader::new(
        &config.kafka,
        &topics.scored,
        Mode::Assigned { start, until_idle: opts.until_idle },
    )
    .await?;
    let dead = DeadLetters::new(ingest::kafka::producer(&config.kafka, &config.ingest)?, topics.dead.clone());
    let max_wait = std::time::Duration::from_millis(config.ingest.batch_max_wait_ms);
    let mut report = ScoredReport::default();
    let mut pending: BTreeMap<i32, Part> = BTreeMap::new();
    let mut pending_keys: HashSet<u64> = HashSet::new();
    let mut pending_rows = 0usize;
    let mut last_commit = Instant::now();
    loop {
        // In follow mode a timer ends an empty read, so quiet topics still commit on time.
        let tick = cancel.child_token();
        let timer = (!opts.until_idle).then(|| {
            let (t, d) = (tick.clone(), opts.commit_interval);
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                t.cancel();
            })
        });
        let read = reader.next(config.ingest.batch_max_rows, max_wait, &tick).await;
        if let Some(t) = timer {
            t.abort();
        }
        let Some((messages, ranges)) = read? else {
            commit(store, (&dataset, &topics.scored), opts, std::mem::take(&mut pending), &mut report)
                .await?;
            seen.extend(pending_keys.drain());
            pending_rows = 0;
            last_commit = Instant::now();
            if cancel.is_cancelled() || opts.until_idle {
                break;
            }
            continue;
        };
        report.records += messages.len() as u64;
        for (p, r) in &ranges {
            pending
                .entry(*p)
                .and_modify(|e| e.range.next = e.range.next.max(r.next))
                .or_insert(Part { writer: None, range: *r });
        }
        let mut letters = Vec::new();
        let mut by_partition: BTreeMap<i32, Vec<ScoredRecord>> = BTreeMap::new();
        let mut batch_keys = HashSet::new();
        for m in &messages {
            match decode(m) {
                Ok(rec) => {
                    let key = row_key(&rec.id, &rec.model, i64::from(rec.model_version));
                    if seen.contains(&key) || !batch_keys.insert(key) || pending_keys.contains(&key) {
                        report.duplicates += 1;
                        continue;
                    }
                    by_partition.entry(m.partition).or_default().push(rec);
                }
                Err((reason, detail)) => letters.push(DeadLetter {
                    key: m.key.clone(),
                    value: m.value.clone().unwrap_or_default(),
                    reason,
                    detail,
                    source_topic: topics.scored.clone(),
                    partition: m.partition,
                    offset: m.offset,
                }),
            }
        }
        if !letters.is_empty() {
            report.dead += letters.len() as u64;
            dead.send_all(&letters).await?;
        }
        pending_keys.extend(batch_keys);
        for (p, records) in by_partition {
            let batch = to_batch(&records)?;
            pending_rows += batch.num_rows();
            let part =
                pending.get_mut(&p).ok_or_else(|| Error::Internal(format!("partition {p} not consumed")))?;
            if part.writer.is_none() {
                part.writer = Some(store.object_writer(scored_schema())?);
            }
            part.writer.as_mut().expect("just created").write(&batch)?;
        }
        let due = pending_rows >= opts.commit_max_rows
            || (!opts.until_idle && last_commit.elapsed() >= opts.commit_interval);
        if due {
            commit(store, (&dataset, &topics.scored), opts, std::mem::take(&mut pending), &mut report)
                .await?;
            seen.extend(pending_keys.drain());
            pending_rows = 0;
            last_commit = Instant::now();
        }
    }
    Ok(report)
}

/// Commits what was consumed since the last commit as a new version (even when every record
/// was a duplicate or dead, so the offsets move on).
async fn commit(
    store: &SnapshotStore,
    target: (&str, &str),
    opts: &SnapshotOptions,
    pending: BTreeMap<i32, Part>,
    report: &mut ScoredReport,
) -> Result<()> {
    let (dataset, topic) = target;
    if pending.is_empty() {
        return Ok(());
    }
    let mut parts = Vec::new();
    for (p, part) in pending {
        let file = match part.writer {
            Some(w) => w.finish()?,
            None => None,
        };
        let consumed = SourceOffsets {
            topic: topic.to_string(),
            partition: p,
            first: part.range.first,
            next: part.range.next,
        };
        parts.push(DraftPart { consumed: Some(consumed), file });
    }
    let draft = Draft {
        dataset: dataset.to_string(),
        spec_hash: SCORED_SPEC.to_string(),
        schema: scored_schema(),
        parts,
        tags: opts.tags.clone(),
        replace_files: false,
        imported: vec![],
        raw: None,
    };
    let store = store.clone();
    let committed = tokio::task::spawn_blocking(move || store.commit(draft, Utc::now()))
        .await
        .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
    if let Some(r) = committed.rejected.first() {
        // One scored job per dataset: its offsets would otherwise have to be re-read.
        return Err(Error::Conflict(format!(
            "another job committed {topic} partition {} from offset {} to dataset `{dataset}`; \
             run one scored snapshot job per dataset",
            r.consumed.partition, r.consumed.first
        )));
    }
    if let Some(m) = committed.manifest {
        tracing::info!(
            dataset,
            version = m.short_id(),
            rows_added = m.added.rows,
            rows = m.rows,
            "scored snapshot committed"
        );
        report.commits.push(m);
    }
    Ok(())
}

/// A scored record from a message, or why it is not one.
fn decode(m: &RawMessage) -> Result<ScoredRecord, (DeadReason, String)> {
    let value = m.value.as_deref().ok_or((DeadReason::EmptyValue, "no value".to_string()))?;
    let json: serde_json::Value = serde_json::from_slice(value)
        .map_err(|e| (DeadReason::MalformedJson, format!("not a scored record: {e}")))?;
    if !json.is_object() {
        return Err((DeadReason::NotAnObject, "a scored record must be a JSON object".into()));
    }
    serde_json::from_value(json).map_err(|e| (DeadReason::BadField, format!("not a scored record: {e}")))
}

fn row_key(id: &str, model: &str, version: i64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(id.as_bytes());
    h.update(&[0]);
    h.update(model.as_bytes());
    h.update(&[0]);
    h.update(&version.to_le_bytes());
    h.digest()
}

/// The `(id, model, model_version)` keys of a version.
fn existing_keys(store: &SnapshotStore, m: &Manifest) -> Result<HashSet<u64>> {
    let mut out = HashSet::with_capacity(m.rows as usize);
    for batch in store.read(m) {
        let batch = batch?;
        let strings = |name: &str| -> Result<StringArray> {
            let c = batch.column(batch.schema().index_of(name)?);
            c.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("{name} is not Utf8")))
        };
        let (ids, models) = (strings(scored_col::ID)?, strings(scored_col::MODEL)?);
        let versions = batch.column(batch.schema().index_of(scored_col::MODEL_VERSION)?);
        let versions = versions
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| Error::Corrupt("model_version is not Int64".into()))?;
        for i in 0..batch.num_rows() {
            out.insert(row_key(ids.value(i), models.value(i), versions.value(i)));
        }
    }
    Ok(out)
}

/// Rows of the scored schema.
pub fn to_batch(records: &[ScoredRecord]) -> Result<RecordBatch> {
    let n = records.len();
    let mut id = StringBuilder::with_capacity(n, n * 16);
    let mut status = StringBuilder::with_capacity(n, n * 6);
    let mut reason = StringBuilder::new();
    let mut model = StringBuilder::with_capacity(n, n * 8);
    let mut version = Int64Builder::with_capacity(n);
    let mut label = StringBuilder::with_capacity(n, n * 4);
    let mut truth = StringBuilder::with_capacity(n, n * 4);
    let mut confidence = Float64Builder::with_capacity(n);
    let mut probabilities = StringBuilder::with_capacity(n, n * 32);
    let mut features = StringBuilder::with_capacity(n, n * 96);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut scored_at = TimestampMillisecondBuilder::with_capacity(n).with_timezone(TS_TZ);
    let mut latency = Int64Builder::with_capacity(n);
    for r in records {
        id.append_value(&r.id);
        status.append_value(match r.status {
            ScoreStatus::Scored => "scored",
            ScoreStatus::Skipped => "skipped",
        });
        reason.append_option(r.reason.as_deref());
        model.append_value(&r.model);
        version.append_value(i64::from(r.model_version));
        label.append_option(r.label.as_deref());
        truth.append_option(r.truth.as_deref());
        confidence
            .append_option(r.label.as_ref().and_then(|l| r.probabilities.get(l)).map(|p| f64::from(*p)));
        probabilities.append_value(serde_json::to_string(&r.probabilities).expect("a map serializes"));
        features.append_value(serde_json::to_string(&r.features).expect("a map serializes"));
        partition.append_value(r.partition);
        offset.append_value(r.offset);
        scored_at.append_value(r.scored_at);
        latency.append_value(i64::try_from(r.latency_us).unwrap_or(i64::MAX));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(status.finish()),
        Arc::new(reason.finish()),
        Arc::new(model.finish()),
        Arc::new(version.finish()),
        Arc::new(label.finish()),
        Arc::new(truth.finish()),
        Arc::new(confidence.finish()),
        Arc::new(probabilities.finish()),
        Arc::new(features.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(scored_at.finish()),
        Arc::new(latency.finish()),
    ];
    Ok(RecordBatch::try_new(scored_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &[u8]) -> RawMessage {
        RawMessage {
            key: None,
            value: Some(value.to_vec()),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            headers: vec![],
        }
    }

    fn record(id: &str, version: u32) -> ScoredRecord {
        ScoredRecord {
            v: 1,
            id: id.into(),
            status: ScoreStatus::Scored,
            reason: None,
            model: "spam".into(),
            model_version: version,
            label: Some("spam".into()),
            truth: Some("ham".into()),
            probabilities: [("ham".to_string(), 0.25f32), ("spam".to_string(), 0.75f32)].into(),
            features: [("chars".to_string(), 12.0)].into(),
            partition: 1,
            offset: 42,
            scored_at: 1_700_000_000_000,
            latency_us: 90,
        }
    }

    #[test]
    fn payloads_that_are_not_scored_records_get_a_reason() {
        assert_eq!(decode(&message(b"{oops")).unwrap_err().0, DeadReason::MalformedJson);
        assert_eq!(decode(&message(b"[1]")).unwrap_err().0, DeadReason::NotAnObject);
        assert_eq!(decode(&message(br#"{"id": "x"}"#)).unwrap_err().0, DeadReason::BadField);
        let good = serde_json::to_vec(&record("a", 1)).unwrap();
        assert_eq!(decode(&message(&good)).unwrap(), record("a", 1));
        let mut empty = message(b"");
        empty.value = None;
        assert_eq!(decode(&empty).unwrap_err().0, DeadReason::EmptyValue);
    }

    #[test]
    fn rows_carry_the_predicted_labels_confidence_and_json_maps() {
        let b = to_batch(&[record("a", 1), record("b", 2)]).unwrap();
        assert_eq!(b.schema(), scored_schema());
        let conf = b.column_by_name(scored_col::CONFIDENCE).unwrap();
        let conf = conf.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
        assert_eq!(conf.value(0), 0.75);
        let probs = b.column_by_name(scored_col::PROBABILITIES).unwrap();
        let probs = probs.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(probs.value(1), r#"{"ham":0.25,"spam":0.75}"#);
        assert_ne!(row_key("a", "spam", 1), row_key("a", "spam", 2));
        assert_ne!(row_key("a", "spam1", 1), row_key("a", "spam", 11));
    }
}
