//! The `bilstm` family: MiniLM's WordPiece tokenizer (the `tokenizers` crate, the
//! `tokenizer.json` shipped with MiniLM-L6) → embedding → bidirectional LSTM → mean over the
//! tokens → linear, on libtorch. Trained with Adam on cross-entropy, early stopping on the
//! validation loss; the tokenizer travels with the artifact.

use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::schedule::Schedule;
use crate::{Error, Result};

/// The tokenizer's file in an artifact directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Shape of a `bilstm` model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiLstmShape {
    pub vocab: i64,
    pub embedding_dim: i64,
    pub hidden_size: i64,
    pub classes: i64,
    pub max_tokens: usize,
}

pub struct BiLstm {
    vs: nn::VarStore,
    embedding: nn::Embedding,
    lstm: nn::LSTM,
    out: nn::Linear,
    tokenizer: Tokenizer,
    shape: BiLstmShape,
}

/// Rows of texts scored at once at inference.
const PREDICT_CHUNK: usize = 64;

impl BiLstm {
    /// A fresh model for `tokenizer` (its vocabulary sizes the embedding).
    pub fn new(
        tokenizer: Tokenizer,
        embedding_dim: i64,
        hidden_size: i64,
        classes: i64,
        max_tokens: usize,
    ) -> BiLstm {
        let shape = BiLstmShape {
            vocab: tokenizer.get_vocab_size(true) as i64,
            embedding_dim,
            hidden_size,
            classes,
            max_tokens,
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let embedding = nn::embedding(&root / "embedding", shape.vocab, embedding_dim, Default::default());
        let config = nn::RNNConfig { bidirectional: true, batch_first: true, ..Default::default() };
        let lstm = nn::lstm(&root / "lstm", embedding_dim, hidden_size, config);
        let out = nn::linear(&root / "out", 2 * hidden_size, classes, Default::default());
        BiLstm { vs, embedding, lstm, out, tokenizer, shape }
    }

    pub fn shape(&self) -> BiLstmShape {
        self.shape
    }

    pub fn tokenizer_json(&self) -> Result<Vec<u8>> {
        tokenizer_to_bytes(&self.tokenizer)
    }

    /// Token ids of each text, truncated to `max_tokens` (at least one id per text).
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Input(format!("tokenizing: {e}")))?;
        Ok(encodings
            .iter()
            .map(|e| {
                let mut ids: Vec<i64> =
                    e.get_ids().iter().take(self.shape.max_tokens).map(|&i| i64::from(i)).collect();
                if ids.is_empty() {
                    ids.push(0);
                }
                ids
            })
            .collect())
    }

    /// Logits of a batch of token-id sequences (padded here, masked in the mean).
    fn logits(&self, batch: &[&Vec<i64>]) -> Tensor {
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for seq in batch {
            ids.extend(seq.iter().copied().chain(std::iter::repeat_n(0, len - seq.len())));
            mask.extend((0..len).map(|i| if i < seq.len() { 1f32 } else { 0f32 }));
        }
        let shape = [batch.len() as i64, len as i64];
        let ids = Tensor::from_slice(&ids).reshape(shape);
        let mask = Tensor::from_slice(&mask).reshape(shape).unsqueeze(-1);
        let (hidden, _) = self.lstm.seq(&self.embedding.forward(&ids));
        let summed = (hidden * &mask).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let pooled = summed / mask.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).clamp_min(1.0);
        self.out.forward(&pooled)
    }

    /// Trains on `(text, class)` pairs; returns the model and the validation loss per epoch.
    pub fn fit(
        self,
        training: &Schedule,
        train: &[(&str, i64)],
        validation: &[(&str, i64)],
    ) -> Result<(BiLstm, Vec<f64>)> {
        tch::manual_seed(training.seed as i64);
        let texts: Vec<&str> = train.iter().map(|(t, _)| *t).collect();
        let ids = self.encode(&texts)?;
        let ys: Vec<i64> = train.iter().map(|(_, y)| *y).collect();
        let val_texts: Vec<&str> = validation.iter().map(|(t, _)| *t).collect();
        let val_ids = self.encode(&val_texts)?;
        let val_ys = Tensor::from_slice(&validation.iter().map(|(_, y)| *y).collect::<Vec<_>>());
        let history = training.run(
            &self.vs,
            ids.len(),
            1e-4,
            |chunk| {
                let batch: Vec<&Vec<i64>> = chunk.iter().map(|&i| &ids[i]).collect();
                let y = Tensor::from_slice(&chunk.iter().map(|&i| ys[i]).collect::<Vec<_>>());
                self.logits(&batch).cross_entropy_for_logits(&y)
            },
            || {
                (!validation.is_empty()).then(|| {
                    tch::no_grad(|| {
                        let all: Vec<&Vec<i64>> = val_ids.iter().collect();
                        let logits = Tensor::cat(
                            &all.chunks(PREDICT_CHUNK).map(|c| self.logits(c)).collect::<Vec<_>>(),
                            0,
                        );
                        logits.cross_entropy_for_logits(&val_ys).double_value(&[])
                    })
                })
            },
        )?;
        Ok((self, history))
    }

    /// Class probabilities of cleaned texts.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.encode(texts)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in ids.chunks(PREDICT_CHUNK) {
            let batch: Vec<&Vec<i64>> = chunk.iter().collect();
            let probs = tch::no_grad(|| self.logits(&batch).softmax(-1, Kind::Float));
            let flat = Vec::<f32>::try_from(probs.reshape([-1]))?;
            out.extend(flat.chunks(self.shape.classes as usize).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// The weights as safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::tensors::to_safetensors(&self.vs)
    }

    /// A model of `shape` with the weights of [`BiLstm::to_bytes`]; the tokenizer must be the
    /// one it was trained with (its vocabulary size is checked against the weights).
    pub fn from_bytes(bytes: &[u8], tokenizer: Tokenizer, shape: BiLstmShape) -> Result<BiLstm> {
        if tokenizer.get_vocab_size(true) as i64 != shape.vocab {
            return Err(Error::Artifact(format!(
                "the tokenizer has {} tokens, the card says {}",
                tokenizer.get_vocab_size(true),
                shape.vocab
            )));
        }
        let model =
            BiLstm::new(tokenizer, shape.embedding_dim, shape.hidden_size, shape.classes, shape.max_tokens);
        crate::tensors::load_safetensors(&model.vs, bytes)?;
        Ok(model)
    }
}

/// Reads a `tokenizer.json`.
pub fn tokenizer_from_bytes(bytes: &[u8]) -> Result<Tokenizer> {
    Tokenizer::from_bytes(bytes).map_err(|e| Error::Artifact(format!("not a tokenizer.json: {e}")))
}

/// A tokenizer as the `tokenizer.json` an artifact carries.
pub fn tokenizer_to_bytes(tokenizer: &Tokenizer) -> Result<Vec<u8>> {
    tokenizer
        .to_string(false)
        .map(String::into_bytes)
        .map_err(|e| Error::Artifact(format!("serializing the tokenizer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(seed: i64) -> BiLstm {
        let dir = std::env::var("DRIFTWOOD_MINILM_DIR").expect("scripts/setup sets DRIFTWOOD_MINILM_DIR");
        let tokenizer =
            tokenizer_from_bytes(&std::fs::read(format!("{dir}/{TOKENIZER_FILE}")).expect("tokenizer"))
                .expect("parse");
        tch::manual_seed(seed);
        BiLstm::new(tokenizer, 16, 16, 2, 32)
    }

    #[test]
    fn one_seed_one_model() {
        let rows: Vec<(String, i64)> =
            (0..40).map(|i| (format!("text number {i} with words {}", i * 7 % 13), (i % 2) as i64)).collect();
        let rows: Vec<(&str, i64)> = rows.iter().map(|(t, y)| (t.as_str(), *y)).collect();
        let schedule = Schedule {
            epochs: 2,
            batch_size: 8,
            learning_rate: 0.01,
            weight_decay: 0.0,
            seed: 3,
            patience: 5,
        };
        let (a, b) = (model(7), model(7));
        assert!(a.to_bytes().unwrap() == b.to_bytes().unwrap(), "initialization differs");
        let (a, ha) = a.fit(&schedule, &rows[..30], &rows[30..]).unwrap();
        let (b, hb) = b.fit(&schedule, &rows[..30], &rows[30..]).unwrap();
        assert_eq!(ha, hb);
        assert!(a.to_bytes().unwrap() == b.to_bytes().unwrap(), "training differs");
    }
}
