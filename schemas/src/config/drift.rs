//! The `drift` section: windows, tests and thresholds of the drift monitor.

use serde::{Deserialize, Serialize};

use super::{Result, invalid, positive};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Records per (tumbling) window.
    pub window: usize,
    /// Sliding windows: report every `slide` records over the last `window` (0: tumbling).
    /// `window` must be a multiple of it.
    pub slide: usize,
    /// Also close a (tumbling) window after this many seconds (0: by count only)...
    pub window_secs: u64,
    /// ...if it holds at least this many records.
    pub min_records: usize,
    /// PSI above which a feature is drifting.
    pub psi_threshold: f64,
    /// PSI above which a shift is worth a log line (and the class-mix PSI a chi-square needs).
    pub psi_warn: f64,
    /// KS: drifting when the p-value is below this...
    pub ks_p_value: f64,
    /// ...and D is at least this large (a large window makes tiny shifts significant).
    pub ks_min_effect: f64,
    /// Chi-square of the predicted classes: drifting below this p-value.
    pub chi_square_p_value: f64,
    /// Concept drift: a window's accuracy on labelled records (inline `label`s, or late ones
    /// from text.labels joined by id) drifting when more than this below the model's test
    /// accuracy...
    pub accuracy_drop: f64,
    /// ...over at least this many labelled records.
    pub min_labelled: usize,
    /// The label join keeps at most this many unmatched predictions and labels...
    pub label_join_capacity: usize,
    /// ...each for at most this long.
    pub label_ttl_secs: u64,
    /// Drift is confirmed after this many consecutive drifting windows.
    pub consecutive: usize,
    /// After a retrain request, this many windows pass before the next one.
    pub cooldown_windows: usize,
    /// Publish DriftDetected / RetrainRequested on the control topic.
    pub publish_events: bool,
    /// How long each window's report is kept in the metadata store (the UI's drift page,
    /// `GET /v1/drift/windows`); 0 keeps them for good. At most 68 years (CQL's TTL bound).
    pub report_retention_secs: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            window: 500,
            slide: 0,
            window_secs: 0,
            min_records: 100,
            psi_threshold: 0.2,
            psi_warn: 0.1,
            ks_p_value: 0.01,
            ks_min_effect: 0.1,
            chi_square_p_value: 0.01,
            accuracy_drop: 0.05,
            min_labelled: 50,
            label_join_capacity: 100_000,
            label_ttl_secs: 86_400,
            consecutive: 2,
            cooldown_windows: 10,
            publish_events: true,
            report_retention_secs: 30 * 86_400,
        }
    }
}

impl DriftConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        positive("drift.window", self.window)?;
        positive("drift.consecutive", self.consecutive)?;
        if self.report_retention_secs > i32::MAX as u64 {
            return Err(invalid(
                "drift.report_retention_secs",
                "must be at most 2147483647 (68 years), or 0 for ever",
            ));
        }
        if self.slide > 0 && !self.window.is_multiple_of(self.slide) {
            return Err(invalid("drift.slide", "must divide drift.window (or be 0 for tumbling windows)"));
        }
        for (key, v) in [
            ("drift.ks_p_value", self.ks_p_value),
            ("drift.chi_square_p_value", self.chi_square_p_value),
            ("drift.ks_min_effect", self.ks_min_effect),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(invalid(key, "must be between 0 and 1"));
            }
        }
        if self.psi_threshold.is_nan() || self.psi_threshold <= 0.0 {
            return Err(invalid("drift.psi_threshold", "must be greater than 0"));
        }
        Ok(())
    }
}
