//! Hot reload: follow a registry alias and swap the served model when it moves.
//!
//! The new version is loaded and verified on a blocking thread, next to the running one; only
//! a model that loads, verifies and matches the running cleaning plan replaces it. A refused
//! model is logged and the old one keeps serving.

use std::sync::Arc;
use std::time::Duration;

use metastore::MetadataStore;
use stream::crypto::Keyring;
use tokio_util::sync::CancellationToken;
use trainer::registry;

use crate::handle::ModelHandle;
use crate::{Error, Result};

/// Loads `name@alias` and swaps it in; `Ok(None)` when the alias does not exist yet or already
/// points at the served version.
pub async fn reload_once(
    store: &dyn MetadataStore,
    handle: &ModelHandle,
    name: &str,
    alias: &str,
    keyring: Option<Arc<Keyring>>,
) -> Result<Option<u32>> {
    let Some(version) = store.get_alias(name, alias).await? else {
        return Ok(None);
    };
    if handle.info().is_some_and(|i| i.name == name && i.version == version) {
        return Ok(None);
    }
    let mv = registry::resolve(store, name, &version.to_string()).await?;
    let model = tokio::task::spawn_blocking(move || trainer::model::load(&mv, keyring.as_deref()))
        .await
        .map_err(|e| Error::Internal(format!("model loading task failed: {e}")))??;
    let info = handle.swap(model).await?;
    Ok(Some(info.version))
}

/// Polls the alias every `interval` until cancelled, swapping on change. Failures are logged
/// (the running model stays) and retried at the next tick — except a refused version, which is
/// not retried until the alias moves again.
pub async fn follow_alias(
    store: Arc<dyn MetadataStore>,
    handle: ModelHandle,
    name: String,
    alias: String,
    keyring: Option<Arc<Keyring>>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut refused: Option<u32> = None;
    loop {
        let current = store.get_alias(&name, &alias).await.ok().flatten();
        if current.is_some() && current != refused {
            match reload_once(store.as_ref(), &handle, &name, &alias, keyring.clone()).await {
                Ok(Some(v)) => tracing::info!(model = %name, version = v, alias = %alias, "model reloaded"),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(model = %name, alias = %alias, error = %e, "new model refused; the running model stays");
                    refused = current;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
