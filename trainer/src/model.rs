//! Loading a registered model version for inference, with verification.
//!
//! A version is refused — with [`Error::Artifact`] — when its card is missing or unreadable,
//! its format is newer than this build, its weights file's hash differs from the card or the
//! registry, or the weights do not fit the card's shapes. Weights are sealed (AES-256-GCM, see
//! `stream::crypto`) when a keyring is configured; the hashes are of the plaintext, so
//! re-encryption under a new key changes no card and no registry entry.

use std::fs;
use std::path::Path;

use stream::crypto::Keyring;

use crate::bilstm::{BiLstm, BiLstmShape, TOKENIZER_FILE};
use crate::card::{CARD_FILE, CARD_FORMAT, ModelCard, WEIGHTS_FILE};
use crate::features::HashingConfig;
use crate::logreg::LogReg;
use crate::torchscript::Scripted;
use crate::{Error, Result};
use metastore::ModelVersion;

/// A model ready to predict. Not `Sync`: it lives on one thread (see `serving`).
pub struct LoadedModel {
    pub version: ModelVersion,
    pub card: ModelCard,
    classifier: Classifier,
}

enum Classifier {
    LogReg(LogReg),
    BiLstm(Box<BiLstm>),
    MiniLm(Box<crate::minilm::MiniLm>),
    TorchScript(Scripted),
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
        match &self.classifier {
            Classifier::LogReg(m) => m.oov_rate(text),
            // A module brings no training vocabulary; the BiLSTM's is the tokenizer's.
            Classifier::BiLstm(_) | Classifier::MiniLm(_) | Classifier::TorchScript(_) => None,
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
            Classifier::BiLstm(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
            Classifier::MiniLm(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
            Classifier::TorchScript(m) => Ok(m.predict(texts)?.into_iter().map(|p| (p, None)).collect()),
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
            Classifier::BiLstm(m) => m.predict(texts),
            Classifier::MiniLm(m) => m.predict(texts),
            Classifier::TorchScript(m) => m.predict(texts),
        }
    }
}

/// The file holding a family's weights in an artifact directory.
pub fn weights_file(family: &str) -> &'static str {
    if family == "torchscript" { crate::torchscript::MODULE_FILE } else { WEIGHTS_FILE }
}

/// Writes the card of an artifact directory (the counterpart of [`read_card`]).
pub fn write_card(dir: &Path, card: &ModelCard) -> Result<()> {
    let path = dir.join(CARD_FILE);
    fs::write(&path, serde_json::to_vec_pretty(card).expect("cards serialize")).map_err(Error::io(&path))
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

/// What sealed weights are sealed for: the weights with this hash, so sealed weights cannot
/// be swapped between artifacts.
fn weights_context(sha256: &str) -> Vec<u8> {
    format!("driftwood model weights {sha256}").into_bytes()
}

/// Writes weights to `path`: sealed by the keyring's active key when there is a keyring,
/// plaintext otherwise. Returns the SHA-256 of the plaintext (the card's `weights_sha256`).
pub fn write_weights(path: &Path, plaintext: &[u8], keyring: Option<&Keyring>) -> Result<String> {
    let sha = schemas::sha256_hex(plaintext);
    let bytes = match keyring {
        Some(k) => k.seal(plaintext, &weights_context(&sha))?,
        None => plaintext.to_vec(),
    };
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, &bytes).map_err(Error::io(&tmp))?;
    fs::rename(&tmp, path).map_err(Error::io(path))?;
    Ok(sha)
}

/// Reads weights written by [`write_weights`], unsealing them for an expected plaintext hash.
fn read_weights(path: &Path, expected_sha256: &str, keyring: Option<&Keyring>) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))?;
    if !stream::crypto::is_sealed(&bytes) {
        return Ok(bytes);
    }
    let by = stream::crypto::sealed_by(&bytes).unwrap_or("?");
    let keyring = keyring.ok_or_else(|| {
        Error::Artifact(format!(
            "{} is encrypted (key `{by}`) and no keyring is configured ([encryption] key_file)",
            path.display()
        ))
    })?;
    keyring
        .open(&bytes, &weights_context(expected_sha256))
        .map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))
}

/// Seals the weights of every artifact under `artifacts` with the keyring's active key: those
/// sealed by an older key and those still in plaintext. Hashes (card, registry) do not change.
pub fn reencrypt_weights(artifacts: &Path, keyring: &Keyring) -> Result<WeightsReport> {
    let mut report = WeightsReport::default();
    let Ok(entries) = fs::read_dir(artifacts) else { return Ok(report) };
    let mut dirs: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs {
        let Ok(card) = read_card(&dir) else { continue };
        let weights = dir.join(weights_file(&card.family));
        let Ok(bytes) = fs::read(&weights) else { continue };
        let from = match stream::crypto::sealed_by(&bytes) {
            Some(id) if id == keyring.active() => {
                report.current += 1;
                continue;
            }
            Some(id) => id.to_string(),
            None => "plaintext".to_string(),
        };
        let plain = read_weights(&weights, &card.weights_sha256, Some(keyring))?;
        if schemas::sha256_hex(&plain) != card.weights_sha256 {
            return Err(Error::Artifact(format!(
                "{} does not match its card; left as it is",
                weights.display()
            )));
        }
        write_weights(&weights, &plain, Some(keyring))?;
        *report.resealed.entry(from).or_default() += 1;
    }
    Ok(report)
}

/// What [`reencrypt_weights`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WeightsReport {
    /// Weights files sealed anew, by the key that had sealed them (or `plaintext`).
    pub resealed: std::collections::BTreeMap<String, u64>,
    /// Weights already sealed by the active key.
    pub current: u64,
}

/// Loads and verifies a registered version (unsealing its weights with `keyring` if they are
/// encrypted).
pub fn load(version: &ModelVersion, keyring: Option<&Keyring>) -> Result<LoadedModel> {
    let dir = Path::new(&version.artifact_dir);
    let card = read_card(dir)?;
    let weights = dir.join(weights_file(&card.family));
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
    let classifier = match card.family.as_str() {
        "logreg" => {
            let hashing: HashingConfig =
                card.hashing.ok_or_else(|| Error::Artifact("logreg card without hashing config".into()))?;
            if !schemas::config::HASH_BITS.contains(&hashing.bits) {
                return Err(Error::Artifact(format!("hash bits {} out of range", hashing.bits)));
            }
            Classifier::LogReg(
                LogReg::from_bytes(&bytes, hashing, card.labels.len())
                    .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
            )
        }
        "bilstm" => {
            let path = dir.join(TOKENIZER_FILE);
            let tokenizer =
                fs::read(&path).map_err(|e| Error::Artifact(format!("{}: {e}", path.display())))?;
            let param = |k: &str| card.params.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
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
            Classifier::BiLstm(Box::new(
                BiLstm::from_bytes(&bytes, tokenizer, shape)
                    .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
            ))
        }
        "minilm" => {
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
            Classifier::MiniLm(Box::new(
                crate::minilm::MiniLm::from_bytes(
                    &bytes,
                    tokenizer,
                    shape,
                    card.labels.len() as i64,
                    max_tokens,
                )
                .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
            ))
        }
        "torchscript" => {
            let hashing: HashingConfig = card
                .hashing
                .ok_or_else(|| Error::Artifact("torchscript card without hashing config".into()))?;
            if !schemas::config::HASH_BITS.contains(&hashing.bits) {
                return Err(Error::Artifact(format!("hash bits {} out of range", hashing.bits)));
            }
            Classifier::TorchScript(
                Scripted::from_bytes(&bytes, hashing, card.labels.len())
                    .map_err(|e| Error::Artifact(format!("{}: {e}", weights.display())))?,
            )
        }
        other => return Err(Error::Artifact(format!("unknown model family `{other}`"))),
    };
    Ok(LoadedModel { version: version.clone(), card, classifier })
}
