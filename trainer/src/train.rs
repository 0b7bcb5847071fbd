//! The training job: one snapshot version in, one tracked run and one registered model out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use drift::features::{text_features, with_confidence, with_oov_rate};
use drift::profile::ReferenceProfile;
use ingest::control::ControlProducer;
use schemas::Split;
use schemas::config::TrainConfig;
use schemas::events::ControlEvent;
use stream::store::{Manifest, SnapshotStore};

use crate::artifact::{write_card, write_weights};
use crate::card::{CARD_FORMAT, DataRef, ModelCard, WEIGHTS_FILE};
use crate::metrics::Evaluation;
use crate::registry;
use crate::rows::{argmax, read_rows};
use crate::{Error, Result};
use metastore::{MetadataStore, ModelVersion, Run, RunStatus};

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub dataset: String,
    /// `latest`, `v<seq>`, a tag or a version id.
    pub version: String,
    pub params: TrainConfig,
    pub data_dir: PathBuf,
    /// Alias to point at the new version (e.g. `production`); `candidate` when `None`.
    pub alias: Option<String>,
    /// Who asked (for the audit record).
    pub actor: String,
}

/// What a training run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run: Run,
    pub model: ModelVersion,
    pub card: ModelCard,
    pub evaluation: Evaluation,
    /// Rows per split: train, validation, test; and rows without a usable label.
    pub rows: [usize; 3],
    pub unlabeled: usize,
    pub seconds: f64,
}

/// Trains, evaluates, saves, tracks and registers a model.
pub async fn train(
    store: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    req: &TrainRequest,
    control: Option<&ControlProducer>,
) -> Result<TrainOutcome> {
    let trained = run_training(store, snapshots, req, None, control).await?;
    let model = register(store, control, &trained, req.alias.as_deref(), &req.actor).await?;
    Ok(TrainOutcome {
        run: trained.run,
        model,
        card: trained.card,
        evaluation: trained.evaluation,
        rows: trained.rows,
        unlabeled: trained.unlabeled,
        seconds: trained.seconds,
    })
}

/// A tracked training run whose artifacts are saved but not (yet) registered.
#[derive(Debug, Clone)]
pub struct Trained {
    pub run: Run,
    pub card: ModelCard,
    pub evaluation: Evaluation,
    pub artifact_dir: PathBuf,
    pub rows: [usize; 3],
    pub unlabeled: usize,
    pub seconds: f64,
}

/// Trains, evaluates, saves and tracks a run (a child of `parent_run_id` when given, as the
/// trials of a tuning run are); registers nothing.
pub async fn run_training(
    store: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    req: &TrainRequest,
    parent_run_id: Option<&str>,
    control: Option<&ControlProducer>,
) -> Result<Trained> {
    if !req.params.model.trainable() {
        return Err(Error::Input(format!(
            "{} models are imported (`models import`), not trained (trainable: {})",
            req.params.model,
            schemas::Family::names(&schemas::Family::TRAINABLE)
        )));
    }
    let manifest = snapshots.resolve(&req.dataset, &req.version)?;
    if manifest.is_raw() {
        return Err(Error::Input(format!(
            "`{}` is raw data (the records as read, uncleaned): train on a dataset cleaned from it \
             (snapshot.dataset, or one `data reprocess` wrote)",
            req.dataset
        )));
    }
    let mut tags = BTreeMap::from([("dataset".into(), req.dataset.clone())]);
    if parent_run_id.is_some() {
        tags.insert("kind".into(), "trial".into());
    }
    let run = Run::started(&req.params.name, parent_run_id, params_of(&req.params), tags, &manifest.id);
    let run_id = run.run_id.clone();
    store.create_run(&run).await?;
    let artifact_dir = req.data_dir.join("artifacts").join(&run_id);
    let job = {
        let snapshots = snapshots.clone();
        let manifest = manifest.clone();
        let params = req.params.clone();
        let dir = artifact_dir.clone();
        let run_id = run_id.clone();
        tokio::task::spawn_blocking(move || fit_and_save(&snapshots, &manifest, &params, &dir, &run_id))
    };
    let fitted = match job.await.map_err(|e| Error::Internal(format!("training task failed: {e}")))? {
        Ok(f) => f,
        Err(e) => {
            store.finish_run(&run_id, RunStatus::Failed, Utc::now()).await?;
            return Err(e);
        }
    };
    for (epoch, loss) in fitted.history.iter().enumerate() {
        store
            .log_metrics(&run_id, epoch as u64, &BTreeMap::from([("validation_loss".into(), *loss)]))
            .await?;
    }
    store.log_metrics(&run_id, fitted.history.len() as u64, &fitted.card.metrics).await?;
    store.set_run_artifacts(&run_id, &artifact_dir.display().to_string()).await?;
    store.finish_run(&run_id, RunStatus::Finished, Utc::now()).await?;
    if let Some(control) = control {
        let event = ControlEvent::RunFinished {
            run_id: run_id.clone(),
            experiment: req.params.name.clone(),
            status: "finished".into(),
            metrics: fitted.card.metrics.clone(),
        };
        if let Err(e) = control.send(event).await {
            tracing::warn!(error = %e, "could not publish RunFinished");
        }
    }
    Ok(Trained {
        run: store.get_run(&run_id).await?,
        card: fitted.card,
        evaluation: fitted.evaluation,
        artifact_dir,
        rows: fitted.rows,
        unlabeled: fitted.unlabeled,
        seconds: fitted.seconds,
    })
}

/// Registers a finished run's artifacts as the next version of its model and points `alias`
/// (`candidate` when `None`) at it.
pub async fn register(
    store: &dyn MetadataStore,
    control: Option<&ControlProducer>,
    trained: &Trained,
    alias: Option<&str>,
    actor: &str,
) -> Result<ModelVersion> {
    let model = store
        .register_model(ModelVersion {
            name: trained.run.experiment.clone(),
            version: 0,
            run_id: trained.run.run_id.clone(),
            family: trained.card.family.to_string(),
            data_version: trained.card.data.version.clone(),
            spec_hash: trained.card.spec_hash.clone(),
            metrics: trained.card.metrics.clone(),
            artifact_dir: trained.artifact_dir.display().to_string(),
            artifact_sha256: trained.card.weights_sha256.clone(),
            created_at: Utc::now(),
        })
        .await?;
    let alias = alias.unwrap_or(registry::CANDIDATE);
    let change = registry::AliasChange { name: &model.name, alias, actor, reason: "trained" };
    registry::promote(store, control, &change, model.version).await?;
    Ok(model)
}

/// The training configuration recorded in a run's params (as [`params_of`] wrote them), over
/// `base` for anything missing.
pub fn config_from_params(params: &BTreeMap<String, String>, base: &TrainConfig) -> TrainConfig {
    fn get<T: std::str::FromStr>(params: &BTreeMap<String, String>, key: &str, default: T) -> T {
        params.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    TrainConfig {
        model: get(params, "model", base.model),
        epochs: get(params, "epochs", base.epochs),
        batch_size: get(params, "batch_size", base.batch_size),
        learning_rate: get(params, "learning_rate", base.learning_rate),
        weight_decay: get(params, "weight_decay", base.weight_decay),
        hash_bits: get(params, "hash_bits", base.hash_bits),
        validation_fraction: get(params, "validation_fraction", base.validation_fraction),
        test_fraction: get(params, "test_fraction", base.test_fraction),
        seed: get(params, "seed", base.seed),
        tokenizer: params.get("tokenizer").cloned().unwrap_or_else(|| base.tokenizer.clone()),
        max_tokens: get(params, "max_tokens", base.max_tokens),
        embedding_dim: get(params, "embedding_dim", base.embedding_dim),
        hidden_size: get(params, "hidden_size", base.hidden_size),
        pretrained: params.get("pretrained").cloned().unwrap_or_else(|| base.pretrained.clone()),
        finetune_layers: get(params, "finetune_layers", base.finetune_layers),
        ..base.clone()
    }
}

pub(crate) fn params_of(p: &TrainConfig) -> BTreeMap<String, String> {
    let mut params = BTreeMap::from([
        ("model".into(), p.model.to_string()),
        ("epochs".into(), p.epochs.to_string()),
        ("batch_size".into(), p.batch_size.to_string()),
        ("learning_rate".into(), p.learning_rate.to_string()),
        ("weight_decay".into(), p.weight_decay.to_string()),
        ("hash_bits".into(), p.hash_bits.to_string()),
        ("validation_fraction".into(), p.validation_fraction.to_string()),
        ("test_fraction".into(), p.test_fraction.to_string()),
        ("seed".into(), p.seed.to_string()),
    ]);
    if p.model == schemas::Family::BiLstm {
        params.insert("tokenizer".into(), p.tokenizer.clone());
        params.insert("max_tokens".into(), p.max_tokens.to_string());
        params.insert("embedding_dim".into(), p.embedding_dim.to_string());
        params.insert("hidden_size".into(), p.hidden_size.to_string());
    }
    if p.model == schemas::Family::MiniLm {
        params.insert("pretrained".into(), p.pretrained.clone());
        params.insert("max_tokens".into(), p.max_tokens.to_string());
        params.insert("finetune_layers".into(), p.finetune_layers.to_string());
    }
    params
}

struct Fitted {
    card: ModelCard,
    evaluation: Evaluation,
    history: Vec<f64>,
    rows: [usize; 3],
    unlabeled: usize,
    seconds: f64,
}

fn fit_and_save(
    snapshots: &SnapshotStore,
    manifest: &Manifest,
    params: &TrainConfig,
    dir: &Path,
    run_id: &str,
) -> Result<Fitted> {
    let started = Instant::now();
    if params.threads > 0 {
        tch::set_num_threads(params.threads as i32);
    }
    let (rows, unlabeled) = read_rows(snapshots, manifest, params)?;
    let labels: Vec<String> = rows
        .iter()
        .filter(|r| r.split == Split::Train)
        .map(|r| r.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if labels.len() < 2 {
        return Err(Error::Input(format!(
            "version {} has {} distinct label(s) in its training split; need at least 2",
            manifest.short_id(),
            labels.len()
        )));
    }
    let index: BTreeMap<&str, i64> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as i64)).collect();
    // Per split: (row index, class); rows whose label the training split never had are skipped.
    let mut splits: [Vec<(usize, i64)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut unknown_label = 0;
    for (i, r) in rows.iter().enumerate() {
        let Some(&y) = index.get(r.label.as_str()) else {
            unknown_label += 1;
            continue;
        };
        let slot = match r.split {
            Split::Train => 0,
            Split::Validation => 1,
            Split::Test => 2,
        };
        splits[slot].push((i, y));
    }
    let pairs = |s: &[(usize, i64)]| -> Vec<(&str, i64)> {
        s.iter().map(|&(i, y)| (rows[i].text.as_str(), y)).collect()
    };
    let texts = |s: &[(usize, i64)]| -> Vec<&str> { s.iter().map(|&(i, _)| rows[i].text.as_str()).collect() };
    let truth = |s: &[(usize, i64)]| -> Vec<usize> { s.iter().map(|&(_, y)| y as usize).collect() };
    let (model, history) = crate::family::fit(params, labels.len(), &pairs(&splits[0]), &pairs(&splits[1]))?;

    // Evaluate on the test split (validation if there is no test split).
    let eval_split = if splits[2].is_empty() { &splits[1] } else { &splits[2] };
    let predicted: Vec<usize> = model.predict(&texts(eval_split))?.iter().map(|p| argmax(p)).collect();
    let evaluation = Evaluation::compute(&labels, &truth(eval_split), &predicted);

    // Reference profile over held-out rows (validation + test): what live traffic should match.
    let mut held_out: Vec<usize> = splits[1].iter().chain(&splits[2]).map(|&(i, _)| i).collect();
    held_out.sort_unstable();
    let held_texts: Vec<&str> = held_out.iter().map(|&i| rows[i].text.as_str()).collect();
    let held_probs = model.predict(&held_texts)?;
    let feature_rows: Vec<_> = held_texts
        .iter()
        .zip(&held_probs)
        .map(|(t, p)| with_oov_rate(with_confidence(text_features(t), p), model.oov_rate(t)))
        .collect();
    let reference = ReferenceProfile::build(feature_rows.iter())
        .with_classes(held_probs.iter().map(|p| labels[argmax(p)].as_str()));

    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let weights_sha256 =
        write_weights(&dir.join(WEIGHTS_FILE), &model.weights()?, snapshots.keyring().map(|k| k.as_ref()))?;
    let mut params_json: BTreeMap<String, serde_json::Value> =
        params_of(params).into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    for (k, v) in model.shape_params() {
        params_json.insert(k, serde_json::Value::String(v));
    }
    for (name, bytes) in model.extra_files()? {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).map_err(Error::io(&path))?;
        params_json.insert(format!("{name}.sha256"), serde_json::Value::String(schemas::sha256_hex(&bytes)));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut metrics = evaluation.flat("test");
    // Validation metrics: what model selection (tuning, early stopping) may look at; the test
    // split stays untouched by it.
    if !splits[1].is_empty() {
        let predicted: Vec<usize> = model.predict(&texts(&splits[1]))?.iter().map(|p| argmax(p)).collect();
        metrics.extend(Evaluation::compute(&labels, &truth(&splits[1]), &predicted).flat("validation"));
    }
    metrics.insert("train_rows".into(), splits[0].len() as f64);
    metrics.insert("train_seconds".into(), seconds);
    metrics.insert(
        "train_rows_per_second".into(),
        splits[0].len() as f64 * history.len().max(1) as f64 / seconds.max(1e-9),
    );
    if let Some(last) = history.last() {
        metrics.insert("validation_loss".into(), *last);
    }
    let card = ModelCard {
        format_version: CARD_FORMAT,
        family: params.model,
        labels,
        params: params_json,
        hashing: model.hashing(),
        spec_hash: manifest.spec_hash.clone(),
        data: DataRef { dataset: manifest.dataset.clone(), version: manifest.id.clone() },
        run_id: run_id.to_string(),
        metrics,
        evaluation: Some(evaluation.clone()),
        reference,
        weights_sha256,
        created_at: Utc::now(),
    };
    write_card(dir, &card)?;
    if unknown_label > 0 {
        tracing::warn!(rows = unknown_label, "held-out rows with labels unseen in training were skipped");
    }
    Ok(Fitted {
        card,
        evaluation,
        history,
        rows: [splits[0].len(), splits[1].len(), splits[2].len()],
        unlabeled,
        seconds,
    })
}
