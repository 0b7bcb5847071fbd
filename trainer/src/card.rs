//! The model card: everything needed to load, serve and monitor a model version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use drift::profile::ReferenceProfile;
use serde::{Deserialize, Serialize};

use crate::features::HashingConfig;
use crate::metrics::Evaluation;

/// Format version of model cards.
pub const CARD_FORMAT: u32 = 1;

/// File names inside an artifact directory.
pub const CARD_FILE: &str = "card.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Which data a model was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    pub dataset: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format_version: u32,
    /// Model family.
    pub family: schemas::Family,
    /// Class labels, in output order.
    pub labels: Vec<String>,
    /// Training parameters.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Feature hashing of `logreg`.
    pub hashing: Option<HashingConfig>,
    /// Hash of the cleaning spec the training data was cleaned with; the server refuses to
    /// run this model with any other plan.
    pub spec_hash: String,
    pub data: DataRef,
    pub run_id: String,
    /// Final metrics (`test_accuracy`, ...).
    pub metrics: BTreeMap<String, f64>,
    pub evaluation: Option<Evaluation>,
    /// Reference distributions for the drift monitor.
    pub reference: ReferenceProfile,
    /// SHA-256 of the weights file.
    pub weights_sha256: String,
    pub created_at: DateTime<Utc>,
}
