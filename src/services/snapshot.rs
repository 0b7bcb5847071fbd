//! The snapshot jobs: `text.raw` through the cleaning plan into the dataset, and `text.scored`
//! into the scored dataset.

use std::time::Duration;

use anyhow::Result;
use schemas::Config;
use stream::job::{SnapshotOptions, SnapshotReport, run_snapshot};
use stream::scored::ScoredReport;
use tokio_util::sync::CancellationToken;

use crate::open;
use crate::services::with_metrics_endpoint;

/// Runs the text snapshot job with its metrics in `registry` (served on
/// `serve.metrics_listen` while following); at a terminal, a progress line of records read.
pub async fn run(
    config: &Config,
    mut opts: SnapshotOptions,
    registry: prometheus::Registry,
    token: &CancellationToken,
) -> Result<SnapshotReport> {
    let store = open::snapshots(config)?;
    let control = open::control(config)?;
    let metrics = stream::metrics::SnapshotMetrics::register(&registry)?;
    opts.metrics = Some(metrics.clone());
    let follow = !opts.until_idle;
    // At a terminal: records read and rate, from the job's own counter.
    let progress = ingest::publish::progress_bar(None, "snapshot: records read");
    let ticker = {
        let (progress, token) = (progress.clone(), token.clone());
        tokio::spawn(async move {
            while !token.is_cancelled() {
                progress.set_position(metrics.records.get());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let job =
        async { Ok(run_snapshot(config, open::plan(config)?, &store, &opts, Some(&control), token).await?) };
    let report = with_metrics_endpoint(config, registry, token, follow, job).await;
    token.cancel(); // also when the endpoint could not start, so the ticker stops
    ticker.await?;
    progress.finish_and_clear();
    report
}

/// Runs the scored snapshot job (`text.scored` → `snapshot.scored_dataset`).
pub async fn run_scored(
    config: &Config,
    opts: &SnapshotOptions,
    token: &CancellationToken,
) -> Result<ScoredReport> {
    let store = open::snapshots(config)?;
    Ok(stream::scored::run_scored_snapshot(config, &store, opts, token).await?)
}
