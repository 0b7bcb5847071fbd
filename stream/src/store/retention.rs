//! Retention of raw data (`snapshot.raw_retention_secs`): raw objects older than the retention
//! are expired — an expiry record `expired/<h>.json` says when and why, and `gc` then deletes
//! the object — while every manifest stays as it was, so version ids, offset ranges, source
//! file hashes and lineage keep their meaning (as Kafka's offsets do once old segments are
//! deleted). Readers skip expired objects: a raw version reads as the rows it still has.
//!
//! Nothing is expired that would lose data: a raw object is kept while no processed dataset
//! has been cleaned from it yet (the raw version a processed dataset's latest version links to
//! holds it), and an object a processed version shares (content addressing: a record the spec
//! left unchanged) is not raw data alone.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::{SnapshotStore, unique, write_synced};
use crate::{Error, Result};

/// Why and when a raw object was expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub hash: String,
    /// The raw dataset and version that added the object, and when that version was committed.
    pub dataset: String,
    pub seq: u64,
    pub committed_at: DateTime<Utc>,
    pub rows: u64,
    pub expired_at: DateTime<Utc>,
    pub retention_secs: u64,
}

/// What [`SnapshotStore::expire_raw`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    /// Objects expired now, and their rows.
    pub expired: usize,
    pub rows: u64,
    /// Raw objects past the retention kept because no processed dataset was cleaned from them.
    pub not_cleaned: usize,
    /// Raw objects past the retention kept because a processed version holds the same object.
    pub shared: usize,
    /// The objects expired (or, in a dry run, that would be).
    pub objects: Vec<String>,
}

impl SnapshotStore {
    fn expiry_path(&self, hash: &str) -> std::path::PathBuf {
        self.root.join("expired").join(format!("{hash}.json"))
    }

    /// Whether the object was expired by raw-data retention.
    pub fn is_expired(&self, hash: &str) -> bool {
        self.expiry_path(hash).is_file()
    }

    /// The expiry record of an object, if it was expired.
    pub fn expiry(&self, hash: &str) -> Result<Option<Expiry>> {
        let path = self.expiry_path(hash);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("expiry record {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// The hashes of every expired object (one directory listing, for passes over many
    /// versions, whose cumulative manifests name each object again and again).
    pub(super) fn expired_hashes(&self) -> Result<HashSet<String>> {
        let dir = self.root.join("expired");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) => return Err(Error::io(&dir)(e)),
        };
        let mut out = HashSet::new();
        for entry in entries {
            let name = entry.map_err(Error::io(&dir))?.file_name();
            if let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                out.insert(hash.to_string());
            }
        }
        Ok(out)
    }

    /// Records an expiry (also one received from a remote).
    pub fn put_expiry(&self, expiry: &Expiry) -> Result<()> {
        let target = self.expiry_path(&expiry.hash);
        let dir = target.parent().expect("expiry records have a parent dir");
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let tmp = self.tmp_dir().join(format!("expiry-{}-{}.json", std::process::id(), unique()));
        write_synced(&tmp, &serde_json::to_vec_pretty(expiry).expect("serializable"))?;
        fs::rename(&tmp, &target).map_err(Error::io(&target))
    }

    /// The objects of `m` still held (not expired), in order.
    pub fn live_files(&self, m: &Manifest) -> Vec<super::FileEntry> {
        m.files.iter().filter(|f| !self.is_expired(&f.hash)).cloned().collect()
    }

    /// Expires the raw objects added by raw versions committed before `now - retention`
    /// (see the module docs for what is kept). With `dry_run`, only counts.
    pub fn expire_raw(&self, retention: Duration, now: DateTime<Utc>, dry_run: bool) -> Result<ExpiryReport> {
        let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut raw: Vec<Vec<Manifest>> = Vec::new();
        let mut processed_objects = HashSet::new();
        let mut links = Vec::new();
        for d in self.datasets()? {
            let versions = self.versions(&d)?;
            match versions.last() {
                Some(latest) if latest.is_raw() => raw.push(versions),
                Some(latest) => {
                    links.extend(latest.raw.clone());
                    processed_objects
                        .extend(versions.iter().flat_map(|v| v.files.iter().map(|f| f.hash.clone())));
                }
                None => {}
            }
        }
        let cleaned: HashSet<&str> = raw
            .iter()
            .flatten()
            .filter(|v| links.iter().any(|l| l.version == v.id))
            .flat_map(|v| v.files.iter().map(|f| f.hash.as_str()))
            .collect();
        let already = self.expired_hashes()?;
        let mut report = ExpiryReport::default();
        for v in raw.iter().flatten().filter(|v| v.created_at < cutoff) {
            for f in v.files.iter().filter(|f| v.added.files.contains(&f.hash)) {
                if already.contains(&f.hash) {
                    continue;
                }
                if processed_objects.contains(&f.hash) {
                    report.shared += 1;
                } else if !cleaned.contains(f.hash.as_str()) {
                    report.not_cleaned += 1;
                } else {
                    report.expired += 1;
                    report.rows += f.rows;
                    report.objects.push(f.hash.clone());
                    if !dry_run {
                        self.put_expiry(&Expiry {
                            hash: f.hash.clone(),
                            dataset: v.dataset.clone(),
                            seq: v.seq,
                            committed_at: v.created_at,
                            rows: f.rows,
                            expired_at: now,
                            retention_secs: retention.as_secs(),
                        })?;
                    }
                }
            }
        }
        Ok(report)
    }
}
