//! The sealed data keys of encrypted objects: one record per key under `keys/`, sealed by the
//! keyring's active key; unsealing for reads, re-sealing under a new active key (`rewrap`) and
//! counting which keyring key seals how many. The keyring itself is [`crate::crypto`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use serde::Serialize;

use super::{SnapshotStore, sync_dir, unique, write_synced};
use crate::crypto::{self, Keyring};
use crate::{Error, Result};

impl SnapshotStore {
    /// A fresh random data key, stored sealed by the keyring's active key before any data is
    /// written with it.
    pub(super) fn new_data_key(&self, keyring: &Keyring) -> Result<(String, [u8; crypto::KEY_LEN])> {
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
    pub(super) fn key_records(&self) -> Result<Vec<(String, PathBuf)>> {
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
pub(super) const KEY_RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

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
