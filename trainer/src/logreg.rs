//! `logreg`: hashed n-gram TF-IDF features into an EmbeddingBag-style linear layer
//! (fastText-style: one weighted sum of bucket rows per document).

use tch::nn;
use tch::{Device, Kind, Tensor};

use crate::features::{HashingConfig, featurize};
use crate::schedule::Schedule;
use crate::{Error, Result};

/// A document as sparse tf features.
pub type Doc = Vec<(u32, f32)>;

/// The model: weights `[buckets, classes]`, bias, and the IDF vector (not trained).
pub struct LogReg {
    vs: nn::VarStore,
    weight: Tensor,
    bias: Tensor,
    idf: Vec<f32>,
    /// The largest idf: that of a bucket no training document had (see [`LogReg::oov_rate`]).
    unseen_idf: f32,
    hashing: HashingConfig,
    classes: usize,
}

impl LogReg {
    fn new(hashing: HashingConfig, classes: usize) -> LogReg {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let buckets = hashing.buckets() as i64;
        let weight = root.var("weight", &[buckets, classes as i64], nn::Init::Const(0.0));
        let bias = root.var("bias", &[classes as i64], nn::Init::Const(0.0));
        let _idf = root.zeros_no_train("idf", &[buckets]);
        LogReg { vs, weight, bias, idf: vec![1.0; hashing.buckets()], unseen_idf: 1.0, hashing, classes }
    }

    pub fn hashing(&self) -> HashingConfig {
        self.hashing
    }

    /// Featurizes a text into tf pairs.
    pub fn featurize(hashing: &HashingConfig, text: &str) -> Doc {
        let mut out = Vec::new();
        featurize(hashing, text, &mut out);
        out
    }

    /// Share of the words of `text` never seen in training (their bucket had no document
    /// frequency, so its idf is the largest possible); `None` for a text without words.
    pub fn oov_rate(&self, text: &str) -> Option<f64> {
        self.oov_share(|word| crate::features::word_buckets(&self.hashing, text).for_each(word))
    }

    /// The features of `text` and its [`LogReg::oov_rate`], from one tokenization.
    pub fn featurize_with_oov(&self, text: &str) -> (Doc, Option<f64>) {
        let mut doc = Vec::new();
        let oov = self.oov_share(|word| crate::features::featurize_with(&self.hashing, text, &mut doc, word));
        (doc, oov)
    }

    /// The out-of-vocabulary share of the word buckets `visit` feeds to the callback it gets.
    fn oov_share(&self, visit: impl FnOnce(&mut dyn FnMut(u32))) -> Option<f64> {
        let (mut words, mut oov) = (0usize, 0usize);
        visit(&mut |b| {
            words += 1;
            oov += usize::from(self.idf[b as usize] >= self.unseen_idf);
        });
        (words > 0).then(|| oov as f64 / words as f64)
    }

    fn set_idf(&mut self, idf: Vec<f32>) {
        self.unseen_idf = idf.iter().copied().fold(f32::MIN, f32::max);
        self.idf = idf;
    }

    /// Smoothed IDF over training documents: `ln((1 + n) / (1 + df)) + 1`.
    fn fit_idf(&mut self, docs: &[&Doc]) {
        let mut df = vec![0u32; self.hashing.buckets()];
        for d in docs {
            for (b, _) in d.iter() {
                df[*b as usize] += 1;
            }
        }
        let n = docs.len() as f32;
        self.set_idf(df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0).collect());
        let idf = Tensor::from_slice(&self.idf);
        tch::no_grad(|| {
            let mut vars = self.vs.variables();
            vars.get_mut("idf").expect("idf variable exists").copy_(&idf);
        });
    }

    /// `(indices, offsets, per-sample weights)` of a batch: tf·idf, L2-normalized per doc.
    fn inputs(&self, docs: &[&Doc]) -> (Tensor, Tensor, Tensor) {
        let total: usize = docs.iter().map(|d| d.len()).sum();
        let mut indices = Vec::with_capacity(total);
        let mut weights = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(docs.len());
        for d in docs {
            offsets.push(indices.len() as i64);
            let start = weights.len();
            for (b, tf) in d.iter() {
                indices.push(i64::from(*b));
                weights.push(tf * self.idf[*b as usize]);
            }
            let norm = weights[start..].iter().map(|w| w * w).sum::<f32>().sqrt();
            if norm > 0.0 {
                for w in &mut weights[start..] {
                    *w /= norm;
                }
            }
        }
        (Tensor::from_slice(&indices), Tensor::from_slice(&offsets), Tensor::from_slice(&weights))
    }

    fn logits(&self, docs: &[&Doc]) -> Tensor {
        let (indices, offsets, weights) = self.inputs(docs);
        let (sum, _, _, _) =
            Tensor::embedding_bag(&self.weight, &indices, &offsets, false, 0, false, Some(&weights), false);
        sum + &self.bias
    }

    /// Class probabilities per document.
    pub fn predict_proba(&self, docs: &[&Doc]) -> Result<Vec<Vec<f32>>> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let probs = tch::no_grad(|| self.logits(docs).softmax(-1, Kind::Float));
        let flat: Vec<f32> = Vec::<f32>::try_from(probs.flatten(0, -1))?;
        Ok(flat.chunks(self.classes).map(<[f32]>::to_vec).collect())
    }

    /// Mean cross-entropy of `docs` against `targets`.
    fn loss(&self, docs: &[&Doc], targets: &[i64]) -> Tensor {
        self.logits(docs).cross_entropy_for_logits(&Tensor::from_slice(targets))
    }

    /// Trains on `train`, early-stopping on `validation` loss; returns the model and the
    /// validation loss per epoch.
    pub fn fit(
        hashing: HashingConfig,
        params: &Schedule,
        classes: usize,
        train: &[(&Doc, i64)],
        validation: &[(&Doc, i64)],
    ) -> Result<(LogReg, Vec<f64>)> {
        if train.is_empty() {
            return Err(Error::Input("no training rows".into()));
        }
        tch::manual_seed(params.seed as i64);
        let mut model = LogReg::new(hashing, classes);
        let train_docs: Vec<&Doc> = train.iter().map(|(d, _)| *d).collect();
        model.fit_idf(&train_docs);
        // Without a validation split the training loss decides when to stop.
        let eval_on = if validation.is_empty() { train } else { validation };
        let eval_docs: Vec<&Doc> = eval_on.iter().map(|(d, _)| *d).collect();
        let eval_targets: Vec<i64> = eval_on.iter().map(|(_, t)| *t).collect();
        let history = params.run(
            &model.vs,
            train.len(),
            0.0,
            |chunk| {
                let docs: Vec<&Doc> = chunk.iter().map(|&i| train[i].0).collect();
                let targets: Vec<i64> = chunk.iter().map(|&i| train[i].1).collect();
                model.loss(&docs, &targets)
            },
            || Some(tch::no_grad(|| model.loss(&eval_docs, &eval_targets)).double_value(&[])),
        )?;
        Ok((model, history))
    }

    /// The weights (with the IDF vector) as safetensors bytes, built in memory so that they
    /// can be encrypted before they touch the disk.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::tensors::to_safetensors(&self.vs)
    }

    /// Loads weights written by [`LogReg::to_bytes`] (or `VarStore::save`), checking every
    /// tensor's presence and shape against the card.
    pub fn from_bytes(bytes: &[u8], hashing: HashingConfig, classes: usize) -> Result<LogReg> {
        let mut model = LogReg::new(hashing, classes);
        crate::tensors::load_safetensors(&model.vs, bytes)?;
        let idf = model.vs.variables().get("idf").expect("idf variable exists").shallow_clone();
        model.set_idf(Vec::<f32>::try_from(&idf)?);
        Ok(model)
    }
}

/// A small deterministic RNG for shuffling (SplitMix64).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_vocabulary_words_are_those_never_seen_in_training() {
        let hashing = HashingConfig { bits: 16, max_ngram: 2 };
        let texts = ["cheap pills offer now", "meeting notes for monday", "cheap offer today"];
        let docs: Vec<Doc> = texts.iter().map(|t| LogReg::featurize(&hashing, t)).collect();
        let train: Vec<(&Doc, i64)> = docs.iter().zip([1, 0, 1]).collect();
        let params = Schedule {
            epochs: 2,
            batch_size: 2,
            learning_rate: 0.1,
            weight_decay: 0.0,
            seed: 1,
            patience: 2,
        };
        let (model, _) = LogReg::fit(hashing, &params, 2, &train, &train).expect("fits");
        assert_eq!(model.oov_rate("cheap meeting notes"), Some(0.0));
        assert_eq!(model.oov_rate("cheap zebra"), Some(0.5));
        assert_eq!(model.oov_rate("quantum zebra"), Some(1.0));
        assert_eq!(model.oov_rate("   "), None);
        for text in ["cheap meeting notes", "cheap zebra", "quantum zebra", "   "] {
            let (doc, oov) = model.featurize_with_oov(text);
            assert_eq!(
                (doc, oov),
                (LogReg::featurize(&model.hashing(), text), model.oov_rate(text)),
                "{text}"
            );
        }
    }
}
