//! [`Decider`]: hysteresis and a cooldown over window reports — drift is confirmed after
//! `consecutive` drifting windows, and a retrain asked for at most once per cooldown. Pure.

use schemas::config::DriftConfig;

use crate::window::{Signal, WindowReport};

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::window::{signal, statistic};

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
            accuracy_floor: None,
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
}
