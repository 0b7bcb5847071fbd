//! The manifest of one version: what it holds (objects, offsets, schema, what it added), its id
//! — the SHA-256 of its canonical JSON with an empty id — and reading one back with that id and
//! the format version checked. This module knows nothing of where manifests live or how they
//! are committed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Format version of manifests: 2 added [`Manifest::raw`] (format 1 manifests read as before,
/// with no raw version).
pub const MANIFEST_FORMAT: u32 = 2;

/// The `spec_hash` of a raw dataset's versions: its rows are the records as read, uncleaned.
pub const RAW_SPEC: &str = "raw";

/// The raw version a processed version's rows were cleaned from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RawLink {
    pub dataset: String,
    /// Id of the raw version.
    pub version: String,
    pub seq: u64,
}

impl RawLink {
    /// The link to raw version `m`.
    pub fn of(m: &Manifest) -> RawLink {
        RawLink { dataset: m.dataset.clone(), version: m.id.clone(), seq: m.seq }
    }
}

/// One Parquet object of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    /// SHA-256 of the object's bytes (its name).
    pub hash: String,
    pub rows: u64,
    pub bytes: u64,
    /// Id of the object's data key (`keys/<key>.key`) when it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Offsets `[first, next)` of one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceOffsets {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub next: i64,
}

/// A column of the version's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldInfo {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// What one commit added to its parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Added {
    pub rows: u64,
    pub files: Vec<String>,
    /// Offset ranges consumed by this commit.
    pub consumed: Vec<SourceOffsets>,
    /// Files imported by this commit (`data import`): the raw data's sources besides Kafka.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imported: Vec<ImportedFile>,
}

/// A file imported into a raw dataset, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportedFile {
    /// The path or URL as given (a folder's files: relative to the folder).
    pub name: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    pub rows: u64,
    /// Rows refused by validation (written to the rejects file with their reasons).
    pub rejected: u64,
}

/// The manifest of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub format_version: u32,
    /// SHA-256 of this manifest's canonical JSON with `id` empty.
    pub id: String,
    pub dataset: String,
    /// 1 for the first version, parent's + 1 after.
    pub seq: u64,
    pub parent: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Hash of the cleaning spec the rows were cleaned with.
    pub spec_hash: String,
    pub schema: Vec<FieldInfo>,
    pub rows: u64,
    pub files: Vec<FileEntry>,
    /// Cumulative offsets consumed per topic partition: resume at `next`.
    pub sources: Vec<SourceOffsets>,
    pub added: Added,
    /// Tags given at commit time (later tags live in the tags directory).
    pub tags: Vec<String>,
    /// The raw version these rows were cleaned from, with [`Manifest::spec_hash`]: the rows are
    /// exactly the raw records up to that version (less what the spec drops), and the dataset's
    /// rows before its first raw version if it predates raw data. None for raw versions and
    /// for datasets written without raw data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawLink>,
}

impl Manifest {
    pub(super) fn compute_id(&self) -> String {
        let mut m = self.clone();
        m.id = String::new();
        schemas::sha256_hex(&serde_json::to_vec(&m).expect("manifests always serialize"))
    }

    /// The short form of the id shown to people.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Whether this is a version of a raw dataset.
    pub fn is_raw(&self) -> bool {
        self.spec_hash == RAW_SPEC
    }

    /// Next offset per topic and partition.
    pub fn resume_offsets_all(&self) -> BTreeMap<(String, i32), i64> {
        self.sources.iter().map(|s| ((s.topic.clone(), s.partition), s.next)).collect()
    }

    /// Next offset per partition of `topic`.
    pub fn resume_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.sources.iter().filter(|s| s.topic == topic).map(|s| (s.partition, s.next)).collect()
    }
}

pub(super) fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    parse_manifest(&bytes, &path.display().to_string())
}

pub(super) fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let v: Version = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("{what} is not a manifest: {e}")))?;
    if v.format_version > MANIFEST_FORMAT {
        return Err(Error::Corrupt(format!(
            "{what} has manifest format {}, this build reads up to {MANIFEST_FORMAT}; upgrade driftwood",
            v.format_version
        )));
    }
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("{what} is not a manifest: {e}")))?;
    if m.compute_id() != m.id {
        return Err(Error::Corrupt(format!("{what}: content does not match id {}", m.id)));
    }
    Ok(m)
}
