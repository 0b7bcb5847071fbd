//! Classification metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Metrics of predictions against truth over `labels.len()` classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub n: u64,
    pub accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    /// Per class: precision, recall, f1, support.
    pub per_class: BTreeMap<String, ClassMetrics>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Evaluation {
    pub fn compute(labels: &[String], truth: &[usize], predicted: &[usize]) -> Evaluation {
        let k = labels.len();
        let mut confusion = vec![vec![0u64; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let n = truth.len() as u64;
        let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut per_class = BTreeMap::new();
        for (i, label) in labels.iter().enumerate() {
            let tp = confusion[i][i];
            let predicted_i: u64 = (0..k).map(|t| confusion[t][i]).sum();
            let support: u64 = confusion[i].iter().sum();
            let precision = ratio(tp, predicted_i);
            let recall = ratio(tp, support);
            let f1 =
                if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
            per_class.insert(label.clone(), ClassMetrics { precision, recall, f1, support });
        }
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if k == 0 { 0.0 } else { per_class.values().map(f).sum::<f64>() / k as f64 }
        };
        Evaluation {
            n,
            accuracy: ratio(correct, n),
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            macro_f1: mean(|c| c.f1),
            per_class,
            confusion,
        }
    }

    /// Flat metrics for tracking, prefixed (e.g. `test_accuracy`).
    pub fn flat(&self, prefix: &str) -> BTreeMap<String, f64> {
        BTreeMap::from([
            (format!("{prefix}_accuracy"), self.accuracy),
            (format!("{prefix}_macro_precision"), self.macro_precision),
            (format!("{prefix}_macro_recall"), self.macro_recall),
            (format!("{prefix}_macro_f1"), self.macro_f1),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_metrics_by_hand() {
        let labels = vec!["ham".to_string(), "spam".to_string()];
        // truth:     h h h h s s
        // predicted: h h h s s h
        let e = Evaluation::compute(&labels, &[0, 0, 0, 0, 1, 1], &[0, 0, 0, 1, 1, 0]);
        assert_eq!(e.confusion, vec![vec![3, 1], vec![1, 1]]);
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let spam = &e.per_class["spam"];
        assert!((spam.precision - 0.5).abs() < 1e-12 && (spam.recall - 0.5).abs() < 1e-12);
        let ham = &e.per_class["ham"];
        assert!((ham.precision - 0.75).abs() < 1e-12 && (ham.recall - 0.75).abs() < 1e-12);
        assert!((e.macro_f1 - 0.625).abs() < 1e-12);
        let empty = Evaluation::compute(&labels, &[], &[]);
        assert_eq!(empty.accuracy, 0.0);
    }
}
