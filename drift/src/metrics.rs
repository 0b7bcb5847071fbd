//! Prometheus metrics of the drift monitor, registered into the caller's registry (the
//! process's one registry, served on `/metrics`).

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use schemas::metric_names as m;

use crate::decider::Decision;
use crate::window::WindowReport;

/// Handles to every drift metric.
#[derive(Clone)]
pub struct DriftMetrics {
    pub statistic: GaugeVec,
    pub model_version: IntGauge,
    pub windows: IntCounter,
    pub detected: IntCounterVec,
    pub retrain_requests: IntCounter,
}

impl DriftMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<DriftMetrics> {
        let statistic = GaugeVec::new(
            Opts::new(m::DRIFT_STATISTIC, "Last closed window's drift statistic per feature"),
            &["feature", "statistic"],
        )?;
        let model_version = IntGauge::new(m::DRIFT_MODEL_VERSION, "Model version the drift monitor watches")?;
        let windows = IntCounter::new(m::DRIFT_WINDOWS_TOTAL, "Closed drift windows")?;
        let detected = IntCounterVec::new(
            Opts::new(m::DRIFT_DETECTED_TOTAL, "Confirmed drift signals by feature and statistic"),
            &["feature", "statistic"],
        )?;
        let retrain_requests =
            IntCounter::new(m::DRIFT_RETRAIN_REQUESTS_TOTAL, "RetrainRequested events issued")?;
        registry.register(Box::new(statistic.clone()))?;
        registry.register(Box::new(model_version.clone()))?;
        registry.register(Box::new(windows.clone()))?;
        registry.register(Box::new(detected.clone()))?;
        registry.register(Box::new(retrain_requests.clone()))?;
        Ok(DriftMetrics { statistic, model_version, windows, detected, retrain_requests })
    }

    /// Records a closed window and its decision.
    pub fn observe(&self, report: &WindowReport, decision: &Decision) {
        use crate::window::{PREDICTED_CLASS, PREDICTIONS, statistic as s};
        self.windows.inc();
        self.model_version.set(i64::from(report.version));
        for (feature, v) in &report.psi {
            self.statistic.with_label_values(&[feature.as_str(), s::PSI]).set(*v);
            // Known series from the first window on, so increase() reads 0, not nothing.
            self.detected.with_label_values(&[feature.as_str(), s::PSI]);
        }
        for (feature, ks) in &report.ks {
            self.statistic.with_label_values(&[feature.as_str(), s::KS]).set(ks.d);
            self.detected.with_label_values(&[feature.as_str(), s::KS]);
        }
        if let Some((stat, _)) = report.chi_square {
            self.statistic.with_label_values(&[PREDICTED_CLASS, s::CHI_SQUARE]).set(stat);
        }
        if let Some(a) = report.accuracy {
            self.statistic.with_label_values(&[PREDICTIONS, s::ACCURACY]).set(a.accuracy);
        }
        for signal in &decision.drift {
            self.detected.with_label_values(&[signal.feature.as_str(), signal.statistic.as_str()]).inc();
        }
        if decision.retrain {
            self.retrain_requests.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::window::Signal;

    #[test]
    fn a_window_sets_gauges_and_counts_confirmed_drift() {
        let registry = Registry::new();
        let metrics = DriftMetrics::register(&registry).unwrap();
        let signal = Signal { feature: "chars".into(), statistic: "psi".into(), value: 0.4, threshold: 0.2 };
        let report = WindowReport {
            index: 3,
            model: "spam".into(),
            version: 2,
            records: 500,
            psi: BTreeMap::from([("chars".to_string(), 0.4)]),
            ks: BTreeMap::new(),
            chi_square: Some((12.5, 0.001)),
            accuracy: Some(crate::labels::AccuracyReport { labelled: 80, accuracy: 0.9, macro_f1: 0.88 }),
            accuracy_floor: Some(0.92),
            signals: vec![signal.clone()],
        };
        metrics.observe(&report, &Decision { drift: vec![signal], retrain: true });
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(r#"driftwood_drift_statistic{feature="chars",statistic="psi"} 0.4"#), "{text}");
        assert!(
            text.contains(
                r#"driftwood_drift_statistic{feature="predicted_class",statistic="chi_square"} 12.5"#
            )
        );
        assert!(text.contains(r#"driftwood_drift_detected_total{feature="chars",statistic="psi"} 1"#));
        assert!(text.contains("driftwood_drift_retrain_requests_total 1"));
        assert!(text.contains("driftwood_drift_model_version 2"));
        assert!(
            text.contains(r#"driftwood_drift_statistic{feature="predictions",statistic="accuracy"} 0.9"#)
        );
    }
}
