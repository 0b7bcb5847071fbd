//! The `train` and `retrain` sections: how models are fitted, and when a retrained candidate
//! replaces production.

use serde::{Deserialize, Serialize};

use super::{HASH_BITS, Result, invalid, positive, valid_name};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Registered model name.
    pub name: String,
    /// Model family: `logreg`, `bilstm` or `minilm`.
    pub model: crate::Family,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// log2 of the number of hashing buckets of `logreg`.
    pub hash_bits: u32,
    pub validation_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
    /// libtorch intra-op threads; 0 means all cores.
    pub threads: usize,
    /// `bilstm`: the `tokenizer.json` (the MiniLM WordPiece tokenizer, `scripts/setup`), the
    /// longest token sequence kept, and the layer sizes.
    pub tokenizer: String,
    pub max_tokens: usize,
    pub embedding_dim: usize,
    pub hidden_size: usize,
    /// `minilm`: the pretrained MiniLM-L6 directory (`model.safetensors`, `config.json`,
    /// `tokenizer.json`; `scripts/setup` installs it) and how many of its top encoder layers
    /// are fine-tuned with the head (0: the head only).
    pub pretrained: String,
    pub finetune_layers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// Retrain on RetrainRequested (`driftwood retrainer`, and in `driftwood up`).
    pub enabled: bool,
    /// Promote the candidate only if its holdout accuracy beats production's by this much.
    pub margin: f64,
    /// Fewer recent labelled holdout rows than this: no retrain (not enough evidence).
    pub min_holdout: usize,
    /// Before training, wait up to this long for the snapshot job to cover everything that was
    /// on the raw topic when the request arrived, so the candidate sees the drifted text
    /// (0: train on whatever the latest version is).
    pub catch_up_secs: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            name: "spam".into(),
            model: crate::Family::LogReg,
            epochs: 30,
            batch_size: 256,
            learning_rate: 0.5,
            weight_decay: 0.0,
            hash_bits: 18,
            validation_fraction: 0.1,
            test_fraction: 0.2,
            seed: 42,
            threads: 0,
            tokenizer: String::new(),
            max_tokens: 128,
            embedding_dim: 64,
            hidden_size: 64,
            pretrained: String::new(),
            finetune_layers: 0,
        }
    }
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig { enabled: true, margin: 0.01, min_holdout: 50, catch_up_secs: 60 }
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !valid_name(&self.name) {
            return Err(invalid("train.name", "use lowercase letters, digits, '_' or '-'"));
        }
        positive("train.epochs", self.epochs)?;
        positive("train.batch_size", self.batch_size)?;
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return Err(invalid("train.learning_rate", "must be greater than 0"));
        }
        if !HASH_BITS.contains(&self.hash_bits) {
            let message = format!("must be between {} and {}", HASH_BITS.start(), HASH_BITS.end());
            return Err(invalid("train.hash_bits", message));
        }
        let fractions_ok = (0.0..1.0).contains(&self.validation_fraction)
            && (0.0..1.0).contains(&self.test_fraction)
            && self.validation_fraction + self.test_fraction < 1.0;
        if !fractions_ok {
            return Err(invalid(
                "train.validation_fraction",
                "validation and test fractions must be in [0, 1) and sum to less than 1",
            ));
        }
        Ok(())
    }
}

impl RetrainConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(invalid("retrain.margin", "must be 0 or more"));
        }
        Ok(())
    }
}
