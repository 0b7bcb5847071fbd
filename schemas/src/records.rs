//! Record types and their Arrow schemas.
//!
//! A raw record on `text.raw` is a UTF-8 JSON object `{"id"?, "text", "label"?, "source"?,
//! "ts"?, "meta"?}` or plain UTF-8 text. Once read it becomes a row of [`raw_schema`]; the
//! cleaning plan keeps that schema (only `text` changes), so a snapshot is a set of rows of
//! [`clean_schema`].

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Column names shared by the raw and clean schemas.
pub mod col {
    pub const ID: &str = "id";
    pub const TEXT: &str = "text";
    pub const LABEL: &str = "label";
    pub const SOURCE: &str = "source";
    pub const TS: &str = "ts";
    pub const META: &str = "meta";
    pub const PARTITION: &str = "kafka_partition";
    pub const OFFSET: &str = "kafka_offset";
}

/// Time zone of the `ts` column: an offset, so no time-zone database is needed to read it.
pub const TS_TZ: &str = "+00:00";

static RAW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
        Field::new(col::LABEL, DataType::Utf8, true),
        Field::new(col::SOURCE, DataType::Utf8, true),
        Field::new(col::TS, DataType::Timestamp(TimeUnit::Millisecond, Some(TS_TZ.into())), true),
        Field::new(col::META, DataType::Utf8, true),
        Field::new(col::PARTITION, DataType::Int32, false),
        Field::new(col::OFFSET, DataType::Int64, false),
    ]))
});

/// Schema of records read from `text.raw` (with their Kafka provenance).
pub fn raw_schema() -> SchemaRef {
    RAW_SCHEMA.clone()
}

/// Schema of cleaned records, as stored in snapshots: the raw schema with the cleaned text.
pub fn clean_schema() -> SchemaRef {
    RAW_SCHEMA.clone()
}

/// A record to publish or one read back; `ts` is milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// Late ground truth on `text.labels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub id: String,
    pub label: String,
}

impl LabelRecord {
    /// Decodes a label payload: a JSON object with non-empty `id` and `label` (strings, or
    /// integers taken as their decimal text).
    pub fn decode(value: Option<&[u8]>) -> Result<LabelRecord, (DeadReason, String)> {
        let value = value
            .filter(|v| !v.is_empty())
            .ok_or((DeadReason::EmptyValue, "record has no value".to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| (DeadReason::MalformedJson, format!("invalid JSON: {e}")))?;
        let obj =
            v.as_object().ok_or((DeadReason::NotAnObject, "a label must be a JSON object".to_string()))?;
        let field = |name: &str| match obj.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(_) => Err((DeadReason::BadField, format!("`{name}` must be a non-empty string"))),
            None => Err((DeadReason::BadField, format!("a label record needs `{name}`"))),
        };
        Ok(LabelRecord { id: field("id")?, label: field("label")? })
    }
}

/// Format version of [`ScoredRecord`] payloads.
pub const SCORED_FORMAT_VERSION: u32 = 1;

/// Column names of the scored dataset (predictions snapshotted from `text.scored`).
pub mod scored_col {
    pub const ID: &str = "id";
    pub const STATUS: &str = "status";
    pub const REASON: &str = "reason";
    pub const MODEL: &str = "model";
    pub const MODEL_VERSION: &str = "model_version";
    pub const LABEL: &str = "label";
    pub const TRUTH: &str = "truth";
    pub const CONFIDENCE: &str = "confidence";
    pub const PROBABILITIES: &str = "probabilities";
    pub const FEATURES: &str = "features";
    pub const RAW_PARTITION: &str = "raw_partition";
    pub const RAW_OFFSET: &str = "raw_offset";
    pub const SCORED_AT: &str = "scored_at";
    pub const LATENCY_US: &str = "latency_us";
}

static SCORED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use scored_col as c;
    Arc::new(Schema::new(vec![
        Field::new(c::ID, DataType::Utf8, false),
        Field::new(c::STATUS, DataType::Utf8, false),
        Field::new(c::REASON, DataType::Utf8, true),
        Field::new(c::MODEL, DataType::Utf8, false),
        Field::new(c::MODEL_VERSION, DataType::Int64, false),
        Field::new(c::LABEL, DataType::Utf8, true),
        Field::new(c::TRUTH, DataType::Utf8, true),
        Field::new(c::CONFIDENCE, DataType::Float64, true),
        Field::new(c::PROBABILITIES, DataType::Utf8, false),
        Field::new(c::FEATURES, DataType::Utf8, false),
        Field::new(c::RAW_PARTITION, DataType::Int32, false),
        Field::new(c::RAW_OFFSET, DataType::Int64, false),
        Field::new(c::SCORED_AT, DataType::Timestamp(TimeUnit::Millisecond, Some(TS_TZ.into())), false),
        Field::new(c::LATENCY_US, DataType::Int64, false),
    ]))
});

/// Schema of the scored dataset: one row per [`ScoredRecord`]; `probabilities` and `features`
/// are JSON objects (label → probability, feature → value), `confidence` the predicted label's
/// probability, `raw_partition`/`raw_offset` where the raw record was on `text.raw`.
pub fn scored_schema() -> SchemaRef {
    SCORED_SCHEMA.clone()
}

/// Whether the scorer produced a prediction for a raw record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreStatus {
    /// The cleaned text was scored.
    Scored,
    /// The cleaning plan dropped the record (e.g. empty after cleaning); `reason` says why.
    Skipped,
}

/// One record on `text.scored`, keyed by the raw record's id. Deterministic for a given raw
/// record and model version (apart from `scored_at` and `latency_us`), so consumers can dedupe
/// by `(id, model, model_version)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredRecord {
    pub v: u32,
    pub id: String,
    pub status: ScoreStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub model: String,
    pub model_version: u32,
    /// Predicted label; `None` when skipped.
    pub label: Option<String>,
    /// The ground-truth label the raw record carried, if any (for windowed accuracy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
    /// Probability per label, in the model's label order.
    pub probabilities: BTreeMap<String, f32>,
    /// Drift features of the cleaned text (name → value).
    pub features: BTreeMap<String, f64>,
    /// Where the raw record came from.
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch when scored.
    pub scored_at: i64,
    /// Time spent in the model for the batch this record was in, in microseconds.
    pub latency_us: u64,
}

/// Headers of a dead letter on `text.dead`; the value is the original bytes.
pub mod dead_letter_header {
    /// Machine-readable reason (one of [`super::DeadReason`]'s codes).
    pub const REASON: &str = "driftwood.reason";
    /// Human-readable detail.
    pub const DETAIL: &str = "driftwood.detail";
    pub const SOURCE_TOPIC: &str = "driftwood.source.topic";
    pub const SOURCE_PARTITION: &str = "driftwood.source.partition";
    pub const SOURCE_OFFSET: &str = "driftwood.source.offset";
}

/// Why a record could not become a raw record. Codes are stable: they are header values and
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// A record without a value (a tombstone).
    EmptyValue,
    InvalidUtf8,
    TooLarge,
    /// Starts like JSON (`{` or `[`) but does not parse.
    MalformedJson,
    /// Valid JSON, but not an object (array, number, string, ...).
    NotAnObject,
    MissingText,
    TextNotString,
    /// `id`, `label`, `source`, `ts` or `meta` has the wrong type.
    BadField,
    /// The text holds nothing but whitespace.
    BlankText,
    /// A valid record that the cleaning plan dropped (empty after cleaning, or outside the
    /// length limits); the value is the record as read, in JSON.
    Filtered,
    /// A valid record whose cleaned text is already in the dataset (the plan's `dedupe` step);
    /// the value is the record as read, in JSON.
    Duplicate,
}

impl DeadReason {
    pub const ALL: [DeadReason; 11] = [
        DeadReason::EmptyValue,
        DeadReason::InvalidUtf8,
        DeadReason::TooLarge,
        DeadReason::MalformedJson,
        DeadReason::NotAnObject,
        DeadReason::MissingText,
        DeadReason::TextNotString,
        DeadReason::BadField,
        DeadReason::BlankText,
        DeadReason::Filtered,
        DeadReason::Duplicate,
    ];

    pub fn code(self) -> &'static str {
        match self {
            DeadReason::EmptyValue => "empty_value",
            DeadReason::InvalidUtf8 => "invalid_utf8",
            DeadReason::TooLarge => "too_large",
            DeadReason::MalformedJson => "malformed_json",
            DeadReason::NotAnObject => "not_an_object",
            DeadReason::MissingText => "missing_text",
            DeadReason::TextNotString => "text_not_string",
            DeadReason::BadField => "bad_field",
            DeadReason::BlankText => "blank_text",
            DeadReason::Filtered => "filtered",
            DeadReason::Duplicate => "duplicate",
        }
    }

    pub fn from_code(code: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_reason_codes_round_trip() {
        for r in DeadReason::ALL {
            assert_eq!(DeadReason::from_code(r.code()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.code()));
        }
    }

    #[test]
    fn raw_record_json_omits_missing_fields() {
        let r =
            RawRecord { id: "a".into(), text: "hi".into(), label: None, source: None, ts: None, meta: None };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"id":"a","text":"hi"}"#);
    }

    #[test]
    fn raw_schema_nullability() {
        let s = raw_schema();
        assert!(!s.field_with_name(col::ID).unwrap().is_nullable());
        assert!(s.field_with_name(col::LABEL).unwrap().is_nullable());
    }
}
