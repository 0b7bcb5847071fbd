//! What a closed window is kept as: its report, the thresholds it was judged by and the
//! decision, as one JSON object the metadata store holds and the web UI draws (PSI, KS and
//! chi-square per feature against their threshold lines, accuracy against its floor). Pure.

use schemas::config::DriftConfig;
use serde_json::{Value, json};

use crate::decider::Decision;
use crate::window::WindowReport;

/// The kept form of `report`, judged by `thresholds` with `decision`.
pub fn persisted(report: &WindowReport, decision: &Decision, thresholds: &DriftConfig) -> Value {
    json!({
        "psi": report.psi,
        "ks": report.ks,
        "chi_square": report.chi_square.map(|(statistic, p)| json!({"statistic": statistic, "p": p})),
        "accuracy": report.accuracy,
        "signals": report.signals,
        "thresholds": {
            "psi": thresholds.psi_threshold,
            "ks_d": thresholds.ks_min_effect,
            "ks_p_value": thresholds.ks_p_value,
            "chi_square_p_value": thresholds.chi_square_p_value,
            "accuracy_floor": report.accuracy_floor,
        },
        "drift_confirmed": !decision.drift.is_empty(),
        "retrain_requested": decision.retrain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Signal;

    #[test]
    fn the_kept_report_carries_statistics_thresholds_and_the_decision() {
        let report = WindowReport {
            index: 3,
            model: "spam".into(),
            version: 2,
            records: 500,
            psi: [("chars".to_string(), 0.31)].into(),
            ks: Default::default(),
            chi_square: Some((12.5, 0.0004)),
            accuracy: None,
            accuracy_floor: Some(0.92),
            signals: vec![Signal {
                feature: "chars".into(),
                statistic: "psi".into(),
                value: 0.31,
                threshold: 0.2,
            }],
        };
        let decision = Decision { drift: report.signals.clone(), retrain: true };
        let kept = persisted(&report, &decision, &DriftConfig::default());
        assert_eq!(kept["psi"]["chars"], 0.31);
        assert_eq!(kept["chi_square"]["p"], 0.0004);
        assert_eq!(kept["thresholds"]["psi"], 0.2);
        assert!((kept["thresholds"]["accuracy_floor"].as_f64().unwrap() - 0.92).abs() < 1e-9);
        assert_eq!(
            (kept["drift_confirmed"].as_bool(), kept["retrain_requested"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(kept["signals"][0]["feature"], "chars");
    }
}
