//! Writing a version: content-addressed Parquet objects ([`ObjectWriter`], encrypted under a
//! fresh data key when the store has a keyring) and the atomic commit of a [`Draft`] — the
//! parts whose offsets continue the parent's are accepted, the others reported for re-reading.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::manifest::{Added, FieldInfo, FileEntry, MANIFEST_FORMAT, Manifest, SourceOffsets};
use super::{SnapshotStore, sync_dir, unique, write_synced};
use crate::{Error, Result};

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
    /// For a processed version cleaned from raw data: which raw version, and the one the parent
    /// must be linked to. The commit is then all or nothing (see [`SnapshotStore::commit`]).
    pub raw: Option<Derivation>,
    /// Files this commit imports (raw data from `data import`).
    pub imported: Vec<super::ImportedFile>,
}

/// The raw version a processed commit's rows come from.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub link: super::RawLink,
    /// The raw version id the parent version must be linked to (None: the dataset is empty or
    /// predates raw data); the new rows are those of the raw versions after it up to `link`.
    pub after: Option<String>,
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
    /// A derived draft was refused whole: the latest version is no longer linked to the raw
    /// version the draft follows, or a part overlapped it (another writer went first).
    pub stale: bool,
}

impl SnapshotStore {
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

    /// Commits a new version of `draft.dataset` on top of the latest one, atomically.
    ///
    /// A draft derived from raw data ([`Draft::raw`]) commits only on a parent linked to the
    /// raw version it expects and with every part accepted; otherwise nothing is committed and
    /// [`Committed::stale`] says so (the caller derives again from the raw dataset).
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
            if let Some(d) = &draft.raw {
                let linked = parent.as_ref().and_then(|p| p.raw.as_ref()).map(|r| r.version.as_str());
                if linked != d.after.as_deref() || !rejected.is_empty() {
                    return Ok(Committed { manifest: None, rejected, stale: true });
                }
            }
            if accepted.is_empty() {
                return Ok(Committed { manifest: None, rejected, stale: false });
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
                    return Ok(Committed { manifest: Some(manifest), rejected, stale: false });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&target)(e)),
            }
        }
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
            imported: draft.imported.clone(),
        },
        tags: draft.tags.clone(),
        raw: draft.raw.as_ref().map(|d| d.link.clone()),
    };
    m.id = m.compute_id();
    m
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
