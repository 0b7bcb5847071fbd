//! Keeping a store whole and moving versions between stores: `gc` of unreferenced objects and
//! keys (and of raw objects past their retention), `verify` (re-hash every object), `checkout` into a directory, and receiving objects and
//! manifests from a remote (each checked against its hash before it lands).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::keys::KEY_RECORD_GRACE;
use super::manifest::{Manifest, parse_manifest};
use super::{SnapshotStore, sync_dir, unique, write_synced};
use crate::{Error, Result};

impl SnapshotStore {
    pub fn has_object(&self, hash: &str) -> bool {
        self.object_path(hash).is_file()
    }

    /// Stores an object received from elsewhere, after checking that `data` hashes to `hash`.
    pub fn put_object(&self, hash: &str, data: &[u8]) -> Result<()> {
        let got = schemas::sha256_hex(data);
        if got != hash {
            return Err(Error::Corrupt(format!("received object {hash} hashes to {got}")));
        }
        let tmp = self.tmp_dir().join(format!("obj-{}-{}.parquet", std::process::id(), unique()));
        write_synced(&tmp, data)?;
        let target = self.object_path(hash);
        let dir = target.parent().expect("objects have a parent dir");
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        fs::rename(&tmp, &target).map_err(Error::io(&target))?;
        sync_dir(dir)
    }

    /// Parses and verifies a manifest received from elsewhere.
    pub fn verify_manifest_bytes(&self, bytes: &[u8]) -> Result<Manifest> {
        parse_manifest(bytes, "received manifest")
    }

    /// Adds a verified manifest received from elsewhere at its sequence number (never
    /// overwriting one).
    pub fn put_manifest(&self, m: &Manifest) -> Result<()> {
        if m.compute_id() != m.id {
            return Err(Error::Corrupt(format!("manifest {} does not match its id", m.short_id())));
        }
        for f in &m.files {
            if !self.has_object(&f.hash) && !self.is_expired(&f.hash) {
                return Err(Error::Internal(format!("object {} is missing", f.hash)));
            }
        }
        let dir = self.dataset_dir(&m.dataset).join("versions");
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let tmp = self.tmp_dir().join(format!("manifest-{}-{}.json", std::process::id(), unique()));
        write_synced(&tmp, &serde_json::to_vec_pretty(m).expect("serializable"))?;
        let target = dir.join(format!("{:020}.json", m.seq));
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(Error::Conflict(format!("version {} of `{}` already exists locally", m.seq, m.dataset)))
            }
            Err(e) => Err(Error::io(&target)(e)),
        }
    }

    /// Removes objects no version of any dataset references, and stale temporary files; with
    /// `raw_retention`, first expires the raw objects older than it (see `retention`), which
    /// then go too. With `dry_run`, only reports what would go.
    pub fn gc(&self, dry_run: bool, raw_retention: Option<Duration>) -> Result<GcReport> {
        let mut report = GcReport::default();
        if let Some(retention) = raw_retention {
            report.raw = self.expire_raw(retention, Utc::now(), dry_run)?;
        }
        let mut gone = self.expired_hashes()?;
        gone.extend(report.raw.objects.iter().cloned()); // a dry run records none
        let mut referenced = HashSet::new();
        let mut keys = HashSet::new();
        for d in self.datasets()? {
            for m in self.versions(&d)? {
                for f in m.files {
                    if gone.contains(&f.hash) {
                        continue;
                    }
                    keys.extend(f.key);
                    referenced.insert(f.hash);
                }
            }
        }
        let objects = self.objects_dir();
        for shard in fs::read_dir(&objects).map_err(Error::io(&objects))? {
            let shard = shard.map_err(Error::io(&objects))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(Error::io(&shard))? {
                let path = entry.map_err(Error::io(&shard))?.path();
                let Some(hash) =
                    path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".parquet"))
                else {
                    continue;
                };
                if referenced.contains(hash) {
                    report.kept += 1;
                    continue;
                }
                report.removed += 1;
                report.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    fs::remove_file(&path).map_err(Error::io(&path))?;
                }
            }
        }
        for (id, path) in self.key_records()? {
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > KEY_RECORD_GRACE);
            if !keys.contains(&id) && old {
                report.keys_removed += 1;
                if !dry_run {
                    fs::remove_file(&path).map_err(Error::io(&path))?;
                }
            }
        }
        Ok(report)
    }

    /// Materializes a version in `out`: its Parquet files (hard links where possible) and its
    /// manifest, like `dvc checkout` into a workspace. Encrypted objects are written out
    /// decrypted — a checkout is for tools that read plain Parquet; it is the caller's
    /// explicit export of the data out of the store.
    pub fn checkout(&self, m: &Manifest, out: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(out).map_err(Error::io(out))?;
        let mut written = Vec::new();
        for (i, f) in self.live_files(m).iter().enumerate() {
            let src = self.object_path(&f.hash);
            let dst = out.join(format!("part-{i:05}.parquet"));
            let _ = fs::remove_file(&dst);
            if f.key.is_some() {
                let mut batches = self.open_object(f)?;
                let Some(first) = batches.next() else { continue };
                let first = first?;
                let file = File::create(&dst).map_err(Error::io(&dst))?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                    .build();
                let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props))?;
                writer.write(&first)?;
                for batch in batches {
                    writer.write(&batch?)?;
                }
                writer.close()?;
            } else if fs::hard_link(&src, &dst).is_err() {
                fs::copy(&src, &dst).map_err(Error::io(&dst))?;
            }
            written.push(dst);
        }
        let manifest = out.join("manifest.json");
        fs::write(&manifest, serde_json::to_vec_pretty(m).expect("serializable"))
            .map_err(Error::io(&manifest))?;
        written.push(manifest);
        Ok(written)
    }

    /// Re-hashes every object of a version (but those expired by raw-data retention); an error
    /// names the first corrupt one.
    pub fn verify(&self, manifest: &Manifest) -> Result<()> {
        for f in &self.live_files(manifest) {
            let path = self.object_path(&f.hash);
            let mut file = File::open(&path).map_err(Error::io(&path))?;
            let mut hasher = Sha256::new();
            io::copy(&mut file, &mut hasher).map_err(Error::io(&path))?;
            let got = hex::encode(hasher.finalize());
            if got != f.hash {
                return Err(Error::Corrupt(format!("object {} hashes to {got}", f.hash)));
            }
        }
        Ok(())
    }
}

/// What `gc` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    pub removed: usize,
    pub bytes: u64,
    /// Sealed data keys of objects no version references (left for an hour: a writer may be
    /// about to commit the object).
    pub keys_removed: usize,
    /// Raw objects expired by the retention (removed above).
    pub raw: super::ExpiryReport,
}
