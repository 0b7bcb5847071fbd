//! Drift statistics and the drift monitor.
//!
//! ```text
//!  cleaned text ──► features::text_features ──┐
//!                                             ├─► profile::ReferenceProfile (at training time)
//!  predictions ───► confidence ───────────────┘            │
//!                                                          ▼
//!  <prefix>.text.scored ──► monitor: tumbling windows ──► stats::psi per feature ──► log / events
//! ```
//!
//! * [`features`] — the per-record features both the trainer (reference) and the scorer (live)
//!   compute, so they cannot disagree;
//! * [`profile`] — reference profiles: quantile bins, bin fractions and a bounded sample;
//! * [`stats`] — pure statistics over slices (PSI with smoothing);
//! * [`window`] — windows of scored records against a reference: PSI, KS, chi-square, accuracy;
//! * [`decider`] — hysteresis and cooldown over window reports;
//! * [`labels`] — accuracy over labelled predictions and the late-label join;
//! * [`merge`] — event-time order across the scored topic's partitions;
//! * [`monitor`] — the async adapter over the scored and label topics;
//! * [`record`] — a closed window as the metadata store keeps it (JSON);
//! * [`metrics`] — the monitor's Prometheus gauges and counters.
//!
//! Architecture invariant: no libtorch here, and the statistics do no I/O; the monitor receives
//! the reference profile from its caller (which reads it from the model card).

pub mod decider;
pub mod features;
pub mod labels;
pub mod merge;
pub mod metrics;
pub mod monitor;
pub mod profile;
pub mod record;
pub mod stats;
pub mod window;

/// Errors of the drift service: `Kafka` is external (often transient), `Input` is bad data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
