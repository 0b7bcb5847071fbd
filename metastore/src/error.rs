//! Errors of the metadata store. Variants say whose fault it is; driver errors are kept as
//! sources, not flattened into strings.

/// An error of a metadata-store call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something no data allows (e.g. a version number out of range).
    /// Retrying will not help.
    #[error("invalid input: {0}")]
    Input(String),
    /// A well-formed request the records' current state does not allow (a rollback with no
    /// earlier version): HTTP 409. It may succeed once the state changes.
    #[error("{0}")]
    State(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Another writer got there first: the record exists, or concurrent writers kept winning
    /// the conditional writes. Retrying may help.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The SQLite file failed (disk, lock, corruption).
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The CQL cluster failed or refused (external; often transient).
    #[error("CQL, {context}: {source}")]
    Cql {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored data that does not read back (a bad timestamp, JSON or status).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The CA file for TLS to the cluster does not read as PEM certificates.
    #[error("the store's TLS CA file {path}: {detail}")]
    Tls { path: String, detail: String },
    /// A bug or a lost worker (a poisoned lock, a failed blocking task).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
