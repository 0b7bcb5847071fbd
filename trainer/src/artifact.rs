//! The files of an artifact directory: the card (`card.json`) and the weights, sealed with the
//! keyring's active key when encryption is on. The hashes are of the plaintext, so
//! re-encryption under a new key changes no card and no registry entry. Knows nothing of what
//! the weights mean (that is [`crate::family`]).

use std::fs;
use std::path::Path;

use schemas::Family;
use stream::crypto::Keyring;

use crate::card::{CARD_FILE, CARD_FORMAT, ModelCard, WEIGHTS_FILE};
use crate::{Error, Result};

/// The file holding a family's weights in an artifact directory.
pub fn weights_file(family: Family) -> &'static str {
    match family {
        Family::TorchScript => crate::torchscript::MODULE_FILE,
        Family::LogReg | Family::BiLstm | Family::MiniLm => WEIGHTS_FILE,
    }
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
pub(crate) fn read_weights(path: &Path, expected_sha256: &str, keyring: Option<&Keyring>) -> Result<Vec<u8>> {
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
        let weights = dir.join(weights_file(card.family));
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
