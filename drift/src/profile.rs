//! Reference profiles: what the training data looked like, per feature.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{bin_counts, psi};

/// Format version of profiles (stored inside model cards).
pub const PROFILE_FORMAT: u32 = 1;

/// Bins per numeric feature.
pub const DEFAULT_BINS: usize = 10;

/// Fixed bins of the prediction confidence: its quantiles collapse near 1.0 for a confident
/// model, which would make PSI hypersensitive to tiny shifts.
pub const CONFIDENCE_EDGES: [f64; 6] = [0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

/// Largest sample kept per feature.
pub const SAMPLE_SIZE: usize = 1000;

/// One feature's reference distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    /// Sorted interior bin edges (quantiles of the reference); k−1 edges for k bins.
    pub edges: Vec<f64>,
    /// Fraction of reference values per bin.
    pub fractions: Vec<f64>,
    pub count: u64,
    pub mean: f64,
    /// An evenly spaced sample of the sorted reference values (for KS).
    pub sample: Vec<f64>,
}

impl FeatureProfile {
    /// Profiles `values` with `bins` quantile bins (fewer when values repeat).
    pub fn build(values: &[f64], bins: usize) -> Option<FeatureProfile> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mut edges: Vec<f64> = (1..bins).map(|i| sorted[(i * n / bins).min(n - 1)]).collect();
        edges.dedup();
        // An edge equal to the maximum would leave its upper bin always empty.
        if edges.last() == sorted.last() {
            edges.pop();
        }
        let counts = bin_counts(&edges, sorted.iter().copied());
        let fractions = counts.iter().map(|&c| c as f64 / n as f64).collect();
        let step = (n as f64 / SAMPLE_SIZE as f64).max(1.0);
        let sample = (0..n.min(SAMPLE_SIZE)).map(|i| sorted[((i as f64) * step) as usize]).collect();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        Some(FeatureProfile { edges, fractions, count: n as u64, mean, sample })
    }

    /// Profiles `values` against fixed `edges` (for bounded features whose quantiles collapse,
    /// such as a saturated confidence).
    pub fn with_edges(values: &[f64], edges: &[f64]) -> Option<FeatureProfile> {
        let mut p = FeatureProfile::build(values, 2)?;
        p.edges = edges.to_vec();
        let counts = bin_counts(&p.edges, values.iter().copied().filter(|v| v.is_finite()));
        p.fractions = counts.iter().map(|&c| c as f64 / p.count as f64).collect();
        Some(p)
    }

    /// PSI of live values against this profile; `None` for an empty window.
    pub fn psi(&self, live: impl IntoIterator<Item = f64>) -> Option<f64> {
        psi(&self.fractions, &bin_counts(&self.edges, live))
    }
}

/// The reference of a model version: one profile per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    pub format_version: u32,
    pub features: BTreeMap<String, FeatureProfile>,
    /// Share of each predicted class on the reference rows (chi-square against live windows).
    #[serde(default)]
    pub classes: BTreeMap<String, f64>,
}

impl ReferenceProfile {
    /// Builds a profile from per-record feature maps.
    pub fn build<'a>(rows: impl IntoIterator<Item = &'a BTreeMap<String, f64>>) -> ReferenceProfile {
        let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for row in rows {
            for (k, v) in row {
                columns.entry(k.clone()).or_default().push(*v);
            }
        }
        let features = columns
            .into_iter()
            .filter_map(|(k, vs)| {
                let profile = match k.as_str() {
                    crate::features::name::CONFIDENCE => FeatureProfile::with_edges(&vs, &CONFIDENCE_EDGES),
                    _ => FeatureProfile::build(&vs, DEFAULT_BINS),
                };
                profile.map(|p| (k, p))
            })
            .collect();
        ReferenceProfile { format_version: PROFILE_FORMAT, features, classes: BTreeMap::new() }
    }

    /// Records the share of each predicted class.
    pub fn with_classes<'a>(mut self, predicted: impl IntoIterator<Item = &'a str>) -> ReferenceProfile {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for label in predicted {
            *counts.entry(label.to_string()).or_default() += 1;
        }
        let n: u64 = counts.values().sum();
        self.classes = counts.into_iter().map(|(k, c)| (k, c as f64 / n.max(1) as f64)).collect();
        self
    }
}

impl FeatureProfile {
    /// The fine KS grid: the distinct values of the sorted reference sample, and the
    /// reference CDF at each (share of the sample at or below it).
    pub fn ks_grid(&self) -> (Vec<f64>, Vec<f64>) {
        let mut edges = self.sample.clone();
        edges.dedup();
        let n = self.sample.len().max(1) as f64;
        let cdf = edges.iter().map(|e| self.sample.partition_point(|v| v <= e) as f64 / n).collect();
        (edges, cdf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_bins_split_evenly() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let p = FeatureProfile::build(&values, 10).unwrap();
        assert_eq!(p.edges.len(), 9);
        for f in &p.fractions {
            assert!((f - 0.1).abs() < 0.002, "{:?}", p.fractions);
        }
        assert!(p.psi(values.iter().copied()).unwrap() < 1e-6);
        let shifted = p.psi(values.iter().map(|v| v + 500.0)).unwrap();
        assert!(shifted > 1.0, "{shifted}");
        assert_eq!(p.sample.len(), SAMPLE_SIZE);
    }

    #[test]
    fn fixed_edges_for_confidence() {
        let values: Vec<f64> = (0..100).map(|i| if i < 90 { 0.999 } else { 0.75 }).collect();
        let p = FeatureProfile::with_edges(&values, &CONFIDENCE_EDGES).unwrap();
        assert_eq!(p.fractions.len(), 7);
        assert!((p.fractions[6] - 0.9).abs() < 1e-12 && (p.fractions[2] - 0.1).abs() < 1e-12);
        // A tiny shift within the top bin is no drift.
        let live = values.iter().map(|v| if *v > 0.99 { 0.9999 } else { *v });
        assert!(p.psi(live).unwrap() < 0.01);
    }

    #[test]
    fn repeated_values_give_fewer_bins() {
        let values = vec![1.0; 50];
        let p = FeatureProfile::build(&values, 10).unwrap();
        assert!(p.edges.is_empty());
        assert_eq!(p.fractions, vec![1.0]);
        assert!(FeatureProfile::build(&[], 10).is_none());
        assert!(FeatureProfile::build(&[f64::NAN], 10).is_none());
    }
}
