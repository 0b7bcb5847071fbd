//! DataFusion over the snapshot store: a version as a table of its Parquet objects, and the
//! session that can read them, encrypted objects included.
//!
//! Every reader of versions with SQL goes through here — diffs, the label join, the Flight SQL
//! catalog — so decryption and the rows' schema are decided in one place. This module knows
//! nothing of Flight, gRPC or catalogs; it must not write into the store.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::config::EncryptionFactoryOptions;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::parquet_encryption::EncryptionFactory;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::path::Path as ObjectPath;
use parquet::encryption::decrypt::FileDecryptionProperties;
use parquet::encryption::encrypt::FileEncryptionProperties;
use schemas::records::{clean_schema, scored_schema};

use crate::scored::SCORED_SPEC;
use crate::store::{Manifest, SnapshotStore};

/// The rows' schema of a version: scored records or cleaned text.
pub fn version_schema(m: &Manifest) -> SchemaRef {
    if m.spec_hash == SCORED_SPEC { scored_schema() } else { clean_schema() }
}

/// A version as a table over its Parquet objects.
pub fn version_table(store: &SnapshotStore, m: &Manifest) -> DfResult<Arc<dyn TableProvider>> {
    let schema = version_schema(m);
    let files = store.live_files(m);
    if files.is_empty() {
        return Ok(Arc::new(EmptyTable::new(schema)));
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(store.object_path(&f.hash).to_string_lossy()))
        .collect::<DfResult<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(parquet_format(store))).with_file_extension(".parquet");
    let config =
        ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// `config` with plain Utf8 strings everywhere, no string views: JDBC/ODBC-era clients do not
/// all read them. The Flight SQL sessions and the version cache's loads both use it, so a
/// cached version holds the types a query over its Parquet objects returns.
pub fn plain_strings(mut config: SessionConfig) -> SessionConfig {
    config.options_mut().sql_parser.map_string_types_to_utf8view = false;
    config.options_mut().execution.parquet.schema_force_view_types = false;
    config
}

/// The id under which a session knows the store's decryption.
const ENCRYPTION_FACTORY: &str = "driftwood-snapshots";

/// A DataFusion session that can read `store`'s objects, encrypted ones included (every
/// table over them must use [`parquet_format`]).
pub fn session_context(store: &SnapshotStore, config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    if store.keyring().is_some() {
        ctx.runtime_env().register_parquet_encryption_factory(
            ENCRYPTION_FACTORY,
            Arc::new(StoreDecryption(store.clone())),
        );
    }
    ctx
}

/// The Parquet format of the store's objects: decrypting through the session's factory when
/// the store has a keyring (see [`session_context`]).
pub fn parquet_format(store: &SnapshotStore) -> ParquetFormat {
    let format = ParquetFormat::default();
    if store.keyring().is_none() {
        return format;
    }
    let mut options = format.options().clone();
    options.crypto.factory_id = Some(ENCRYPTION_FACTORY.to_string());
    format.with_options(options)
}

/// DataFusion's hook for Parquet decryption: the store's data keys, by the key metadata of each
/// file (plaintext objects read as before). DataFusion never writes into the store.
#[derive(Debug)]
struct StoreDecryption(SnapshotStore);

#[async_trait]
impl EncryptionFactory for StoreDecryption {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &ObjectPath,
    ) -> DfResult<Option<Arc<FileEncryptionProperties>>> {
        Err(DataFusionError::NotImplemented("the snapshot store is written by the snapshot job only".into()))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _file_path: &ObjectPath,
    ) -> DfResult<Option<Arc<FileDecryptionProperties>>> {
        self.0.decryption().map(Some).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}
