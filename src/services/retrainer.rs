//! The closed loop's trainer: retrain, gate and promote on `RetrainRequested` events.

use std::sync::Arc;

use anyhow::Result;
use metastore::MetadataStore;
use schemas::Config;
use tokio_util::sync::CancellationToken;
use trainer::retrain::{RetrainMetrics, Retrainer, SnapshotSource};

use crate::open;

/// Listens on the control topic until `token` is cancelled; metrics go into `registry`.
pub async fn run(
    config: &Config,
    store: Arc<dyn MetadataStore>,
    registry: Option<&prometheus::Registry>,
    token: CancellationToken,
) -> Result<()> {
    let metrics = registry.map(RetrainMetrics::register).transpose()?;
    let snapshots = open::snapshots(config)?;
    let control = open::control(config)?;
    let retrainer = Retrainer {
        data_dir: open::data_dir(config),
        base: config.train.clone(),
        policy: config.retrain.clone(),
        actor: "retrainer".into(),
        source: Some(SnapshotSource { kafka: config.kafka.clone(), topic: config.topics().raw }),
    };
    println!("retrainer: waiting for RetrainRequested on {}", config.topics().control);
    let stores =
        trainer::retrain::Stores { store: store.as_ref(), snapshots: &snapshots, control: Some(&control) };
    trainer::retrain::run_retrainer(config, &retrainer, stores, &token, |outcome| {
        if let Some(m) = &metrics {
            m.observe(outcome);
        }
        match outcome {
            Ok(o) => println!("retrain {} v{}: {} ({})", o.model, o.production, o.label(), o.reason),
            Err(e) => println!("retrain failed: {e}"),
        }
    })
    .await?;
    Ok(())
}
