//! `driftwood keys ...`: the keyring at rest. Every change is audited with the CLI user.

use anyhow::{Context, Result, bail};
use schemas::Config;
use stream::crypto;

use super::cli_actor;
use crate::cli::KeysCommand;
use crate::{open, report};

pub(super) async fn run(config: &Config, command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::List => {
            let Some(keyring) = open::keyring(config)? else {
                println!("no keyring: data at rest is not encrypted (set [encryption] key_file)");
                return Ok(());
            };
            print!("{}", report::keys(&keyring, &open::snapshots(config)?.key_usage()?));
        }
        KeysCommand::Add { id } => {
            let path = crypto::add_to_key_file(&config.encryption, &id)?;
            audit(config, "keys.add", serde_json::json!({ "key": id, "key_file": path })).await?;
            println!("key {id} added to {} and active; new data is encrypted with it", path.display());
        }
        KeysCommand::Reencrypt => {
            let store = open::snapshots(config)?;
            let keyring = store.keyring().cloned().context("no keyring: set [encryption] key_file")?;
            let report = store.rewrap()?;
            let weights =
                trainer::artifact::reencrypt_weights(&open::data_dir(config).join("artifacts"), &keyring)?;
            let details =
                serde_json::json!({ "active": keyring.active(), "snapshots": report, "weights": weights });
            audit(config, "keys.reencrypt", details).await?;
            let moved: u64 = report.rewrapped.values().sum();
            println!(
                "snapshot data keys: {moved} re-sealed ({:?}), {} already under {}",
                report.rewrapped,
                report.current,
                keyring.active()
            );
            let sealed: u64 = weights.resealed.values().sum();
            println!(
                "model weights: {sealed} sealed anew ({:?}), {} already under {}",
                weights.resealed,
                weights.current,
                keyring.active()
            );
        }
        KeysCommand::Remove { id } => {
            crypto::key_file(&config.encryption)?;
            let still = open::snapshots(config)?.key_usage()?.get(&id).copied().unwrap_or_default();
            if still > 0 {
                bail!("key {id} still seals {still} data keys: run `driftwood keys reencrypt` first");
            }
            let path = crypto::remove_from_key_file(&config.encryption, &id)?;
            audit(config, "keys.remove", serde_json::json!({ "key": id, "key_file": path })).await?;
            println!("key {id} removed from {}", path.display());
        }
    }
    Ok(())
}

async fn audit(config: &Config, action: &str, details: serde_json::Value) -> Result<()> {
    let record =
        metastore::AuditRecord { at: chrono::Utc::now(), actor: cli_actor(), action: action.into(), details };
    Ok(open::metadata(config).await?.append_audit(&record).await?)
}
