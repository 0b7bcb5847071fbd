//! Arrow Flight SQL over every data version and every prediction (`driftwood flight`).
//!
//! ```text
//!  ADBC / JDBC / pyarrow ──gRPC(TLS)──► FlightSqlService ──► DataFusion SessionContext
//!       handshake (Basic) → JWT              │ authorize (viewer)   catalog `driftwood`
//!       bearer token on every call            │                      schema per dataset
//!                                             └─ DoGet streams batches ◄─ Parquet objects
//! ```
//!
//! * Naming: see [`catalog`] — `<dataset>.latest`, `<dataset>.v<seq>`, `<dataset>.<tag>`,
//!   `<dataset>."<version id>"`, `<dataset>.versions`; the default schema is
//!   `snapshot.dataset`, so `SELECT count(*) FROM latest` works.
//! * Statements are stateless: the ticket carries the SQL, so any replica can serve the DoGet.
//!   Prepared statements live in this server (bounded; the oldest is closed first); `?`
//!   placeholders are accepted as well as `$1`.
//! * Every call but the handshake needs a bearer token with role `viewer` or higher; all
//!   errors become gRPC codes in [`status`].

pub mod cache;
pub mod catalog;
mod doget;
mod error;
mod server;
mod service;
mod sql;

use schemas::config::TlsConfig;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use error::{Error, status};
pub use server::FlightSql;
pub use sql::positional_placeholders;

/// Serves Flight SQL on `addr` (TLS when configured) until `cancel`.
pub async fn serve(
    addr: std::net::SocketAddr,
    tls: TlsConfig,
    service: FlightSql,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let mut builder = Server::builder();
    if tls.enabled() {
        let read =
            |path: &str| std::fs::read(path).map_err(|source| Error::Io { path: path.to_string(), source });
        let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Setup(format!("TLS set-up of the Flight SQL server: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io { path: format!("Flight SQL listen address {addr}"), source })?;
    tracing::info!(%addr, tls = tls.enabled(), "Flight SQL server listening");
    let incoming = futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    });
    builder
        .add_service(doget::Router::new(service, 64 << 20))
        .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
        .await
        .map_err(|e| Error::Internal(format!("Flight SQL server: {e}")))
}
