//! Importing a TorchScript module exported from PyTorch as a tracked run with a model card (see
//! [`crate::torchscript`] for the contract it must follow). Register the run with
//! [`crate::train::register`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use drift::features::{text_features, with_confidence};
use drift::profile::ReferenceProfile;
use schemas::config::TrainConfig;
use schemas::{Family, Split};
use stream::store::SnapshotStore;

use crate::artifact::{write_card, write_weights};
use crate::card::{CARD_FORMAT, DataRef, ModelCard};
use crate::features::HashingConfig;
use crate::metrics::Evaluation;
use crate::rows::{Row, argmax, read_rows};
use crate::torchscript::{CONTRACT, MODULE_FILE, Scripted};
use crate::train::Trained;
use crate::{Error, Result};
use metastore::{MetadataStore, Run, RunStatus};

/// What to register.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// Registered model name.
    pub name: String,
    /// The `torch.jit.save` file.
    pub module: PathBuf,
    /// Class labels, in the order of the module's output columns.
    pub labels: Vec<String>,
    pub hashing: HashingConfig,
    /// The data version the module is evaluated on and profiled against (its cleaning spec is
    /// the one the module expects).
    pub dataset: String,
    pub version: String,
    /// Splits of that version (as for training).
    pub split: TrainConfig,
    pub data_dir: PathBuf,
    pub actor: String,
}

/// Registers a TorchScript module as a tracked run (tag `kind = import`) with a model card:
/// evaluated on the version's test split, with the reference profile the drift monitor needs
/// from its held-out rows. Register the run with [`crate::train::register`].
pub async fn import(
    store: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    req: &ImportRequest,
) -> Result<Trained> {
    if req.labels.len() < 2 {
        return Err(Error::Input("a TorchScript model needs at least two labels".into()));
    }
    let bytes = std::fs::read(&req.module).map_err(Error::io(&req.module))?;
    let manifest = snapshots.resolve(&req.dataset, &req.version)?;
    let params = BTreeMap::from([
        ("model".to_string(), "torchscript".to_string()),
        ("contract".to_string(), CONTRACT.to_string()),
        ("hash_bits".to_string(), req.hashing.bits.to_string()),
        ("max_ngram".to_string(), req.hashing.max_ngram.to_string()),
        ("source".to_string(), req.module.display().to_string()),
        ("validation_fraction".to_string(), req.split.validation_fraction.to_string()),
        ("test_fraction".to_string(), req.split.test_fraction.to_string()),
    ]);
    let tags = BTreeMap::from([("kind".into(), "import".into()), ("dataset".into(), req.dataset.clone())]);
    let run = Run::started(&req.name, None, params, tags, &manifest.id);
    let run_id = run.run_id.clone();
    store.create_run(&run).await?;
    let dir = req.data_dir.join("artifacts").join(&run_id);
    let job = {
        let (snapshots, manifest, req, dir, run_id) =
            (snapshots.clone(), manifest.clone(), req.clone(), dir.clone(), run_id.clone());
        tokio::task::spawn_blocking(move || card_for(&snapshots, &manifest, &req, &bytes, &dir, &run_id))
    };
    let (card, evaluation, rows) =
        match job.await.map_err(|e| Error::Internal(format!("import task failed: {e}")))? {
            Ok(c) => c,
            Err(e) => {
                store.finish_run(&run_id, RunStatus::Failed, Utc::now()).await?;
                return Err(e);
            }
        };
    store.log_metrics(&run_id, 0, &card.metrics).await?;
    store.set_run_artifacts(&run_id, &dir.display().to_string()).await?;
    store.finish_run(&run_id, RunStatus::Finished, Utc::now()).await?;
    Ok(Trained {
        run: store.get_run(&run_id).await?,
        card,
        evaluation,
        artifact_dir: dir,
        rows,
        unlabeled: 0,
        seconds: (Utc::now() - run.started_at).num_milliseconds() as f64 / 1000.0,
    })
}

fn card_for(
    snapshots: &SnapshotStore,
    manifest: &stream::store::Manifest,
    req: &ImportRequest,
    bytes: &[u8],
    dir: &Path,
    run_id: &str,
) -> Result<(ModelCard, Evaluation, [usize; 3])> {
    let scripted = Scripted::from_bytes(bytes, req.hashing, req.labels.len())?;
    let (rows, _) = read_rows(snapshots, manifest, &req.split)?;
    let mut counts = [0usize; 3];
    let (mut test, mut held) = (Vec::new(), Vec::new());
    for Row { text, label, split } in &rows {
        counts[match split {
            Split::Train => 0,
            Split::Validation => 1,
            Split::Test => 2,
        }] += 1;
        if *split != Split::Train {
            held.push(text.as_str());
        }
        if *split == Split::Test
            && let Some(y) = req.labels.iter().position(|l| l == label)
        {
            test.push((text.as_str(), y));
        }
    }
    if test.is_empty() {
        return Err(Error::Input(format!(
            "version {} has no test rows with the labels {:?}: nothing to evaluate the module on",
            manifest.short_id(),
            req.labels
        )));
    }
    let texts: Vec<&str> = test.iter().map(|(t, _)| *t).collect();
    let predicted: Vec<usize> = scripted.predict(&texts)?.iter().map(|p| argmax(p)).collect();
    let truth: Vec<usize> = test.iter().map(|(_, y)| *y).collect();
    let evaluation = Evaluation::compute(&req.labels, &truth, &predicted);
    let held_probs = scripted.predict(&held)?;
    let feature_rows: Vec<_> =
        held.iter().zip(&held_probs).map(|(t, p)| with_confidence(text_features(t), p)).collect();
    let reference = ReferenceProfile::build(feature_rows.iter())
        .with_classes(held_probs.iter().map(|p| req.labels[argmax(p)].as_str()));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let weights_sha256 =
        write_weights(&dir.join(MODULE_FILE), bytes, snapshots.keyring().map(|k| k.as_ref()))?;
    let card = ModelCard {
        format_version: CARD_FORMAT,
        family: Family::TorchScript,
        labels: req.labels.clone(),
        params: BTreeMap::from([
            ("contract".to_string(), serde_json::Value::String(CONTRACT.into())),
            ("source".to_string(), serde_json::Value::String(req.module.display().to_string())),
        ]),
        hashing: Some(req.hashing),
        spec_hash: manifest.spec_hash.clone(),
        data: DataRef { dataset: manifest.dataset.clone(), version: manifest.id.clone() },
        run_id: run_id.to_string(),
        metrics: evaluation.flat("test"),
        evaluation: Some(evaluation.clone()),
        reference,
        weights_sha256,
        created_at: Utc::now(),
    };
    write_card(dir, &card)?;
    Ok((card, evaluation, counts))
}
