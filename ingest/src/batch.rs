//! Accumulating decoded records into Arrow RecordBatches of [`schemas::records::raw_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use schemas::records::{RawRecord, raw_schema};

use crate::decode::Provenance;

/// One record's columns, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub id: &'a str,
    pub text: &'a str,
    pub label: Option<&'a str>,
    pub source: Option<&'a str>,
    pub ts: Option<i64>,
    /// JSON text.
    pub meta: Option<&'a str>,
}

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
        Self::with_capacity(0, 0)
    }

    /// A builder with room for `rows` records of `bytes` payload (ids and texts) in all, so
    /// that a batch of that size is built without growing its buffers.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let strings = |bytes| StringBuilder::with_capacity(rows, bytes);
        RawBatchBuilder {
            id: strings(16 * rows),
            text: strings(bytes),
            label: strings(8 * rows),
            source: strings(0),
            ts: TimestampMillisecondBuilder::with_capacity(rows).with_timezone(schemas::records::TS_TZ),
            meta: strings(0),
            partition: Int32Builder::with_capacity(rows),
            offset: Int64Builder::with_capacity(rows),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn push(&mut self, r: &RawRecord, at: Provenance) {
        let meta = r.meta.as_ref().map(|m| m.to_string());
        let fields = Fields {
            id: &r.id,
            text: &r.text,
            label: r.label.as_deref(),
            source: r.source.as_deref(),
            ts: r.ts,
            meta: meta.as_deref(),
        };
        self.push_fields(fields, at);
    }

    /// Appends a record given by its fields (`meta` as JSON text).
    pub fn push_fields(&mut self, r: Fields<'_>, at: Provenance) {
        self.id.append_value(r.id);
        self.text.append_value(r.text);
        self.label.append_option(r.label);
        self.source.append_option(r.source);
        self.ts.append_option(r.ts);
        self.meta.append_option(r.meta);
        self.partition.append_value(at.partition);
        self.offset.append_value(at.offset);
        self.rows += 1;
        self.bytes += r.id.len() + r.text.len();
    }

    /// Appends the rows of a batch of the raw schema (one this kind of builder made).
    pub fn append_batch(&mut self, batch: &RecordBatch) {
        let strings = |i: usize| batch.column(i).as_string::<i32>();
        self.id.append_array(strings(0)).expect("offsets fit");
        self.text.append_array(strings(1)).expect("offsets fit");
        self.label.append_array(strings(2)).expect("offsets fit");
        self.source.append_array(strings(3)).expect("offsets fit");
        self.ts.append_array(batch.column(4).as_primitive());
        self.meta.append_array(strings(5)).expect("offsets fit");
        self.partition.append_array(batch.column(6).as_primitive());
        self.offset.append_array(batch.column(7).as_primitive());
        self.rows += batch.num_rows();
        self.bytes += strings(0).values().len() + strings(1).values().len();
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

    #[test]
    fn appending_a_batch_equals_pushing_its_rows() {
        let records: Vec<RawRecord> = (0..10)
            .map(|i| RawRecord {
                id: format!("r{i}"),
                text: "é".repeat(i),
                label: (i % 2 == 0).then(|| "spam".to_string()),
                source: (i % 3 == 0).then(|| "s".to_string()),
                ts: (i % 4 != 0).then_some(i as i64),
                meta: (i == 5).then(|| serde_json::json!({"k": i})),
            })
            .collect();
        let at = |i: usize| Provenance { partition: i as i32 % 2, offset: i as i64, timestamp_ms: None };
        let mut whole = RawBatchBuilder::new();
        records.iter().enumerate().for_each(|(i, r)| whole.push(r, at(i)));
        let (mut head, mut tail) = (RawBatchBuilder::with_capacity(10, 64), RawBatchBuilder::new());
        records.iter().enumerate().take(4).for_each(|(i, r)| head.push(r, at(i)));
        records.iter().enumerate().skip(4).for_each(|(i, r)| tail.push(r, at(i)));
        head.append_batch(&tail.finish());
        assert_eq!((head.rows(), head.bytes()), (whole.rows(), whole.bytes()));
        assert_eq!(head.finish(), whole.finish());
    }
}
