//! Tumbling (or sliding) windows over scored records of one model version, against that
//! version's reference profile: PSI and KS per feature, chi-square over predicted classes and
//! accuracy on labelled records, each with its threshold. Memory is bounded whatever the
//! window size: per feature one PSI bin-count vector and one KS count vector over the
//! reference sample's grid (≤ 1001 bins), per class one count. Pure: no Kafka, no I/O.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use schemas::config::DriftConfig;
use schemas::records::{ScoreStatus, ScoredRecord};
use serde::Serialize;

use crate::labels::{AccuracyReport, Outcomes};
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
    /// The accuracy below which the window signals: the model's test accuracy less
    /// `drift.accuracy_drop` (None without a test accuracy).
    pub accuracy_floor: Option<f64>,
    /// Statistics over their thresholds.
    pub signals: Vec<Signal>,
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
        self.outcomes.merge(&other.outcomes);
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
            accuracy_floor: self.watch.reference_accuracy.map(|baseline| baseline - t.accuracy_drop),
            signals: Vec::new(),
        };
        if let (Some(a), Some(floor)) = (report.accuracy, report.accuracy_floor)
            && a.labelled >= t.min_labelled as u64
            && a.accuracy < floor
        {
            report.signals.push(signal(PREDICTIONS, statistic::ACCURACY, a.accuracy, floor));
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

pub(crate) fn signal(feature: &str, statistic: &str, value: f64, threshold: f64) -> Signal {
    Signal { feature: feature.into(), statistic: statistic.into(), value, threshold }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use schemas::records::ScoreStatus;

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
