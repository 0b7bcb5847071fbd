//! Remotes: syncing versions and objects with another store through `object_store`.
//!
//! A remote has the same layout as the local store (`objects/<h[0..2]>/<h>.parquet`,
//! `datasets/<d>/versions/<seq>.json`), so push and pull copy only what the other side lacks:
//! objects by content hash, manifests by sequence number. Every downloaded manifest is verified
//! against its id and every downloaded object against its hash before it becomes visible.
//!
//! URLs: `file:///abs/dir` (or a plain path) for a directory; `s3://bucket/prefix` for an
//! S3-compatible store configured by the standard `AWS_*` variables (`AWS_ENDPOINT`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`);
//! `az://container/prefix` for Azure Blob Storage by the `AZURE_STORAGE_*` variables
//! (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, or `AZURE_STORAGE_USE_EMULATOR`
//! with `AZURITE_BLOB_STORAGE_URL` for Azurite); `gs://bucket/prefix` for Google Cloud Storage
//! by the `GOOGLE_*` variables (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`,
//! `GOOGLE_SERVICE_ACCOUNT_KEY`; for fake-gcs-server, a key with `gcs_base_url` and
//! `disable_oauth`).
//!
//! A dataset travels with what its versions name: the cleaning specs and the raw data they
//! were cleaned from.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::store::{Expiry, Manifest, SnapshotStore};
use crate::{Error, Result};

/// A remote store.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

/// What a push or pull transferred.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub versions: usize,
    pub objects: usize,
    pub bytes: u64,
    /// Objects already present on the other side.
    pub skipped: usize,
    /// Cleaning specs sent or fetched (`specs/<hash>.toml`).
    pub specs: usize,
    /// Expiry records of raw objects retention removed, sent or fetched instead of the objects.
    pub expired: usize,
    /// Raw datasets synced along with the dataset, because its versions were cleaned from them.
    pub raw_datasets: Vec<String>,
}

impl SyncReport {
    fn add(&mut self, other: SyncReport) {
        self.versions += other.versions;
        self.objects += other.objects;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
        self.specs += other.specs;
        self.expired += other.expired;
    }
}

/// The raw datasets `versions` were cleaned from, each with the latest raw version linked.
fn linked_raw(versions: &[Manifest]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for link in versions.iter().filter_map(|m| m.raw.as_ref()) {
        match out.iter_mut().find(|(d, _)| *d == link.dataset) {
            Some((_, seq)) => *seq = (*seq).max(link.seq),
            None => out.push((link.dataset.clone(), link.seq)),
        }
    }
    out
}

/// The cleaning specs `versions` were cleaned with (raw versions have none).
fn spec_hashes(versions: &[Manifest]) -> BTreeSet<String> {
    versions.iter().filter(|m| !m.is_raw()).map(|m| m.spec_hash.clone()).collect()
}

fn remote_err(url: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |e| Error::Remote(format!("{url}: {e}"))
}

impl Remote {
    /// Opens a remote from a URL (see the module docs).
    pub fn open(url: &str) -> Result<Remote> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::Remote(format!("{url}: {e}")))?;
            return Ok(Remote { store: Arc::new(store), prefix: ObjectPath::from(prefix), url: url.into() });
        }
        let cloud = |store: Result<Arc<dyn ObjectStore>, object_store::Error>, prefix: &str| {
            let store = store.map_err(|e| Error::Remote(format!("{url}: {e}")))?;
            Ok(Remote { store, prefix: ObjectPath::from(prefix), url: url.into() })
        };
        if let Some(rest) = url.strip_prefix("az://") {
            let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = MicrosoftAzureBuilder::from_env().with_container_name(container).build();
            return cloud(store.map(|s| Arc::new(s) as Arc<dyn ObjectStore>), prefix);
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).build();
            return cloud(store.map(|s| Arc::new(s) as Arc<dyn ObjectStore>), prefix);
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(Error::Remote(format!(
                "unsupported remote `{url}` (use file:///dir, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix)"
            )));
        }
        std::fs::create_dir_all(path).map_err(Error::io(std::path::Path::new(path)))?;
        let store =
            LocalFileSystem::new_with_prefix(path).map_err(|e| Error::Remote(format!("{url}: {e}")))?;
        Ok(Remote { store: Arc::new(store), prefix: ObjectPath::default(), url: url.into() })
    }

    fn path(&self, rel: &str) -> ObjectPath {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_string()).collect();
        parts.extend(rel.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        ObjectPath::from_iter(parts)
    }

    async fn exists(&self, rel: &str) -> Result<bool> {
        match self.store.head(&self.path(rel)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(remote_err(&self.url)(e)),
        }
    }

    async fn get(&self, rel: &str) -> Result<bytes::Bytes> {
        self.get_opt(rel).await?.ok_or_else(|| Error::Remote(format!("{}: {rel} is missing", self.url)))
    }

    async fn get_opt(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(remote_err(&self.url))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err(&self.url)(e)),
        }
    }

    async fn put(&self, rel: &str, data: Vec<u8>) -> Result<()> {
        self.store.put(&self.path(rel), PutPayload::from(data)).await.map_err(remote_err(&self.url))?;
        Ok(())
    }

    /// Sequence numbers of the versions of `dataset` on the remote.
    async fn remote_seqs(&self, dataset: &str) -> Result<BTreeSet<u64>> {
        let prefix = self.path(&format!("datasets/{dataset}/versions"));
        let metas: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(remote_err(&self.url))?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok())
            .collect())
    }

    /// Uploads the versions of `dataset` (up to `upto`, default all) and the objects they need
    /// that the remote lacks, with the cleaning specs they name and the raw data they were
    /// cleaned from (the raw dataset up to the last raw version they link to), so the remote's
    /// copy can be reprocessed and its lineage followed. Objects go first, so a manifest on the
    /// remote never points at a missing object.
    pub async fn push(
        &self,
        local: &SnapshotStore,
        dataset: &str,
        upto: Option<&Manifest>,
    ) -> Result<SyncReport> {
        let versions: Vec<Manifest> =
            local.versions(dataset)?.into_iter().filter(|m| upto.is_none_or(|u| m.seq <= u.seq)).collect();
        let mut report = self.push_versions(local, dataset, &versions).await?;
        for hash in spec_hashes(&versions) {
            let rel = spec_rel(&hash);
            match local.spec(&hash)? {
                Some(spec) if !self.exists(&rel).await? => {
                    self.put(&rel, spec.to_toml().into_bytes()).await?;
                    report.specs += 1;
                }
                Some(_) => {}
                None => {
                    tracing::warn!(dataset, spec = %hash, "the store does not keep this spec; not pushed")
                }
            }
        }
        for (raw, seq) in linked_raw(&versions) {
            let raw_versions: Vec<Manifest> =
                local.versions(&raw)?.into_iter().filter(|m| m.seq <= seq).collect();
            if raw_versions.last().is_none_or(|m| m.seq != seq) {
                tracing::warn!(
                    dataset,
                    raw,
                    seq,
                    "the raw version this dataset links to is not here; not pushed"
                );
                continue;
            }
            report.add(self.push_versions(local, &raw, &raw_versions).await?);
            report.raw_datasets.push(raw);
        }
        Ok(report)
    }

    async fn push_versions(
        &self,
        local: &SnapshotStore,
        dataset: &str,
        versions: &[Manifest],
    ) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let remote_seqs = self.remote_seqs(dataset).await?;
        for m in versions {
            if remote_seqs.contains(&m.seq) {
                let theirs: Manifest =
                    serde_json::from_slice(&self.get(&manifest_rel(dataset, m.seq)).await?).map_err(|e| {
                        Error::Remote(format!("remote manifest v{} is unreadable: {e}", m.seq))
                    })?;
                if theirs.id != m.id {
                    return Err(Error::Conflict(format!(
                        "remote `{}` has a different version {} of `{dataset}` ({} vs local {}): the histories diverged",
                        self.url,
                        m.seq,
                        theirs.short_id(),
                        m.short_id()
                    )));
                }
                continue;
            }
            for f in &m.files {
                // An object raw-data retention expired travels as its expiry record.
                if let Some(expiry) = local.expiry(&f.hash)? {
                    let rel = expired_rel(&f.hash);
                    if !self.exists(&rel).await? {
                        self.put(&rel, serde_json::to_vec_pretty(&expiry).expect("serializable")).await?;
                        report.expired += 1;
                    }
                    continue;
                }
                let rel = object_rel(&f.hash);
                if self.exists(&rel).await? {
                    report.skipped += 1;
                    continue;
                }
                // An encrypted object's data key goes first, still sealed.
                if let Some(key) = &f.key {
                    let sealed = local.key_record(key)?.ok_or_else(|| {
                        Error::Key(format!("data key {key} of object {} is missing", f.hash))
                    })?;
                    self.put(&key_rel(key), sealed).await?;
                }
                let path = local.object_path(&f.hash);
                let data = std::fs::read(&path).map_err(Error::io(&path))?;
                report.bytes += data.len() as u64;
                self.put(&rel, data).await?;
                report.objects += 1;
            }
            let bytes = serde_json::to_vec_pretty(m).expect("manifests serialize");
            self.put(&manifest_rel(dataset, m.seq), bytes).await?;
            report.versions += 1;
        }
        Ok(report)
    }

    /// Downloads the versions of `dataset` the local store lacks and the objects they need,
    /// verifying manifests (id) and objects (hash), with the specs they name and the raw
    /// datasets they were cleaned from (as [`Remote::push`] sends them; a remote pushed before
    /// raw data was kept has neither, and that is not an error).
    pub async fn pull(&self, local: &SnapshotStore, dataset: &str) -> Result<SyncReport> {
        let mut report = self.pull_versions(local, dataset).await?;
        let versions = local.versions(dataset)?;
        for hash in spec_hashes(&versions) {
            if local.spec(&hash)?.is_some() {
                continue;
            }
            let Some(bytes) = self.get_opt(&spec_rel(&hash)).await? else { continue };
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::Corrupt(format!("remote spec {hash} is not UTF-8")))?;
            let spec = crate::clean::CleanSpec::from_toml(&text)?;
            if spec.hash() != hash {
                return Err(Error::Corrupt(format!("remote spec {hash} hashes to {}", spec.hash())));
            }
            local.save_spec(&spec)?;
            report.specs += 1;
        }
        for (raw, _) in linked_raw(&versions) {
            if self.remote_seqs(&raw).await?.is_empty() {
                continue;
            }
            report.add(self.pull_versions(local, &raw).await?);
            report.raw_datasets.push(raw);
        }
        Ok(report)
    }

    async fn pull_versions(&self, local: &SnapshotStore, dataset: &str) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let local_versions = local.versions(dataset)?;
        for seq in self.remote_seqs(dataset).await? {
            let bytes = self.get(&manifest_rel(dataset, seq)).await?;
            let m = local.verify_manifest_bytes(&bytes)?;
            match local_versions.iter().find(|l| l.seq == seq) {
                Some(l) if l.id != m.id => {
                    return Err(Error::Conflict(format!(
                        "local version {seq} of `{dataset}` differs from the remote's: the histories diverged"
                    )));
                }
                _ => {}
            }
            let mut fetched_any = false;
            for f in &m.files {
                if local.has_object(&f.hash) || local.is_expired(&f.hash) {
                    report.skipped += 1;
                    continue;
                }
                let Some(data) = self.get_opt(&object_rel(&f.hash)).await? else {
                    let expiry = self.get_opt(&expired_rel(&f.hash)).await?.ok_or_else(|| {
                        Error::Remote(format!(
                            "{}: object {} of `{dataset}` v{seq} is missing",
                            self.url, f.hash
                        ))
                    })?;
                    let expiry: Expiry = serde_json::from_slice(&expiry).map_err(|e| {
                        Error::Remote(format!("expiry record of {} is unreadable: {e}", f.hash))
                    })?;
                    if expiry.hash != f.hash {
                        return Err(Error::Corrupt(format!(
                            "expiry record of {} names {}",
                            f.hash, expiry.hash
                        )));
                    }
                    local.put_expiry(&expiry)?;
                    report.expired += 1;
                    continue;
                };
                if let Some(key) = &f.key
                    && local.key_record(key)?.is_none()
                {
                    local.put_key_record(key, &self.get(&key_rel(key)).await?)?;
                }
                report.bytes += data.len() as u64;
                local.put_object(&f.hash, &data)?;
                report.objects += 1;
                fetched_any = true;
            }
            if !local_versions.iter().any(|l| l.seq == seq) {
                local.put_manifest(&m)?;
                report.versions += 1;
            } else if fetched_any {
                tracing::info!(dataset, seq, "restored missing objects of a local version");
            }
        }
        Ok(report)
    }
}

fn object_rel(hash: &str) -> String {
    format!("objects/{}/{hash}.parquet", &hash[..2])
}

fn expired_rel(hash: &str) -> String {
    format!("expired/{hash}.json")
}

fn spec_rel(hash: &str) -> String {
    format!("specs/{hash}.toml")
}

fn key_rel(id: &str) -> String {
    format!("keys/{id}.key")
}

fn manifest_rel(dataset: &str, seq: u64) -> String {
    format!("datasets/{dataset}/versions/{seq:020}.json")
}

/// Downloads the object `url` names — or, when it ends with `/`, every object under it — into
/// `dir`, streaming; each as (its name relative to the URL, or its file name; its local path),
/// sorted by name.
pub async fn download(url: &str, dir: &std::path::Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    use std::io::Write;
    let remote = Remote::open(url)?;
    let prefix = remote.prefix.clone();
    let mut keys: Vec<ObjectPath> = if url.ends_with('/') {
        let metas: Vec<_> = remote.store.list(Some(&prefix)).try_collect().await.map_err(remote_err(url))?;
        metas.into_iter().map(|m| m.location).collect()
    } else {
        vec![prefix.clone()]
    };
    keys.sort();
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let relative =
            key.as_ref().strip_prefix(prefix.as_ref()).unwrap_or(key.as_ref()).trim_start_matches('/');
        let name = match relative {
            "" => key.filename().unwrap_or("object").to_string(),
            r => r.to_string(),
        };
        // Keep the file name (its extension says the format); a number keeps names apart.
        let path = dir.join(format!("{i}-{}", key.filename().unwrap_or("object")));
        let mut file = std::fs::File::create(&path).map_err(Error::io(&path))?;
        let mut body = remote.store.get(key).await.map_err(remote_err(url))?.into_stream();
        while let Some(chunk) = body.try_next().await.map_err(remote_err(url))? {
            file.write_all(&chunk).map_err(Error::io(&path))?;
        }
        out.push((name, path));
    }
    Ok(out)
}
