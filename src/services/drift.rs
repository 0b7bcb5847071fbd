//! The drift monitor over `text.scored`, against the served model's reference profile.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use drift::monitor::{Outputs, References};
use drift::window::Watch;
use metastore::MetadataStore;
use schemas::Config;
use tokio_util::sync::CancellationToken;

use crate::{open, report};

/// Watches the scored topic until `token` is cancelled (or, `until_idle`, until its end),
/// following newer versions of the served model; prints one line per closed window.
pub async fn run(
    config: &Config,
    store: Arc<dyn MetadataStore>,
    registry: Option<&prometheus::Registry>,
    until_idle: bool,
    token: CancellationToken,
) -> Result<()> {
    let (name, alias) = (&config.serve.model, &config.serve.alias);
    let mv = trainer::registry::resolve(store.as_ref(), name, alias).await?;
    let card = trainer::artifact::read_card(Path::new(&mv.artifact_dir))?;
    let watch = watch_of(&mv.name, mv.version, card);
    let references: References = Arc::new(move |model: String, version: u32| {
        let store = store.clone();
        Box::pin(async move {
            let mv = store.get_model_version(&model, version).await.ok()?;
            trainer::artifact::read_card(Path::new(&mv.artifact_dir))
                .ok()
                .map(|c| watch_of(&model, version, c))
        })
    });
    let d = &config.drift;
    println!(
        "watching {} v{} (windows of {} records; PSI > {}, KS p < {} with D >= {}, {} consecutive windows)",
        mv.name, mv.version, d.window, d.psi_threshold, d.ks_p_value, d.ks_min_effect, d.consecutive
    );
    let control = if d.publish_events && !until_idle { Some(open::control(config)?) } else { None };
    let metrics = registry.map(drift::metrics::DriftMetrics::register).transpose()?;
    let outputs = Outputs { control: control.as_ref(), metrics: metrics.as_ref() };
    let monitor = drift::monitor::Monitor { config, watch, references, until_idle, outputs };
    drift::monitor::run_monitor(monitor, &token, |r, decision| {
        println!("{}", report::drift_window(r, decision))
    })
    .await?;
    Ok(())
}

/// What the drift monitor watches for a model version: its card's reference profile and test
/// accuracy.
fn watch_of(model: &str, version: u32, card: trainer::card::ModelCard) -> Watch {
    Watch {
        model: model.to_string(),
        version,
        reference_accuracy: card.metrics.get("test_accuracy").copied(),
        reference: card.reference,
    }
}
