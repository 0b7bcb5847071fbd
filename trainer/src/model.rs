//! Loading a registered model version for inference, with verification.
//!
//! A version is refused — with [`Error::Artifact`] — when its card is missing or unreadable,
//! its format is newer than this build, its weights file's hash differs from the card or the
//! registry, or the weights do not fit the card's shapes. Weights are sealed (AES-256-GCM, see
//! `stream::crypto`) when a keyring is configured; the hashes are of the plaintext, so
//! re-encryption under a new key changes no card and no registry entry (see [`crate::artifact`]).

use std::path::Path;

use stream::crypto::Keyring;

use crate::artifact::{read_card, read_weights, weights_file};
use crate::card::ModelCard;
use crate::family::Classifier;
use crate::{Error, Result};
use metastore::ModelVersion;

/// A model ready to predict. Not `Sync`: it lives on one thread (see `serving`).
pub struct LoadedModel {
    pub version: ModelVersion,
    pub card: ModelCard,
    classifier: Classifier,
}

impl LoadedModel {
    pub fn labels(&self) -> &[String] {
        &self.card.labels
    }

    /// Why `plan` must not clean this model's inputs (it is not the cleaning the model was
    /// trained on), or `None`.
    pub fn spec_mismatch(&self, plan: &stream::clean::CleanPlan) -> Option<String> {
        let (trained, running) = (&self.card.spec_hash, plan.hash());
        (*trained != running).then(|| {
            format!(
                "model {} v{} was trained on data cleaned with spec {}, the running plan is {}",
                self.version.name,
                self.version.version,
                &trained[..12.min(trained.len())],
                &running[..12.min(running.len())]
            )
        })
    }

    /// Share of a cleaned text's words outside the model's training vocabulary.
    pub fn oov_rate(&self, text: &str) -> Option<f64> {
        self.classifier.oov_rate(text)
    }

    /// Class probabilities of cleaned texts, each with its out-of-vocabulary rate (one
    /// tokenization per text for both).
    pub fn predict_with_oov(&self, texts: &[&str]) -> Result<Vec<(Vec<f32>, Option<f64>)>> {
        self.classifier.predict_with_oov(texts)
    }

    /// Class probabilities of cleaned texts.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.classifier.predict(texts)
    }
}

/// Loads and verifies a registered version (unsealing its weights with `keyring` if they are
/// encrypted).
pub fn load(version: &ModelVersion, keyring: Option<&Keyring>) -> Result<LoadedModel> {
    let dir = Path::new(&version.artifact_dir);
    let card = read_card(dir)?;
    let weights = dir.join(weights_file(card.family));
    let bytes = read_weights(&weights, &version.artifact_sha256, keyring)?;
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
    let classifier = Classifier::load(card.family, &card, dir, &bytes, &weights)?;
    Ok(LoadedModel { version: version.clone(), card, classifier })
}
