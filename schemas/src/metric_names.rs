//! Every Prometheus metric name of Driftwood, in one place:
//! `driftwood_<component>_<what>_<unit>`, counters ending in `_total`. Labels carry small fixed
//! sets of values (routes, status codes, reason codes, feature names) — never user text or ids.

pub const SERVING_REQUESTS_TOTAL: &str = "driftwood_serving_requests_total";
pub const SERVING_REQUEST_DURATION_SECONDS: &str = "driftwood_serving_request_duration_seconds";
pub const SERVING_ERRORS_TOTAL: &str = "driftwood_serving_errors_total";
pub const SERVING_BATCH_SIZE: &str = "driftwood_serving_batch_size";
pub const SERVING_MODEL_VERSION: &str = "driftwood_serving_model_version";
pub const SCORER_RECORDS_TOTAL: &str = "driftwood_scorer_records_total";
pub const SCORER_ERRORS_TOTAL: &str = "driftwood_scorer_errors_total";
pub const PREDICTION_LOG_DROPPED_TOTAL: &str = "driftwood_prediction_log_dropped_total";
/// Gauge: the last window's value per feature and statistic (`psi`, `ks`, `chi_square`).
pub const DRIFT_STATISTIC: &str = "driftwood_drift_statistic";
/// Gauge: the model version the drift monitor is watching.
pub const DRIFT_MODEL_VERSION: &str = "driftwood_drift_model_version";
pub const DRIFT_WINDOWS_TOTAL: &str = "driftwood_drift_windows_total";
/// Confirmed drift signals, by feature and statistic.
pub const DRIFT_DETECTED_TOTAL: &str = "driftwood_drift_detected_total";
pub const DRIFT_RETRAIN_REQUESTS_TOTAL: &str = "driftwood_drift_retrain_requests_total";
/// Records read from text.raw by the snapshot job (valid and dead).
pub const INGEST_RECORDS_TOTAL: &str = "driftwood_ingest_records_total";
pub const INGEST_BYTES_TOTAL: &str = "driftwood_ingest_bytes_total";
/// Dead letters by reason code.
pub const INGEST_DEAD_LETTERS_TOTAL: &str = "driftwood_ingest_dead_letters_total";
pub const SNAPSHOT_COMMITS_TOTAL: &str = "driftwood_snapshot_commits_total";
pub const SNAPSHOT_ROWS_ADDED_TOTAL: &str = "driftwood_snapshot_rows_added_total";
/// Gauge: rows in the latest committed version.
pub const SNAPSHOT_ROWS: &str = "driftwood_snapshot_rows";
pub const SNAPSHOT_COMMIT_DURATION_SECONDS: &str = "driftwood_snapshot_commit_duration_seconds";
/// Gauge: records between the snapshot job's position and the end of each partition.
pub const SNAPSHOT_LAG_RECORDS: &str = "driftwood_snapshot_lag_records";
/// Gauge: records between the scorer's position and the end of each partition.
pub const SCORER_LAG_RECORDS: &str = "driftwood_scorer_lag_records";
pub const SCORER_ASSIGNED_PARTITIONS: &str = "driftwood_scorer_assigned_partitions";
/// Retrain requests handled, by outcome (`promoted`, `declined`, `failed`).
pub const RETRAIN_TOTAL: &str = "driftwood_retrain_total";
/// Gauge: jobs waiting for the model thread.
pub const SERVING_QUEUE_DEPTH: &str = "driftwood_serving_queue_depth";
/// Histogram: from a raw record's timestamp (event time if given, else produce time) to its
/// scored record being acknowledged.
pub const SCORER_END_TO_END_SECONDS: &str = "driftwood_scorer_end_to_end_seconds";
/// Training runs started by the retrainer, by status (`finished`, `failed`).
pub const TRAINING_RUNS_TOTAL: &str = "driftwood_training_runs_total";
pub const TRAINING_DURATION_SECONDS: &str = "driftwood_training_duration_seconds";
/// Gauge: holdout accuracy of the last candidate and of production, by `model` role.
pub const TRAINING_HOLDOUT_ACCURACY: &str = "driftwood_training_holdout_accuracy";
