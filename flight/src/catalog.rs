//! The snapshot store as a DataFusion catalog: catalog `driftwood`, one schema per dataset,
//! tables `latest`, `versions`, `v<seq>` per version and one per tag; any version id (or a
//! unique prefix of at least 4 characters, quoted) resolves too.
//!
//! Tables are resolved when a query is planned, so a version committed a moment ago is
//! queryable at once; a version's table reads its immutable Parquet objects (streaming, with
//! projection and predicate push-down).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use schemas::records::TS_TZ;
use stream::query::{version_schema, version_table};
use stream::store::{Manifest, SnapshotStore};

use crate::cache::VersionCache;

/// The one catalog name.
pub const CATALOG: &str = "driftwood";
/// The table listing every version of a dataset.
pub const VERSIONS_TABLE: &str = "versions";
/// The table of the newest version.
pub const LATEST_TABLE: &str = "latest";

/// The versions a query's table names resolved to: `(dataset, table name) → version id`.
///
/// A session records every resolution here; a session created with the pins of an earlier one
/// resolves those names to the same versions. That is what keeps the DoGets of one query (one
/// per endpoint, each planning it again) reading exactly the versions its FlightInfo planned,
/// even if `latest` or a tag has moved since.
pub type Pins = Arc<Mutex<BTreeMap<(String, String), String>>>;

/// Every dataset of a store, as schemas.
#[derive(Debug)]
pub struct StoreCatalog {
    store: SnapshotStore,
    pins: Pins,
    cache: Option<Arc<VersionCache>>,
}

impl StoreCatalog {
    pub fn new(store: SnapshotStore, pins: Pins) -> StoreCatalog {
        StoreCatalog { store, pins, cache: None }
    }

    /// Versions are read from `cache` when they are in, and loaded into it on first use.
    pub fn with_cache(mut self, cache: Arc<VersionCache>) -> StoreCatalog {
        self.cache = Some(cache);
        self
    }
}

impl CatalogProvider for StoreCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.store.datasets().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list datasets");
            Vec::new()
        })
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schema_names().iter().any(|d| d == name).then(|| {
            Arc::new(DatasetSchema {
                store: self.store.clone(),
                dataset: name.to_string(),
                pins: self.pins.clone(),
                cache: self.cache.clone(),
            }) as _
        })
    }
}

/// One dataset: its versions and tags as tables.
#[derive(Debug)]
pub struct DatasetSchema {
    store: SnapshotStore,
    dataset: String,
    pins: Pins,
    cache: Option<Arc<VersionCache>>,
}

impl DatasetSchema {
    fn names(&self) -> stream::Result<Vec<String>> {
        Ok(table_schemas(&self.store, &self.dataset)?.into_iter().map(|(name, _)| name).collect())
    }

    fn resolve(&self, name: &str) -> stream::Result<Option<Manifest>> {
        let key = (self.dataset.clone(), name.to_string());
        let pinned =
            self.pins.lock().map_err(|_| stream::Error::Internal("pins poisoned".into()))?.get(&key).cloned();
        let m = match self.store.resolve(&self.dataset, pinned.as_deref().unwrap_or(name)) {
            Ok(m) => m,
            Err(stream::Error::NotFound(_)) if pinned.is_none() => return Ok(None),
            Err(e) => return Err(e),
        };
        self.pins
            .lock()
            .map_err(|_| stream::Error::Internal("pins poisoned".into()))?
            .insert(key, m.id.clone());
        Ok(Some(m))
    }
}

#[async_trait]
impl SchemaProvider for DatasetSchema {
    fn table_names(&self) -> Vec<String> {
        self.names().unwrap_or_else(|e| {
            tracing::warn!(dataset = self.dataset, error = %e, "cannot list versions");
            Vec::new()
        })
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if name == VERSIONS_TABLE {
            return Ok(Some(versions_table(&self.store, &self.dataset).map_err(external)?));
        }
        let Some(m) = self.resolve(name).map_err(external)? else { return Ok(None) };
        let Some(cache) = &self.cache else { return Ok(Some(version_table(&self.store, &m)?)) };
        match cache.get(&m.id) {
            Some(batches) => Ok(Some(cached_table(&m, &batches)?)),
            None => {
                cache.load_in_background(&self.store, &m);
                Ok(Some(version_table(&self.store, &m)?))
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        name == VERSIONS_TABLE || matches!(self.resolve(name), Ok(Some(_)))
    }
}

/// Every table of `dataset` with its schema, from one read of the manifests and tags, in
/// listing order: `latest`, `versions`, tags, then `v1`, `v2`, ...
pub fn table_schemas(store: &SnapshotStore, dataset: &str) -> stream::Result<Vec<(String, SchemaRef)>> {
    let versions = store.versions(dataset)?;
    let mut out = Vec::with_capacity(versions.len() + 2);
    if let Some(m) = versions.last() {
        out.push((LATEST_TABLE.to_string(), version_schema(m)));
    }
    out.push((VERSIONS_TABLE.to_string(), versions_schema()));
    for (tag, id) in store.tags(dataset)? {
        if let Some(m) = versions.iter().find(|m| m.id == id) {
            out.push((tag, version_schema(m)));
        }
    }
    out.extend(versions.iter().map(|m| (format!("v{}", m.seq), version_schema(m))));
    Ok(out)
}

fn external(e: stream::Error) -> DataFusionError {
    match e {
        stream::Error::DataFusion(e) => e,
        e => DataFusionError::External(Box::new(e)),
    }
}

/// A cached version as a table: its batches in as many partitions as there are cores.
fn cached_table(m: &Manifest, batches: &[RecordBatch]) -> DfResult<Arc<dyn TableProvider>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_partition = batches.len().div_ceil(cores).max(1);
    let partitions = batches.chunks(per_partition).map(<[RecordBatch]>::to_vec).collect::<Vec<_>>();
    Ok(Arc::new(MemTable::try_new(version_schema(m), partitions)?))
}

/// Schema of the `versions` table.
pub fn versions_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some(TS_TZ.into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("short_id", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("parent", DataType::Utf8, true),
        Field::new("created_at", ts, false),
        Field::new("spec_hash", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("rows_added", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("tags", DataType::Utf8, false),
        Field::new("sources", DataType::Utf8, false),
    ]))
}

/// Every version's manifest fields, read now.
fn versions_table(store: &SnapshotStore, dataset: &str) -> stream::Result<Arc<dyn TableProvider>> {
    let versions = store.versions(dataset)?;
    let tags = store.tags(dataset)?;
    let n = versions.len();
    let mut id = StringBuilder::with_capacity(n, n * 64);
    let mut short = StringBuilder::with_capacity(n, n * 12);
    let mut seq = Int64Builder::with_capacity(n);
    let mut table = StringBuilder::new();
    let mut parent = StringBuilder::with_capacity(n, n * 64);
    let mut created = TimestampMillisecondBuilder::with_capacity(n).with_timezone(TS_TZ);
    let mut spec = StringBuilder::with_capacity(n, n * 64);
    let (mut rows, mut added, mut files, mut bytes) =
        (Int64Builder::new(), Int64Builder::new(), Int64Builder::new(), Int64Builder::new());
    let (mut tag_col, mut sources) = (StringBuilder::new(), StringBuilder::new());
    for m in &versions {
        id.append_value(&m.id);
        short.append_value(m.short_id());
        seq.append_value(m.seq as i64);
        table.append_value(format!("v{}", m.seq));
        parent.append_option(m.parent.as_deref());
        created.append_value(m.created_at.timestamp_millis());
        spec.append_value(&m.spec_hash);
        rows.append_value(m.rows as i64);
        added.append_value(m.added.rows as i64);
        files.append_value(m.files.len() as i64);
        bytes.append_value(m.files.iter().map(|f| f.bytes as i64).sum());
        let mut t: Vec<&str> = m.tags.iter().map(String::as_str).collect();
        t.extend(tags.iter().filter(|(_, v)| **v == m.id).map(|(k, _)| k.as_str()));
        t.sort_unstable();
        t.dedup();
        tag_col.append_value(t.join(","));
        sources.append_value(serde_json::to_string(&m.sources).expect("offsets serialize"));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(short.finish()),
        Arc::new(seq.finish()),
        Arc::new(table.finish()),
        Arc::new(parent.finish()),
        Arc::new(created.finish()),
        Arc::new(spec.finish()),
        Arc::new(rows.finish()),
        Arc::new(added.finish()),
        Arc::new(files.finish()),
        Arc::new(bytes.finish()),
        Arc::new(tag_col.finish()),
        Arc::new(sources.finish()),
    ];
    let batch = RecordBatch::try_new(versions_schema(), columns)?;
    Ok(Arc::new(MemTable::try_new(versions_schema(), vec![vec![batch]])?))
}
