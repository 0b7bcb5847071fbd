//! Cleaning and versioned data for Driftwood: from raw RecordBatches to immutable snapshots.
//!
//! ```text
//!  ingest::BatchReader ──► RecordBatch(raw) ──► clean::CleanPlan::apply ──► kept rows
//!                                                                               │
//!        snapshot job (job::run_snapshot): rows ──► Parquet object (content-addressed)
//!                                          offsets + files ──► manifest (atomic commit)
//!
//!  store::SnapshotStore: versions, tags, reading a version as a stream of batches
//! ```
//!
//! * [`clean`] — the declarative cleaning spec compiled to DataFusion expressions; the same
//!   compiled plan runs in the snapshot job and in the online scorer;
//! * [`store`] — the snapshot store: content-addressed Parquet objects and one JSON manifest per
//!   version (id = hash of the manifest), committed atomically with the Kafka offsets consumed;
//! * [`job`] — the snapshot job: consume, clean, write, commit (the records as read into the
//!   raw dataset, then the cleaned rows linked to that raw version); resumes from the last
//!   manifest;
//! * [`derive`] — processed versions cleaned from raw versions: the job's catch-up and
//!   `data reprocess`;
//! * [`import`] — CSV, Parquet, JSON lines and folders of text files as raw versions;
//! * [`labels`] — late ground truth from `text.labels` joined onto a version by id;
//! * [`scored`] — the scored snapshot job: predictions from `text.scored` into versions;
//! * [`query`] — DataFusion over versions: a version as a table, sessions that decrypt;
//! * [`diff`] — row-level differences between versions, by id (DataFusion);
//! * [`crypto`] — the keyring of AES-256-GCM key-encryption keys and sealed blobs (data keys
//!   of encrypted objects, model weights);
//! * [`remote`] — push/pull of versions and objects to a directory or S3-compatible remote.
//!
//! Architecture invariant: this crate knows nothing about models; it depends on `ingest` for
//! reading Kafka and on `schemas` for the record schemas, never on libtorch; the Flight SQL
//! server over its versions is the `flight` crate, above it.

pub mod clean;
pub mod crypto;
pub mod derive;
pub mod diff;
pub mod import;
pub mod job;
pub mod labels;
pub mod metrics;
pub mod query;
pub mod remote;
pub mod scored;
pub mod store;

/// Errors of cleaning and the snapshot store. `Spec`/`NotFound`/`Conflict` are the user's
/// (a bad spec, an unknown version, a dataset cleaned with another spec); `Io`, `Parquet` and
/// `Corrupt` concern the data dir; `Ingest` wraps Kafka faults; `Internal` is a bug.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Spec(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt snapshot data: {0}")]
    Corrupt(String),
    /// Encryption at rest: a bad keyring, a missing key, data that fails authentication.
    #[error("encryption: {0}")]
    Key(String),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("DataFusion error: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
    /// A remote store failed or refused (external; often transient).
    #[error("remote: {0}")]
    Remote(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
