//! The drift monitor: tumbling windows over `text.scored` per model version, PSI and KS per
//! feature and chi-square over predicted classes against the version's reference profile;
//! decisions with hysteresis and a cooldown; `DriftDetected` / `RetrainRequested` events.
//!
//! [`Window`] and [`Decider`] are the pure part. Memory is bounded whatever the window size:
//! per feature one PSI bin-count vector and one KS count vector over the reference sample's
//! grid (≤ 1001 bins), per class one count. [`run_monitor`] is the Kafka adapter; it follows the
//! model: records of a newer version switch the window to that version's reference.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::consume::{MessageReader, Mode};
use ingest::control::ControlProducer;
use schemas::Config;
use schemas::config::DriftConfig;
use schemas::events::ControlEvent;
use schemas::records::{ScoreStatus, ScoredRecord};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::profile::ReferenceProfile;
use crate::stats::{BinnedKs, bin_of, chi_square, ks_binned, psi};

/// Statistic names, as in events and metric labels.
pub mod statistic {
    pub const PSI: &str = "psi";
    pub const KS: &str = "ks";
    pub const CHI_SQUARE: &str = "chi_square";
    pub const ACCURACY: &str = "accuracy";
}

/// The "feature" under which windowed accuracy on labelled records is reported.
pub const PREDICTIONS: &str = "predictions";

/// The feature name under which the predicted class is reported.
pub const PREDICTED_CLASS: &str = "predicted_class";

/// What the monitor watches.
#[derive(Debug, Clone)]
pub struct Watch {
    pub model: String,
    pub version: u32,
    pub reference: ReferenceProfile,
    /// The model's test accuracy (model card), the baseline of concept drift.
    pub reference_accuracy: Option<f64>,
}

/// One statistic over its threshold in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    pub feature: String,
    pub statistic: String,
    pub value: f64,
    pub threshold: f64,
}

/// The statistics of one closed window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// 0 for the first window of this model version.
    pub index: u64,
    pub model: String,
    pub version: u32,
    pub records: u64,
    pub psi: BTreeMap<String, f64>,
    pub ks: BTreeMap<String, BinnedKs>,
    /// Chi-square statistic and p-value of the predicted classes.
    pub chi_square: Option<(f64, f64)>,
    /// Accuracy on the window's labelled records.
    pub accuracy: Option<AccuracyReport>,
    /// Statistics over their thresholds.
    pub signals: Vec<Signal>,
}

/// Accuracy and macro F1 of a window's labelled predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AccuracyReport {
    pub labelled: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// Counts of (truth, predicted) pairs.
#[derive(Debug, Clone, Default)]
struct Outcomes {
    pairs: BTreeMap<(String, String), u64>,
}

impl Outcomes {
    fn add(&mut self, truth: &str, predicted: &str) {
        *self.pairs.entry((truth.to_string(), predicted.to_string())).or_default() += 1;
    }

    fn report(&self) -> Option<AccuracyReport> {
        let n: u64 = self.pairs.values().sum();
        if n == 0 {
            return None;
        }
        let correct: u64 = self.pairs.iter().filter(|((t, p), _)| t == p).map(|(_, c)| c).sum();
        let mut classes: Vec<&str> = self.pairs.keys().flat_map(|(t, p)| [t.as_str(), p.as_str()]).collect();
        classes.sort_unstable();
        classes.dedup();
        let f1s: Vec<f64> = classes
            .iter()
            .map(|c| {
                let tp = self.pairs.get(&(c.to_string(), c.to_string())).copied().unwrap_or(0) as f64;
                let predicted: u64 = self.pairs.iter().filter(|((_, p), _)| p == c).map(|(_, n)| n).sum();
                let actual: u64 = self.pairs.iter().filter(|((t, _), _)| t == c).map(|(_, n)| n).sum();
                let denominator = (predicted + actual) as f64;
                if denominator == 0.0 { 0.0 } else { 2.0 * tp / denominator }
            })
            .collect();
        Some(AccuracyReport { labelled: n, accuracy: correct as f64 / n as f64, macro_f1: f64s_mean(&f1s) })
    }
}

fn f64s_mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// Joins late labels (text.labels) with predictions (text.scored) by id, whichever comes
/// first, in bounded memory: at most `capacity` unmatched entries per side, each kept at most
/// `ttl`; the oldest go first.
#[derive(Debug)]
pub struct LabelJoin {
    capacity: usize,
    ttl: Duration,
    predictions: std::collections::HashMap<String, (u32, String, Instant)>,
    labels: std::collections::HashMap<String, (String, Instant)>,
    order: std::collections::VecDeque<(bool, String, Instant)>,
}

impl LabelJoin {
    pub fn new(capacity: usize, ttl: Duration) -> LabelJoin {
        LabelJoin {
            capacity: capacity.max(1),
            ttl,
            predictions: Default::default(),
            labels: Default::default(),
            order: Default::default(),
        }
    }

    /// Unmatched entries held (predictions, labels).
    pub fn pending(&self) -> (usize, usize) {
        (self.predictions.len(), self.labels.len())
    }

    fn evict(&mut self, now: Instant) {
        while let Some((is_prediction, id, at)) = self.order.front().cloned() {
            let over = self.predictions.len() > self.capacity || self.labels.len() > self.capacity;
            if !over && now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            // Remove only if this queue entry is still the live one for the id.
            if is_prediction {
                if self.predictions.get(&id).is_some_and(|e| e.2 == at) {
                    self.predictions.remove(&id);
                }
            } else if self.labels.get(&id).is_some_and(|e| e.1 == at) {
                self.labels.remove(&id);
            }
        }
    }

    /// A prediction of model `version` arrived; returns the truth if its label is waiting.
    pub fn prediction(&mut self, id: &str, version: u32, predicted: &str, now: Instant) -> Option<String> {
        if let Some((truth, _)) = self.labels.remove(id) {
            return Some(truth);
        }
        self.predictions.insert(id.to_string(), (version, predicted.to_string(), now));
        self.order.push_back((true, id.to_string(), now));
        self.evict(now);
        None
    }

    /// A label arrived; returns `(version, predicted)` if the prediction is waiting.
    pub fn label(&mut self, id: &str, truth: &str, now: Instant) -> Option<(u32, String)> {
        if let Some((version, predicted, _)) = self.predictions.remove(id) {
            return Some((version, predicted));
        }
        self.labels.insert(id.to_string(), (truth.to_string(), now));
        self.order.push_back((false, id.to_string(), now));
        self.evict(now);
        None
    }
}

/// The live summary of one feature against its reference: PSI bin counts and KS counts over
/// the reference sample's grid. Fixed size, mergeable (add the counts), O(log bins) per value.
#[derive(Debug, Clone)]
pub struct FeatureSummary {
    edges: Vec<f64>,
    fractions: Vec<f64>,
    n_ref: u64,
    psi: Vec<u64>,
    ks_edges: Vec<f64>,
    ks_cdf: Vec<f64>,
    ks: Vec<u64>,
}

impl FeatureSummary {
    pub fn new(p: &crate::profile::FeatureProfile) -> FeatureSummary {
        let (ks_edges, ks_cdf) = p.ks_grid();
        FeatureSummary {
            edges: p.edges.clone(),
            fractions: p.fractions.clone(),
            n_ref: p.count,
            psi: vec![0; p.fractions.len()],
            ks: vec![0; ks_edges.len() + 1],
            ks_edges,
            ks_cdf,
        }
    }

    #[inline]
    pub fn observe(&mut self, v: f64) {
        self.psi[bin_of(&self.edges, v)] += 1;
        self.ks[self.ks_edges.partition_point(|e| *e < v)] += 1;
    }

    /// Adds another summary of the same reference (e.g. from another partition).
    pub fn merge(&mut self, other: &FeatureSummary) {
        self.psi.iter_mut().zip(&other.psi).for_each(|(a, b)| *a += b);
        self.ks.iter_mut().zip(&other.ks).for_each(|(a, b)| *a += b);
    }

    pub fn psi(&self) -> Option<f64> {
        psi(&self.fractions, &self.psi)
    }

    pub fn ks(&self) -> Option<BinnedKs> {
        ks_binned(&self.ks_cdf, &self.ks, self.n_ref)
    }

    fn reset(&mut self) {
        self.psi.iter_mut().for_each(|c| *c = 0);
        self.ks.iter_mut().for_each(|c| *c = 0);
    }
}

/// The bounded summaries of a run of records: per feature, per predicted class, per
/// (truth, predicted) pair. Mergeable: a sliding window is the merge of its panes.
#[derive(Debug, Clone)]
struct Pane {
    features: BTreeMap<String, FeatureSummary>,
    classes: BTreeMap<String, u64>,
    outcomes: Outcomes,
    records: u64,
}

impl Pane {
    fn merge(&mut self, other: &Pane) {
        for (name, summary) in self.features.iter_mut() {
            if let Some(o) = other.features.get(name) {
                summary.merge(o);
            }
        }
        for (class, n) in &other.classes {
            *self.classes.entry(class.clone()).or_default() += n;
        }
        for (pair, n) in &other.outcomes.pairs {
            *self.outcomes.pairs.entry(pair.clone()).or_default() += n;
        }
        self.records += other.records;
    }

    fn reset(&mut self) {
        self.features.values_mut().for_each(FeatureSummary::reset);
        self.classes.values_mut().for_each(|c| *c = 0);
        self.outcomes = Outcomes::default();
        self.records = 0;
    }
}

/// A window over scored records of one model version: tumbling by count (`window`) or by time
/// (`window_secs` with at least `min_records`), or sliding by count (`slide` > 0: a report every
/// `slide` records over the last `window`, kept as `window / slide` mergeable panes).
pub struct Window {
    watch: Watch,
    thresholds: DriftConfig,
    current: Pane,
    /// Closed panes of a sliding window, oldest first.
    panes: std::collections::VecDeque<Pane>,
    index: u64,
    opened: Instant,
}

impl Window {
    pub fn new(watch: Watch, thresholds: DriftConfig) -> Window {
        let features =
            watch.reference.features.iter().map(|(k, p)| (k.clone(), FeatureSummary::new(p))).collect();
        let classes = watch.reference.classes.keys().map(|k| (k.clone(), 0)).collect();
        Window {
            watch,
            thresholds,
            current: Pane { features, classes, outcomes: Outcomes::default(), records: 0 },
            panes: Default::default(),
            index: 0,
            opened: Instant::now(),
        }
    }

    pub fn version(&self) -> u32 {
        self.watch.version
    }

    fn sliding(&self) -> bool {
        let t = &self.thresholds;
        t.slide > 0 && t.slide < t.window
    }

    /// Adds one scored record; returns the report when it closes the window. Records of other
    /// models or versions and skipped records are ignored.
    pub fn observe(&mut self, r: &ScoredRecord) -> Option<WindowReport> {
        if r.status != ScoreStatus::Scored
            || r.model != self.watch.model
            || r.model_version != self.watch.version
        {
            return None;
        }
        let pane = &mut self.current;
        for (name, summary) in pane.features.iter_mut() {
            if let Some(&v) = r.features.get(name) {
                summary.observe(v);
            }
        }
        if let (Some(truth), Some(predicted)) = (&r.truth, &r.label) {
            pane.outcomes.add(truth, predicted);
        }
        if let Some(label) = &r.label {
            // A class the reference never predicted is its own category.
            *pane.classes.entry(label.clone()).or_default() += 1;
        }
        pane.records += 1;
        self.close_if_due()
    }

    /// Counts a late-labelled prediction of this window's model version in its accuracy.
    pub fn observe_outcome(&mut self, version: u32, truth: &str, predicted: &str) {
        if version == self.watch.version {
            self.current.outcomes.add(truth, predicted);
        }
    }

    /// Closes a window that is due: by count in `observe`, by time when called on a timer.
    pub fn close_if_due(&mut self) -> Option<WindowReport> {
        let t = &self.thresholds;
        if self.sliding() {
            if self.current.records < t.slide as u64 {
                return None;
            }
            let mut closed = self.current.clone();
            std::mem::swap(&mut closed, &mut self.current);
            self.current.reset();
            self.panes.push_back(closed);
            let needed = t.window / t.slide;
            while self.panes.len() > needed {
                self.panes.pop_front();
            }
            if self.panes.len() < needed {
                return None;
            }
            let mut merged = self.panes[0].clone();
            for pane in self.panes.iter().skip(1) {
                merged.merge(pane);
            }
            let report = self.report(&merged);
            self.index += 1;
            return Some(report);
        }
        let by_count = self.current.records >= t.window as u64;
        let by_time = t.window_secs > 0
            && self.opened.elapsed() >= Duration::from_secs(t.window_secs)
            && self.current.records >= t.min_records as u64;
        if !(by_count || by_time) {
            return None;
        }
        let report = self.report(&self.current);
        self.index += 1;
        self.current.reset();
        self.opened = Instant::now();
        Some(report)
    }

    fn report(&self, pane: &Pane) -> WindowReport {
        let t = &self.thresholds;
        let mut report = WindowReport {
            index: self.index,
            model: self.watch.model.clone(),
            version: self.watch.version,
            records: pane.records,
            psi: BTreeMap::new(),
            ks: BTreeMap::new(),
            chi_square: None,
            accuracy: pane.outcomes.report(),
            signals: Vec::new(),
        };
        if let (Some(a), Some(baseline)) = (report.accuracy, self.watch.reference_accuracy) {
            let floor = baseline - t.accuracy_drop;
            if a.labelled >= t.min_labelled as u64 && a.accuracy < floor {
                report.signals.push(signal(PREDICTIONS, statistic::ACCURACY, a.accuracy, floor));
            }
        }
        for (name, summary) in &pane.features {
            if let Some(value) = summary.psi() {
                if value > t.psi_threshold {
                    report.signals.push(signal(name, statistic::PSI, value, t.psi_threshold));
                }
                report.psi.insert(name.clone(), value);
            }
            // KS on the saturated confidence would flag tiny shifts near 1.0 (its PSI uses fixed
            // bins for the same reason).
            if name == crate::features::name::CONFIDENCE {
                continue;
            }
            if let Some(ks) = summary.ks() {
                if ks.p < t.ks_p_value && ks.d >= t.ks_min_effect {
                    report.signals.push(signal(name, statistic::KS, ks.d, t.ks_min_effect));
                }
                report.ks.insert(name.clone(), ks);
            }
        }
        let expected: Vec<f64> = pane
            .classes
            .keys()
            .map(|k| self.watch.reference.classes.get(k).copied().unwrap_or(0.0))
            .collect();
        let counts: Vec<u64> = pane.classes.values().copied().collect();
        report.chi_square = chi_square(&expected, &counts);
        if let Some((stat, p)) = report.chi_square {
            let shares = psi(&expected, &counts).unwrap_or(0.0);
            // A tiny p on a large window alone is not drift: require the PSI of the class mix too.
            if p < t.chi_square_p_value && shares > t.psi_warn {
                report.signals.push(signal(
                    PREDICTED_CLASS,
                    statistic::CHI_SQUARE,
                    stat,
                    t.chi_square_p_value,
                ));
            }
        }
        report
    }
}

fn signal(feature: &str, statistic: &str, value: f64, threshold: f64) -> Signal {
    Signal { feature: feature.into(), statistic: statistic.into(), value, threshold }
}

/// What to do after a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Drift confirmed (k consecutive drifting windows): one event per signal of this window.
    pub drift: Vec<Signal>,
    /// Ask for a retrain (confirmed drift outside the cooldown).
    pub retrain: bool,
}

/// Hysteresis and cooldown over window reports.
#[derive(Debug, Clone)]
pub struct Decider {
    consecutive: usize,
    cooldown: usize,
    streak: usize,
    cooling: usize,
}

impl Decider {
    pub fn new(t: &DriftConfig) -> Decider {
        Decider { consecutive: t.consecutive.max(1), cooldown: t.cooldown_windows, streak: 0, cooling: 0 }
    }

    pub fn decide(&mut self, report: &WindowReport) -> Decision {
        if report.signals.is_empty() {
            self.streak = 0;
        } else {
            self.streak += 1;
        }
        let confirmed = self.streak >= self.consecutive;
        let decision = if confirmed && self.cooling == 0 {
            self.cooling = self.cooldown;
            self.streak = 0;
            Decision { drift: report.signals.clone(), retrain: true }
        } else if confirmed {
            Decision { drift: report.signals.clone(), retrain: false }
        } else {
            Decision::default()
        };
        if !decision.retrain && self.cooling > 0 {
            self.cooling -= 1;
        }
        decision
    }
}

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

/// Consumes `text.scored` (consumer group `<group_id>.drift`) until cancelled, calling
/// `on_report` for every closed window with its decision, and publishing `DriftDetected` and
/// `RetrainRequested` on the control topic when `control` is given, and updating `metrics`. With `until_idle`, reads
/// from the beginning with explicit assignment and stops at the end of the topic.
pub async fn run_monitor(
    config: &Config,
    watch: Watch,
    references: References,
    until_idle: bool,
    outputs: Outputs<'_>,
    cancel: &CancellationToken,
    mut on_report: impl FnMut(&WindowReport, &Decision),
) -> Result<u64> {
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
    while let Some((messages, ranges)) = reader.next(4096, Duration::from_millis(200), cancel).await? {
        for m in &messages {
            let Some(Ok(r)) = m.value.as_deref().map(serde_json::from_slice::<ScoredRecord>) else {
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
        if !until_idle {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::text_features;

    fn scored(text: &str, version: u32) -> ScoredRecord {
        ScoredRecord {
            v: 1,
            id: "x".into(),
            status: ScoreStatus::Scored,
            reason: None,
            model: "m".into(),
            model_version: version,
            label: Some("ham".into()),
            truth: None,
            probabilities: BTreeMap::new(),
            features: text_features(text),
            partition: 0,
            offset: 0,
            scored_at: 0,
            latency_us: 0,
        }
    }

    fn config(window: usize) -> DriftConfig {
        DriftConfig { window, ..DriftConfig::default() }
    }

    fn reference(texts: &[String]) -> ReferenceProfile {
        let rows: Vec<_> = texts.iter().map(|t| text_features(t)).collect();
        ReferenceProfile::build(rows.iter()).with_classes(texts.iter().map(|_| "ham"))
    }

    #[test]
    fn windows_close_and_detect_a_shift() {
        let reference_texts: Vec<String> = (0..400).map(|i| "word ".repeat(5 + i % 40)).collect();
        let watch = Watch {
            model: "m".into(),
            version: 1,
            reference: reference(&reference_texts),
            reference_accuracy: None,
        };
        let mut w = Window::new(watch, config(100));
        let mut reports = Vec::new();
        for t in reference_texts.iter().take(200) {
            reports.extend(w.observe(&scored(t, 1)));
            assert!(w.observe(&scored(t, 2)).is_none(), "other versions are ignored");
        }
        for _ in 0..100 {
            reports.extend(w.observe(&scored(&"longer ".repeat(400), 1)));
        }
        assert_eq!(reports.len(), 3);
        assert!(reports[0].signals.is_empty(), "{:?}", reports[0]);
        assert!(reports[1].signals.is_empty(), "{:?}", reports[1]);
        let stats: Vec<(&str, &str)> =
            reports[2].signals.iter().map(|s| (s.feature.as_str(), s.statistic.as_str())).collect();
        assert!(stats.contains(&("chars", statistic::PSI)), "{:?}", reports[2]);
        assert!(stats.contains(&("chars", statistic::KS)), "{:?}", reports[2]);
        assert!(reports[2].ks["chars"].d > 0.9, "{:?}", reports[2].ks);
        assert!(reports[0].ks["chars"].d < 0.2, "{:?}", reports[0].ks);
        assert_eq!(reports[2].index, 2);
    }

    #[test]
    fn a_new_predicted_class_mix_is_chi_square_drift() {
        let texts: Vec<String> = (0..400).map(|i| "word ".repeat(5 + i % 40)).collect();
        let watch = Watch {
            model: "m".into(),
            version: 1,
            reference: reference(&texts),
            reference_accuracy: Some(0.95),
        };
        let mut w = Window::new(watch, config(100));
        let mut last = None;
        for (i, t) in texts.iter().take(100).enumerate() {
            let mut r = scored(t, 1);
            r.label = Some(if i % 2 == 0 { "spam" } else { "ham" }.into());
            last = w.observe(&r).or(last);
        }
        let report = last.expect("window closed");
        assert!(report.signals.iter().any(|s| s.statistic == statistic::CHI_SQUARE), "{report:?}");
    }

    fn report_with(signals: usize) -> WindowReport {
        WindowReport {
            index: 0,
            model: "m".into(),
            version: 1,
            records: 100,
            psi: BTreeMap::new(),
            ks: BTreeMap::new(),
            chi_square: None,
            accuracy: None,
            signals: (0..signals).map(|_| signal("chars", statistic::PSI, 0.5, 0.2)).collect(),
        }
    }

    #[test]
    fn decisions_need_consecutive_windows_and_respect_the_cooldown() {
        let mut d =
            Decider::new(&DriftConfig { consecutive: 2, cooldown_windows: 3, ..DriftConfig::default() });
        // One drifting window, then a quiet one: no decision (hysteresis).
        assert_eq!(d.decide(&report_with(1)), Decision::default());
        assert_eq!(d.decide(&report_with(0)), Decision::default());
        // Two in a row: drift and a retrain request.
        assert_eq!(d.decide(&report_with(1)), Decision::default());
        let first = d.decide(&report_with(1));
        assert!(first.retrain && first.drift.len() == 1);
        // Still drifting during the cooldown: drift confirmed again but no new request.
        assert!(!d.decide(&report_with(1)).retrain);
        let again = d.decide(&report_with(1));
        assert!(!again.retrain && !again.drift.is_empty());
        assert!(!d.decide(&report_with(1)).retrain);
        // The cooldown is over: still drifting, so a new request.
        assert!(d.decide(&report_with(1)).retrain);
        // A quiet window resets the streak.
        assert_eq!(d.decide(&report_with(0)), Decision::default());
    }

    #[test]
    fn accuracy_below_the_model_baseline_is_concept_drift() {
        let texts: Vec<String> = (0..400).map(|i| "word ".repeat(5 + i % 40)).collect();
        let watch = Watch {
            model: "m".into(),
            version: 1,
            reference: reference(&texts),
            reference_accuracy: Some(0.95),
        };
        let mut w = Window::new(watch, config(100));
        let mut reports = Vec::new();
        for (i, t) in texts.iter().take(200).enumerate() {
            let mut r = scored(t, 1);
            // First window: all right; second window: 30 % wrong.
            let wrong = i >= 100 && i % 10 < 3;
            r.truth = Some(if wrong { "spam" } else { "ham" }.into());
            reports.extend(w.observe(&r));
        }
        assert_eq!(reports.len(), 2);
        let first = reports[0].accuracy.expect("labelled");
        assert_eq!((first.labelled, first.accuracy), (100, 1.0));
        assert!(!reports[0].signals.iter().any(|s| s.statistic == statistic::ACCURACY));
        let second = reports[1].accuracy.expect("labelled");
        assert!((second.accuracy - 0.7).abs() < 1e-12, "{second:?}");
        let signal =
            reports[1].signals.iter().find(|s| s.statistic == statistic::ACCURACY).expect("accuracy signal");
        assert!((signal.threshold - 0.90).abs() < 1e-12);
        // Late labels count too, for the watched version only.
        w.observe_outcome(1, "spam", "ham");
        w.observe_outcome(2, "spam", "spam");
        assert_eq!(w.current.outcomes.report().map(|a| (a.labelled, a.accuracy)), Some((1, 0.0)));
    }

    #[test]
    fn the_label_join_matches_either_order_in_bounded_memory() {
        let now = Instant::now();
        let mut join = LabelJoin::new(2, Duration::from_secs(60));
        assert_eq!(join.prediction("a", 1, "spam", now), None);
        assert_eq!(join.label("a", "ham", now), Some((1, "spam".into())));
        assert_eq!(join.label("b", "spam", now), None);
        assert_eq!(join.prediction("b", 3, "ham", now), Some("spam".into()));
        assert_eq!(join.pending(), (0, 0));
        // Capacity: the oldest unmatched prediction goes first.
        for id in ["p1", "p2", "p3"] {
            join.prediction(id, 1, "ham", now);
        }
        assert_eq!(join.pending(), (2, 0));
        assert_eq!(join.label("p1", "ham", now), None, "p1 was evicted");
        assert!(join.label("p3", "ham", now).is_some());
        // TTL: a label older than the TTL is gone when the next entry arrives.
        let mut join = LabelJoin::new(100, Duration::from_secs(10));
        join.label("old", "spam", now);
        join.label("new", "spam", now + Duration::from_secs(11));
        assert_eq!(join.prediction("old", 1, "spam", now + Duration::from_secs(11)), None);
        assert_eq!(join.prediction("new", 1, "spam", now + Duration::from_secs(11)), Some("spam".into()));
    }

    #[test]
    fn sliding_windows_report_every_slide_over_the_last_window() {
        let texts: Vec<String> = (0..400).map(|i| "word ".repeat(5 + i % 40)).collect();
        let watch =
            Watch { model: "m".into(), version: 1, reference: reference(&texts), reference_accuracy: None };
        let mut w = Window::new(watch, DriftConfig { window: 200, slide: 50, ..DriftConfig::default() });
        let mut reports = Vec::new();
        // 200 reference-like records, then 100 much longer ones.
        for t in texts.iter().take(200) {
            reports.extend(w.observe(&scored(t, 1)));
        }
        for _ in 0..100 {
            reports.extend(w.observe(&scored(&"longer ".repeat(400), 1)));
        }
        // The first report needs a full window (200); then one every 50 records.
        assert_eq!(reports.len(), 3);
        assert!(reports.iter().all(|r| r.records == 200), "{reports:?}");
        assert!(reports[0].signals.is_empty(), "{:?}", reports[0]);
        // The shifted records are 50 of 200, then 100 of 200: the KS distance grows with them.
        let d: Vec<f64> = reports.iter().map(|r| r.ks["chars"].d).collect();
        assert!(d[0] < 0.15 && d[1] > 0.2 && d[2] > d[1], "{d:?}");
        assert!((d[2] - 0.5).abs() < 0.1, "half the window is shifted: {d:?}");
    }
}
