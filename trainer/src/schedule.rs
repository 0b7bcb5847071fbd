//! How a family's training loop runs: epochs, mini-batches, the optimizer (Adam) and early
//! stopping — the same knobs for every family.

use schemas::config::TrainConfig;

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
