//! The snapshot store: immutable, content-addressed Parquet objects plus one JSON manifest per
//! version.
//!
//! ```text
//!  <data_dir>/snapshots/objects/<h[0..2]>/<h>.parquet        h = SHA-256 of the file's bytes
//!  <data_dir>/snapshots/datasets/<dataset>/versions/<seq>.json   one manifest per version
//!  <data_dir>/snapshots/datasets/<dataset>/tags/<tag>            a version id
//!  <data_dir>/snapshots/keys/<k>.key       the sealed data key of encrypted objects
//!  <data_dir>/snapshots/expired/<h>.json   a raw object expired by retention (see `retention`)
//! ```
//!
//! Encryption at rest (with a [`Keyring`]): every new object is written with Parquet modular
//! encryption (AES-256-GCM, footer and every column) under its own random data key `k`, named
//! in the file's key metadata and in the manifest's [`FileEntry::key`]; the data key is kept
//! sealed by the keyring's active key in `keys/<k>.key` (see [`crate::crypto`]). Reads unseal it
//! with whichever keyring key sealed it; [`SnapshotStore::rewrap`] re-seals every data key under
//! the active key. Objects written without a keyring stay plaintext and readable.
//!
//! A version is the whole dataset at that point: its manifest lists every object (the parent's
//! plus the new ones), the cumulative Kafka offsets consumed per partition, and what this commit
//! added. The id is the SHA-256 of the manifest's canonical JSON (with an empty id), checked on
//! every read.
//!
//! Commit protocol: objects are written to a temporary file, synced and renamed into place;
//! then the manifest is written to a temporary file, synced, and hard-linked to
//! `versions/<seq>.json` — an atomic create that fails if another writer took that sequence
//! number, in which case the commit is rebased on the new parent and retried. A crash leaves at
//! worst unreferenced objects (removed by `gc`) and temporary files (removed on open).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::encryption::decrypt::FileDecryptionProperties;

use crate::crypto::Keyring;
use crate::{Error, Result};

mod commit;
mod keys;
mod maintenance;
mod manifest;
mod retention;

pub use commit::{Committed, Derivation, Draft, DraftPart, ObjectWriter, Rejected};
pub use keys::RewrapReport;
pub use maintenance::GcReport;
use manifest::read_manifest;
pub use manifest::{
    Added, FieldInfo, FileEntry, ImportedFile, MANIFEST_FORMAT, Manifest, RAW_SPEC, RawLink, SourceOffsets,
};
pub use retention::{Expiry, ExpiryReport};

/// Rows per batch when reading a version.
pub const READ_BATCH_ROWS: usize = 8192;

/// The snapshot store under a data dir.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
    /// Encrypts new objects and decrypts encrypted ones; None: new objects are plaintext.
    keyring: Option<Arc<Keyring>>,
}

impl SnapshotStore {
    /// Opens (creating if needed) the store under `data_dir`, removing stale temporary files.
    pub fn open(data_dir: &Path) -> Result<SnapshotStore> {
        let root = data_dir.join("snapshots");
        let store = SnapshotStore { root, keyring: None };
        fs::create_dir_all(store.objects_dir()).map_err(Error::io(&store.root))?;
        fs::create_dir_all(store.tmp_dir()).map_err(Error::io(&store.root))?;
        for entry in fs::read_dir(store.tmp_dir()).map_err(Error::io(&store.root))? {
            let path = entry.map_err(Error::io(&store.root))?.path();
            // Only files older than a minute: another process may be writing right now.
            let stale = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default().as_secs() > 60)
                .unwrap_or(false);
            if stale {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(store)
    }

    /// The store encrypting new objects with (and decrypting with) `keyring`.
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> SnapshotStore {
        self.keyring = keyring;
        self
    }

    pub fn keyring(&self) -> Option<&Arc<Keyring>> {
        self.keyring.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// Path of the sealed data key `id`.
    pub fn key_path(&self, id: &str) -> PathBuf {
        self.keys_dir().join(format!("{id}.key"))
    }

    fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.root.join("datasets").join(dataset)
    }

    /// Path of the object with content hash `hash`.
    pub fn object_path(&self, hash: &str) -> PathBuf {
        self.objects_dir().join(&hash[..2]).join(format!("{hash}.parquet"))
    }

    /// Dataset names, sorted.
    pub fn datasets(&self) -> Result<Vec<String>> {
        let dir = self.root.join("datasets");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            if entry.path().is_dir() {
                out.push(entry.file_name().to_string_lossy().to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every version of `dataset`, oldest first. Each manifest's id is verified.
    pub fn versions(&self, dataset: &str) -> Result<Vec<Manifest>> {
        let dir = self.dataset_dir(dataset).join("versions");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(Error::io(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| read_manifest(p)).collect()
    }

    pub fn latest(&self, dataset: &str) -> Result<Option<Manifest>> {
        Ok(self.versions(dataset)?.pop())
    }

    /// Resolves `latest`, `v<seq>`, a tag, a full id or a unique id prefix (≥ 4 characters).
    pub fn resolve(&self, dataset: &str, reference: &str) -> Result<Manifest> {
        let versions = self.versions(dataset)?;
        let not_found = || Error::NotFound(format!("version `{reference}` of dataset `{dataset}`"));
        if versions.is_empty() {
            return Err(Error::NotFound(format!("dataset `{dataset}` has no versions")));
        }
        if reference == "latest" {
            return versions.last().cloned().ok_or_else(not_found);
        }
        if let Some(seq) = reference.strip_prefix('v').and_then(|s| s.parse::<u64>().ok()) {
            return versions.into_iter().find(|m| m.seq == seq).ok_or_else(not_found);
        }
        let tag_path = self.dataset_dir(dataset).join("tags").join(reference);
        let id = if schemas::config::valid_name(reference) && tag_path.is_file() {
            fs::read_to_string(&tag_path).map_err(Error::io(&tag_path))?.trim().to_string()
        } else {
            reference.to_string()
        };
        if id.len() < 4 {
            return Err(not_found());
        }
        let mut matches = versions.into_iter().filter(|m| m.id.starts_with(&id));
        match (matches.next(), matches.next()) {
            (Some(m), None) => Ok(m),
            (Some(_), Some(_)) => Err(Error::NotFound(format!(
                "`{reference}` matches several versions of `{dataset}`; give more of the id"
            ))),
            (None, _) => Err(not_found()),
        }
    }

    /// Tags `version` of `dataset` as `tag` (moving the tag if it exists).
    pub fn tag(&self, dataset: &str, tag: &str, version: &str) -> Result<Manifest> {
        if !schemas::config::valid_name(tag)
            || tag == "latest"
            || tag == "versions"
            || tag.starts_with('v') && tag[1..].parse::<u64>().is_ok()
        {
            return Err(Error::Spec(format!(
                "invalid tag `{tag}`: use lowercase letters, digits, '_' or '-', not `latest`, `versions` or `v<number>`"
            )));
        }
        let m = self.resolve(dataset, version)?;
        let dir = self.dataset_dir(dataset).join("tags");
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let tmp = self.tmp_dir().join(format!("tag-{}-{}", std::process::id(), unique()));
        fs::write(&tmp, &m.id).map_err(Error::io(&tmp))?;
        fs::rename(&tmp, dir.join(tag)).map_err(Error::io(&dir))?;
        Ok(m)
    }

    /// Tags of `dataset`: tag → version id.
    pub fn tags(&self, dataset: &str) -> Result<BTreeMap<String, String>> {
        let dir = self.dataset_dir(dataset).join("tags");
        let mut out = BTreeMap::new();
        if !dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            let id = fs::read_to_string(&path).map_err(Error::io(&path))?;
            out.insert(
                path.file_name().unwrap_or_default().to_string_lossy().to_string(),
                id.trim().to_string(),
            );
        }
        Ok(out)
    }

    fn spec_path(&self, hash: &str) -> PathBuf {
        self.root.join("specs").join(format!("{hash}.toml"))
    }

    /// Keeps the cleaning spec `hash` names (`specs/<hash>.toml`), so what a version's
    /// `spec_hash` means stays readable beside it; written once per spec.
    pub fn save_spec(&self, spec: &crate::clean::CleanSpec) -> Result<()> {
        let path = self.spec_path(&spec.hash());
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().expect("specs have a parent dir");
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let tmp = self.tmp_dir().join(format!("spec-{}-{}.toml", std::process::id(), unique()));
        write_synced(&tmp, spec.to_toml().as_bytes())?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))
    }

    /// The cleaning spec with this hash, if a version written here used it; checked against
    /// the hash.
    pub fn spec(&self, hash: &str) -> Result<Option<crate::clean::CleanSpec>> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let path = self.spec_path(hash);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(Error::io(&path))?;
        let spec = crate::clean::CleanSpec::from_toml(&text)?;
        if spec.hash() != hash {
            return Err(Error::Corrupt(format!("{} does not hash to its name", path.display())));
        }
        Ok(Some(spec))
    }

    /// Reads a version as batches, object by object (never the whole version in memory).
    pub fn read(&self, manifest: &Manifest) -> impl Iterator<Item = Result<RecordBatch>> + use<> {
        self.read_files(manifest.files.clone())
    }

    /// Reads objects as batches, one after the other; objects expired by raw-data retention
    /// are skipped (their rows are gone by policy).
    pub fn read_files(&self, files: Vec<FileEntry>) -> impl Iterator<Item = Result<RecordBatch>> + use<> {
        let (store, expiry) = (self.clone(), self.clone());
        files.into_iter().filter(move |f| !expiry.is_expired(&f.hash)).flat_map(move |f| {
            let reader = store.open_object(&f);
            let it: Box<dyn Iterator<Item = Result<RecordBatch>>> = match reader {
                Ok(r) => Box::new(r.map(|b| b.map_err(Error::from))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            it
        })
    }

    fn open_object(&self, f: &FileEntry) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
        let path = self.object_path(&f.hash);
        let file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        if len != f.bytes {
            return Err(Error::Corrupt(format!(
                "object {} has {len} bytes, manifest says {}",
                f.hash, f.bytes
            )));
        }
        let mut options = ArrowReaderOptions::new();
        if let Some(id) = &f.key {
            let dek = self.data_key(id)?;
            options =
                options.with_file_decryption_properties(FileDecryptionProperties::builder(dek).build()?);
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).map_err(|e| {
            match &f.key {
                // A flipped byte in an encrypted object fails GCM authentication.
                Some(id) => {
                    Error::Corrupt(format!("object {} (data key {id}) cannot be decrypted: {e}", f.hash))
                }
                None => Error::from(e),
            }
        })?;
        Ok(reader.with_batch_size(READ_BATCH_ROWS).build()?)
    }
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

pub(super) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::crypto;
    use schemas::records::{RawRecord, clean_schema};

    fn records(ids: &[&str]) -> RecordBatch {
        let rs: Vec<RawRecord> = ids
            .iter()
            .map(|id| RawRecord {
                id: id.to_string(),
                text: format!("text of {id}"),
                label: None,
                source: None,
                ts: None,
                meta: None,
            })
            .collect();
        ingest::batch::batch_of(&rs)
    }

    fn commit(store: &SnapshotStore, ids: &[&str], partition: i32, first: i64) -> Manifest {
        let mut w = store.object_writer(clean_schema()).unwrap();
        w.write(&records(ids)).unwrap();
        let f = w.finish().unwrap().unwrap();
        let draft = Draft {
            dataset: "ds".into(),
            spec_hash: "0123456789abcdef".into(),
            schema: clean_schema(),
            parts: vec![DraftPart {
                consumed: Some(SourceOffsets {
                    topic: "t".into(),
                    partition,
                    first,
                    next: first + ids.len() as i64,
                }),
                file: Some(f),
            }],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        store.commit(draft, Utc::now()).unwrap().manifest.expect("accepted")
    }

    fn ids_of(store: &SnapshotStore, m: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        for b in store.read(m) {
            let b = b.unwrap();
            let col = b.column(0).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            out.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
        out
    }

    #[test]
    fn versions_accumulate_and_resume_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let v1 = commit(&store, &["a", "b"], 0, 0);
        let v2 = commit(&store, &["c"], 1, 0);
        let v3 = commit(&store, &["d"], 0, 2);
        assert_eq!((v1.seq, v2.seq, v3.seq), (1, 2, 3));
        assert_eq!(v2.parent.as_deref(), Some(v1.id.as_str()));
        assert_eq!((v1.rows, v2.rows, v3.rows), (2, 3, 4));
        assert_eq!(v3.added.rows, 1);
        assert_eq!(ids_of(&store, &v3), ["a", "b", "c", "d"]);
        assert_eq!(ids_of(&store, &v1), ["a", "b"]);
        assert_eq!(v3.resume_offsets("t"), BTreeMap::from([(0, 3), (1, 1)]));
        assert_eq!(store.latest("ds").unwrap().unwrap().id, v3.id);
        store.verify(&v3).unwrap();
    }

    #[test]
    fn references_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let v1 = commit(&store, &["a"], 0, 0);
        let v2 = commit(&store, &["b"], 0, 1);
        assert_eq!(store.resolve("ds", "latest").unwrap().id, v2.id);
        assert_eq!(store.resolve("ds", "v1").unwrap().id, v1.id);
        assert_eq!(store.resolve("ds", &v1.id[..8]).unwrap().id, v1.id);
        store.tag("ds", "golden", "v1").unwrap();
        assert_eq!(store.resolve("ds", "golden").unwrap().id, v1.id);
        assert!(store.tag("ds", "v7", "v1").is_err());
        assert!(matches!(store.resolve("ds", "v9"), Err(Error::NotFound(_))));
        assert!(matches!(store.resolve("nope", "latest"), Err(Error::NotFound(_))));
    }

    #[test]
    fn tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let v1 = commit(&store, &["a"], 0, 0);
        // A changed manifest no longer matches its id.
        let path = dir.path().join("snapshots/datasets/ds/versions").join(format!("{:020}.json", 1));
        let text = fs::read_to_string(&path).unwrap().replace("\"rows\": 1", "\"rows\": 2");
        fs::write(&path, text).unwrap();
        assert!(matches!(store.versions("ds"), Err(Error::Corrupt(_))));
        // A changed object fails verification.
        let obj = store.object_path(&v1.files[0].hash);
        let mut bytes = fs::read(&obj).unwrap();
        bytes[10] ^= 1;
        fs::write(&obj, bytes).unwrap();
        assert!(matches!(store.verify(&v1), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_different_spec_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        commit(&store, &["a"], 0, 0);
        let draft = Draft {
            dataset: "ds".into(),
            spec_hash: "fedcba9876543210".into(),
            schema: clean_schema(),
            parts: vec![],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        assert!(matches!(store.commit(draft, Utc::now()), Err(Error::Conflict(_))));
    }

    #[test]
    fn overlapping_ranges_are_rejected_part_by_part() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        commit(&store, &["a", "b"], 0, 0); // partition 0: [0, 2)
        let part = |ids: &[&str], partition: i32, first: i64| {
            let mut w = store.object_writer(clean_schema()).unwrap();
            w.write(&records(ids)).unwrap();
            DraftPart {
                consumed: Some(SourceOffsets {
                    topic: "t".into(),
                    partition,
                    first,
                    next: first + ids.len() as i64,
                }),
                file: w.finish().unwrap(),
            }
        };
        // A second writer re-read partition 0 from the start (stale offsets) and read partition 1.
        let draft = Draft {
            dataset: "ds".into(),
            spec_hash: "0123456789abcdef".into(),
            schema: clean_schema(),
            parts: vec![part(&["a", "b", "c"], 0, 0), part(&["x"], 1, 0)],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        let out = store.commit(draft, Utc::now()).unwrap();
        let m = out.manifest.unwrap();
        assert_eq!(ids_of(&store, &m), ["a", "b", "x"], "partition 0's overlap is not committed twice");
        assert_eq!(out.rejected.len(), 1);
        assert_eq!((out.rejected[0].consumed.partition, out.rejected[0].resume_at), (0, 2));
        // Continuing from the resume point is accepted.
        let draft = Draft {
            dataset: "ds".into(),
            spec_hash: "0123456789abcdef".into(),
            schema: clean_schema(),
            parts: vec![part(&["c"], 0, 2)],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        let m = store.commit(draft, Utc::now()).unwrap().manifest.unwrap();
        assert_eq!(ids_of(&store, &m), ["a", "b", "x", "c"]);
    }

    #[tokio::test]
    async fn a_version_mixing_plaintext_and_encrypted_objects_reads_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let plain = SnapshotStore::open(dir.path()).unwrap();
        let v1 = commit(&plain, &["a", "b"], 0, 0);
        assert_eq!(v1.files[0].key, None);
        // Encryption switched on later: new objects are encrypted, old ones stay readable.
        let mut keyring = Keyring::generate("k1").unwrap();
        let store =
            plain.clone().with_keyring(Some(Arc::new(Keyring::parse(&keyring.to_toml(), "t").unwrap())));
        let v2 = commit(&store, &["c"], 0, 2);
        let key = v2.files[1].key.clone().expect("the new object is encrypted");
        assert_eq!(ids_of(&store, &v2), vec!["a", "b", "c"]);
        assert!(plain.read(&v2).any(|b| b.is_err()), "read without the keyring");
        // Through DataFusion, as Flight SQL and diff read.
        let ctx = crate::query::session_context(&store, datafusion::prelude::SessionConfig::new());
        ctx.register_table("v2", crate::query::version_table(&store, &v2).unwrap()).unwrap();
        let batches = ctx.sql("SELECT id FROM v2 ORDER BY id").await.unwrap().collect().await.unwrap();
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                arrow::array::AsArray::as_string::<i32>(b.column(0))
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        // Rewrap after a rotation: same object, same version id, the key now under k2.
        keyring.add("k2").unwrap();
        let rotated = plain.clone().with_keyring(Some(Arc::new(keyring)));
        let report = rotated.rewrap().unwrap();
        assert_eq!((report.rewrapped.get("k1").copied(), report.current), (Some(1), 0));
        assert_eq!(crypto::sealed_by(&rotated.key_record(&key).unwrap().unwrap()), Some("k2"));
        assert_eq!(rotated.latest("ds").unwrap().unwrap().id, v2.id);
        assert_eq!(ids_of(&rotated, &v2), vec!["a", "b", "c"]);
        assert_eq!(rotated.rewrap().unwrap().current, 1);
        // A checkout is plain Parquet any tool reads: the plaintext object linked, the
        // encrypted one written out decrypted.
        let out = tempfile::tempdir().unwrap();
        let files = rotated.checkout(&v2, out.path()).unwrap();
        let mut rows = 0;
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap()).unwrap().build().unwrap();
            rows += reader.map(|b| b.unwrap().num_rows()).sum::<usize>();
        }
        assert_eq!(rows, 3);
    }
}
