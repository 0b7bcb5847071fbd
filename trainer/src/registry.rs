//! Resolving and promoting registered model versions.

use ingest::control::ControlProducer;
use schemas::events::ControlEvent;

use crate::{Error, Result};
use metastore::{MetadataStore, ModelVersion};

/// The alias the server follows by default.
pub const PRODUCTION: &str = "production";
/// The alias a freshly trained, not yet promoted model gets.
pub const CANDIDATE: &str = "candidate";

/// Resolves `reference` — an alias (`production`), `latest`, or a version number — of `name`.
pub async fn resolve(store: &dyn MetadataStore, name: &str, reference: &str) -> Result<ModelVersion> {
    if reference == "latest" {
        return store
            .model_versions(name)
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("model `{name}` has no versions")));
    }
    let version = match reference.trim_start_matches('v').parse::<u32>() {
        Ok(v) => v,
        Err(_) => store
            .get_alias(name, reference)
            .await?
            .ok_or_else(|| Error::NotFound(format!("alias `{reference}` of model `{name}`")))?,
    };
    Ok(store.get_model_version(name, version).await?)
}

/// Points `alias` at `version` (audited) and announces it with `ModelPromoted`.
pub async fn promote(
    store: &dyn MetadataStore,
    control: Option<&ControlProducer>,
    name: &str,
    version: u32,
    alias: &str,
    actor: &str,
    reason: &str,
) -> Result<Option<u32>> {
    if !schemas::config::valid_name(alias) {
        return Err(Error::Input(format!("invalid alias `{alias}`")));
    }
    let mv = store.get_model_version(name, version).await?;
    let previous = store.set_alias(name, alias, version, actor, reason).await?;
    if let Some(control) = control {
        control
            .send(ControlEvent::ModelPromoted {
                model: name.to_string(),
                version,
                alias: alias.to_string(),
                previous,
                spec_hash: mv.spec_hash,
            })
            .await?;
    }
    Ok(previous)
}

/// Points `alias` back at the version it served before the current one (see
/// [`MetadataStore::rollback_alias`]) and announces it with `ModelPromoted`; returns `(from, to)`.
pub async fn rollback(
    store: &dyn MetadataStore,
    control: Option<&ControlProducer>,
    name: &str,
    alias: &str,
    actor: &str,
    reason: &str,
) -> Result<(u32, u32)> {
    let (from, to) = store.rollback_alias(name, alias, actor, reason).await?;
    if let Some(control) = control {
        let mv = store.get_model_version(name, to).await?;
        control
            .send(ControlEvent::ModelPromoted {
                model: name.to_string(),
                version: to,
                alias: alias.to_string(),
                previous: Some(from),
                spec_hash: mv.spec_hash,
            })
            .await?;
    }
    Ok((from, to))
}
