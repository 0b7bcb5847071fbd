//! The trainer's side of the closed loop: on `RetrainRequested`, train a candidate on the
//! latest data version with the production model's configuration, evaluate candidate and
//! production on the same recent holdout, and promote the candidate only if it is better by a
//! margin. Either way the outcome is a `RetrainFinished` event and an audit record.
//!
//! The recent holdout is the labelled rows of the latest version that the production model's
//! version did not have, restricted to the test split (`Split::of` by id, so the candidate never
//! trains on them).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::array::Array;
use chrono::Utc;
use ingest::consume::{MessageReader, Mode};
use ingest::control::ControlProducer;
use schemas::Split;
use schemas::config::{KafkaConfig, RetrainConfig, TrainConfig};
use schemas::events::{ControlEvent, ControlMessage, Decoded};
use schemas::records::col;
use serde::Serialize;
use stream::store::{Manifest, SnapshotStore};
use tokio_util::sync::CancellationToken;

use crate::metrics::Evaluation;
use crate::registry::{self, PRODUCTION};
use crate::rows::{argmax, string_column};
use crate::train::{TrainRequest, config_from_params, train};
use crate::{Error, Result};
use metastore::{AuditRecord, MetadataStore, ModelVersion};

mod metrics;
pub use metrics::RetrainMetrics;

/// The stores a retrain reads and writes, and where it announces what it did.
#[derive(Clone, Copy)]
pub struct Stores<'a> {
    pub store: &'a dyn MetadataStore,
    pub snapshots: &'a SnapshotStore,
    /// Where `RetrainFinished` and `ModelPromoted` go; None: not announced.
    pub control: Option<&'a ControlProducer>,
}

/// What a retrain needs besides the request.
#[derive(Debug, Clone)]
pub struct Retrainer {
    pub data_dir: PathBuf,
    /// Defaults for training parameters the production run did not record.
    pub base: TrainConfig,
    pub policy: RetrainConfig,
    pub actor: String,
    /// Where the dataset is snapshotted from; the retrainer waits for the snapshot job to
    /// cover it (`retrain.catch_up_secs`). None: train on the latest version as it is.
    pub source: Option<SnapshotSource>,
}

/// A raw topic a dataset is snapshotted from.
#[derive(Debug, Clone)]
pub struct SnapshotSource {
    pub kafka: KafkaConfig,
    pub topic: String,
}

/// The outcome of one retrain request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrainOutcome {
    pub model: String,
    pub production: u32,
    pub candidate: Option<u32>,
    pub promoted: bool,
    pub reason: String,
    pub holdout_rows: usize,
    pub production_accuracy: Option<f64>,
    pub candidate_accuracy: Option<f64>,
    pub data_version: Option<String>,
    /// Seconds the candidate's training run took, when one ran.
    pub train_seconds: Option<f64>,
}

impl RetrainOutcome {
    /// `promoted` or `declined`: the outcome label of metrics and reports.
    pub fn label(&self) -> &'static str {
        if self.promoted { "promoted" } else { "declined" }
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([("holdout_rows".to_string(), self.holdout_rows as f64)]);
        if let Some(a) = self.production_accuracy {
            m.insert("production_accuracy".into(), a);
        }
        if let Some(a) = self.candidate_accuracy {
            m.insert("candidate_accuracy".into(), a);
        }
        m
    }
}

struct Labelled {
    text: String,
    label: String,
}

impl Retrainer {
    /// Handles one request for `model`: retrain, gate, maybe promote; always reports.
    pub async fn retrain(
        &self,
        stores: Stores<'_>,
        model: &str,
        requested_reason: &str,
        cancel: &CancellationToken,
    ) -> Result<RetrainOutcome> {
        let Stores { store, control, .. } = stores;
        let production = registry::resolve(store, model, PRODUCTION).await?;
        let outcome = self.gate(stores, &production, requested_reason, cancel).await?;
        let action = if outcome.promoted { "retrain.promoted" } else { "retrain.declined" };
        store
            .append_audit(&AuditRecord {
                at: Utc::now(),
                actor: self.actor.clone(),
                action: action.into(),
                details: serde_json::json!({ "request": requested_reason, "outcome": outcome }),
            })
            .await?;
        if let Some(control) = control {
            let event = ControlEvent::RetrainFinished {
                model: model.to_string(),
                production: outcome.production,
                candidate: outcome.candidate,
                promoted: outcome.promoted,
                reason: outcome.reason.clone(),
                metrics: outcome.metrics(),
            };
            if let Err(e) = control.send(event).await {
                tracing::warn!(error = %e, "could not publish RetrainFinished");
            }
        }
        tracing::info!(model, promoted = outcome.promoted, reason = %outcome.reason, "retrain finished");
        Ok(outcome)
    }

    async fn gate(
        &self,
        stores: Stores<'_>,
        production: &ModelVersion,
        requested_reason: &str,
        cancel: &CancellationToken,
    ) -> Result<RetrainOutcome> {
        let Stores { store, snapshots, control } = stores;
        let card = crate::artifact::read_card(std::path::Path::new(&production.artifact_dir))?;
        let dataset = card.data.dataset.clone();
        self.catch_up(snapshots, &dataset, cancel).await;
        let mut outcome = RetrainOutcome {
            model: production.name.clone(),
            production: production.version,
            candidate: None,
            promoted: false,
            reason: String::new(),
            holdout_rows: 0,
            production_accuracy: None,
            candidate_accuracy: None,
            data_version: None,
            train_seconds: None,
        };
        let Some(latest) = snapshots.latest(&dataset)? else {
            outcome.reason = format!("dataset `{dataset}` has no versions");
            return Ok(outcome);
        };
        outcome.data_version = Some(latest.id.clone());
        if latest.id == production.data_version {
            outcome.reason = "no new data since the production model's version".into();
            return Ok(outcome);
        }
        let run = store.get_run(&production.run_id).await?;
        let params =
            TrainConfig { name: production.name.clone(), ..config_from_params(&run.params, &self.base) };
        let holdout = {
            let (snapshots, latest, params) = (snapshots.clone(), latest.clone(), params.clone());
            let old = snapshots.resolve(&dataset, &production.data_version).ok();
            tokio::task::spawn_blocking(move || recent_holdout(&snapshots, old.as_ref(), &latest, &params))
                .await
                .map_err(|e| Error::Internal(format!("holdout task failed: {e}")))??
        };
        outcome.holdout_rows = holdout.len();
        if holdout.len() < self.policy.min_holdout {
            outcome.reason = format!(
                "{} recent labelled holdout rows, fewer than retrain.min_holdout = {}",
                holdout.len(),
                self.policy.min_holdout
            );
            return Ok(outcome);
        }
        let trained = train(
            store,
            snapshots,
            &TrainRequest {
                dataset: dataset.clone(),
                version: latest.id.clone(),
                params,
                data_dir: self.data_dir.clone(),
                alias: None,
                actor: self.actor.clone(),
            },
            control,
        )
        .await?;
        outcome.candidate = Some(trained.model.version);
        outcome.train_seconds = Some(trained.seconds);
        let (prod_mv, cand_mv, keyring) =
            (production.clone(), trained.model.clone(), snapshots.keyring().cloned());
        let (production_eval, candidate_eval) = tokio::task::spawn_blocking(move || {
            let keyring = keyring.as_deref();
            Ok::<_, Error>((evaluate(&prod_mv, &holdout, keyring)?, evaluate(&cand_mv, &holdout, keyring)?))
        })
        .await
        .map_err(|e| Error::Internal(format!("evaluation task failed: {e}")))??;
        outcome.production_accuracy = Some(production_eval.accuracy);
        outcome.candidate_accuracy = Some(candidate_eval.accuracy);
        let margin = self.policy.margin;
        if candidate_eval.accuracy >= production_eval.accuracy + margin {
            let reason = format!(
                "retrain ({requested_reason}): holdout accuracy {:.4} vs {:.4} on {} rows",
                candidate_eval.accuracy, production_eval.accuracy, outcome.holdout_rows
            );
            let change = registry::AliasChange {
                name: &production.name,
                alias: PRODUCTION,
                actor: &self.actor,
                reason: &reason,
            };
            registry::promote(store, control, &change, trained.model.version).await?;
            outcome.promoted = true;
            outcome.reason = format!(
                "candidate v{} beats v{} by {:.4} (margin {margin})",
                trained.model.version,
                production.version,
                candidate_eval.accuracy - production_eval.accuracy
            );
        } else {
            outcome.reason = format!(
                "candidate v{} accuracy {:.4} does not beat v{}'s {:.4} by the margin {margin}",
                trained.model.version, candidate_eval.accuracy, production.version, production_eval.accuracy
            );
        }
        Ok(outcome)
    }
}

/// Labelled rows of `latest` that `old` does not have (by id), in the test split.
fn recent_holdout(
    snapshots: &SnapshotStore,
    old: Option<&Manifest>,
    latest: &Manifest,
    params: &TrainConfig,
) -> Result<Vec<Labelled>> {
    let mut seen: HashSet<String> = HashSet::new();
    if let Some(old) = old {
        for batch in snapshots.read(old) {
            let batch = batch?;
            seen.extend(string_column(&batch, col::ID)?.iter().flatten().map(str::to_string));
        }
    }
    let mut out = Vec::new();
    for batch in snapshots.read(latest) {
        let batch = batch?;
        let (ids, texts, labels) = (
            string_column(&batch, col::ID)?,
            string_column(&batch, col::TEXT)?,
            string_column(&batch, col::LABEL)?,
        );
        for i in 0..batch.num_rows() {
            if labels.is_null(i) || labels.value(i).is_empty() || seen.contains(ids.value(i)) {
                continue;
            }
            if Split::of(ids.value(i), params.validation_fraction, params.test_fraction) == Split::Test {
                out.push(Labelled { text: texts.value(i).to_string(), label: labels.value(i).to_string() });
            }
        }
    }
    Ok(out)
}

/// Accuracy and friends of a registered version on labelled rows (labels it does not know
/// count as errors).
impl Retrainer {
    /// Waits (up to `retrain.catch_up_secs`) until the latest version of `dataset` covers
    /// every record that was on the source topic when this was called: a drift request comes
    /// from scored text that the snapshot job may not have committed yet, and a candidate
    /// trained without it would not have seen the drift. Never fails: when the broker cannot
    /// be asked or the time is up, training goes on with the latest version as it is.
    async fn catch_up(&self, snapshots: &SnapshotStore, dataset: &str, cancel: &CancellationToken) {
        let Some(source) = &self.source else { return };
        if self.policy.catch_up_secs == 0 {
            return;
        }
        let marks = match ingest::kafka::watermarks(&source.kafka, &source.topic).await {
            Ok(marks) => marks,
            Err(e) => {
                tracing::warn!(error = %e, topic = source.topic, "cannot see the source topic's end; not waiting for the snapshot");
                return;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(self.policy.catch_up_secs);
        loop {
            let covered = match snapshots.latest(dataset) {
                Ok(latest) => latest.map(|m| m.resume_offsets(&source.topic)).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %e, dataset, "cannot read the latest version; not waiting for the snapshot");
                    return;
                }
            };
            let behind = records_behind(&marks, &covered);
            if behind == 0 {
                return;
            }
            if Instant::now() >= deadline || cancel.is_cancelled() {
                tracing::warn!(
                    dataset,
                    topic = source.topic,
                    behind,
                    "the snapshot job has not caught up; training on the latest version as it is"
                );
                return;
            }
            tracing::debug!(dataset, behind, "waiting for the snapshot job before training");
            tokio::select! {
                () = tokio::time::sleep(CATCH_UP_POLL) => {}
                () = cancel.cancelled() => {}
            }
        }
    }
}

/// How often the retrainer looks at the latest version while it waits for it.
const CATCH_UP_POLL: Duration = Duration::from_millis(250);

/// Records between what a version covers and the partition ends, per (low, high) watermarks
/// (records below the low watermark are gone and cannot be waited for).
fn records_behind(marks: &BTreeMap<i32, (i64, i64)>, covered: &BTreeMap<i32, i64>) -> i64 {
    marks.iter().map(|(p, &(low, high))| (high - covered.get(p).copied().unwrap_or(0).max(low)).max(0)).sum()
}

fn evaluate(
    version: &ModelVersion,
    rows: &[Labelled],
    keyring: Option<&stream::crypto::Keyring>,
) -> Result<Evaluation> {
    let model = crate::model::load(version, keyring)?;
    let labels = model.labels().to_vec();
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let mut predicted = Vec::with_capacity(rows.len());
    for chunk in texts.chunks(512) {
        predicted.extend(model.predict(chunk)?.iter().map(|p| argmax(p)));
    }
    let mut all_labels = labels.clone();
    for r in rows {
        if !all_labels.contains(&r.label) {
            all_labels.push(r.label.clone());
        }
    }
    let truth: Vec<usize> =
        rows.iter().map(|r| all_labels.iter().position(|l| *l == r.label).expect("label listed")).collect();
    Ok(Evaluation::compute(&all_labels, &truth, &predicted))
}

/// Listens on the control topic (consumer group `<group_id>.retrainer`) and handles each
/// `RetrainRequested` for a model's current production version; requests about a version
/// that production has already left are stale and skipped. Returns when cancelled.
pub async fn run_retrainer(
    config: &schemas::Config,
    retrainer: &Retrainer,
    stores: Stores<'_>,
    cancel: &CancellationToken,
    mut on_outcome: impl FnMut(Result<&RetrainOutcome, &Error>),
) -> Result<()> {
    let topic = config.topics().control;
    let mode = Mode::Group { group_id: config.groups().retrainer() };
    let mut reader = MessageReader::new(&config.kafka, &topic, mode).await?;
    while let Some((messages, ranges)) = reader.next(64, Duration::from_millis(200), cancel).await? {
        // Coalesce: one retrain per model per batch of requests.
        let mut requests: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for m in &messages {
            let Some(value) = m.value.as_deref() else { continue };
            match ControlMessage::decode(value) {
                Ok(Decoded::Event(msg)) => {
                    if let ControlEvent::RetrainRequested { model, version, reason } = msg.event {
                        requests.insert(model, (version, reason));
                    }
                }
                Ok(Decoded::Unknown { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, offset = m.offset, "undecodable control message skipped")
                }
            }
        }
        for (model, (version, reason)) in requests {
            match stores.store.get_alias(&model, PRODUCTION).await? {
                Some(current) if current == version => {}
                current => {
                    tracing::info!(model, requested = version, ?current, "stale retrain request skipped");
                    continue;
                }
            }
            match retrainer.retrain(stores, &model, &reason, cancel).await {
                Ok(outcome) => on_outcome(Ok(&outcome)),
                // A failed retrain (bad data, a broken artifact) must not stop the listener.
                Err(e) => {
                    tracing::error!(model, error = %e, "retrain failed");
                    on_outcome(Err(&e));
                }
            }
        }
        reader.commit(&ranges)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_behind_counts_what_the_version_has_not_read() {
        let marks = BTreeMap::from([(0, (0, 10)), (1, (0, 5)), (2, (7, 9))]);
        // Partition 1 is covered, 0 is 4 behind, 2 was never read but starts at 7.
        let covered = BTreeMap::from([(0, 6), (1, 5)]);
        assert_eq!(records_behind(&marks, &covered), 4 + 2);
        let all = BTreeMap::from([(0, 10), (1, 5), (2, 9)]);
        assert_eq!(records_behind(&marks, &all), 0);
        // A version ahead of the marks (another topic's offsets or a truncated log) is not behind.
        assert_eq!(records_behind(&marks, &BTreeMap::from([(0, 12), (1, 6), (2, 10)])), 0);
    }
}
