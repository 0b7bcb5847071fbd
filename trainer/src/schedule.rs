//! How a family's training loop runs: epochs, mini-batches, the optimizer (Adam) and early
//! stopping — the same knobs for every family.

use schemas::config::TrainConfig;
use tch::Tensor;
use tch::nn::{self, OptimizerConfig};

use crate::Result;
use crate::logreg::SplitMix;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Stop when validation loss has not improved for this many epochs.
    pub patience: usize,
}

impl From<&TrainConfig> for Schedule {
    fn from(c: &TrainConfig) -> Schedule {
        Schedule {
            epochs: c.epochs,
            batch_size: c.batch_size,
            learning_rate: c.learning_rate,
            weight_decay: c.weight_decay,
            seed: c.seed,
            patience: 2,
        }
    }
}

impl Schedule {
    /// The training loop every family runs over `rows` training examples: each epoch shuffles
    /// them (seeded), takes an Adam step on `batch_loss` of each mini-batch of row indices,
    /// then asks `validation_loss` (`None`: nothing to stop early on). Training stops after
    /// `patience` epochs that do not improve on the best loss by more than `min_delta`, and the
    /// weights of the best epoch are restored. Returns the validation loss per epoch.
    pub(crate) fn run(
        &self,
        vs: &nn::VarStore,
        rows: usize,
        min_delta: f64,
        mut batch_loss: impl FnMut(&[usize]) -> Tensor,
        mut validation_loss: impl FnMut() -> Option<f64>,
    ) -> Result<Vec<f64>> {
        let mut opt =
            nn::Adam { wd: self.weight_decay, ..Default::default() }.build(vs, self.learning_rate)?;
        let mut rng = SplitMix(self.seed);
        let mut order: Vec<usize> = (0..rows).collect();
        let (mut history, mut best, mut since_best) = (Vec::new(), f64::INFINITY, 0);
        let mut best_weights: Option<Vec<u8>> = None;
        for _ in 0..self.epochs.max(1) {
            rng.shuffle(&mut order);
            for chunk in order.chunks(self.batch_size.max(1)) {
                opt.backward_step(&batch_loss(chunk));
            }
            let Some(loss) = validation_loss() else { continue };
            history.push(loss);
            if loss < best - min_delta {
                (best, since_best) = (loss, 0);
                best_weights = Some(crate::tensors::to_safetensors(vs)?);
            } else {
                since_best += 1;
                if since_best >= self.patience {
                    break;
                }
            }
        }
        if let Some(w) = best_weights {
            crate::tensors::load_safetensors(vs, &w)?;
        }
        Ok(history)
    }
}
