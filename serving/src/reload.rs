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

/// Which registered model a server follows, where it loads it from, and the handle it swaps
/// into.
#[derive(Clone)]
pub struct AliasFollower {
    pub store: Arc<dyn MetadataStore>,
    pub handle: ModelHandle,
    pub name: String,
    pub alias: String,
    /// Decrypts encrypted weights; None: weights are in the clear.
    pub keyring: Option<Arc<Keyring>>,
}

impl AliasFollower {
    /// Loads `name@alias` and swaps it in; `Ok(None)` when the alias does not exist yet or
    /// already points at the served version.
    pub async fn reload_once(&self) -> Result<Option<u32>> {
        let Some(version) = self.store.get_alias(&self.name, &self.alias).await? else {
            return Ok(None);
        };
        if self.handle.info().is_some_and(|i| i.name == self.name && i.version == version) {
            return Ok(None);
        }
        let mv = registry::resolve(self.store.as_ref(), &self.name, &version.to_string()).await?;
        let keyring = self.keyring.clone();
        let model = tokio::task::spawn_blocking(move || trainer::model::load(&mv, keyring.as_deref()))
            .await
            .map_err(|e| Error::Internal(format!("model loading task failed: {e}")))??;
        let info = self.handle.swap(model).await?;
        Ok(Some(info.version))
    }

    /// Polls the alias every `interval` until cancelled, swapping on change. Failures are
    /// logged (the running model stays) and retried at the next tick — except a refused
    /// version, which is not retried until the alias moves again.
    pub async fn follow(self, interval: Duration, cancel: CancellationToken) {
        let (name, alias) = (&self.name, &self.alias);
        let mut refused: Option<u32> = None;
        loop {
            let current = self.store.get_alias(name, alias).await.ok().flatten();
            if current.is_some() && current != refused {
                match self.reload_once().await {
                    Ok(Some(v)) => {
                        tracing::info!(model = %name, version = v, alias = %alias, "model reloaded")
                    }
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
}
