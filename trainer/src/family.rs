//! The families behind one name: fitting (training) and loading (serving) side by side, each
//! family's rule in one match. The rows/argmax helpers sit below in [`crate::rows`]; the
//! artifact files in [`crate::artifact`]. Knows nothing of runs, the registry or serving.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use schemas::Family;
use schemas::config::TrainConfig;

use crate::bilstm::{BiLstm, BiLstmShape, TOKENIZER_FILE};
use crate::card::ModelCard;
use crate::features::HashingConfig;
use crate::logreg::{Doc, LogReg};
use crate::minilm::MiniLm;
use crate::schedule::Schedule;
use crate::torchscript::Scripted;
use crate::{Error, Result};

/// A fitted model of any family, as the shared evaluation and saving need it.
pub(crate) trait FittedModel {
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
pub(crate) fn fit(
    params: &TrainConfig,
    classes: usize,
    train: &[(&str, i64)],
    validation: &[(&str, i64)],
) -> Result<(Box<dyn FittedModel>, Vec<f64>)> {
    match params.model {
        Family::LogReg => {
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
        Family::BiLstm => {
            if params.tokenizer.is_empty() {
                return Err(Error::Input(
                    "bilstm needs train.tokenizer: the tokenizer.json of MiniLM-L6 (scripts/setup installs it)".into(),
                ));
            }
            let path = Path::new(&params.tokenizer);
            let tokenizer =
                crate::bilstm::tokenizer_from_bytes(&std::fs::read(path).map_err(Error::io(path))?)?;
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
        Family::MiniLm => {
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
        Family::TorchScript => Err(Error::Input(format!(
            "torchscript models are imported (`models import`), not trained (trainable: {})",
            Family::names(&Family::TRAINABLE)
        ))),
    }
}

/// A loaded model of any family.
pub(crate) enum Classifier {
    LogReg(LogReg),
    BiLstm(Box<BiLstm>),
    MiniLm(Box<MiniLm>),
    TorchScript(Scripted),
}

impl Classifier {
    /// Builds the family's model from verified weights (`bytes`, read from `weights`) and the
    /// card's shapes; anything that does not fit is [`Error::Artifact`].
    pub(crate) fn load(
        family: Family,
        card: &ModelCard,
        dir: &Path,
        bytes: &[u8],
        weights: &Path,
    ) -> Result<Classifier> {
        Ok(match family {
            Family::LogReg => {
                let hashing: HashingConfig = card
                    .hashing
                    .ok_or_else(|| Error::Artifact("logreg card without hashing config".into()))?;
                if !schemas::config::HASH_BITS.contains(&hashing.bits) {
                    return Err(Error::Artifact(format!("hash bits {} out of range", hashing.bits)));
                }
                Self::LogReg(
                    LogReg::from_bytes(bytes, hashing, card.labels.len())
                        .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
                )
            }
            Family::BiLstm => {
                let path = dir.join(TOKENIZER_FILE);
                let tokenizer =
                    fs::read(&path).map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))?;
                let param =
                    |k: &str| card.params.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                if schemas::sha256_hex(&tokenizer) != param("tokenizer.json.sha256") {
                    return Err(Error::Artifact(format!("{} does not match the card", path.display())));
                }
                let tokenizer = crate::bilstm::tokenizer_from_bytes(&tokenizer)?;
                let size = |k: &str| {
                    param(k)
                        .parse::<usize>()
                        .map_err(|_| Error::Artifact(format!("bilstm card without a valid `{k}`")))
                };
                let shape = BiLstmShape {
                    vocab: tokenizer.get_vocab_size(true) as i64,
                    embedding_dim: size("embedding_dim")? as i64,
                    hidden_size: size("hidden_size")? as i64,
                    classes: card.labels.len() as i64,
                    max_tokens: size("max_tokens")?,
                };
                Self::BiLstm(Box::new(
                    BiLstm::from_bytes(bytes, tokenizer, shape)
                        .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
                ))
            }
            Family::MiniLm => {
                let path = dir.join(crate::minilm::TOKENIZER_FILE);
                let tokenizer =
                    fs::read(&path).map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))?;
                let param = |k: &str| card.params.get(k).and_then(|v| v.as_str()).map(str::to_string);
                if Some(schemas::sha256_hex(&tokenizer)) != param("tokenizer.json.sha256") {
                    return Err(Error::Artifact(format!("{} does not match the card", path.display())));
                }
                let tokenizer = crate::bilstm::tokenizer_from_bytes(&tokenizer)?;
                let shape = crate::minilm::BertShape::from_params(param)?;
                let max_tokens = param("max_tokens")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Error::Artifact("minilm card without a valid `max_tokens`".into()))?;
                Self::MiniLm(Box::new(
                    crate::minilm::MiniLm::from_bytes(
                        bytes,
                        tokenizer,
                        shape,
                        card.labels.len() as i64,
                        max_tokens,
                    )
                    .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
                ))
            }
            Family::TorchScript => {
                let hashing: HashingConfig = card
                    .hashing
                    .ok_or_else(|| Error::Artifact("torchscript card without hashing config".into()))?;
                if !schemas::config::HASH_BITS.contains(&hashing.bits) {
                    return Err(Error::Artifact(format!("hash bits {} out of range", hashing.bits)));
                }
                Self::TorchScript(
                    Scripted::from_bytes(bytes, hashing, card.labels.len())
                        .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
                )
            }
        })
    }

    /// Class probabilities of cleaned texts.
    pub(crate) fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::LogReg(m) => {
                let docs: Vec<_> = texts.iter().map(|t| LogReg::featurize(&m.hashing(), t)).collect();
                let refs: Vec<_> = docs.iter().collect();
                m.predict_proba(&refs)
            }
            Self::BiLstm(m) => m.predict(texts),
            Self::MiniLm(m) => m.predict(texts),
            Self::TorchScript(m) => m.predict(texts),
        }
    }

    /// Class probabilities of cleaned texts, each with its out-of-vocabulary rate (one
    /// tokenization per text for both).
    pub(crate) fn predict_with_oov(&self, texts: &[&str]) -> Result<Vec<(Vec<f32>, Option<f64>)>> {
        match self {
            Self::LogReg(m) => {
                let (docs, oov): (Vec<_>, Vec<_>) = texts.iter().map(|t| m.featurize_with_oov(t)).unzip();
                let refs: Vec<_> = docs.iter().collect();
                Ok(m.predict_proba(&refs)?.into_iter().zip(oov).collect())
            }
            Self::BiLstm(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
            Self::MiniLm(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
            Self::TorchScript(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
        }
    }

    /// Share of a cleaned text's words outside the model's training vocabulary.
    pub(crate) fn oov_rate(&self, text: &str) -> Option<f64> {
        match self {
            Self::LogReg(m) => m.oov_rate(text),
            // A module brings no training vocabulary; the BiLSTM's is the tokenizer's.
            Self::BiLstm(_) | Self::MiniLm(_) | Self::TorchScript(_) => None,
        }
    }
}
