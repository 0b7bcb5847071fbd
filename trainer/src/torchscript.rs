//! TorchScript models exported from PyTorch (`torch.jit.save`), registered and served like the
//! native families.
//!
//! The contract (`driftwood-hashed-bag-v1`): Driftwood cleans the text with the running plan
//! and hashes it exactly as `logreg` does ([`crate::features`]: word uni/bigrams, FNV-1a into
//! `2^hash_bits` buckets, weight `1 + ln tf`); the module's `forward` takes the batch as an
//! EmbeddingBag-style triple and returns one row of logits per text:
//!
//! ```text
//!  forward(indices: int64[N], offsets: int64[B], weights: float32[N]) -> float32[B, C]
//!    text b's features are indices[offsets[b] .. offsets[b+1]] with their weights
//! ```
//!
//! Driftwood applies the softmax. IDF, normalization and everything else live in the module.
//! A module that does not answer a probe batch with `[B, C]` for the registered labels is
//! refused at registration and at load. Registering one is [`crate::import`].

use std::io::Cursor;

use tch::{Kind, Tensor};

use crate::features::{HashingConfig, featurize};
use crate::{Error, Result};

/// The input/output contract a TorchScript module must follow.
pub const CONTRACT: &str = "driftwood-hashed-bag-v1";
/// The module's file in an artifact directory.
pub const MODULE_FILE: &str = "model.pt";

/// A loaded TorchScript module with its hashing.
pub struct Scripted {
    module: tch::CModule,
    hashing: HashingConfig,
    classes: usize,
}

impl Scripted {
    /// Loads a module from the bytes of a `torch.jit.save` file and checks the contract on a
    /// probe batch.
    pub fn from_bytes(bytes: &[u8], hashing: HashingConfig, classes: usize) -> Result<Scripted> {
        let mut module = tch::CModule::load_data(&mut Cursor::new(bytes))
            .map_err(|e| Error::Artifact(format!("not a TorchScript module: {e}")))?;
        module.set_eval();
        let scripted = Scripted { module, hashing, classes };
        let probe = scripted
            .logits(&[vec![(0, 1.0), (1, 1.0)], vec![]])
            .map_err(|e| Error::Artifact(format!("the module does not follow {CONTRACT}: {e}")))?;
        if probe.size() != [2, classes as i64] {
            return Err(Error::Artifact(format!(
                "the module answers a batch of 2 with shape {:?}; {CONTRACT} with {classes} labels needs [2, {classes}]",
                probe.size()
            )));
        }
        Ok(scripted)
    }

    pub fn hashing(&self) -> HashingConfig {
        self.hashing
    }

    fn logits(&self, docs: &[Vec<(u32, f32)>]) -> Result<Tensor> {
        let mut indices = Vec::new();
        let mut weights = Vec::new();
        let mut offsets = Vec::with_capacity(docs.len());
        for d in docs {
            offsets.push(indices.len() as i64);
            for &(b, w) in d {
                indices.push(i64::from(b));
                weights.push(w);
            }
        }
        let out = tch::no_grad(|| {
            self.module.forward_ts(&[
                Tensor::from_slice(&indices),
                Tensor::from_slice(&offsets),
                Tensor::from_slice(&weights),
            ])
        })?;
        Ok(out)
    }

    /// Class probabilities of cleaned texts.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let docs: Vec<Vec<(u32, f32)>> = texts
            .iter()
            .map(|t| {
                let mut f = Vec::new();
                featurize(&self.hashing, t, &mut f);
                f
            })
            .collect();
        let probs = self.logits(&docs)?.to_kind(Kind::Float).softmax(-1, Kind::Float);
        if probs.size() != [docs.len() as i64, self.classes as i64] {
            return Err(Error::Artifact(format!("the module answered with shape {:?}", probs.size())));
        }
        let flat = Vec::<f32>::try_from(probs.reshape([-1]))?;
        Ok(flat.chunks(self.classes).map(<[f32]>::to_vec).collect())
    }
}
