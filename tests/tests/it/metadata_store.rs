//! The shared behavioural suite of the metadata store (`tests::store_suite`) against both
//! backends: the embedded SQLite file, and the ScyllaDB/Cassandra backend through the real
//! `scylla` driver on Apache Cassandra 5.0 (`tests::cassandra`, one node per test binary, a
//! keyspace per case, password authentication on).

use std::sync::Arc;

use anyhow::Result;
use metastore::cql::ScyllaStore;
use metastore::{MetadataStore, SqliteStore};
use schemas::config::StoreConfig;
use tests::cassandra::Cassandra;
use tests::store_suite::{self as suite, Store};

fn sqlite(dir: &std::path::Path) -> Result<(Store, Store)> {
    Ok((Arc::new(SqliteStore::in_data_dir(dir)?), Arc::new(SqliteStore::in_data_dir(dir)?)))
}

/// Two stores on a keyspace of their own, each with its own connection (two replicas).
async fn cassandra(name: &str) -> Result<(Store, Store)> {
    let config = Cassandra::shared()?.store_config(name);
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
        mod on_cassandra {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() -> Result<()> {
                    let (a, b) = cassandra(stringify!($case)).await?;
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
    concurrent_registrations_get_distinct_versions,
    drift_windows_newest_first_and_expire,
    recent_predictions_newest_first_with_filters,
);

/// The keyspace is created and migrated once: a second replica starting finds it migrated and
/// sees the first one's data.
#[tokio::test]
async fn cassandra_migrates_once_and_replicas_share_data() -> Result<()> {
    let node = Cassandra::shared()?;
    let config = node.store_config("migrates");
    let first = ScyllaStore::connect(&config).await?;
    first.register_model(suite::mv("spam", "r1")).await?;
    let second = ScyllaStore::connect(&config).await?;
    assert_eq!(second.model_names().await?, ["spam"]);
    let session = node.superuser().await?;
    let rows = session
        .query_unpaged(format!("SELECT id, description FROM {}.schema_migrations", config.keyspace), ())
        .await?
        .into_rows_result()?;
    let mut migrations: Vec<(i32, String)> = rows.rows::<(i32, String)>()?.collect::<Result<_, _>>()?;
    migrations.sort();
    // Every migration recorded once, by whichever replica applied it.
    let ids: Vec<i32> = migrations.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2], "{migrations:?}");
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
