//! Late ground truth: reading `text.labels` and joining labels onto a version by id.
//!
//! `{id, label}` records arrive after their texts (a human, a downstream system). Joining
//! them commits a *new version* of the dataset in which every row whose id has a label carries
//! it (the latest label per id wins: by Kafka timestamp, then offset — publish labels keyed by
//! id, as `driftwood publish --labels` does, to keep an id's labels in order); the version records the label offsets it consumed, so
//! the next join continues from there and earlier labels stay applied through the parent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use chrono::Utc;
use datafusion::datasource::MemTable;
use futures::StreamExt;
use ingest::consume::{DeadLetter, DeadLetters, MessageReader, Mode};
use schemas::Config;
use schemas::records::{LabelRecord, clean_schema};
use tokio_util::sync::CancellationToken;

use crate::diff::register_version;
use crate::store::{Draft, DraftPart, Manifest, SnapshotStore, SourceOffsets};
use crate::{Error, Result};

/// Casts a query result back to a declared schema (DataFusion reads strings as `Utf8View`).
pub fn conform(batch: &RecordBatch, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// What a label join did.
#[derive(Debug, Clone, Default)]
pub struct LabelReport {
    pub labels_read: u64,
    pub dead: u64,
    /// Rows of the version whose label was set or changed.
    pub rows_labeled: u64,
    pub version: Option<Manifest>,
}

/// Reads the labels published since the dataset's last label join and commits a new version
/// of `dataset` with them applied.
pub async fn join_labels(
    config: &Config,
    store: &SnapshotStore,
    dataset: &str,
    cancel: &CancellationToken,
) -> Result<LabelReport> {
    let topics = config.topics();
    let latest = store
        .latest(dataset)?
        .ok_or_else(|| Error::NotFound(format!("dataset `{dataset}` has no versions to label")))?;
    let start = latest.resume_offsets(&topics.labels);
    let mut reader =
        MessageReader::new(&config.kafka, &topics.labels, Mode::Assigned { start, until_idle: true }).await?;
    let dead = DeadLetters::new(ingest::kafka::producer(&config.kafka, &config.ingest)?, topics.dead.clone());
    // Latest label per id: by Kafka timestamp, then offset (labels keyed by id share a
    // partition and are simply in order).
    let mut labels: HashMap<String, (i64, i64, String)> = HashMap::new();
    let mut consumed: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut report = LabelReport::default();
    while let Some((messages, ranges)) = reader.next(10_000, Duration::from_millis(200), cancel).await? {
        let mut letters = Vec::new();
        for m in messages {
            match LabelRecord::decode(m.value.as_deref()) {
                Ok(l) => {
                    report.labels_read += 1;
                    let rank = (m.timestamp_ms.unwrap_or(0), m.offset);
                    match labels.get(&l.id) {
                        Some((ts, off, _)) if (*ts, *off) > rank => {}
                        _ => {
                            labels.insert(l.id, (rank.0, rank.1, l.label));
                        }
                    }
                }
                Err((reason, detail)) => letters.push(DeadLetter {
                    key: m.key,
                    value: m.value.unwrap_or_default(),
                    reason,
                    detail,
                    source_topic: topics.labels.clone(),
                    partition: m.partition,
                    offset: m.offset,
                }),
            }
        }
        report.dead += letters.len() as u64;
        dead.send_all(&letters).await?;
        for (p, r) in ranges {
            let e = consumed.entry(p).or_insert((r.first, r.next));
            e.0 = e.0.min(r.first);
            e.1 = e.1.max(r.next);
        }
    }
    if consumed.is_empty() {
        return Ok(report);
    }

    // Join: every row keeps its columns; its label becomes the new one where there is one.
    let ctx = crate::query::session_context(store, datafusion::prelude::SessionConfig::new());
    register_version(&ctx, "t", store, &latest).await?;
    let ids: Vec<&str> = labels.keys().map(String::as_str).collect();
    let values: Vec<&str> = ids.iter().map(|id| labels[*id].2.as_str()).collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("label", arrow::datatypes::DataType::Utf8, false),
    ]));
    let l = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(ids)), Arc::new(StringArray::from(values))],
    )?;
    ctx.register_table("l", Arc::new(MemTable::try_new(schema, vec![vec![l]])?))?;
    let changed = ctx
        .sql("SELECT CAST(COUNT(*) AS BIGINT) FROM t JOIN l ON t.id = l.id WHERE (t.label IS DISTINCT FROM l.label)")
        .await?
        .collect()
        .await?;
    report.rows_labeled = changed
        .first()
        .map(|b| b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().map_or(0, |a| a.value(0)))
        .unwrap_or(0) as u64;
    let df = ctx
        .sql(
            "SELECT t.id, t.text, COALESCE(l.label, t.label) AS label, t.source, t.ts, t.meta, \
             t.kafka_partition, t.kafka_offset \
             FROM t LEFT JOIN l ON t.id = l.id ORDER BY t.kafka_partition, t.kafka_offset",
        )
        .await?;
    let mut stream = df.execute_stream().await?;
    let mut writer = store.object_writer(clean_schema())?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let batch = conform(&batch, &clean_schema())?;
        writer.write(&batch)?;
    }
    let file = writer.finish()?;
    let mut parts: Vec<DraftPart> = vec![DraftPart { consumed: None, file }];
    parts.extend(consumed.into_iter().map(|(p, (first, next))| DraftPart {
        consumed: Some(SourceOffsets { topic: topics.labels.clone(), partition: p, first, next }),
        file: None,
    }));
    let draft = Draft {
        dataset: dataset.to_string(),
        spec_hash: latest.spec_hash.clone(),
        schema: clean_schema(),
        parts,
        tags: vec![],
        replace_files: true,
        imported: vec![],
        // The same raw records, relabelled: the link stays (raw data keeps the labels as read).
        raw: latest
            .raw
            .clone()
            .map(|link| crate::store::Derivation { after: Some(link.version.clone()), link }),
    };
    let committed = store.commit(draft, Utc::now())?;
    if !committed.rejected.is_empty() {
        return Err(Error::Conflict("labels were joined concurrently by another run; retry".into()));
    }
    report.version = committed.manifest;
    Ok(report)
}
