//! The training job: one snapshot version in, one tracked run and one registered model out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::{Array, StringArray};
use chrono::Utc;
use drift::features::{text_features, with_confidence, with_oov_rate};
use drift::profile::ReferenceProfile;
use ingest::control::ControlProducer;
use schemas::Split;
use schemas::config::TrainConfig;
use schemas::events::ControlEvent;
use schemas::records::col;
use stream::store::{Manifest, SnapshotStore};

use crate::bilstm::{self, BiLstm};
use crate::card::{CARD_FORMAT, DataRef, ModelCard, WEIGHTS_FILE};
use crate::features::HashingConfig;
use crate::logreg::{Doc, LogReg};
use crate::metrics::Evaluation;
use crate::minilm::MiniLm;
use crate::registry;
use crate::schedule::Schedule;
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
    if !FAMILIES.contains(&req.params.model.as_str()) {
        return Err(Error::Input(format!(
            "unknown model family `{}` (available: {})",
            req.params.model,
            FAMILIES.join(", ")
        )));
    }
    let manifest = snapshots.resolve(&req.dataset, &req.version)?;
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
            family: trained.card.family.clone(),
            data_version: trained.card.data.version.clone(),
            spec_hash: trained.card.spec_hash.clone(),
            metrics: trained.card.metrics.clone(),
            artifact_dir: trained.artifact_dir.display().to_string(),
            artifact_sha256: trained.card.weights_sha256.clone(),
            created_at: Utc::now(),
        })
        .await?;
    let alias = alias.unwrap_or(registry::CANDIDATE);
    registry::promote(store, control, &model.name, model.version, alias, actor, "trained").await?;
    Ok(model)
}

/// The training configuration recorded in a run's params (as [`params_of`] wrote them), over
/// `base` for anything missing.
pub fn config_from_params(params: &BTreeMap<String, String>, base: &TrainConfig) -> TrainConfig {
    fn get<T: std::str::FromStr>(params: &BTreeMap<String, String>, key: &str, default: T) -> T {
        params.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    TrainConfig {
        model: params.get("model").cloned().unwrap_or_else(|| base.model.clone()),
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
        ("model".into(), p.model.clone()),
        ("epochs".into(), p.epochs.to_string()),
        ("batch_size".into(), p.batch_size.to_string()),
        ("learning_rate".into(), p.learning_rate.to_string()),
        ("weight_decay".into(), p.weight_decay.to_string()),
        ("hash_bits".into(), p.hash_bits.to_string()),
        ("validation_fraction".into(), p.validation_fraction.to_string()),
        ("test_fraction".into(), p.test_fraction.to_string()),
        ("seed".into(), p.seed.to_string()),
    ]);
    if p.model == "bilstm" {
        params.insert("tokenizer".into(), p.tokenizer.clone());
        params.insert("max_tokens".into(), p.max_tokens.to_string());
        params.insert("embedding_dim".into(), p.embedding_dim.to_string());
        params.insert("hidden_size".into(), p.hidden_size.to_string());
    }
    if p.model == "minilm" {
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

pub(crate) struct Row {
    pub(crate) text: String,
    pub(crate) label: String,
    pub(crate) split: Split,
}

/// A string column of a snapshot batch.
pub(crate) fn string_column(batch: &arrow::array::RecordBatch, name: &str) -> Result<StringArray> {
    let idx = batch.schema().index_of(name).map_err(|e| Error::Input(e.to_string()))?;
    batch
        .column(idx)
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Input(format!("column {name} is not a string column")))
}

/// Reads the labelled rows of a version, batch by batch.
pub(crate) fn read_rows(
    snapshots: &SnapshotStore,
    manifest: &Manifest,
    params: &TrainConfig,
) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut unlabeled = 0;
    for batch in snapshots.read(manifest) {
        let batch = batch?;
        let column = |name| string_column(&batch, name);
        let (ids, texts, labels) = (column(col::ID)?, column(col::TEXT)?, column(col::LABEL)?);
        for i in 0..batch.num_rows() {
            if labels.is_null(i) || labels.value(i).is_empty() {
                unlabeled += 1;
                continue;
            }
            rows.push(Row {
                text: texts.value(i).to_string(),
                label: labels.value(i).to_string(),
                split: Split::of(ids.value(i), params.validation_fraction, params.test_fraction),
            });
        }
    }
    Ok((rows, unlabeled))
}

/// A fitted model of any family, as the shared evaluation and saving need it.
trait FittedModel {
    fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    fn weights(&self) -> Result<Vec<u8>>;
    /// Share of a text's words outside the training vocabulary, where the family knows it
    /// (the tokenizer families do not: their vocabulary is the tokenizer's).
    fn oov_rate(&self, _text: &str) -> Option<f64> {
        None
    }
    /// The hashing of a hashed-features family.
    fn hashing(&self) -> Option<HashingConfig> {
        None
    }
    /// Files the artifact needs besides the card and the weights: (name, bytes).
    fn extra_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(Vec::new())
    }
    /// Card params describing the fitted shape, beyond the training params.
    fn shape_params(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

impl FittedModel for LogReg {
    fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let docs: Vec<Doc> = texts.iter().map(|t| LogReg::featurize(&self.hashing(), t)).collect();
        self.predict_proba(&docs.iter().collect::<Vec<_>>())
    }
    fn oov_rate(&self, text: &str) -> Option<f64> {
        LogReg::oov_rate(self, text)
    }
    fn weights(&self) -> Result<Vec<u8>> {
        self.to_bytes()
    }
    fn hashing(&self) -> Option<HashingConfig> {
        Some(LogReg::hashing(self))
    }
}

impl FittedModel for BiLstm {
    fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        BiLstm::predict(self, texts)
    }
    fn weights(&self) -> Result<Vec<u8>> {
        self.to_bytes()
    }
    fn extra_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![(crate::bilstm::TOKENIZER_FILE, self.tokenizer_json()?)])
    }
}

impl FittedModel for MiniLm {
    fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        MiniLm::predict(self, texts)
    }
    fn weights(&self) -> Result<Vec<u8>> {
        self.to_bytes()
    }
    fn extra_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![(crate::minilm::TOKENIZER_FILE, self.tokenizer_json()?)])
    }
    fn shape_params(&self) -> BTreeMap<String, String> {
        let mut params = self.shape().params();
        params.insert("max_tokens".into(), self.max_tokens().to_string());
        params
    }
}

/// Fits the family of `params` on the train split, early-stopping on the validation split.
fn fit_family(
    params: &TrainConfig,
    classes: usize,
    train: &[(&str, i64)],
    validation: &[(&str, i64)],
) -> Result<(Box<dyn FittedModel>, Vec<f64>)> {
    match params.model.as_str() {
        "logreg" => {
            let hashing = HashingConfig { bits: params.hash_bits, max_ngram: 2 };
            let featurize = |rows: &[(&str, i64)]| -> Vec<(Doc, i64)> {
                rows.iter().map(|(t, y)| (LogReg::featurize(&hashing, t), *y)).collect()
            };
            let (train, validation) = (featurize(train), featurize(validation));
            fn pairs(rows: &[(Doc, i64)]) -> Vec<(&Doc, i64)> {
                rows.iter().map(|(d, y)| (d, *y)).collect()
            }
            let (model, history) =
                LogReg::fit(hashing, &Schedule::from(params), classes, &pairs(&train), &pairs(&validation))?;
            Ok((Box::new(model), history))
        }
        "bilstm" => {
            if params.tokenizer.is_empty() {
                return Err(Error::Input(
                    "bilstm needs train.tokenizer: the tokenizer.json of MiniLM-L6 (scripts/setup installs it)".into(),
                ));
            }
            let path = Path::new(&params.tokenizer);
            let tokenizer = bilstm::tokenizer_from_bytes(&std::fs::read(path).map_err(Error::io(path))?)?;
            // Initialization draws from libtorch's RNG too: seed before building the layers.
            tch::manual_seed(params.seed as i64);
            let model = BiLstm::new(
                tokenizer,
                params.embedding_dim as i64,
                params.hidden_size as i64,
                classes as i64,
                params.max_tokens.max(1),
            );
            let (model, history) = model.fit(&Schedule::from(params), train, validation)?;
            Ok((Box::new(model), history))
        }
        "minilm" => {
            if params.pretrained.is_empty() {
                return Err(Error::Input(
                    "minilm needs train.pretrained: the MiniLM-L6 directory (scripts/setup installs it)"
                        .into(),
                ));
            }
            tch::manual_seed(params.seed as i64);
            let model = MiniLm::pretrained(Path::new(&params.pretrained), classes as i64, params.max_tokens)?;
            let (model, history) =
                model.fit(&Schedule::from(params), params.finetune_layers, train, validation)?;
            Ok((Box::new(model), history))
        }
        other => {
            Err(Error::Input(format!("unknown model family `{other}` (available: {})", FAMILIES.join(", "))))
        }
    }
}

/// The families `train` can fit.
pub const FAMILIES: &[&str] = &["logreg", "bilstm", "minilm"];

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
    let (model, history) = fit_family(params, labels.len(), &pairs(&splits[0]), &pairs(&splits[1]))?;

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
    let weights_sha256 = crate::model::write_weights(
        &dir.join(WEIGHTS_FILE),
        &model.weights()?,
        snapshots.keyring().map(|k| k.as_ref()),
    )?;
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
        family: params.model.clone(),
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
    crate::model::write_card(dir, &card)?;
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

pub(crate) fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}
