//! The serving and scorer metrics, registered in one registry per process.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use schemas::metric_names as m;

/// Handles to every serving metric.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub errors: IntCounterVec,
    pub batch_size: HistogramVec,
    pub model_version: IntGauge,
    pub scorer_lag: IntGaugeVec,
    /// Partitions of text.raw assigned to this scorer (0: an idle group member).
    pub scorer_partitions: IntGauge,
    pub queue_depth: IntGauge,
    pub end_to_end: prometheus::Histogram,
    pub scored: IntCounterVec,
    pub scorer_errors: IntCounterVec,
    pub log_dropped: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let requests =
            counter(m::SERVING_REQUESTS_TOTAL, "HTTP requests by route and status", &["route", "status"]);
        let errors = counter(m::SERVING_ERRORS_TOTAL, "HTTP errors by error type", &["error_type"]);
        let scored =
            counter(m::SCORER_RECORDS_TOTAL, "Records written to the scored topic by status", &["status"]);
        let scorer_errors = counter(m::SCORER_ERRORS_TOTAL, "Scorer errors by type", &["error_type"]);
        let log_dropped = counter(
            m::PREDICTION_LOG_DROPPED_TOTAL,
            "Prediction log entries dropped because the log fell behind",
            &["channel"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(m::SERVING_REQUEST_DURATION_SECONDS, "HTTP request duration")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["route"],
        )
        .expect("valid metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new(
                m::SERVING_BATCH_SIZE,
                "Texts in the model forward pass that answered each request (rest) or record batch (stream)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            &["channel"],
        )
        .expect("valid metric");
        registry.register(Box::new(batch_size.clone())).expect("unique metric");
        let model_version = IntGauge::new(m::SERVING_MODEL_VERSION, "Version of the model being served")
            .expect("valid metric");
        registry.register(Box::new(model_version.clone())).expect("unique metric");
        let scorer_lag = IntGaugeVec::new(
            Opts::new(m::SCORER_LAG_RECORDS, "Records between the scorer's position and the partition end"),
            &["partition"],
        )
        .expect("valid metric");
        registry.register(Box::new(scorer_lag.clone())).expect("unique metric");
        let scorer_partitions = IntGauge::new(
            m::SCORER_ASSIGNED_PARTITIONS,
            "Partitions of text.raw assigned to this scorer (0: more scorers than partitions)",
        )
        .expect("valid metric");
        registry.register(Box::new(scorer_partitions.clone())).expect("unique metric");
        let queue_depth =
            IntGauge::new(m::SERVING_QUEUE_DEPTH, "Jobs waiting for the model thread").expect("valid metric");
        registry.register(Box::new(queue_depth.clone())).expect("unique metric");
        let end_to_end = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                m::SCORER_END_TO_END_SECONDS,
                "Raw record timestamp to scored record acknowledged",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(end_to_end.clone())).expect("unique metric");
        for status in ["scored", "skipped"] {
            scored.with_label_values(&[status]);
        }
        for channel in ["rest", "stream"] {
            log_dropped.with_label_values(&[channel]);
        }
        Metrics {
            registry,
            requests,
            duration,
            errors,
            batch_size,
            model_version,
            scorer_lag,
            scorer_partitions,
            queue_depth,
            end_to_end,
            scored,
            scorer_errors,
            log_dropped,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}
