//! Shared vocabulary of Driftwood: what flows between the crates, with no I/O.
//!
//! ```text
//!  producers ─► text.raw ─► [ingest] RawRecord ─► RecordBatch(raw_schema) ─► [stream] clean plan
//!                                                                            │
//!        ScoredRecord ◄── [serving] ◄── model ◄── [trainer] ◄── snapshot ┘
//!             │
//!             └─► [drift] ─► ControlEvent (DriftDetected, RetrainRequested) ─► control topic
//!                                      [trainer] retrain, gate, promote ◄─────────┘
//! ```
//!
//! * [`records`] — the Arrow schemas of raw and cleaned records, and the JSON payloads on the
//!   scored, labels and dead-letter topics;
//! * [`events`] — typed, versioned control events (the `control` topic);
//! * [`family`] — the model families' names;
//! * [`metric_names`] — every Prometheus metric name;
//! * [`topics`] — topic names derived from one configurable prefix;
//! * [`auth`] — roles, the verified principal and the authentication interface all APIs share;
//! * [`config`] — the one configuration type: TOML + `DRIFTWOOD_*` overrides, validated without I/O.
//!
//! Architecture invariant: this crate depends on no other workspace crate and performs no I/O
//! (no files, no network, no environment reads — callers pass those in).

pub mod auth;
pub mod config;
pub mod events;
pub mod family;
pub mod metric_names;
pub mod records;
pub mod topics;

pub use config::Config;
pub use family::Family;
pub use topics::Topics;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`: the one content hash used for object names, spec hashes and ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stable 64-bit hash of an id, used for deterministic train/validation/test splits.
///
/// The first 8 bytes of SHA-256, so the split is identical on every machine and in every release.
pub fn id_hash(id: &str) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Which split a record id belongs to: a fixed fraction by hash of the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// Assigns `id` to a split: `test_fraction` of ids to test, `validation_fraction` to
    /// validation, the rest to train. Fractions are clamped to `[0, 1]`.
    pub fn of(id: &str, validation_fraction: f64, test_fraction: f64) -> Split {
        let u = (id_hash(id) >> 11) as f64 / (1u64 << 53) as f64;
        let test = test_fraction.clamp(0.0, 1.0);
        let val = validation_fraction.clamp(0.0, 1.0 - test);
        if u < test {
            Split::Test
        } else if u < test + val {
            Split::Validation
        } else {
            Split::Train
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_fractions_are_respected() {
        let n = 20_000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            match Split::of(&format!("id-{i}"), 0.1, 0.2) {
                Split::Train => counts[0] += 1,
                Split::Validation => counts[1] += 1,
                Split::Test => counts[2] += 1,
            }
        }
        let frac = |c: usize| c as f64 / n as f64;
        assert!((frac(counts[0]) - 0.7).abs() < 0.02, "{counts:?}");
        assert!((frac(counts[1]) - 0.1).abs() < 0.02, "{counts:?}");
        assert!((frac(counts[2]) - 0.2).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn split_is_deterministic() {
        assert_eq!(Split::of("abc", 0.1, 0.2), Split::of("abc", 0.1, 0.2));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
