//! Merging TOML tables and applying `DRIFTWOOD_*` environment variables and `--set` flags,
//! typed by the default value of the key they name.

use super::{ConfigError, Result, TOOLING_ENV};

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone)]
pub struct Override {
    /// `DRIFTWOOD_KAFKA_BROKERS` or `--set kafka.brokers=...`.
    pub origin: String,
    /// Key path, e.g. `["kafka", "brokers"]`.
    pub path: Vec<String>,
    pub raw: String,
}

pub(super) fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

pub(super) fn env_overrides<I>(defaults: &toml::Table, env: I) -> Result<Vec<Override>>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut out = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("DRIFTWOOD_") && !TOOLING_ENV.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = name["DRIFTWOOD_".len()..].to_ascii_lowercase();
        let section = defaults.iter().find_map(|(k, v)| {
            let tail = rest.strip_prefix(k.as_str())?.strip_prefix('_')?;
            matches!(v, toml::Value::Table(_)).then(|| (k.clone(), tail.to_string()))
        });
        let path = match section {
            Some((section, key)) => vec![section, key],
            None => vec![rest],
        };
        out.push(Override { origin: name, path, raw });
    }
    Ok(out)
}

pub(super) fn set_override(set: &str) -> Result<Override> {
    let origin = format!("--set {set}");
    let (key, raw) = set.split_once('=').ok_or_else(|| ConfigError::Override {
        origin: origin.clone(),
        message: "expected key=value".into(),
    })?;
    let key = key.trim();
    // librdkafka property names contain dots: everything after `kafka.client.` is one key.
    let path: Vec<String> = match key.strip_prefix("kafka.client.") {
        Some(property) => vec!["kafka".into(), "client".into(), property.into()],
        None => key.split('.').map(str::to_string).collect(),
    };
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Override { origin, message: "empty key segment".into() });
    }
    Ok(Override { origin, path, raw: raw.to_string() })
}

pub(super) fn apply_override(merged: &mut toml::Table, defaults: &toml::Table, o: Override) -> Result<()> {
    let unknown = |o: &Override| ConfigError::Override {
        origin: o.origin.clone(),
        message: format!("no setting named `{}`", o.path.join(".")),
    };
    // Find the default value to learn the expected type; maps (kafka.client) accept any key.
    let mut default: Option<&toml::Value> = None;
    let mut table = defaults;
    for (i, seg) in o.path.iter().enumerate() {
        match table.get(seg) {
            Some(toml::Value::Table(t)) if i + 1 < o.path.len() => table = t,
            Some(v) if i + 1 == o.path.len() => default = Some(v),
            None if i + 1 == o.path.len() && i > 0 && table.is_empty() => default = None,
            _ => return Err(unknown(&o)),
        }
    }
    let value = match default {
        Some(toml::Value::String(_)) | None => toml::Value::String(o.raw.clone()),
        Some(_) => parse_scalar(&o.raw),
    };
    let mut target = merged;
    for seg in &o.path[..o.path.len() - 1] {
        let entry = target.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        target = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(unknown(&o)),
        };
    }
    target.insert(o.path[o.path.len() - 1].clone(), value);
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}
