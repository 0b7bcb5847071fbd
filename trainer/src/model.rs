//! Loading a registered model version for inference, with verification.
//!
//! A version is refused — with [`Error::Artifact`] — when its card is missing or unreadable,
//! its format is newer than this build, its weights file's hash differs from the card or the
//! registry, or the weights do not fit the card's shapes.

use std::fs;
use std::path::Path;

use crate::card::{CARD_FILE, CARD_FORMAT, ModelCard, WEIGHTS_FILE};
use crate::features::HashingConfig;
use crate::logreg::LogReg;
use crate::store::ModelVersion;
use crate::{Error, Result};

/// A model ready to predict. Not `Sync`: it lives on one thread (see `serving`).
pub struct LoadedModel {
    pub version: ModelVersion,
    pub card: ModelCard,
    classifier: Classifier,
}

enum Classifier {
    LogReg(LogReg),
}

impl LoadedModel {
    pub fn labels(&self) -> &[String] {
        &self.card.labels
    }

    /// Share of a cleaned text's words outside the model's training vocabulary.
    pub fn oov_rate(&self, text: &str) -> Option<f64> {
        match &self.classifier {
            Classifier::LogReg(m) => m.oov_rate(text),
        }
    }

    /// Class probabilities of cleaned texts, each with its out-of-vocabulary rate (one
    /// tokenization per text for both).
    pub fn predict_with_oov(&self, texts: &[&str]) -> Result<Vec<(Vec<f32>, Option<f64>)>> {
        match &self.classifier {
            Classifier::LogReg(m) => {
                let (docs, oov): (Vec<_>, Vec<_>) = texts.iter().map(|t| m.featurize_with_oov(t)).unzip();
                let refs: Vec<_> = docs.iter().collect();
                Ok(m.predict_proba(&refs)?.into_iter().zip(oov).collect())
            }
        }
    }

    /// Class probabilities of cleaned texts.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        match &self.classifier {
            Classifier::LogReg(m) => {
                let docs: Vec<_> = texts.iter().map(|t| LogReg::featurize(&m.hashing(), t)).collect();
                let refs: Vec<_> = docs.iter().collect();
                m.predict_proba(&refs)
            }
        }
    }
}

/// Reads and checks the card of an artifact directory.
pub fn read_card(dir: &Path) -> Result<ModelCard> {
    let path = dir.join(CARD_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))?;
    #[derive(serde::Deserialize)]
    struct Format {
        format_version: u32,
    }
    let f: Format = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Artifact(format!("{} is not a model card: {e}", path.display())))?;
    if f.format_version > CARD_FORMAT {
        return Err(Error::Artifact(format!(
            "{} has card format {}, this build reads up to {CARD_FORMAT}",
            path.display(),
            f.format_version
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Artifact(format!("{} is not a model card: {e}", path.display())))
}

/// Loads and verifies a registered version.
pub fn load(version: &ModelVersion) -> Result<LoadedModel> {
    let dir = Path::new(&version.artifact_dir);
    let card = read_card(dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&weights).map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?;
    let sha = schemas::sha256_hex(&bytes);
    if sha != card.weights_sha256 || sha != version.artifact_sha256 {
        return Err(Error::Artifact(format!(
            "{} hashes to {}, expected {} (card) and {} (registry)",
            weights.display(),
            &sha[..12],
            &card.weights_sha256[..12.min(card.weights_sha256.len())],
            &version.artifact_sha256[..12.min(version.artifact_sha256.len())]
        )));
    }
    if card.spec_hash != version.spec_hash {
        return Err(Error::Artifact(format!(
            "card spec hash {} differs from the registry's {}",
            card.spec_hash, version.spec_hash
        )));
    }
    if card.labels.len() < 2 {
        return Err(Error::Artifact("a model card needs at least two labels".into()));
    }
    let classifier = match card.family.as_str() {
        "logreg" => {
            let hashing: HashingConfig =
                card.hashing.ok_or_else(|| Error::Artifact("logreg card without hashing config".into()))?;
            if !(8..=26).contains(&hashing.bits) {
                return Err(Error::Artifact(format!("hash bits {} out of range", hashing.bits)));
            }
            Classifier::LogReg(LogReg::load(&weights, hashing, card.labels.len())?)
        }
        other => return Err(Error::Artifact(format!("unknown model family `{other}`"))),
    };
    Ok(LoadedModel { version: version.clone(), card, classifier })
}
