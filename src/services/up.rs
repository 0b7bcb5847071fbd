//! `driftwood up`: every service in one process — the snapshot jobs (text and scored,
//! following), the REST API with the scorer, the drift monitor, the retrainer and Flight SQL —
//! sharing one metadata store, one metrics registry and one shutdown token.

use std::time::Duration;

use anyhow::Result;
use schemas::Config;
use stream::job::SnapshotOptions;
use tokio_util::sync::CancellationToken;

use crate::open;
use crate::services::{drift, flight, retrainer, serve, snapshot};

/// Runs until `token` is cancelled (or the API or scorer fails), then stops every service.
pub async fn run(config: &Config, token: CancellationToken) -> Result<()> {
    let store = open::metadata(config).await?;
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    // One registry for every component of this process, served on /metrics.
    let metrics = serving::metrics::Metrics::new();
    let text_snapshot = {
        let (config, token) = (config.clone(), token.clone());
        let snapshot_metrics = stream::metrics::SnapshotMetrics::register(&metrics.registry)?;
        tokio::spawn(async move {
            let store = open::snapshots(&config)?;
            let control = open::control(&config)?;
            let opts = SnapshotOptions {
                metrics: Some(snapshot_metrics),
                ..SnapshotOptions::from_config(&config, false)
            };
            stream::job::run_snapshot(&config, open::plan(&config)?, &store, &opts, Some(&control), &token)
                .await?;
            anyhow::Ok(())
        })
    };
    let scored_snapshot = {
        let (config, token) = (config.clone(), token.clone());
        tokio::spawn(async move {
            let opts = SnapshotOptions::from_config(&config, false);
            snapshot::run_scored(&config, &opts, &token).await.map(|_| ())
        })
    };
    let auth = open::auth(config)?;
    let flight_task = {
        let (config, token, auth) = (config.clone(), token.clone(), auth.clone());
        tokio::spawn(async move {
            // The other services keep running without Flight SQL; say so at once.
            flight::run(&config, auth, token)
                .await
                .inspect_err(|e| tracing::error!(error = %e, "Flight SQL server stopped"))
        })
    };
    let drift_task = {
        let (config, token, store, registry) =
            (config.clone(), token.clone(), store.clone(), metrics.registry.clone());
        tokio::spawn(async move {
            // Wait for a served model; the monitor then follows newer versions by itself.
            while !token.is_cancelled() {
                if store.get_alias(&config.serve.model, &config.serve.alias).await?.is_some() {
                    return drift::run(&config, store, Some(&registry), false, token).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            anyhow::Ok(())
        })
    };
    let retrain_task = {
        let (config, token, store, registry) =
            (config.clone(), token.clone(), store.clone(), metrics.registry.clone());
        tokio::spawn(async move {
            if config.retrain.enabled {
                retrainer::run(&config, store, Some(&registry), token).await
            } else {
                anyhow::Ok(())
            }
        })
    };
    let served = serve::Serve { store, metrics, scorer: config.serve.scorer, auth };
    let serve_result = serve::run(config, served, token.clone()).await;
    token.cancel();
    text_snapshot.await??;
    scored_snapshot.await??;
    flight_task.await??;
    drift_task.await??;
    retrain_task.await??;
    serve_result
}
