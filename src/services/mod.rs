//! The long-running services, each built from the configuration and run until its
//! cancellation token fires: the REST API with the scorer ([`serve`]), the snapshot jobs
//! ([`snapshot`]), the drift monitor ([`drift`]), the retrainer ([`retrainer`]), Flight SQL
//! ([`flight`]), and all of them in one process ([`up`]). The CLI commands and the
//! integration tests start services through these functions.

pub mod drift;
pub mod flight;
pub mod retrainer;
pub mod serve;
pub mod snapshot;
pub mod up;

use anyhow::{Context, Result};
use schemas::Config;
use tokio_util::sync::CancellationToken;

/// Runs `job` while serving `registry` on `serve.metrics_listen` (when `serve` and the key is
/// set); then cancels `token` and waits for the endpoint to stop.
pub async fn with_metrics_endpoint<T>(
    config: &Config,
    registry: prometheus::Registry,
    token: &CancellationToken,
    serve: bool,
    job: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let endpoint = if let Some(addr) = config.serve.metrics_listen.filter(|_| serve) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding serve.metrics_listen = {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
        let t = token.clone();
        let router = serving::api::metrics_router(registry);
        Some(tokio::spawn(serving::api::serve(listener, router, async move { t.cancelled().await })))
    } else {
        None
    };
    let result = job.await;
    token.cancel();
    if let Some(endpoint) = endpoint {
        endpoint.await??;
    }
    result
}
