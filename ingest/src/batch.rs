//! Accumulating decoded records into Arrow RecordBatches of [`schemas::records::raw_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use schemas::records::{RawRecord, raw_schema};

use crate::decode::Provenance;

/// Column builders for one micro-batch.
pub struct RawBatchBuilder {
    id: StringBuilder,
    text: StringBuilder,
    label: StringBuilder,
    source: StringBuilder,
    ts: TimestampMillisecondBuilder,
    meta: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    rows: usize,
    bytes: usize,
}

impl Default for RawBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RawBatchBuilder {
    pub fn new() -> Self {
        RawBatchBuilder {
            id: StringBuilder::new(),
            text: StringBuilder::new(),
            label: StringBuilder::new(),
            source: StringBuilder::new(),
            ts: TimestampMillisecondBuilder::new().with_timezone(schemas::records::TS_TZ),
            meta: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn push(&mut self, r: &RawRecord, at: Provenance) {
        self.id.append_value(&r.id);
        self.text.append_value(&r.text);
        self.label.append_option(r.label.as_deref());
        self.source.append_option(r.source.as_deref());
        self.ts.append_option(r.ts);
        self.meta.append_option(r.meta.as_ref().map(|m| m.to_string()));
        self.partition.append_value(at.partition);
        self.offset.append_value(at.offset);
        self.rows += 1;
        self.bytes += r.id.len() + r.text.len();
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate payload bytes (ids and texts) held so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Finishes the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.label.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.meta.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(raw_schema(), columns).expect("builders match the raw schema")
    }
}

/// Builds one batch from records (tests, file sources).
pub fn batch_of(records: &[RawRecord]) -> RecordBatch {
    let mut b = RawBatchBuilder::new();
    for (i, r) in records.iter().enumerate() {
        b.push(r, Provenance { partition: 0, offset: i as i64, timestamp_ms: None });
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;

    #[test]
    fn builds_raw_schema_batches() {
        let mut b = RawBatchBuilder::new();
        let r = RawRecord {
            id: "a".into(),
            text: "hello".into(),
            label: Some("ham".into()),
            source: None,
            ts: Some(0),
            meta: Some(serde_json::json!({"k": "v"})),
        };
        b.push(&r, Provenance { partition: 1, offset: 9, timestamp_ms: None });
        assert_eq!((b.rows(), b.bytes()), (1, 6));
        let batch = b.finish();
        assert_eq!(b.rows(), 0);
        let expected = [
            "+----+-------+-------+--------+----------------------+-----------+-----------------+--------------+",
            "| id | text  | label | source | ts                   | meta      | kafka_partition | kafka_offset |",
            "+----+-------+-------+--------+----------------------+-----------+-----------------+--------------+",
            "| a  | hello | ham   |        | 1970-01-01T00:00:00Z | {\"k\":\"v\"} | 1               | 9            |",
            "+----+-------+-------+--------+----------------------+-----------+-----------------+--------------+",
        ];
        assert_eq!(pretty_format_batches(&[batch]).unwrap().to_string(), expected.join("\n"));
    }
}
