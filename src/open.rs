//! Opening what the configuration names: the cleaning plan, the keyring, the snapshot store,
//! the metadata store, the control producer and the authenticator. Every command and service
//! opens its parts through these, so they are opened one way.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use metastore::MetadataStore;
use schemas::Config;
use stream::clean::{CleanPlan, CleanSpec};
use stream::crypto::Keyring;
use stream::store::SnapshotStore;

/// The cleaning plan of `clean.spec` (the default spec when unset).
pub fn plan(config: &Config) -> Result<Arc<CleanPlan>> {
    plan_of(config.clean.spec.as_deref())
}

/// The cleaning plan of a spec file (the default spec when None).
pub fn plan_of(spec: Option<&std::path::Path>) -> Result<Arc<CleanPlan>> {
    let spec = match spec {
        None => CleanSpec::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading cleaning spec {}", path.display()))?;
            CleanSpec::from_toml(&text)?
        }
    };
    Ok(Arc::new(CleanPlan::compile(spec)?))
}

pub fn data_dir(config: &Config) -> PathBuf {
    PathBuf::from(&config.data_dir)
}

/// The keyring of `[encryption]` (or `DRIFTWOOD_ENCRYPTION_KEYS`), if one is configured.
pub fn keyring(config: &Config) -> Result<Option<Arc<Keyring>>> {
    let env = std::env::var(stream::crypto::KEYS_ENV).ok();
    Ok(Keyring::load(&config.encryption, env)?.map(Arc::new))
}

/// The snapshot store of the data dir, encrypting with the configured keyring.
pub fn snapshots(config: &Config) -> Result<SnapshotStore> {
    Ok(SnapshotStore::open(&data_dir(config))?.with_keyring(keyring(config)?))
}

/// The metadata store of `[store]`.
pub async fn metadata(config: &Config) -> Result<Arc<dyn MetadataStore>> {
    Ok(metastore::open(config, &data_dir(config)).await?)
}

/// A producer of control events on the configured control topic.
pub fn control(config: &Config) -> Result<ingest::control::ControlProducer> {
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    Ok(ingest::control::ControlProducer::new(producer, config.topics().control))
}

/// The process's authenticator (users, keys); a warning when authentication is off.
pub fn auth(config: &Config) -> Result<Arc<serving::auth::JwtAuth>> {
    if !config.auth.enabled {
        tracing::warn!(
            "auth.enabled = false: every request is treated as an anonymous admin (local use only)"
        );
    }
    Ok(Arc::new(serving::auth::JwtAuth::from_config(&config.auth)?))
}
