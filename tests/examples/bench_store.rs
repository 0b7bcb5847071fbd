//! Prediction-log write throughput of the two metadata-store backends on this machine: the
//! embedded SQLite file and one Apache Cassandra 5.0 node on loopback (started by the test
//! harness, `tests::cassandra`), each written by `WRITERS` concurrent handles in batches of
//! `BATCH` entries (the scorer writes one batch per scored Kafka batch). Run by
//! `scripts/bench/store`.
//!
//! Usage: bench_store [ROWS]   (default 200000)

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use chrono::Utc;
use metastore::cql::ScyllaStore;
use metastore::{MetadataStore, PredictionLogEntry, SqliteStore};
use tests::cassandra::Cassandra;

const WRITERS: usize = 4;
const BATCH: usize = 500;

#[tokio::main]
async fn main() -> Result<()> {
    let rows: usize = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(200_000);
    let dir = tempfile::tempdir()?;
    let sqlite: Vec<Arc<dyn MetadataStore>> = (0..WRITERS)
        .map(|_| Ok(Arc::new(SqliteStore::in_data_dir(dir.path())?) as Arc<dyn MetadataStore>))
        .collect::<Result<_>>()?;
    let sqlite_rate = write(&sqlite, rows).await?;

    eprintln!("starting a Cassandra node ...");
    let node = Cassandra::start()?;
    let config = node.store_config("bench");
    let mut cassandra: Vec<Arc<dyn MetadataStore>> = Vec::new();
    for _ in 0..WRITERS {
        cassandra.push(Arc::new(ScyllaStore::connect(&config).await?));
    }
    // Warm-up: the first writes compile the node's hot paths.
    write(&cassandra[..1], 20_000.min(rows)).await?;
    let cassandra_rate = write(&cassandra, rows).await?;

    println!("prediction log, {rows} rows, {WRITERS} writers, batches of {BATCH}:");
    println!("  {:<32} {:>10.0} rows/s", "SQLite (one file, WAL)", sqlite_rate);
    println!("  {:<32} {:>10.0} rows/s", "Cassandra 5.0 (one node, 2 cores)", cassandra_rate);
    Ok(())
}

/// Writes `rows` entries spread over `stores` at once and returns rows per second; checks the
/// count afterwards so a write that was dropped shows up.
async fn write(stores: &[Arc<dyn MetadataStore>], rows: usize) -> Result<f64> {
    let model = format!("bench-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let started = Instant::now();
    let per_writer = rows.div_ceil(stores.len());
    let mut tasks = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let (store, model) = (store.clone(), model.clone());
        let mine = per_writer.min(rows.saturating_sub(w * per_writer));
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            while written < mine {
                let n = BATCH.min(mine - written);
                let batch: Vec<_> = (0..n).map(|i| entry(&model, w * per_writer + written + i)).collect();
                store.log_predictions(&batch).await?;
                written += n;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    let counted = stores[0].prediction_count(&model).await?;
    anyhow::ensure!(counted == rows as u64, "wrote {rows} rows, {counted} are in the log");
    Ok(rate)
}

fn entry(model: &str, i: usize) -> PredictionLogEntry {
    PredictionLogEntry {
        at: Utc::now(),
        id: Some(format!("id-{i}")),
        channel: "stream".into(),
        model: model.into(),
        version: 1,
        label: if i.is_multiple_of(3) { "spam".into() } else { "ham".into() },
        confidence: 0.93,
        latency_us: 180,
    }
}
