//! The online scorer: `text.raw` → the same cleaning plan → the model → `text.scored`.
//!
//! One scored record per raw record, keyed by the record's id: `scored` with label and
//! probabilities, or `skipped` with a reason (dropped by the cleaning plan, or undecodable —
//! the snapshot job sends those to the dead-letter topic). Offsets are committed only after
//! every scored record of a batch is acknowledged: at-least-once, and records are
//! deterministic per (id, model, version) so consumers can deduplicate.
//!
//! With `serve.scorer_transactions`, each batch's scored records and the consumed offsets are
//! committed in one Kafka transaction instead (exactly-once for `read_committed` consumers);
//! a failed transaction is aborted and the scorer stops with the error, so a restart resumes
//! from the last committed batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int32Array, Int64Array, StringArray};
use chrono::Utc;
use drift::features::{text_features, with_confidence, with_oov_rate};
use futures::future::try_join_all;
use ingest::consume::{BatchLimits, BatchReader, Mode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::Config;
use schemas::records::{SCORED_FORMAT_VERSION, ScoreStatus, ScoredRecord, col};
use stream::clean::CleanPlan;
use tokio_util::sync::CancellationToken;

use crate::handle::ModelHandle;
use crate::metrics::Metrics;
use crate::predlog::PredictionLog;
use crate::{Error, Result};

/// Rows cleaned and predicted as one unit; a batch's chunks run in parallel.
const SCORE_CHUNK_ROWS: usize = 512;

/// Counts of a scorer run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScorerReport {
    pub scored: u64,
    pub skipped: u64,
}

/// Everything the scorer needs.
pub struct Scorer {
    pub config: Config,
    pub plan: Arc<CleanPlan>,
    pub model: ModelHandle,
    pub metrics: Metrics,
    pub predlog: Option<PredictionLog>,
}

impl Scorer {
    /// Runs until cancelled (or, with `until_idle`, until the end of `text.raw` as seen at
    /// start, using explicit assignment from the beginning — for tests and one-off backfills).
    /// Observes, per record of `batch`, the time from its timestamp to now.
    fn observe_end_to_end(&self, batch: &arrow::array::RecordBatch) {
        let Ok(idx) = batch.schema().index_of(col::TS) else { return };
        let Some(ts) = batch.column(idx).as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>()
        else {
            return;
        };
        let now = Utc::now().timestamp_millis();
        for t in ts.iter().flatten() {
            self.metrics.end_to_end.observe((now - t).max(0) as f64 / 1000.0);
        }
    }

    pub async fn run(&self, until_idle: bool, cancel: &CancellationToken) -> Result<ScorerReport> {
        let topics = self.config.topics();
        let mode = if until_idle {
            Mode::Assigned { start: BTreeMap::new(), until_idle: true }
        } else {
            Mode::Group { group_id: self.config.groups().scorer() }
        };
        // The producer first: a broker refusing transactions stops the scorer before it joins
        // the group.
        let transactional = self.config.serve.scorer_transactions && !until_idle;
        let producer = if transactional {
            let id = self.transactional_id();
            tracing::info!(transactional_id = %id, "scorer: exactly-once (Kafka transactions)");
            tokio::task::block_in_place(|| {
                ingest::kafka::transactional_producer(&self.config.kafka, &self.config.ingest, &id)
            })?
        } else {
            ingest::kafka::producer(&self.config.kafka, &self.config.ingest)?
        };
        let mut reader = BatchReader::new(
            &self.config.kafka,
            &topics.raw,
            mode,
            BatchLimits::from(&self.config.ingest),
            None,
        )
        .await?;
        let mut report = ScorerReport::default();
        while let Some(consumed) = reader.next_batch(cancel).await? {
            let assigned = reader.assigned_partitions();
            self.metrics.scorer_partitions.set(assigned.len() as i64);
            if let Some(lags) = reader.lag().await {
                // Only the partitions this scorer holds now: a revoked one's lag is another's.
                self.metrics.scorer_lag.reset();
                for (p, lag) in lags.into_iter().filter(|(p, _)| assigned.contains(p)) {
                    self.metrics.scorer_lag.with_label_values(&[p.to_string().as_str()]).set(lag);
                }
            }
            if consumed.ranges.is_empty() {
                continue; // a quiet period
            }
            // Wait for a model before consuming further (readiness gate).
            while self.model.info().is_none() {
                if cancel.is_cancelled() {
                    return Ok(report);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let started = std::time::Instant::now();
            let records = self.score(&consumed.batch, &consumed.rejected).await?;
            let scored_in = started.elapsed();
            if transactional {
                in_transaction(&producer, &reader, &topics.scored, &records, &consumed.ranges).await?;
            } else {
                send_all(&producer, &topics.scored, &records).await?;
                if !until_idle {
                    reader.commit(&consumed.ranges)?;
                }
            }
            tracing::debug!(
                records = records.len(),
                score_ms = scored_in.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "scored a batch"
            );
            self.observe_end_to_end(&consumed.batch);
            let scored = records.iter().filter(|r| r.status == ScoreStatus::Scored).count() as u64;
            report.scored += scored;
            report.skipped += records.len() as u64 - scored;
            self.metrics.scored.with_label_values(&["scored"]).inc_by(scored);
            self.metrics.scored.with_label_values(&["skipped"]).inc_by(records.len() as u64 - scored);
        }
        Ok(report)
    }

    /// `serve.scorer_transactional_id`, else `<group>.scorer.<$HOSTNAME or "local">`.
    fn transactional_id(&self) -> String {
        match &self.config.serve.scorer_transactional_id {
            None => format!(
                "{}.scorer.{}",
                self.config.kafka.group_id,
                std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "local".into())
            ),
            Some(id) => id.clone(),
        }
    }

    /// Scores one raw batch (plus its undecodable records) into scored records, in input order.
    async fn score(
        &self,
        batch: &arrow::array::RecordBatch,
        rejected: &[ingest::consume::DeadLetter],
    ) -> Result<Vec<ScoredRecord>> {
        use futures::{StreamExt, TryStreamExt};
        // Chunks cleaned on parallel blocking threads, each sent to the model as soon as it is
        // clean (so cleaning and the model thread overlap), reassembled in order.
        let n = batch.num_rows();
        let parallel = std::thread::available_parallelism().map_or(2, usize::from) + 1;
        let chunks: Vec<Vec<ScoredRecord>> = futures::stream::iter((0..n).step_by(SCORE_CHUNK_ROWS))
            .map(|start| self.score_rows(batch.slice(start, SCORE_CHUNK_ROWS.min(n - start))))
            .buffered(parallel)
            .try_collect()
            .await?;
        let mut out: Vec<ScoredRecord> = chunks.into_iter().flatten().collect();
        if rejected.is_empty() {
            return Ok(out);
        }
        let info = self.model.info().ok_or(Error::NotReady)?;
        let now = Utc::now().timestamp_millis();
        for r in rejected {
            let id = ingest::decode::id_from_key(r.key.as_deref(), r.partition, r.offset);
            out.push(ScoredRecord {
                v: SCORED_FORMAT_VERSION,
                id,
                status: ScoreStatus::Skipped,
                reason: Some(format!("invalid_record:{}", r.reason.code())),
                model: info.name.clone(),
                model_version: info.version,
                label: None,
                truth: None,
                probabilities: BTreeMap::new(),
                features: BTreeMap::new(),
                partition: r.partition,
                offset: r.offset,
                scored_at: now,
                latency_us: 0,
            });
        }
        Ok(out)
    }

    /// Scores rows of a raw batch (cleaned, predicted), one scored record per row, in order.
    async fn score_rows(&self, batch: arrow::array::RecordBatch) -> Result<Vec<ScoredRecord>> {
        let plan = self.plan.clone();
        let cleaned = tokio::task::spawn_blocking(move || plan.apply(&batch))
            .await
            .map_err(|e| Error::Internal(format!("cleaning task failed: {e}")))??;
        let b = &cleaned.batch;
        let strings = |name: &str| -> Result<StringArray> {
            let idx = b.schema().index_of(name).map_err(|e| Error::Internal(e.to_string()))?;
            b.column(idx)
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| Error::Internal(format!("{name} is not Utf8")))
        };
        let ids = strings(col::ID)?;
        let texts = strings(col::TEXT)?;
        let truths = strings(col::LABEL)?;
        let partitions = b
            .column(b.schema().index_of(col::PARTITION).map_err(|e| Error::Internal(e.to_string()))?)
            .as_any()
            .downcast_ref::<Int32Array>()
            .cloned()
            .ok_or_else(|| Error::Internal("partition column".into()))?;
        let offsets = b
            .column(b.schema().index_of(col::OFFSET).map_err(|e| Error::Internal(e.to_string()))?)
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| Error::Internal("offset column".into()))?;

        let kept: Vec<usize> = (0..b.num_rows()).filter(|&i| cleaned.keep.value(i)).collect();
        let answer = if kept.is_empty() {
            None
        } else {
            let inputs: Vec<String> = kept.iter().map(|&i| texts.value(i).to_string()).collect();
            let answer = self.model.predict_cleaned(inputs).await?;
            self.metrics.batch_size.with_label_values(&["stream"]).observe(answer.batch_texts as f64);
            Some(answer)
        };
        let now = Utc::now().timestamp_millis();
        let mut out = Vec::with_capacity(b.num_rows());
        let mut predictions = answer.as_ref().map(|a| a.predictions.iter());
        let (info, model_us) = match &answer {
            Some(a) => (a.model.clone(), a.model_us),
            None => (self.model.info().ok_or(Error::NotReady)?, 0),
        };
        let mut log = Vec::new();
        for i in 0..b.num_rows() {
            let base = ScoredRecord {
                v: SCORED_FORMAT_VERSION,
                id: ids.value(i).to_string(),
                status: ScoreStatus::Skipped,
                reason: None,
                model: info.name.clone(),
                model_version: info.version,
                label: None,
                truth: truths.is_valid(i).then(|| truths.value(i).to_string()),
                probabilities: BTreeMap::new(),
                features: text_features(texts.value(i)),
                partition: partitions.value(i),
                offset: offsets.value(i),
                scored_at: now,
                latency_us: model_us,
            };
            if !cleaned.keep.value(i) {
                out.push(ScoredRecord { reason: Some("dropped_by_cleaning".into()), ..base });
                continue;
            }
            let p = predictions.as_mut().and_then(|it| it.next()).and_then(Option::as_ref);
            match p {
                Some(p) => {
                    log.push(p.log_entry(&info, "stream", Some(base.id.clone()), model_us));
                    out.push(ScoredRecord {
                        status: ScoreStatus::Scored,
                        label: Some(p.label.clone()),
                        probabilities: info.by_label(&p.probabilities),
                        features: with_oov_rate(
                            with_confidence(base.features.clone(), &p.probabilities),
                            p.oov_rate,
                        ),
                        ..base
                    });
                }
                None => out.push(ScoredRecord { reason: Some("dropped_by_cleaning".into()), ..base }),
            }
        }
        if let Some(predlog) = &self.predlog {
            predlog.record(log);
        }
        Ok(out)
    }
}

/// Sends `records` and commits them with the offsets of `ranges` in one transaction; aborts it
/// on any failure.
async fn in_transaction(
    producer: &FutureProducer,
    reader: &BatchReader,
    topic: &str,
    records: &[ScoredRecord],
    ranges: &BTreeMap<i32, ingest::consume::OffsetRange>,
) -> Result<()> {
    ingest::kafka::begin_transaction(producer)?;
    let mut result = send_all(producer, topic, records).await;
    if result.is_ok() {
        result = tokio::task::block_in_place(|| {
            let (offsets, group) = reader.transaction_offsets(ranges)?;
            ingest::kafka::commit_transaction(producer, &offsets, &group)
        })
        .map_err(Error::from);
    }
    if let Err(e) = &result {
        tracing::error!(error = %e, "scorer transaction failed; aborting it");
        if let Err(abort) = tokio::task::block_in_place(|| ingest::kafka::abort_transaction(producer)) {
            tracing::error!(error = %abort, "aborting the transaction failed too");
        }
    }
    result
}

async fn send_all(producer: &FutureProducer, topic: &str, records: &[ScoredRecord]) -> Result<()> {
    let payloads: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.id.clone(), serde_json::to_vec(r).expect("scored records serialize")))
        .collect();
    let sends = payloads.iter().map(|(key, value)| async move {
        producer
            .send(FutureRecord::to(topic).key(key).payload(value), Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::Internal(format!("producing to {topic}: {e}")))
    });
    try_join_all(sends).await.map(|_| ())
}
