//! The snapshot store: immutable, content-addressed Parquet objects plus one JSON manifest per
//! version.
//!
//! ```text
//!  <data_dir>/snapshots/objects/<h[0..2]>/<h>.parquet        h = SHA-256 of the file's bytes
//!  <data_dir>/snapshots/datasets/<dataset>/versions/<seq>.json   one manifest per version
//!  <data_dir>/snapshots/datasets/<dataset>/tags/<tag>            a version id
//!  <data_dir>/snapshots/keys/<k>.key       the sealed data key of encrypted objects
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
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{self, Keyring};
use crate::{Error, Result};

/// Format version of manifests.
pub const MANIFEST_FORMAT: u32 = 1;

/// Rows per batch when reading a version.
pub const READ_BATCH_ROWS: usize = 8192;

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
}

impl Manifest {
    fn compute_id(&self) -> String {
        let mut m = self.clone();
        m.id = String::new();
        schemas::sha256_hex(&serde_json::to_vec(&m).expect("manifests always serialize"))
    }

    /// The short form of the id shown to people.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }

    /// Next offset per partition of `topic`.
    pub fn resume_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.sources.iter().filter(|s| s.topic == topic).map(|s| (s.partition, s.next)).collect()
    }
}

/// One part of a commit: the rows read from one partition range (if any were kept) and the
/// range itself. Parts are accepted or rejected one by one (see [`SnapshotStore::commit`]).
#[derive(Debug, Clone)]
pub struct DraftPart {
    pub consumed: Option<SourceOffsets>,
    pub file: Option<FileEntry>,
}

/// A commit to make: new objects and the offsets they came from.
#[derive(Debug, Clone)]
pub struct Draft {
    pub dataset: String,
    pub spec_hash: String,
    pub schema: SchemaRef,
    pub parts: Vec<DraftPart>,
    pub tags: Vec<String>,
    /// The new files replace the parent's (a rewrite such as a label join) instead of adding
    /// to them.
    pub replace_files: bool,
}

/// A part refused because another writer already committed (some of) its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub consumed: SourceOffsets,
    /// Where the partition continues in the latest version: re-read from here.
    pub resume_at: i64,
}

/// The result of a commit.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new version, `None` when every part was rejected.
    pub manifest: Option<Manifest>,
    pub rejected: Vec<Rejected>,
}

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

    /// Starts writing a new Parquet object.
    pub fn object_writer(&self, schema: SchemaRef) -> Result<ObjectWriter> {
        let tmp = self.tmp_dir().join(format!("obj-{}-{}.parquet", std::process::id(), unique()));
        let file = File::create(&tmp).map_err(Error::io(&tmp))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(64 * 1024));
        let mut key = None;
        if let Some(keyring) = &self.keyring {
            let (id, dek) = self.new_data_key(keyring)?;
            let encryption = FileEncryptionProperties::builder(dek.to_vec())
                .with_footer_key_metadata(id.clone().into_bytes())
                .build()?;
            props = props.with_file_encryption_properties(encryption);
            key = Some(id);
        }
        let writer = ArrowWriter::try_new(HashingWriter::new(file), schema, Some(props.build()))?;
        Ok(ObjectWriter { store: self.clone(), tmp, writer: Some(writer), rows: 0, key })
    }

    /// A fresh random data key, stored sealed by the keyring's active key before any data is
    /// written with it.
    fn new_data_key(&self, keyring: &Keyring) -> Result<(String, [u8; crypto::KEY_LEN])> {
        let id = hex::encode(crypto::random::<16>()?);
        let dek = crypto::random::<{ crypto::KEY_LEN }>()?;
        let sealed = keyring.seal(&dek, &dek_context(&id))?;
        self.write_key_record(&id, &sealed)?;
        Ok((id, dek))
    }

    fn write_key_record(&self, id: &str, sealed: &[u8]) -> Result<()> {
        let dir = self.keys_dir();
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let tmp = self.tmp_dir().join(format!("key-{}-{}", std::process::id(), unique()));
        write_synced(&tmp, sealed)?;
        let target = self.key_path(id);
        fs::rename(&tmp, &target).map_err(Error::io(&target))?;
        sync_dir(&dir)
    }

    /// The data key `id`, unsealed.
    pub fn data_key(&self, id: &str) -> Result<Vec<u8>> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.is_empty() {
            return Err(Error::Key(format!("`{id}` is not a data key id")));
        }
        let keyring = self.keyring.as_ref().ok_or_else(|| {
            Error::Key(format!(
                "data key {id} protects encrypted objects, and no keyring is configured ([encryption] key_file)"
            ))
        })?;
        let path = self.key_path(id);
        let sealed = fs::read(&path).map_err(Error::io(&path))?;
        keyring.open(&sealed, &dek_context(id)).map_err(|e| Error::Key(format!("data key {id}: {e}")))
    }

    /// The sealed data key `id` as stored (for push/pull), if there is one.
    pub fn key_record(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let path = self.key_path(id);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// Stores a sealed data key received from elsewhere (it stays sealed: whoever reads the
    /// objects needs a keyring holding the key that sealed it).
    pub fn put_key_record(&self, id: &str, sealed: &[u8]) -> Result<()> {
        if !crypto::is_sealed(sealed) {
            return Err(Error::Corrupt(format!("received data key {id} is not a sealed blob")));
        }
        self.write_key_record(id, sealed)
    }

    /// Re-seals every data key not sealed by the active key under it, so older keyring keys
    /// can be removed. Objects (and so version ids) do not change.
    pub fn rewrap(&self) -> Result<RewrapReport> {
        let keyring = self
            .keyring
            .as_ref()
            .ok_or_else(|| Error::Key("rewrapping needs a keyring ([encryption] key_file)".into()))?;
        let mut report = RewrapReport::default();
        for (id, path) in self.key_records()? {
            let id = id.as_str();
            let sealed = fs::read(&path).map_err(Error::io(&path))?;
            let by = crypto::sealed_by(&sealed).unwrap_or("?").to_string();
            if by == keyring.active() {
                report.current += 1;
                continue;
            }
            let dek = keyring
                .open(&sealed, &dek_context(id))
                .map_err(|e| Error::Key(format!("data key {id}: {e}")))?;
            self.write_key_record(id, &keyring.seal(&dek, &dek_context(id))?)?;
            *report.rewrapped.entry(by).or_default() += 1;
        }
        Ok(report)
    }

    /// How many data keys each keyring key seals (by the ids in the sealed records, so keys
    /// missing from the keyring show up too).
    pub fn key_usage(&self) -> Result<BTreeMap<String, u64>> {
        let mut usage = BTreeMap::new();
        for (_, path) in self.key_records()? {
            let sealed = fs::read(&path).map_err(Error::io(&path))?;
            *usage.entry(crypto::sealed_by(&sealed).unwrap_or("?").to_string()).or_default() += 1;
        }
        Ok(usage)
    }

    /// Every sealed data key record: (id, path), sorted.
    fn key_records(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.keys_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            if let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".key")) {
                out.push((id.to_string(), path.clone()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Decryption for any object of this store: the data key named in the file's key metadata.
    pub fn decryption(&self) -> Result<Arc<FileDecryptionProperties>> {
        Ok(FileDecryptionProperties::with_key_retriever(Arc::new(DataKeys(self.clone()))).build()?)
    }

    /// Commits a new version of `draft.dataset` on top of the latest one, atomically.
    ///
    /// Offsets must continue the parent's: a part whose range starts before the partition's
    /// `next` in the parent (another writer — after a rebalance or a concurrent run — already
    /// committed those records) is rejected, its object left unreferenced, and reported with the
    /// offset to resume from. This is what keeps several workers, restarts and rebalances from
    /// ever committing a record twice. A concurrent commit of the same sequence number makes
    /// this retry on the new parent.
    pub fn commit(&self, draft: Draft, now: DateTime<Utc>) -> Result<Committed> {
        let versions_dir = self.dataset_dir(&draft.dataset).join("versions");
        fs::create_dir_all(&versions_dir).map_err(Error::io(&versions_dir))?;
        for f in draft.parts.iter().filter_map(|p| p.file.as_ref()) {
            if !self.object_path(&f.hash).is_file() {
                return Err(Error::Internal(format!("object {} was not written", f.hash)));
            }
        }
        loop {
            let parent = self.latest(&draft.dataset)?;
            if let Some(p) = &parent
                && p.spec_hash != draft.spec_hash
            {
                return Err(Error::Conflict(format!(
                    "dataset `{}` was cleaned with spec {} but this plan is {}; \
                     write to another dataset (snapshot.dataset) or keep the spec",
                    draft.dataset,
                    &p.spec_hash[..12.min(p.spec_hash.len())],
                    &draft.spec_hash[..12.min(draft.spec_hash.len())]
                )));
            }
            let (accepted, rejected) = split_by_continuity(parent.as_ref(), &draft.parts);
            if accepted.is_empty() {
                return Ok(Committed { manifest: None, rejected });
            }
            let manifest = build_manifest(parent.as_ref(), &draft, &accepted, now);
            let tmp = self.tmp_dir().join(format!("manifest-{}-{}.json", std::process::id(), unique()));
            write_synced(&tmp, &serde_json::to_vec_pretty(&manifest).expect("serializable"))?;
            let target = versions_dir.join(format!("{:020}.json", manifest.seq));
            let linked = fs::hard_link(&tmp, &target);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(&versions_dir)?;
                    return Ok(Committed { manifest: Some(manifest), rejected });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&target)(e)),
            }
        }
    }

    /// Reads a version as batches, object by object (never the whole version in memory).
    pub fn read(&self, manifest: &Manifest) -> impl Iterator<Item = Result<RecordBatch>> + use<> {
        let store = self.clone();
        let files = manifest.files.clone();
        files.into_iter().flat_map(move |f| {
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
            if !self.has_object(&f.hash) {
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

    /// Removes objects no version of any dataset references, and stale temporary files.
    /// With `dry_run`, only reports what would go.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let mut referenced = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for d in self.datasets()? {
            for m in self.versions(&d)? {
                keys.extend(m.files.iter().filter_map(|f| f.key.clone()));
                referenced.extend(m.files.into_iter().map(|f| f.hash));
            }
        }
        let mut report = GcReport::default();
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
        for (i, f) in m.files.iter().enumerate() {
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

    /// Re-hashes every object of a version; an error names the first corrupt one.
    pub fn verify(&self, manifest: &Manifest) -> Result<()> {
        for f in &manifest.files {
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

/// Splits parts into those that continue the parent's offsets and those that overlap them.
fn split_by_continuity(parent: Option<&Manifest>, parts: &[DraftPart]) -> (Vec<DraftPart>, Vec<Rejected>) {
    let next: BTreeMap<(&str, i32), i64> = parent
        .map(|p| p.sources.iter().map(|s| ((s.topic.as_str(), s.partition), s.next)).collect())
        .unwrap_or_default();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for part in parts {
        match &part.consumed {
            Some(c) => match next.get(&(c.topic.as_str(), c.partition)) {
                Some(&n) if c.first < n => rejected.push(Rejected { consumed: c.clone(), resume_at: n }),
                _ => accepted.push(part.clone()),
            },
            None => accepted.push(part.clone()),
        }
    }
    (accepted, rejected)
}

fn build_manifest(
    parent: Option<&Manifest>,
    draft: &Draft,
    parts: &[DraftPart],
    now: DateTime<Utc>,
) -> Manifest {
    let new_files: Vec<FileEntry> = parts.iter().filter_map(|p| p.file.clone()).collect();
    let consumed: Vec<SourceOffsets> = parts.iter().filter_map(|p| p.consumed.clone()).collect();
    let mut files =
        if draft.replace_files { Vec::new() } else { parent.map(|p| p.files.clone()).unwrap_or_default() };
    files.extend(new_files.iter().cloned());
    let mut sources: BTreeMap<(String, i32), SourceOffsets> = parent
        .map(|p| p.sources.iter().map(|s| ((s.topic.clone(), s.partition), s.clone())).collect())
        .unwrap_or_default();
    for c in &consumed {
        sources
            .entry((c.topic.clone(), c.partition))
            .and_modify(|s| {
                s.first = s.first.min(c.first);
                s.next = s.next.max(c.next);
            })
            .or_insert_with(|| c.clone());
    }
    let parent_rows = parent.map_or(0, |p| p.rows);
    let added_rows: u64 = if draft.replace_files {
        new_files.iter().map(|f| f.rows).sum::<u64>().saturating_sub(parent_rows)
    } else {
        new_files.iter().map(|f| f.rows).sum()
    };
    let mut m = Manifest {
        format_version: MANIFEST_FORMAT,
        id: String::new(),
        dataset: draft.dataset.clone(),
        seq: parent.map_or(1, |p| p.seq + 1),
        parent: parent.map(|p| p.id.clone()),
        created_at: now,
        spec_hash: draft.spec_hash.clone(),
        schema: draft
            .schema
            .fields()
            .iter()
            .map(|f| FieldInfo {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
            })
            .collect(),
        rows: files.iter().map(|f| f.rows).sum(),
        files,
        sources: sources.into_values().collect(),
        added: Added {
            rows: added_rows,
            files: new_files.iter().map(|f| f.hash.clone()).collect(),
            consumed,
        },
        tags: draft.tags.clone(),
    };
    m.id = m.compute_id();
    m
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    parse_manifest(&bytes, &path.display().to_string())
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<Manifest> {
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

/// What `gc` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    pub removed: usize,
    pub bytes: u64,
    /// Sealed data keys of objects no version references (left for an hour: a writer may be
    /// about to commit the object).
    pub keys_removed: usize,
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A `Write` that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), bytes: 0 }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What [`SnapshotStore::rewrap`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RewrapReport {
    /// Data keys re-sealed, by the keyring key that had sealed them.
    pub rewrapped: BTreeMap<String, u64>,
    /// Data keys already sealed by the active key.
    pub current: u64,
}

/// How long gc leaves a sealed data key that no version references (its object may be about to
/// be committed).
const KEY_RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a data key is sealed for (the GCM associated data): it cannot be swapped for another.
fn dek_context(id: &str) -> Vec<u8> {
    format!("driftwood data key {id}").into_bytes()
}

/// Parquet's key retriever: key metadata is a data key id.
struct DataKeys(SnapshotStore);

impl KeyRetriever for DataKeys {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = std::str::from_utf8(key_metadata).map_err(|_| {
            parquet::errors::ParquetError::General("key metadata is not a data key id".into())
        })?;
        self.0.data_key(id).map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
    }
}

/// Writes one content-addressed Parquet object.
pub struct ObjectWriter {
    store: SnapshotStore,
    tmp: PathBuf,
    writer: Option<ArrowWriter<HashingWriter<File>>>,
    rows: u64,
    /// The data key the object is encrypted with.
    key: Option<String>,
}

impl ObjectWriter {
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer.as_mut().expect("writer is open until finish").write(batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes, syncs and moves the object to its content address. `None` if no row was written.
    pub fn finish(mut self) -> Result<Option<FileEntry>> {
        let writer = self.writer.take().expect("finish is called once");
        if self.rows == 0 {
            drop(writer);
            let _ = fs::remove_file(&self.tmp);
            return Ok(None);
        }
        let hashing = writer.into_inner()?;
        let hash = hex::encode(hashing.hasher.finalize());
        let bytes = hashing.bytes;
        hashing.inner.sync_all().map_err(Error::io(&self.tmp))?;
        let target = self.store.object_path(&hash);
        let dir = target.parent().expect("objects have a parent dir");
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        fs::rename(&self.tmp, &target).map_err(Error::io(&target))?;
        sync_dir(dir)?;
        Ok(Some(FileEntry { hash, rows: self.rows, bytes, key: self.key.clone() }))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let ctx = crate::flight::catalog::session_context(&store, datafusion::prelude::SessionConfig::new());
        ctx.register_table("v2", crate::flight::catalog::version_table(&store, &v2).unwrap()).unwrap();
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
