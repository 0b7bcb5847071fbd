//! Why a Flight SQL call failed, and the one mapping of every failure to its gRPC code.
//!
//! Every fallible step of the server returns [`Error`]; [`status`] (also `From<Error> for
//! Status`) is the only place a code is chosen, so a client sees `InvalidArgument` for a bad
//! query however it reached the server. This module knows nothing of the service's state.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use schemas::auth::AuthError;
use tonic::Status;

/// Why a Flight SQL call failed; [`status`] maps each to its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed (bad handle, bad parameters, bad credentials header).
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The request asks for something this server does not do (a compressed DoGet).
    #[error("{0}")]
    Unsupported(String),
    /// Reading the snapshot store failed.
    #[error(transparent)]
    Store(#[from] stream::Error),
    /// Planning or running the query failed.
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Flight(#[from] FlightError),
    /// Starting the server failed: a certificate or key that cannot be read, a port in use.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS set-up was refused.
    #[error("{0}")]
    Setup(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The one place errors become gRPC statuses.
pub fn status(e: Error) -> Status {
    match e {
        Error::Auth(AuthError::Unauthenticated(m)) => Status::unauthenticated(m),
        Error::Auth(AuthError::Forbidden(m)) => Status::permission_denied(m),
        Error::Auth(AuthError::Unavailable(m)) => Status::unavailable(m),
        Error::BadRequest(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Unsupported(m) => Status::unimplemented(m),
        Error::Store(e) => store_status(e),
        Error::Query(e) => query_status(e),
        Error::Arrow(e) => Status::internal(format!("Arrow error: {e}")),
        Error::Flight(FlightError::Tonic(s)) => *s,
        Error::Flight(FlightError::ExternalError(e)) => match e.downcast::<DataFusionError>() {
            Ok(e) => query_status(*e),
            Err(e) => Status::internal(e.to_string()),
        },
        Error::Flight(e) => Status::internal(format!("Flight error: {e}")),
        e @ (Error::Io { .. } | Error::Setup(_) | Error::Internal(_)) => Status::internal(e.to_string()),
    }
}

fn store_status(e: stream::Error) -> Status {
    use stream::Error as S;
    let message = e.to_string();
    match e {
        S::NotFound(_) => Status::not_found(message),
        S::Spec(_) | S::Conflict(_) => Status::failed_precondition(message),
        S::DataFusion(e) => query_status(e),
        S::Remote(_) | S::Ingest(_) => Status::unavailable(message),
        S::Io { .. } | S::Corrupt(_) | S::Key(_) | S::Parquet(_) | S::Arrow(_) | S::Internal(_) => {
            Status::internal(message)
        }
    }
}

pub(crate) fn query_status(e: DataFusionError) -> Status {
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(message)
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::Configuration(_) => Status::failed_precondition(message),
        _ => Status::internal(message),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_grpc_code() {
        use tonic::Code;
        let cases = [
            (Error::Auth(AuthError::Unauthenticated("x".into())), Code::Unauthenticated),
            (Error::Auth(AuthError::Forbidden("x".into())), Code::PermissionDenied),
            (Error::Auth(AuthError::Unavailable("x".into())), Code::Unavailable),
            (Error::BadRequest("x".into()), Code::InvalidArgument),
            (Error::NotFound("x".into()), Code::NotFound),
            (Error::Query(DataFusionError::Plan("no table".into())), Code::InvalidArgument),
            (Error::Query(DataFusionError::NotImplemented("x".into())), Code::Unimplemented),
            (Error::Query(DataFusionError::Execution("x".into())), Code::Internal),
            (Error::Internal("x".into()), Code::Internal),
            (Error::Unsupported("x".into()), Code::Unimplemented),
            (Error::Store(stream::Error::NotFound("v9".into())), Code::NotFound),
            (Error::Store(stream::Error::Corrupt("x".into())), Code::Internal),
            (Error::Flight(FlightError::Tonic(Box::new(Status::aborted("x")))), Code::Aborted),
            (
                Error::Flight(FlightError::ExternalError(Box::new(DataFusionError::Plan("x".into())))),
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            assert_eq!(status(e).code(), code, "{text}");
        }
    }
}
