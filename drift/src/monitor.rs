//! The drift monitor's Kafka adapter: [`run_monitor`] consumes `text.scored` (and, when
//! configured, `text.labels`) into a [`Window`] per model version, asks the [`Decider`] after
//! every closed window, and publishes `DriftDetected` / `RetrainRequested` and the metrics. It
//! follows the model: records of a newer version switch the window to that version's
//! reference. Replaying (`until_idle`), it takes the partitions' records in event-time order
//! (`merge`), so the windows are those watching live gave. The statistics are in `window`,
//! `decider` and `labels`, which know nothing of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::consume::{MessageReader, Mode};
use ingest::control::ControlProducer;
use schemas::Config;
use schemas::events::ControlEvent;
use schemas::records::{ScoreStatus, ScoredRecord};
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::decider::{Decider, Decision};
use crate::labels::LabelJoin;
use crate::merge::EventTimeMerge;
use crate::window::{Watch, Window, WindowReport};

/// Replaying, how long a partition that has not reached its end may deliver nothing before the
/// others go on without it.
const REPLAY_IDLE: Duration = Duration::from_secs(5);

/// Where the monitor publishes besides its callback.
#[derive(Clone, Copy, Default)]
pub struct Outputs<'a> {
    /// `DriftDetected` / `RetrainRequested` go to the control topic.
    pub control: Option<&'a ControlProducer>,
    pub metrics: Option<&'a crate::metrics::DriftMetrics>,
}

/// Looks up what to watch for a model version (reference profile and test accuracy, from its
/// model card).
pub type References =
    Arc<dyn Fn(String, u32) -> futures::future::BoxFuture<'static, Option<Watch>> + Send + Sync>;

/// What one drift monitor watches and where it reports.
pub struct Monitor<'a> {
    pub config: &'a Config,
    /// The model version watched first; when the scored records move to another version, its
    /// watch comes from `references`.
    pub watch: Watch,
    pub references: References,
    /// Read from the beginning with explicit assignment and stop at the end of the topic.
    pub until_idle: bool,
    pub outputs: Outputs<'a>,
}

/// Consumes `text.scored` (consumer group `<group_id>.drift`) until cancelled, calling
/// `on_report` for every closed window with its decision, and publishing `DriftDetected` and
/// `RetrainRequested` on the control topic when `control` is given, and updating `metrics`. With `until_idle`, reads
/// from the beginning with explicit assignment and stops at the end of the topic.
pub async fn run_monitor(
    monitor: Monitor<'_>,
    cancel: &CancellationToken,
    mut on_report: impl FnMut(&WindowReport, &Decision),
) -> Result<u64> {
    let Monitor { config, watch, references, until_idle, outputs } = monitor;
    let topic = config.topics().scored;
    let mode = if until_idle {
        Mode::Assigned { start: BTreeMap::new(), until_idle: true }
    } else {
        Mode::Group { group_id: config.groups().drift() }
    };
    let mut reader = MessageReader::new(&config.kafka, &topic, mode).await?;
    let (labels_tx, mut labels_rx) = tokio::sync::mpsc::channel::<schemas::records::LabelRecord>(10_000);
    let labels_task = tokio::spawn(read_labels(config.clone(), until_idle, labels_tx, cancel.clone()));
    let mut join =
        LabelJoin::new(config.drift.label_join_capacity, Duration::from_secs(config.drift.label_ttl_secs));
    if until_idle {
        // Replaying history: take in every label published so far before the predictions, so
        // the join does not depend on which of the two topics is read faster.
        while let Some(label) = labels_rx.recv().await {
            join.label(&label.id, &label.label, Instant::now());
        }
    }
    let model = watch.model.clone();
    let mut window = Window::new(watch, config.drift.clone());
    let mut decider = Decider::new(&config.drift);
    let mut malformed = 0u64;
    let mut handle = async |report: WindowReport, decider: &mut Decider| {
        let decision = decider.decide(&report);
        tracing::info!(
            window = report.index, model = %report.model, version = report.version,
            psi = ?report.psi, signals = report.signals.len(), retrain = decision.retrain, "drift window"
        );
        on_report(&report, &decision);
        if let Some(metrics) = outputs.metrics {
            metrics.observe(&report, &decision);
        }
        if let Some(control) = outputs.control {
            publish(control, &report, &decision).await;
        }
    };
    // Replaying: the partitions' records in event-time order, as they were watched live.
    let mut merge = match until_idle {
        true => Some(EventTimeMerge::new(
            ingest::kafka::watermarks(&config.kafka, &topic)
                .await?
                .into_iter()
                .map(|(p, (low, high))| (p, low, Some(high))),
            REPLAY_IDLE,
            Instant::now(),
        )),
        false => None,
    };
    let parse = |m: &ingest::consume::RawMessage| {
        m.value.as_deref().and_then(|v| serde_json::from_slice::<ScoredRecord>(v).ok())
    };
    let mut reading = true;
    while reading {
        let (records, ranges) = match reader.next(4096, Duration::from_millis(200), cancel).await? {
            Some((messages, ranges)) => match &mut merge {
                Some(merge) => {
                    let now = Instant::now();
                    for m in &messages {
                        merge.push(m.partition, m.offset, m.timestamp_ms.unwrap_or_default(), parse(m), now);
                    }
                    (merge.ready(now), Some(ranges))
                }
                None => (messages.iter().map(parse).collect(), Some(ranges)),
            },
            None => {
                reading = false;
                (merge.as_mut().map(EventTimeMerge::finish).unwrap_or_default(), None)
            }
        };
        for r in records {
            let Some(r) = r else {
                malformed += 1;
                continue;
            };
            if r.model == model && r.model_version > window.version() {
                match references(model.clone(), r.model_version).await {
                    Some(watch) => {
                        tracing::info!(model = %model, version = r.model_version, "drift monitor follows the new version");
                        window = Window::new(watch, config.drift.clone());
                        decider = Decider::new(&config.drift);
                    }
                    None => {
                        tracing::warn!(model = %model, version = r.model_version, "no reference profile for this version")
                    }
                }
            }
            if let (None, Some(predicted), ScoreStatus::Scored) = (&r.truth, &r.label, r.status)
                && let Some(truth) = join.prediction(&r.id, r.model_version, predicted, Instant::now())
            {
                window.observe_outcome(r.model_version, &truth, predicted);
            }
            if let Some(report) = window.observe(&r) {
                handle(report, &mut decider).await;
            }
        }
        while let Ok(label) = labels_rx.try_recv() {
            if let Some((version, predicted)) = join.label(&label.id, &label.label, Instant::now()) {
                window.observe_outcome(version, &label.label, &predicted);
            }
        }
        if let Some(report) = window.close_if_due() {
            handle(report, &mut decider).await;
        }
        if let Some(ranges) = ranges.filter(|_| !until_idle) {
            reader.commit(&ranges)?;
        }
    }
    labels_task.abort();
    if malformed > 0 {
        tracing::warn!(malformed, topic = %topic, "records on the scored topic were not scored records");
    }
    Ok(malformed)
}

/// Feeds late labels from text.labels (its own consumer group) to the monitor loop.
async fn read_labels(
    config: Config,
    until_idle: bool,
    tx: tokio::sync::mpsc::Sender<schemas::records::LabelRecord>,
    cancel: CancellationToken,
) {
    let topic = config.topics().labels;
    let mode = if until_idle {
        Mode::Assigned { start: BTreeMap::new(), until_idle: true }
    } else {
        Mode::Group { group_id: config.groups().drift_labels() }
    };
    let mut reader = match MessageReader::new(&config.kafka, &topic, mode).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the labels topic; no concept-drift join");
            return;
        }
    };
    loop {
        let (messages, ranges) = match reader.next(4096, Duration::from_millis(200), &cancel).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading labels failed; no concept-drift join");
                return;
            }
        };
        for m in &messages {
            match schemas::records::LabelRecord::decode(m.value.as_deref()) {
                Ok(label) => {
                    if tx.send(label).await.is_err() {
                        return;
                    }
                }
                Err((reason, detail)) => tracing::debug!(%reason, detail, "label skipped"),
            }
        }
        if !until_idle && let Err(e) = reader.commit(&ranges) {
            tracing::warn!(error = %e, "committing label offsets failed");
        }
    }
}

async fn publish(control: &ControlProducer, report: &WindowReport, decision: &Decision) {
    let mut events: Vec<ControlEvent> = decision
        .drift
        .iter()
        .map(|s| ControlEvent::DriftDetected {
            model: report.model.clone(),
            version: report.version,
            feature: s.feature.clone(),
            statistic: s.statistic.clone(),
            value: s.value,
            threshold: s.threshold,
            window: report.index,
        })
        .collect();
    if decision.retrain {
        let reason = decision
            .drift
            .iter()
            .map(|s| format!("{} {} {:.3}", s.feature, s.statistic, s.value))
            .collect::<Vec<_>>()
            .join(", ");
        events.push(ControlEvent::RetrainRequested {
            model: report.model.clone(),
            version: report.version,
            reason: format!("drift in window {}: {reason}", report.index),
        });
    }
    for event in events {
        if let Err(e) = control.send(event).await {
            tracing::warn!(error = %e, "could not publish a drift event");
        }
    }
}
