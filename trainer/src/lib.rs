//! Training, tracking and the model registry for Driftwood.
//!
//! ```text
//!  snapshot version ──► train::train ──► split by id hash ──► logreg (tch) fit / evaluate
//!                            │                                        │
//!                            ├─► metastore: run, params, step metrics     ├─► artifacts: safetensors + card.json
//!                            └─► registry: model version ◄────────────┘   (reference profile for drift)
//!  registry::promote ──► alias + audit record ──► ModelPromoted (control topic)
//!  model::load ──► verified LoadedModel (what `serving` runs)
//!  RetrainRequested ──► retrain: candidate on latest data ──► gate on recent holdout ──► promote?
//! ```
//!
//! * [`features`] — hashed n-gram features (pure);
//! * [`logreg`] — the `logreg` family on libtorch;
//! * [`bilstm`] — the `bilstm` family: MiniLM's tokenizer, embedding, BiLSTM, mean pooling;
//! * [`minilm`] — the `minilm` family: the pretrained MiniLM-L6 BERT encoder, mean pooling,
//!   a classification head, optionally fine-tuning the top layers;
//! * [`card`] — the versioned model card;
//! * [`metrics`] — accuracy, macro P/R/F1, confusion matrix;
//! * [`registry`] — resolving and promoting model versions;
//! * [`schedule`] — epochs, batches, Adam and early stopping, shared by the families;
//! * [`family`] — the families behind one name: fit and load side by side;
//! * [`artifact`] — an artifact directory's card and (sealed) weights files;
//! * [`rows`] — a version's labelled rows and `argmax`, below every family;
//! * [`model`] — loading a registered version, verifying its artifacts;
//! * [`torchscript`] — modules exported from PyTorch, served by a documented contract;
//! * [`import`] — registering such a module as a tracked run with a card;
//! * [`train`] — the training job (a tracked run, then registration);
//! * [`tune`] — grid / random search: concurrent trials as child runs of one tuning run;
//! * [`retrain`] — the closed loop: retrain on request, gate, promote, report;
//! * [`lineage`] — prediction → model version → run → data version → raw version → spec.
//!
//! Architecture invariant: no HTTP here; `serving` calls [`model::load`] and owns the threads a
//! model runs on.

pub mod artifact;
pub mod bilstm;
pub mod card;
pub mod family;
pub mod features;
pub mod import;
pub mod lineage;
pub mod logreg;
pub mod metrics;
pub mod minilm;
pub mod model;
pub mod registry;
pub mod retrain;
pub mod rows;
pub mod schedule;
mod tensors;
pub mod torchscript;
pub mod train;
pub mod tune;

/// libtorch's intra-op threads for this process; 0 keeps its default (all cores).
pub fn set_threads(threads: usize) {
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
}

/// Errors of training and the registry. `Input`/`NotFound` are the user's; `Artifact` means a
/// model file is corrupt or does not match its registry entry (refused, never half-loaded);
/// `Store`, `Snapshot` and `Control` are the services behind; `Torch` is libtorch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("model artifact refused: {0}")]
    Artifact(String),
    /// The metadata store (runs, registry, audit) failed or refused.
    #[error("metadata store: {0}")]
    Store(#[from] metastore::Error),
    #[error(transparent)]
    Snapshot(#[from] stream::Error),
    #[error(transparent)]
    Control(#[from] ingest::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
