//! The labelled rows of a data version, as training, import and the retrain gate read them,
//! and the argmax every prediction ends in. Knows no family.

use arrow::array::{Array, StringArray};
use schemas::Split;
use schemas::config::TrainConfig;
use schemas::records::col;
use stream::store::{Manifest, SnapshotStore};

use crate::{Error, Result};

pub(crate) struct Row {
    pub(crate) text: String,
    pub(crate) label: String,
    pub(crate) split: Split,
}

/// A string column of a snapshot batch.
pub(crate) fn string_column(batch: &arrow::array::RecordBatch, name: &str) -> Result<StringArray> {
    let idx = batch.schema().index_of(name).map_err(|e| Error::Input(e.to_string()))?;
    batch
        .column(idx)
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::Input(format!("column {name} is not a string column")))
}

/// Reads the labelled rows of a version, batch by batch.
pub(crate) fn read_rows(
    snapshots: &SnapshotStore,
    manifest: &Manifest,
    params: &TrainConfig,
) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut unlabeled = 0;
    for batch in snapshots.read(manifest) {
        let batch = batch?;
        let column = |name| string_column(&batch, name);
        let (ids, texts, labels) = (column(col::ID)?, column(col::TEXT)?, column(col::LABEL)?);
        for i in 0..batch.num_rows() {
            if labels.is_null(i) || labels.value(i).is_empty() {
                unlabeled += 1;
                continue;
            }
            rows.push(Row {
                text: texts.value(i).to_string(),
                label: labels.value(i).to_string(),
                split: Split::of(ids.value(i), params.validation_fraction, params.test_fraction),
            });
        }
    }
    Ok((rows, unlabeled))
}

/// The index of the largest probability (the first of equals; 0 for none).
pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}
