//! The shared behavioural suite of the metadata store (`tests::store_suite`) against both
//! backends: the embedded SQLite file, and the ScyllaDB backend through the real `scylla`
//! driver on a CQL v4 node (`tests::cql::CqlNode`, the `kassandra` crate) over TCP.

use std::sync::Arc;

use anyhow::Result;
use metastore::cql::ScyllaStore;
use metastore::{MetadataStore, SqliteStore};
use schemas::config::{StoreBackend, StoreConfig};
use tests::cql::CqlNode;
use tests::store_suite::{self as suite, Store};

fn sqlite(dir: &std::path::Path) -> Result<(Store, Store)> {
    Ok((Arc::new(SqliteStore::in_data_dir(dir)?), Arc::new(SqliteStore::in_data_dir(dir)?)))
}

fn scylla_config(node: &CqlNode) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Scylla,
        nodes: node.addr.to_string(),
        keyspace: "driftwood_test".into(),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        prediction_shards: 4,
        ..StoreConfig::default()
    }
}

/// Two stores on one node, each with its own connection (two replicas).
async fn scylla(node: &CqlNode) -> Result<(Store, Store)> {
    let config = scylla_config(node);
    Ok((Arc::new(ScyllaStore::connect(&config).await?), Arc::new(ScyllaStore::connect(&config).await?)))
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() -> Result<()> {
                    let dir = tempfile::tempdir()?;
                    let (a, b) = sqlite(dir.path())?;
                    suite::$case(a, b).await
                }
            )*
        }
        mod on_scylla {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() -> Result<()> {
                    let node = CqlNode::start()?;
                    let (a, b) = scylla(&node).await?;
                    suite::$case(a, b).await
                }
            )*
        }
    };
}

both_backends!(
    runs_and_metrics,
    registry_versions_aliases_and_audit,
    rollback_steps_back_through_promotions,
    audit_records_newest_first,
    prediction_log_counts_every_writer,
);

/// Needs conditional writes. The CQL node used here parses and ignores lightweight-transaction
/// conditions, so against it this case cannot pass and is run on SQLite only; against a real
/// ScyllaDB the backend's `IF NOT EXISTS` retry loop is what makes it hold.
#[tokio::test]
async fn concurrent_registrations_on_sqlite() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b) = sqlite(dir.path())?;
    suite::concurrent_registrations_get_distinct_versions(a, b).await
}

/// The keyspace is created and migrated once: a second replica starting finds it migrated and
/// sees the first one's data.
#[tokio::test]
async fn scylla_migrates_once_and_replicas_share_data() -> Result<()> {
    let node = CqlNode::start()?;
    let config = scylla_config(&node);
    let first = ScyllaStore::connect(&config).await?;
    first.register_model(suite_model()).await?;
    let second = ScyllaStore::connect(&config).await?;
    assert_eq!(second.model_names().await?, ["spam"]);
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node.addr.to_string())
        .auto_await_schema_agreement(false)
        .build()
        .await?;
    let rows = session
        .query_unpaged("SELECT id, description FROM driftwood_test.schema_migrations", ())
        .await?
        .into_rows_result()?;
    let migrations: Vec<(i32, String)> = rows.rows::<(i32, String)>()?.collect::<Result<_, _>>()?;
    assert_eq!(migrations.len(), 1, "{migrations:?}");
    assert_eq!(migrations[0].0, 1);
    Ok(())
}

/// A node that is not there is a clear error naming it, not a hang.
#[tokio::test]
async fn scylla_unreachable_is_a_clear_error() -> Result<()> {
    let port = tests::free_port()?;
    let config = StoreConfig { nodes: format!("127.0.0.1:{port}"), ..StoreConfig::default() };
    let started = std::time::Instant::now();
    let err = ScyllaStore::connect(&config).await.err().expect("nothing listens there");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    Ok(())
}

fn suite_model() -> metastore::ModelVersion {
    metastore::ModelVersion {
        name: "spam".into(),
        version: 0,
        run_id: "r1".into(),
        family: "logreg".into(),
        data_version: "abc".into(),
        spec_hash: "h".into(),
        metrics: Default::default(),
        artifact_dir: "/x".into(),
        artifact_sha256: "s".into(),
        created_at: chrono::Utc::now(),
    }
}
