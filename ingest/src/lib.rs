//! Kafka I/O for Driftwood: getting text in, and reading it back as Arrow.
//!
//! ```text
//!  files / JSONL / stdin / corpus ──► [source] ──► [publish] ──► <prefix>.text.raw
//!
//!  <prefix>.text.raw ──► [consume::BatchReader] ──► decode ──┬─► RecordBatch (raw schema) + offsets
//!                                                            └─► <prefix>.text.dead (bytes + reason)
//! ```
//!
//! * [`decode`] and [`batch`] are pure: bytes in, [`schemas::records::RawRecord`] or a
//!   [`schemas::records::DeadReason`] out, and RecordBatches of the raw schema; [`fastjson`]
//!   reads the usual record shape in one pass, leaving anything else to serde_json;
//! * [`kafka`] builds librdkafka clients from [`schemas::config::KafkaConfig`] and creates topics;
//! * [`publish`] and [`source`] send records with an idempotent producer;
//! * [`alloc::tune`] keeps the allocator from handing every batch fresh pages;
//! * [`consume`] reads micro-batches (max rows / bytes / wait), sends dead letters and reports
//!   the offset ranges each batch covers, so callers can commit them with their output.
//!
//! Architecture invariant: this crate knows nothing of cleaning, snapshots or models; it never
//! drops a record silently — every record becomes a row or a dead letter with its reason.

pub mod alloc;
pub mod batch;
pub mod consume;
pub mod control;
pub mod decode;
pub mod fastjson;
pub mod kafka;
pub mod publish;
pub mod source;

use rdkafka::error::KafkaError;

/// Errors of Kafka I/O. `Kafka` is an external service fault (often transient); `Input` and
/// `Io` are the user's (a bad path or file); `Internal` is a bug.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka error while {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Kafka { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
