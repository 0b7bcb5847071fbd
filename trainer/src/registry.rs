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

/// One move of a model's alias: which alias, who moves it and why (for the audit trail).
#[derive(Debug, Clone, Copy)]
pub struct AliasChange<'a> {
    pub name: &'a str,
    pub alias: &'a str,
    pub actor: &'a str,
    pub reason: &'a str,
}

/// Points the alias at `version` (audited) and announces it with `ModelPromoted`; returns the
/// version it pointed at before.
pub async fn promote(
    store: &dyn MetadataStore,
    control: Option<&ControlProducer>,
    change: &AliasChange<'_>,
    version: u32,
) -> Result<Option<u32>> {
    let AliasChange { name, alias, actor, reason } = *change;
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

/// Points the alias back at the version it served before the current one (see
/// [`MetadataStore::rollback_alias`]) and announces it with `ModelPromoted`; returns `(from, to)`.
pub async fn rollback(
    store: &dyn MetadataStore,
    control: Option<&ControlProducer>,
    change: &AliasChange<'_>,
) -> Result<(u32, u32)> {
    let AliasChange { name, alias, actor, reason } = *change;
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
