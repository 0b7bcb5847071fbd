//! Turning one Kafka record into a [`RawRecord`] or a [`DeadReason`] — pure, no I/O.

use schemas::records::{DeadReason, RawRecord};
use serde_json::{Map, Value};

pub use crate::batch::Provenance;
use crate::batch::{Fields, RowSink};
use crate::fastjson;

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
    let fallback = || id_from_key(key, at.partition, at.offset);

    let first = text.trim_start().chars().next();
    let mut record = if matches!(first, Some('{') | Some('[')) {
        let parsed: Value = serde_json::from_str(text)
            .map_err(|e| reject(DeadReason::MalformedJson, format!("invalid JSON: {e}")))?;
        match parsed {
            Value::Object(obj) => from_object(obj, fallback())?,
            other => {
                return Err(reject(
                    DeadReason::NotAnObject,
                    format!("JSON value is {}, expected an object", kind(&other)),
                ));
            }
        }
    } else {
        RawRecord { id: fallback(), text: text.to_string(), label: None, source: None, ts: None, meta: None }
    };
    if record.text.trim().is_empty() {
        return Err(reject(DeadReason::BlankText, "text is empty or only whitespace"));
    }
    if record.ts.is_none() {
        record.ts = at.timestamp_ms;
    }
    Ok(record)
}

/// Decodes records straight into a batch's builders (or a row buffer): the usual JSON shape in one pass
/// ([`fastjson`]), everything else through [`decode`], with the same result.
#[derive(Debug, Default)]
pub struct Decoder {
    json: fastjson::Parser,
    derived_id: String,
}

impl Decoder {
    /// Appends the record to `builder`, or says why it is dead.
    pub fn decode_into(
        &mut self,
        builder: &mut impl RowSink,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        at: Provenance,
        max_bytes: usize,
    ) -> Result<(), Rejection> {
        let json = value.filter(|v| v.len() <= max_bytes).and_then(|v| self.json.parse(v));
        let Some(f) = json else {
            let record = decode(key, value, at, max_bytes)?;
            builder.push(&record, at);
            return Ok(());
        };
        let id = match f.id {
            Some(id) => id,
            None => match key_id(key) {
                Some(k) => k,
                None => {
                    write_derived_id(&mut self.derived_id, at.partition, at.offset);
                    &self.derived_id
                }
            },
        };
        let ts = f.ts.or(at.timestamp_ms);
        let fields = Fields { id, text: f.text, label: f.label, source: f.source, ts, meta: None };
        builder.push_fields(fields, at);
        Ok(())
    }
}

/// A non-empty UTF-8 message key: a record's id when its value names none.
fn key_id(key: Option<&[u8]>) -> Option<&str> {
    key.filter(|k| !k.is_empty()).and_then(|k| std::str::from_utf8(k).ok())
}

/// The id of a record whose value names none — its message key, else `p<partition>-o<offset>`
/// — the one rule for every reader (the snapshot job, the scorer, dead letters).
pub fn id_from_key(key: Option<&[u8]>, partition: i32, offset: i64) -> String {
    match key_id(key) {
        Some(k) => k.to_string(),
        None => {
            let mut id = String::new();
            write_derived_id(&mut id, partition, offset);
            id
        }
    }
}

/// Replaces `out` with the derived id `p<partition>-o<offset>` (no allocation once it has room).
fn write_derived_id(out: &mut String, partition: i32, offset: i64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "p{partition}-o{offset}");
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

/// How a JSON value is named in refusals (`a number`, `an array`, ...).
pub fn kind(v: &Value) -> &'static str {
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

    #[test]
    fn the_id_is_the_key_else_partition_and_offset() {
        assert_eq!(id_from_key(Some(b"abc"), 3, 17), "abc");
        for key in [None, Some(&b""[..]), Some(&b"\xff\xfe"[..])] {
            assert_eq!(id_from_key(key, 3, 17), "p3-o17", "{key:?}");
        }
        let mut buf = String::from("stale and longer");
        write_derived_id(&mut buf, 0, 5);
        assert_eq!(buf, "p0-o5");
    }
    use crate::batch::{RawBatchBuilder, RowBuffer};

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

    /// A small deterministic generator (xorshift64*), enough for varied inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    /// A text mixing what escaping and trimming treat specially.
    fn text(rng: &mut Rng) -> String {
        let pieces = [
            "a",
            "Hello ",
            "x\ny",
            "\"",
            "\\",
            "/",
            "\t",
            "\r\n",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "é",
            "e\u{301}",
            "😀",
            "\u{2028}",
            "\u{a0}",
            "\u{feff}",
            "مرحبا",
            " ",
            "{",
            "}",
            ":",
            ",",
            "null",
            "12",
        ];
        (0..rng.below(40)).map(|_| *rng.pick(&pieces)).collect()
    }

    /// JSON for a string: serde_json's escaping, or Python's `ensure_ascii` (every non-ASCII
    /// character as `\uXXXX`, surrogate pairs beyond the BMP).
    fn json_string(rng: &mut Rng, s: &str) -> String {
        let plain = serde_json::to_string(s).unwrap();
        if rng.below(2) == 0 {
            return plain;
        }
        let mut out = String::new();
        for c in plain.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out
    }

    /// A record-like JSON object, often malformed.
    fn record(rng: &mut Rng) -> Vec<u8> {
        let mut fields: Vec<String> = Vec::new();
        let t = text(rng);
        let (id, label) = (format!("id-{}", rng.below(1000)), *rng.pick(&["spam", "ham", "é"]));
        let (text_json, id_json, label_json) =
            (json_string(rng, &t), json_string(rng, &id), json_string(rng, label));
        let extra_json = json_string(rng, &t);
        let values: Vec<(&str, String)> = vec![
            ("text", text_json),
            ("text", "null".into()),
            ("text", "5".into()),
            ("id", id_json),
            ("id", "\"\"".into()),
            ("id", "42".into()),
            ("id", "null".into()),
            ("label", label_json),
            ("label", "null".into()),
            ("label", "1.5".into()),
            ("source", "\"s\"".into()),
            ("source", "null".into()),
            ("ts", "1700000000000".into()),
            ("ts", "-5".into()),
            ("ts", "\"2020-01-01T00:00:00Z\"".into()),
            ("ts", "1.0".into()),
            ("ts", "99999999999999999999".into()),
            ("meta", "null".into()),
            ("meta", "{\"k\": [1, \"v\"]}".into()),
            ("extra", "true".into()),
            ("extra", "-0".into()),
            ("extra", "[1]".into()),
            ("extra", extra_json),
            ("te\\u0078t", "\"escaped key\"".into()),
        ];
        let n = rng.below(4);
        let text_at = if rng.below(5) == 0 { usize::MAX } else { rng.below(n + 1) };
        for f in 0..=n {
            // A good text somewhere in most records; other fields mostly valid.
            let (k, v) = if f == text_at {
                &values[0]
            } else if rng.below(3) > 0 {
                &values[*rng.pick(&[3, 7, 8, 10, 12, 17, 19])]
            } else {
                rng.pick(&values)
            };
            let ws = *rng.pick(&["", "", "", "", " ", " ", "\n", "\t "]);
            fields.push(format!("{ws}\"{k}\"{ws}:{ws}{v}"));
        }
        let mut out = format!(
            "{}{{{}}}{}",
            rng.pick(&["", "", " ", "\u{a0}"]),
            fields.join(","),
            rng.pick(&["", "", " ", "\n", " x"])
        )
        .into_bytes();
        // Now and then a byte is dropped, changed or doubled.
        for _ in 0..rng.below(5).saturating_sub(3) {
            if out.is_empty() {
                break;
            }
            let at = rng.below(out.len());
            match rng.below(3) {
                0 => drop(out.remove(at)),
                1 => out[at] = *rng.pick(b"\"\\{}:,u0 \x01\xff"),
                _ => out.insert(at, out[at]),
            }
        }
        out
    }

    #[test]
    fn decode_into_gives_what_decode_gives() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoder = Decoder::default();
        let (mut fast, mut slow) = (RawBatchBuilder::new(), RawBatchBuilder::new());
        // The same records through a row buffer, as a second decoding thread takes them.
        let mut buffered = RowBuffer::default();
        let (mut taken, mut dead, mut one_pass) = (0, 0, 0);
        let mut parser = fastjson::Parser::default();
        for i in 0..30_000 {
            let value = record(&mut rng);
            let key = [None, Some(&b"k"[..]), Some(&b""[..])][i % 3];
            let at = Provenance { partition: 1, offset: i as i64, timestamp_ms: (i % 2 == 0).then_some(7) };
            let expected = decode(key, Some(&value), at, 4096);
            one_pass += parser.parse(&value).is_some() as usize;
            let got = decoder.decode_into(&mut fast, key, Some(&value), at, 4096);
            let via_buffer = decoder.decode_into(&mut buffered, key, Some(&value), at, 4096);
            assert_eq!(got, via_buffer);
            match (&expected, &got) {
                (Ok(record), Ok(())) => {
                    slow.push(record, at);
                    taken += 1;
                }
                (Err(e), Err(g)) => {
                    assert_eq!(e, g, "{}", String::from_utf8_lossy(&value));
                    dead += 1;
                }
                _ => panic!("{}: decode {expected:?}, decode_into {got:?}", String::from_utf8_lossy(&value)),
            }
            assert_eq!(fast.rows(), slow.rows(), "{}", String::from_utf8_lossy(&value));
        }
        let mut from_buffer = RawBatchBuilder::new();
        from_buffer.append_rows(&buffered);
        let expected = slow.finish();
        assert_eq!(fast.finish(), expected);
        assert_eq!(from_buffer.finish(), expected);
        // Both outcomes are well represented.
        assert!(
            taken > 5_000 && dead > 5_000 && one_pass > 3_000,
            "{taken} taken ({one_pass} in one pass), {dead} dead"
        );
    }

    #[test]
    fn decode_into_reads_the_corpus_in_one_pass_as_decode_does() {
        use crate::source::{CORPUS_PERIOD_1, CORPUS_PERIOD_2, corpus};
        let Ok(dir) = std::env::var("DRIFTWOOD_CORPUS_DIR") else { return };
        let groups: Vec<&str> = CORPUS_PERIOD_1.iter().chain(CORPUS_PERIOD_2).copied().collect();
        let records = corpus(std::path::Path::new(&dir), &groups).unwrap();
        let mut rng = Rng(7);
        let (mut parser, mut decoder) = (fastjson::Parser::default(), Decoder::default());
        let (mut fast, mut slow) = (RawBatchBuilder::new(), RawBatchBuilder::new());
        for (i, r) in records.iter().enumerate() {
            // As Python's json.dumps (ASCII only) or serde_json write it.
            let value = format!(
                r#"{{"id": {}, "text": {}, "label": {}}}"#,
                json_string(&mut rng, &r.id),
                json_string(&mut rng, &r.text),
                json_string(&mut rng, r.label.as_deref().unwrap())
            );
            let at = Provenance { partition: 0, offset: i as i64, timestamp_ms: Some(1) };
            assert!(parser.parse(value.as_bytes()).is_some(), "{value}");
            decoder.decode_into(&mut fast, None, Some(value.as_bytes()), at, usize::MAX).unwrap();
            slow.push(&decode(None, Some(value.as_bytes()), at, usize::MAX).unwrap(), at);
        }
        assert!(records.len() > 5000, "{} corpus texts", records.len());
        assert_eq!(fast.finish(), slow.finish());
    }
}
