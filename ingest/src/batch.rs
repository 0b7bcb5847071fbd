//! Accumulating decoded records into Arrow RecordBatches of [`schemas::records::raw_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use schemas::records::{RawRecord, raw_schema};

/// Where a record came from; used for derived ids and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp (ms since epoch), used when the record has no `ts`.
    pub timestamp_ms: Option<i64>,
}

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

/// Where decoded rows go: a batch's builders, or a [`RowBuffer`].
pub trait RowSink {
    /// Appends a record given by its fields (`meta` as JSON text).
    fn push_fields(&mut self, r: Fields<'_>, at: Provenance);

    fn push(&mut self, r: &RawRecord, at: Provenance) {
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
}

/// Decoded rows in buffers kept from batch to batch, for a decoding thread whose rows are then
/// appended to a batch's builders ([`RawBatchBuilder::append_rows`]): unlike a builder of its
/// own, it needs no fresh memory (page faults) per batch.
#[derive(Debug, Default)]
pub struct RowBuffer {
    /// Every row's id, text, label, source and meta, back to back.
    strings: String,
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    /// Where the row's id, text, label, source and meta end in `strings`.
    ends: [usize; 5],
    /// Which of label, source and meta are present (bits 0, 1, 2).
    present: u8,
    ts: Option<i64>,
    at: Provenance,
}

impl RowBuffer {
    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.strings.clear();
        self.rows.clear();
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }
}

impl RowSink for RowBuffer {
    fn push_fields(&mut self, r: Fields<'_>, at: Provenance) {
        let mut ends = [0; 5];
        let mut present = 0;
        for (k, field) in [Some(r.id), Some(r.text), r.label, r.source, r.meta].into_iter().enumerate() {
            if let Some(value) = field {
                self.strings.push_str(value);
                if k >= 2 {
                    present |= 1 << (k - 2);
                }
            }
            ends[k] = self.strings.len();
        }
        self.rows.push(Row { ends, present, ts: r.ts, at });
    }
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

    /// Appends the rows of `buffer`.
    pub fn append_rows(&mut self, buffer: &RowBuffer) {
        let mut start = 0;
        for row in &buffer.rows {
            let mut field = |k: usize| {
                let value = &buffer.strings[start..row.ends[k]];
                start = row.ends[k];
                value
            };
            let (id, text, label, source, meta) = (field(0), field(1), field(2), field(3), field(4));
            let present = |bit: u8, value| (row.present & (1 << bit) != 0).then_some(value);
            let fields = Fields {
                id,
                text,
                label: present(0, label),
                source: present(1, source),
                ts: row.ts,
                meta: present(2, meta),
            };
            self.push_fields(fields, row.at);
        }
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

impl RowSink for RawBatchBuilder {
    fn push_fields(&mut self, r: Fields<'_>, at: Provenance) {
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
    fn appending_buffered_rows_equals_pushing_them() {
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
        let (mut head, mut tail) = (RawBatchBuilder::with_capacity(10, 64), RowBuffer::default());
        records.iter().enumerate().take(4).for_each(|(i, r)| head.push(r, at(i)));
        // The buffer's memory is kept, its rows are not.
        tail.push(&records[0], at(0));
        tail.clear();
        records.iter().enumerate().skip(4).for_each(|(i, r)| tail.push(r, at(i)));
        assert_eq!(tail.rows(), 6);
        head.append_rows(&tail);
        assert_eq!((head.rows(), head.bytes()), (whole.rows(), whole.bytes()));
        assert_eq!(head.finish(), whole.finish());
    }
}
