//! Turning one Kafka record into a [`RawRecord`] or a [`DeadReason`] — pure, no I/O.

use schemas::records::{DeadReason, RawRecord};
use serde_json::{Map, Value};

/// Where a record came from; used for derived ids and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp (ms since epoch), used when the record has no `ts`.
    pub timestamp_ms: Option<i64>,
}

/// A record that cannot be read, with a stable reason code and a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: DeadReason,
    pub detail: String,
}

fn reject(reason: DeadReason, detail: impl Into<String>) -> Rejection {
    Rejection { reason, detail: detail.into() }
}

/// Decodes a Kafka record's key and value.
///
/// JSON objects give their own fields; plain text takes its id from the key, else from
/// `p<partition>-o<offset>`. The Kafka timestamp fills a missing `ts`.
pub fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    at: Provenance,
    max_bytes: usize,
) -> Result<RawRecord, Rejection> {
    let value = match value {
        None => return Err(reject(DeadReason::EmptyValue, "record has no value")),
        Some([]) => return Err(reject(DeadReason::EmptyValue, "record value is empty")),
        Some(v) => v,
    };
    if value.len() > max_bytes {
        return Err(reject(
            DeadReason::TooLarge,
            format!("value is {} bytes, limit is {max_bytes}", value.len()),
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| reject(DeadReason::InvalidUtf8, format!("value is not UTF-8: {e}")))?;
    let key_id = key.filter(|k| !k.is_empty()).and_then(|k| std::str::from_utf8(k).ok()).map(str::to_string);
    let derived_id = || format!("p{}-o{}", at.partition, at.offset);

    let first = text.trim_start().chars().next();
    let mut record = if matches!(first, Some('{') | Some('[')) {
        let parsed: Value = serde_json::from_str(text)
            .map_err(|e| reject(DeadReason::MalformedJson, format!("invalid JSON: {e}")))?;
        match parsed {
            Value::Object(obj) => from_object(obj, key_id.unwrap_or_else(derived_id))?,
            other => {
                return Err(reject(
                    DeadReason::NotAnObject,
                    format!("JSON value is {}, expected an object", kind(&other)),
                ));
            }
        }
    } else {
        RawRecord {
            id: key_id.unwrap_or_else(derived_id),
            text: text.to_string(),
            label: None,
            source: None,
            ts: None,
            meta: None,
        }
    };
    if record.text.trim().is_empty() {
        return Err(reject(DeadReason::BlankText, "text is empty or only whitespace"));
    }
    if record.ts.is_none() {
        record.ts = at.timestamp_ms;
    }
    Ok(record)
}

fn from_object(mut obj: Map<String, Value>, fallback_id: String) -> Result<RawRecord, Rejection> {
    let text = match obj.remove("text") {
        None | Some(Value::Null) => {
            return Err(reject(DeadReason::MissingText, "JSON object has no `text` field"));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(reject(
                DeadReason::TextNotString,
                format!("`text` is {}, expected a string", kind(&other)),
            ));
        }
    };
    let id = match scalar_string(&mut obj, "id")? {
        Some(id) if id.is_empty() => return Err(reject(DeadReason::BadField, "`id` is empty")),
        Some(id) => id,
        None => fallback_id,
    };
    let label = scalar_string(&mut obj, "label")?;
    let source = match obj.remove("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(reject(DeadReason::BadField, format!("`source` is {}", kind(&other))));
        }
    };
    let ts = match obj.remove("ts") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            reject(DeadReason::BadField, "`ts` must be integer milliseconds since the epoch")
        })?),
        Some(Value::String(s)) => Some(
            chrono::DateTime::parse_from_rfc3339(&s)
                .map_err(|e| reject(DeadReason::BadField, format!("`ts` is not RFC 3339: {e}")))?
                .timestamp_millis(),
        ),
        Some(other) => {
            return Err(reject(DeadReason::BadField, format!("`ts` is {}", kind(&other))));
        }
    };
    let meta = match obj.remove("meta") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => {
            return Err(reject(
                DeadReason::BadField,
                format!("`meta` is {}, expected an object", kind(&other)),
            ));
        }
    };
    Ok(RawRecord { id, text, label, source, ts, meta })
}

/// A string field that may also be given as an integer (ids and labels often are).
fn scalar_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => {
            Err(reject(DeadReason::BadField, format!("`{field}` is {}, expected a string", kind(&other))))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Provenance = Provenance { partition: 2, offset: 17, timestamp_ms: Some(1000) };

    fn check(key: Option<&str>, value: &[u8], expected: Result<(&str, &str), DeadReason>) {
        let got = decode(key.map(str::as_bytes), Some(value), AT, 64);
        match (got, expected) {
            (Ok(r), Ok((id, text))) => assert_eq!((r.id.as_str(), r.text.as_str()), (id, text)),
            (Err(rej), Err(reason)) => assert_eq!(rej.reason, reason, "{}", rej.detail),
            (got, expected) => panic!("{value:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn valid_records() {
        check(None, b"plain text", Ok(("p2-o17", "plain text")));
        check(Some("k1"), b"plain text", Ok(("k1", "plain text")));
        check(Some("k1"), br#"{"text":"hi"}"#, Ok(("k1", "hi")));
        check(Some("k1"), br#"{"id":"j1","text":"hi"}"#, Ok(("j1", "hi")));
        check(None, br#"{"id":7,"text":"hi","label":1}"#, Ok(("7", "hi")));
        check(None, "héllo 👋".as_bytes(), Ok(("p2-o17", "héllo 👋")));
        check(None, b"42", Ok(("p2-o17", "42")));
    }

    #[test]
    fn fields_are_read() {
        let v = br#"{"id":"a","text":"t","label":"spam","source":"s","ts":"2020-01-01T00:00:00Z","meta":{"k":1}}"#;
        let r = decode(None, Some(v), AT, 1024).unwrap();
        assert_eq!(r.label.as_deref(), Some("spam"));
        assert_eq!(r.source.as_deref(), Some("s"));
        assert_eq!(r.ts, Some(1_577_836_800_000));
        assert_eq!(r.meta, Some(serde_json::json!({"k": 1})));
        let r = decode(None, Some(br#"{"text":"t"}"#), AT, 1024).unwrap();
        assert_eq!(r.ts, Some(1000), "kafka timestamp fills a missing ts");
    }

    #[test]
    fn every_kind_of_bad_input_has_its_reason() {
        assert_eq!(decode(None, None, AT, 64).unwrap_err().reason, DeadReason::EmptyValue);
        check(None, b"", Err(DeadReason::EmptyValue));
        check(None, &[0x66, 0xff, 0xfe], Err(DeadReason::InvalidUtf8));
        check(None, &[b'a'; 65], Err(DeadReason::TooLarge));
        check(None, b"{\"text\": ", Err(DeadReason::MalformedJson));
        check(None, b"[1,2]", Err(DeadReason::NotAnObject));
        check(None, br#"{"id":"x"}"#, Err(DeadReason::MissingText));
        check(None, br#"{"text":null}"#, Err(DeadReason::MissingText));
        check(None, br#"{"text":5}"#, Err(DeadReason::TextNotString));
        check(None, br#"{"text":"t","id":[1]}"#, Err(DeadReason::BadField));
        check(None, br#"{"text":"t","id":""}"#, Err(DeadReason::BadField));
        check(None, br#"{"text":"t","ts":"yesterday"}"#, Err(DeadReason::BadField));
        check(None, br#"{"text":"t","meta":"m"}"#, Err(DeadReason::BadField));
        check(None, br#"{"text":"t","label":1.5}"#, Err(DeadReason::BadField));
        check(None, b"   \n\t ", Err(DeadReason::BlankText));
        check(None, br#"{"text":"  "}"#, Err(DeadReason::BlankText));
    }
}
