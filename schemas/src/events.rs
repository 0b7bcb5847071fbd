//! Control events: typed, versioned JSON on the `<prefix>.control` topic.
//!
//! Every message is an envelope `{schema, schema_version, event_id, emitted_at, type,
//! ...fields}`. Readers accept any `schema_version` up to [`CONTROL_VERSION`] and skip events of unknown `type`
//! (see [`ControlMessage::decode`]), so producers can be upgraded before consumers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Schema id of control messages.
pub const CONTROL_SCHEMA: &str = "driftwood.control";
/// Current format version of control messages.
pub const CONTROL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ControlEvent {
    SnapshotCommitted {
        dataset: String,
        version: String,
        parent: Option<String>,
        /// Rows added by this version.
        rows_added: u64,
        /// Rows in the whole version.
        rows: u64,
    },
    RunFinished {
        run_id: String,
        experiment: String,
        status: String,
        metrics: BTreeMap<String, f64>,
    },
    ModelPromoted {
        model: String,
        version: u32,
        alias: String,
        previous: Option<u32>,
        spec_hash: String,
    },
    DriftDetected {
        model: String,
        version: u32,
        feature: String,
        statistic: String,
        value: f64,
        threshold: f64,
        window: u64,
    },
    RetrainRequested {
        model: String,
        version: u32,
        reason: String,
    },
    /// The outcome of a retrain request: a candidate promoted, or declined with the reason.
    RetrainFinished {
        model: String,
        /// The production version the request was about.
        production: u32,
        candidate: Option<u32>,
        promoted: bool,
        reason: String,
        metrics: BTreeMap<String, f64>,
    },
}

impl ControlEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            ControlEvent::SnapshotCommitted { .. } => "SnapshotCommitted",
            ControlEvent::RunFinished { .. } => "RunFinished",
            ControlEvent::ModelPromoted { .. } => "ModelPromoted",
            ControlEvent::DriftDetected { .. } => "DriftDetected",
            ControlEvent::RetrainRequested { .. } => "RetrainRequested",
            ControlEvent::RetrainFinished { .. } => "RetrainFinished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    pub schema: String,
    pub schema_version: u32,
    pub event_id: String,
    pub emitted_at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: ControlEvent,
}

/// What a reader makes of a control payload.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Event(Box<ControlMessage>),
    /// A well-formed envelope from a newer producer (unknown type or version): skip it.
    Unknown {
        schema: String,
        version: u32,
        kind: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("not a control message: {0}")]
pub struct DecodeError(String);

impl ControlMessage {
    pub fn new(event: ControlEvent, now: DateTime<Utc>) -> ControlMessage {
        let kind = event.kind();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        ControlMessage {
            schema: CONTROL_SCHEMA.into(),
            schema_version: CONTROL_VERSION,
            event_id: crate::sha256_hex(format!("{kind}:{nanos}:{event:?}").as_bytes())[..24].into(),
            emitted_at: now,
            event,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("control messages always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
        #[derive(Deserialize)]
        struct Envelope {
            schema: String,
            schema_version: u32,
            #[serde(rename = "type")]
            kind: String,
        }
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
        if env.schema != CONTROL_SCHEMA {
            return Err(DecodeError(format!("schema is `{}`", env.schema)));
        }
        if env.schema_version > CONTROL_VERSION {
            return Ok(Decoded::Unknown { schema: env.schema, version: env.schema_version, kind: env.kind });
        }
        match serde_json::from_slice::<ControlMessage>(bytes) {
            Ok(m) => Ok(Decoded::Event(Box::new(m))),
            Err(_) if !KNOWN_KINDS.contains(&env.kind.as_str()) => {
                Ok(Decoded::Unknown { schema: env.schema, version: env.schema_version, kind: env.kind })
            }
            Err(e) => Err(DecodeError(e.to_string())),
        }
    }
}

const KNOWN_KINDS: [&str; 6] = [
    "SnapshotCommitted",
    "RunFinished",
    "ModelPromoted",
    "DriftDetected",
    "RetrainRequested",
    "RetrainFinished",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = ControlMessage::new(
            ControlEvent::ModelPromoted {
                model: "spam".into(),
                version: 2,
                alias: "production".into(),
                previous: Some(1),
                spec_hash: "abc".into(),
            },
            Utc::now(),
        );
        let bytes = m.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""type":"ModelPromoted""#), "{text}");
        assert_eq!(ControlMessage::decode(&bytes).unwrap(), Decoded::Event(Box::new(m)));
    }

    #[test]
    fn newer_events_are_skipped_not_errors() {
        let future = br#"{"schema":"driftwood.control","schema_version":1,"event_id":"x","emitted_at":"2026-01-01T00:00:00Z","type":"Teleported"}"#;
        assert!(matches!(ControlMessage::decode(future), Ok(Decoded::Unknown { .. })));
        let newer = br#"{"schema":"driftwood.control","schema_version":7,"type":"ModelPromoted"}"#;
        assert!(matches!(ControlMessage::decode(newer), Ok(Decoded::Unknown { version: 7, .. })));
        assert!(ControlMessage::decode(b"{}").is_err());
        let broken = br#"{"schema":"driftwood.control","schema_version":1,"type":"ModelPromoted"}"#;
        assert!(ControlMessage::decode(broken).is_err());
    }
}
