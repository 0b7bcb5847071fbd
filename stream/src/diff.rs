//! Row-level differences between two versions of a dataset, by id — what DVC cannot tell
//! (dvc#770). Runs as a DataFusion full outer join over the two versions' Parquet objects, so
//! it streams and spills instead of loading either version into memory.

use arrow::array::{Array, AsArray};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;

use crate::store::{Manifest, SnapshotStore};
use crate::{Error, Result};

/// Counts of rows (by id) added, removed, changed (text or label differs) and unchanged from
/// version A to version B, with a few example ids of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Diff {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub examples_added: Vec<String>,
    pub examples_removed: Vec<String>,
    pub examples_changed: Vec<String>,
}

/// Registers a version as table `name` in `ctx`.
pub async fn register_version(
    ctx: &SessionContext,
    name: &str,
    store: &SnapshotStore,
    m: &Manifest,
) -> Result<()> {
    ctx.register_table(name, crate::query::version_table(store, m)?)?;
    Ok(())
}

/// Compares version `a` (before) with version `b` (after).
pub async fn diff(store: &SnapshotStore, a: &Manifest, b: &Manifest, examples: usize) -> Result<Diff> {
    let ctx = crate::query::session_context(store, SessionConfig::new());
    register_version(&ctx, "va", store, a).await?;
    register_version(&ctx, "vb", store, b).await?;
    let joined = "(SELECT id, text, label FROM va) a FULL OUTER JOIN (SELECT id, text, label FROM vb) b ON a.id = b.id";
    let changed = "a.id IS NOT NULL AND b.id IS NOT NULL AND ((a.text IS DISTINCT FROM b.text) OR (a.label IS DISTINCT FROM b.label))";
    let counts = ctx
        .sql(&format!(
            "SELECT \
               CAST(SUM(CASE WHEN a.id IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN b.id IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN {changed} THEN 1 ELSE 0 END) AS BIGINT), \
               CAST(COUNT(*) AS BIGINT) \
             FROM {joined}"
        ))
        .await?
        .collect()
        .await?;
    let batch = counts.first().ok_or_else(|| Error::Internal("diff returned no rows".into()))?;
    let get = |i: usize| -> u64 {
        let col = batch.column(i).as_primitive::<arrow::datatypes::Int64Type>();
        if col.is_null(0) { 0 } else { col.value(0) as u64 }
    };
    let (added, removed, changed_n, total) = (get(0), get(1), get(2), get(3));
    let ids = |filter: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx
                .sql(&format!("SELECT CAST(COALESCE(b.id, a.id) AS VARCHAR) AS id FROM {joined} WHERE {filter} ORDER BY 1 LIMIT {examples}"))
                .await?
                .collect()
                .await?;
            let mut out = Vec::new();
            for b in &batches {
                let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
                out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
            }
            Ok::<_, Error>(out)
        }
    };
    Ok(Diff {
        added,
        removed,
        changed: changed_n,
        unchanged: total - added - removed - changed_n,
        examples_added: ids("a.id IS NULL".into()).await?,
        examples_removed: ids("b.id IS NULL".into()).await?,
        examples_changed: ids(changed.into()).await?,
    })
}
