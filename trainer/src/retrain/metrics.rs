//! Prometheus metrics of the retrainer, registered into the caller's registry (the process's
//! one registry, served on `/metrics`). Known label values exist at zero from the start, so
//! rates and alerts read 0 rather than nothing.

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use schemas::metric_names as m;

use super::RetrainOutcome;
use crate::Error;

/// Handles to every retrainer metric.
#[derive(Clone)]
pub struct RetrainMetrics {
    /// Retrain requests handled, by `outcome` (promoted, declined, failed).
    pub outcomes: IntCounterVec,
    /// Training runs, by `status` (finished, failed).
    pub runs: IntCounterVec,
    pub duration: Histogram,
    /// Recent-holdout accuracy of the last retrain, by `role` (candidate, production).
    pub accuracy: GaugeVec,
}

impl RetrainMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<RetrainMetrics> {
        let outcomes = IntCounterVec::new(
            Opts::new(m::RETRAIN_TOTAL, "Retrain requests handled by outcome"),
            &["outcome"],
        )?;
        let runs = IntCounterVec::new(
            Opts::new(m::TRAINING_RUNS_TOTAL, "Training runs by the retrainer, by status"),
            &["status"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(m::TRAINING_DURATION_SECONDS, "Duration of the retrainer's training runs")
                .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
        )?;
        let accuracy = GaugeVec::new(
            Opts::new(m::TRAINING_HOLDOUT_ACCURACY, "Recent-holdout accuracy of the last retrain, by role"),
            &["role"],
        )?;
        for outcome in ["promoted", "declined", "failed"] {
            outcomes.with_label_values(&[outcome]);
        }
        for status in ["finished", "failed"] {
            runs.with_label_values(&[status]);
        }
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(accuracy.clone()))?;
        Ok(RetrainMetrics { outcomes, runs, duration, accuracy })
    }

    /// Records one handled request.
    pub fn observe(&self, outcome: Result<&RetrainOutcome, &Error>) {
        match outcome {
            Ok(o) => {
                self.outcomes.with_label_values(&[o.label()]).inc();
                if let Some(seconds) = o.train_seconds {
                    self.runs.with_label_values(&["finished"]).inc();
                    self.duration.observe(seconds);
                }
                for (role, value) in
                    [("candidate", o.candidate_accuracy), ("production", o.production_accuracy)]
                {
                    if let Some(v) = value {
                        self.accuracy.with_label_values(&[role]).set(v);
                    }
                }
            }
            Err(_) => {
                self.outcomes.with_label_values(&["failed"]).inc();
                self.runs.with_label_values(&["failed"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(promoted: bool, trained: bool) -> RetrainOutcome {
        RetrainOutcome {
            model: "spam".into(),
            production: 1,
            candidate: trained.then_some(2),
            promoted,
            reason: "test".into(),
            holdout_rows: 10,
            production_accuracy: Some(0.8),
            candidate_accuracy: trained.then_some(0.9),
            data_version: None,
            train_seconds: trained.then_some(3.0),
        }
    }

    #[test]
    fn outcomes_runs_and_accuracies_are_counted_by_label() -> prometheus::Result<()> {
        let registry = Registry::new();
        let metrics = RetrainMetrics::register(&registry)?;
        // Every known series exists at zero before anything happened.
        let series = |name: &str| {
            registry.gather().into_iter().find(|f| f.name() == name).map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(series(m::RETRAIN_TOTAL), 3);
        assert_eq!(series(m::TRAINING_RUNS_TOTAL), 2);
        metrics.observe(Ok(&outcome(true, true)));
        metrics.observe(Ok(&outcome(false, false)));
        metrics.observe(Err(&Error::Internal("broken".into())));
        let count = |vec: &IntCounterVec, label: &str| vec.with_label_values(&[label]).get();
        assert_eq!(count(&metrics.outcomes, "promoted"), 1);
        assert_eq!(count(&metrics.outcomes, "declined"), 1);
        assert_eq!(count(&metrics.outcomes, "failed"), 1);
        // Only the retrain that trained counts a finished run and a duration.
        assert_eq!(count(&metrics.runs, "finished"), 1);
        assert_eq!(count(&metrics.runs, "failed"), 1);
        assert_eq!(metrics.duration.get_sample_count(), 1);
        assert_eq!(metrics.accuracy.with_label_values(&["candidate"]).get(), 0.9);
        assert_eq!(metrics.accuracy.with_label_values(&["production"]).get(), 0.8);
        // A registry holds each metric once: a second set is refused, not silently shadowed.
        assert!(RetrainMetrics::register(&registry).is_err());
        Ok(())
    }
}
