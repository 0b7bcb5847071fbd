//! `driftwood data ...`: the snapshot store's versions, tags, diffs, remotes and upkeep.

use anyhow::{Result, bail};
use schemas::Config;

use crate::cli::DataCommand;
use crate::runtime::shutdown_token;
use crate::{open, report};

pub(super) async fn run(config: &Config, cmd: DataCommand) -> Result<()> {
    let store = open::snapshots(config)?;
    let default = || config.snapshot.dataset.clone();
    match cmd {
        DataCommand::List { dataset } => {
            let datasets = match dataset {
                Some(d) => vec![d],
                None => store.datasets()?,
            };
            for d in datasets {
                print!("{}", report::versions(&d, &store.versions(&d)?, &store.tags(&d)?));
            }
        }
        DataCommand::Show { version, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        DataCommand::Tag { tag, version, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let m = store.tag(&d, &tag, &version)?;
            println!("tagged {d} v{} {} as {tag}", m.seq, m.short_id());
        }
        DataCommand::Diff { a, b, dataset, examples } => {
            let d = dataset.unwrap_or_else(default);
            let (ma, mb) = (store.resolve(&d, &a)?, store.resolve(&d, &b)?);
            let diff = stream::diff::diff(&store, &ma, &mb, examples).await?;
            print!("{}", report::diff(&d, &ma, &mb, &diff));
        }
        DataCommand::Checkout { version, out, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            let files = store.checkout(&m, &out)?;
            println!(
                "checked out v{} {} ({} rows) into {}: {} files",
                m.seq,
                m.short_id(),
                m.rows,
                out.display(),
                files.len()
            );
        }
        DataCommand::Push { remote, version, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let url = remote_url(config, remote)?;
            let upto = version.map(|v| store.resolve(&d, &v)).transpose()?;
            let r = stream::remote::Remote::open(&url)?.push(&store, &d, upto.as_ref()).await?;
            println!(
                "pushed {d} to {url}: {} versions, {} objects ({} bytes), {} objects already there",
                r.versions, r.objects, r.bytes, r.skipped
            );
        }
        DataCommand::Pull { remote, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let url = remote_url(config, remote)?;
            let r = stream::remote::Remote::open(&url)?.pull(&store, &d).await?;
            println!(
                "pulled {d} from {url}: {} versions, {} objects ({} bytes), {} objects already here",
                r.versions, r.objects, r.bytes, r.skipped
            );
        }
        DataCommand::Gc { dry_run } => {
            let r = store.gc(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} unreferenced objects ({} bytes) and {} data keys, kept {}",
                r.removed, r.bytes, r.keys_removed, r.kept
            );
        }
        DataCommand::Verify { version, dataset } => {
            let m = store.resolve(&dataset.unwrap_or_else(default), &version)?;
            store.verify(&m)?;
            println!("v{} {}: {} objects verified", m.seq, m.short_id(), m.files.len());
        }
        DataCommand::Label { dataset } => {
            let d = dataset.unwrap_or_else(default);
            let r = stream::labels::join_labels(config, &store, &d, &shutdown_token()).await?;
            match &r.version {
                Some(m) => println!(
                    "{} labels read ({} dead letters); {} rows labeled; committed {d} v{} {}",
                    r.labels_read,
                    r.dead,
                    r.rows_labeled,
                    m.seq,
                    m.short_id()
                ),
                None => println!("no new labels on {}", config.topics().labels),
            }
        }
    }
    Ok(())
}

/// `--remote`, else `snapshot.remote`.
fn remote_url(config: &Config, remote: Option<String>) -> Result<String> {
    match remote.filter(|r| !r.is_empty()).or_else(|| config.snapshot.remote.clone()) {
        None => bail!("no remote: pass --remote URL or set snapshot.remote"),
        Some(r) => Ok(r),
    }
}
