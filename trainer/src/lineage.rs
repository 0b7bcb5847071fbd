//! Lineage: where a prediction came from, step by step back to the input.
//!
//! ```text
//!  prediction (scored dataset row: id, model@version, raw partition/offset)
//!    → model version (registry) → run (params, metrics) → processed data version
//!    → raw data version (its Kafka offset ranges, imported files' hashes) → cleaning spec (hash,
//!    and its TOML when kept)
//! ```
//!
//! `driftwood lineage` and `GET /v1/lineage/...` both print a [`Lineage`]; a step that cannot
//! be followed (a dataset written before raw data was kept, a spec this store never recorded)
//! is `None`, not an error.

use metastore::{MetadataStore, ModelVersion, Run};
use schemas::records::scored_col;
use serde::Serialize;
use stream::store::{ImportedFile, Manifest, SnapshotStore, SourceOffsets};

use crate::{Error, Result, registry};

/// The chain behind a model version, and behind one prediction when asked for one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lineage {
    /// The prediction asked about, as the scored dataset holds it.
    pub prediction: Option<PredictionStep>,
    pub model: ModelVersion,
    pub run: Run,
    /// The processed data version the model was trained on (None: this snapshot store does not
    /// hold it, e.g. a model imported or trained elsewhere).
    pub data: Option<DataStep>,
    /// The raw version that data was cleaned from.
    pub raw: Option<DataStep>,
    /// The cleaning spec the model was trained with.
    pub spec: SpecStep,
}

/// One prediction on the scored dataset.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PredictionStep {
    pub id: String,
    pub label: Option<String>,
    /// The scored dataset's version holding it.
    pub scored_version: String,
    /// Where the raw record was read: `text.raw` partition and offset.
    pub raw_partition: i32,
    pub raw_offset: i64,
    /// The raw dataset's first version holding that record, when one does.
    pub raw_version: Option<String>,
}

/// A data version, as lineage shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DataStep {
    pub dataset: String,
    pub seq: u64,
    pub id: String,
    pub rows: u64,
    pub spec_hash: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Cumulative Kafka offsets consumed per topic partition: `[first, next)`.
    pub sources: Vec<SourceOffsets>,
    /// Content hashes of the Parquet objects.
    pub objects: Vec<String>,
    /// The files imported into this raw data up to this version (`data import`), by content.
    pub imported: Vec<ImportedFile>,
    /// Rows of objects raw-data retention expired (the manifest still names them).
    pub expired_rows: u64,
}

impl DataStep {
    fn of(m: &Manifest) -> DataStep {
        DataStep {
            dataset: m.dataset.clone(),
            seq: m.seq,
            id: m.id.clone(),
            rows: m.rows,
            spec_hash: m.spec_hash.clone(),
            created_at: m.created_at,
            sources: m.sources.clone(),
            objects: m.files.iter().map(|f| f.hash.clone()).collect(),
            imported: vec![],
            expired_rows: 0,
        }
    }

    /// A raw version's step: with every file imported up to it and what retention expired.
    fn of_raw(store: &SnapshotStore, m: &Manifest) -> Result<DataStep> {
        let imported = store
            .versions(&m.dataset)?
            .into_iter()
            .filter(|v| v.seq <= m.seq)
            .flat_map(|v| v.added.imported)
            .collect();
        let expired_rows = m.files.iter().filter(|f| store.is_expired(&f.hash)).map(|f| f.rows).sum();
        Ok(DataStep { imported, expired_rows, ..DataStep::of(m) })
    }
}

/// The cleaning spec: its hash, and its TOML when the store kept it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SpecStep {
    pub hash: String,
    pub toml: Option<String>,
}

/// The lineage of model `name` at `reference` (a version, `v<N>`, an alias or `latest`).
pub async fn of_model(
    meta: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    name: &str,
    reference: &str,
) -> Result<Lineage> {
    let model = registry::resolve(meta, name, reference).await?;
    let run = meta.get_run(&model.run_id).await?;
    let (store, id, dataset) =
        (snapshots.clone(), model.data_version.clone(), run.tags.get("dataset").cloned());
    let spec_hash = model.spec_hash.clone();
    let (data, raw, spec) =
        tokio::task::spawn_blocking(move || data_steps(&store, &id, dataset.as_deref(), &spec_hash))
            .await
            .map_err(|e| Error::Internal(format!("lineage task failed: {e}")))??;
    Ok(Lineage { prediction: None, model, run, data, raw, spec })
}

/// The lineage of the prediction for record `id`: its latest row on `scored_dataset`, then the
/// model version that made it, and the raw version holding the record it scored.
pub async fn of_prediction(
    meta: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    scored_dataset: &str,
    raw_topic: &str,
    id: &str,
) -> Result<Lineage> {
    let (store, scored, wanted) = (snapshots.clone(), scored_dataset.to_string(), id.to_string());
    let (mut step, model, version) =
        tokio::task::spawn_blocking(move || find_prediction(&store, &scored, &wanted))
            .await
            .map_err(|e| Error::Internal(format!("lineage task failed: {e}")))??;
    let mut lineage = of_model(meta, snapshots, &model, &version.to_string()).await?;
    if let Some(raw) = &lineage.raw {
        let (store, dataset, topic, at) = (
            snapshots.clone(),
            raw.dataset.clone(),
            raw_topic.to_string(),
            (step.raw_partition, step.raw_offset),
        );
        step.raw_version =
            tokio::task::spawn_blocking(move || raw_version_holding(&store, &dataset, &topic, at))
                .await
                .map_err(|e| Error::Internal(format!("lineage task failed: {e}")))??;
    }
    lineage.prediction = Some(step);
    Ok(lineage)
}

/// The first raw version whose commit consumed `(partition, offset)` of `topic` (a raw dataset
/// may hold several topics' records, e.g. history and live).
fn raw_version_holding(
    store: &SnapshotStore,
    dataset: &str,
    topic: &str,
    (partition, offset): (i32, i64),
) -> Result<Option<String>> {
    Ok(store
        .versions(dataset)?
        .into_iter()
        .find(|v| {
            v.added
                .consumed
                .iter()
                .any(|c| c.topic == topic && c.partition == partition && (c.first..c.next).contains(&offset))
        })
        .map(|v| v.id))
}

type DataSteps = (Option<DataStep>, Option<DataStep>, SpecStep);

fn data_steps(store: &SnapshotStore, id: &str, dataset: Option<&str>, spec_hash: &str) -> Result<DataSteps> {
    let candidates = match dataset {
        Some(d) => vec![d.to_string()],
        None => store.datasets()?,
    };
    let data = candidates.iter().find_map(|d| store.versions(d).ok()?.into_iter().find(|m| m.id == id));
    let raw = match data.as_ref().and_then(|d| d.raw.as_ref()) {
        Some(link) => Some(DataStep::of_raw(store, &store.resolve(&link.dataset, &link.version)?)?),
        None => None,
    };
    let toml = store.spec(spec_hash)?.map(|s| s.to_toml());
    Ok((data.as_ref().map(DataStep::of), raw, SpecStep { hash: spec_hash.to_string(), toml }))
}

/// The latest scored row of record `id`, the model and version that made it.
fn find_prediction(store: &SnapshotStore, scored: &str, id: &str) -> Result<(PredictionStep, String, u32)> {
    use arrow::array::{Array, Int32Array, Int64Array, StringArray};
    let m = store.resolve(scored, "latest")?;
    let mut found = None;
    for batch in store.read(&m) {
        let batch = batch?;
        let column = |name: &str| batch.column(batch.schema().index_of(name).expect("scored schema")).clone();
        let ids = column(scored_col::ID);
        let ids = ids.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad(scored_col::ID))?;
        let Some(i) = (0..ids.len()).rev().find(|&i| ids.value(i) == id) else { continue };
        let text = |name: &str| -> Result<Option<String>> {
            let c = column(name);
            let c = c.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad(name))?;
            Ok(c.is_valid(i).then(|| c.value(i).to_string()))
        };
        let int64 = |name: &str| -> Result<i64> {
            let c = column(name);
            Ok(c.as_any().downcast_ref::<Int64Array>().ok_or_else(|| bad(name))?.value(i))
        };
        let partition = column(scored_col::RAW_PARTITION);
        let partition = partition
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| bad(scored_col::RAW_PARTITION))?
            .value(i);
        found = Some((
            text(scored_col::LABEL)?,
            text(scored_col::MODEL)?.unwrap_or_default(),
            int64(scored_col::MODEL_VERSION)? as u32,
            partition,
            int64(scored_col::RAW_OFFSET)?,
        ));
    }
    let (label, model, version, raw_partition, raw_offset) = found.ok_or_else(|| {
        Error::NotFound(format!("a prediction for `{id}` in dataset `{scored}` v{}", m.seq))
    })?;
    let step = PredictionStep {
        id: id.to_string(),
        label,
        scored_version: m.id.clone(),
        raw_partition,
        raw_offset,
        raw_version: None,
    };
    Ok((step, model, version))
}

fn bad(column: &str) -> Error {
    Error::Internal(format!("the scored dataset's column {column} has an unexpected type"))
}
