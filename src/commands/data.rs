//! `driftwood data ...`: the snapshot store's versions, tags, diffs, remotes and upkeep.

use std::time::Duration;

use anyhow::{Result, bail};
use schemas::Config;

use stream::store::{Manifest, SnapshotStore};

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
            let m = resolve(&store, &dataset.unwrap_or_else(default), &version)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        DataCommand::Tag { tag, version, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let m = store.tag(&d, &tag, &version)?;
            println!("tagged {d} v{} {} as {tag}", m.seq, m.short_id());
        }
        DataCommand::Diff { a, b, dataset, examples } => {
            let d = dataset.unwrap_or_else(default);
            let (ma, mb) = (resolve(&store, &d, &a)?, resolve(&store, &d, &b)?);
            let diff = stream::diff::diff(&store, &ma, &mb, examples).await?;
            print!("{}", report::diff(&ma, &mb, &diff));
        }
        DataCommand::Import { source, dataset, raw, spec, rejects } => {
            let dataset = dataset.unwrap_or_else(default);
            let raw = match raw {
                Some(r) => r,
                None => stream::derive::raw_dataset_for(&store, raw_setting(config), &dataset)?,
            };
            for name in [&dataset, &raw] {
                if !schemas::config::valid_name(name) {
                    bail!("invalid dataset name `{name}`: use lowercase letters, digits, '_' or '-'");
                }
            }
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
            let rejects = rejects.unwrap_or_else(|| {
                open::data_dir(config).join("rejects").join(format!("{raw}-{stamp}.jsonl"))
            });
            let opts = stream::import::ImportOptions {
                raw_dataset: raw.clone(),
                max_bytes: config.ingest.max_record_bytes,
                rejects,
            };
            let imported = stream::import::import(&store, &source, &opts).await?;
            print!("{}", report::import(&imported));
            let plan = match &spec {
                Some(path) => open::plan_of(Some(path))?,
                None => open::plan(config)?,
            };
            if let Ok(latest) = store.resolve(&raw, "latest") {
                print!("{}", reprocess(store, plan, dataset, latest, Vec::new()).await?);
            }
        }
        DataCommand::Reprocess { from, spec, dataset, tag } => {
            if !schemas::config::valid_name(&dataset) {
                bail!("invalid dataset name `{dataset}`: use lowercase letters, digits, '_' or '-'");
            }
            // A plain version is one of the configured dataset's raw dataset.
            let raw_of_default = stream::derive::raw_dataset_for(&store, raw_setting(config), &default())?;
            let raw = resolve(&store, &raw_of_default, &from)?;
            let plan = match &spec {
                Some(path) => open::plan_of(Some(path))?,
                None => open::plan(config)?,
            };
            let r = reprocess(store, plan, dataset, raw, tag).await?;
            print!("{r}");
        }
        DataCommand::Checkout { version, out, dataset } => {
            let m = resolve(&store, &dataset.unwrap_or_else(default), &version)?;
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
                "pushed {d} to {url}: {} versions, {} objects ({} bytes), {} objects already there{}",
                r.versions,
                r.objects,
                r.bytes,
                r.skipped,
                along(&r)
            );
        }
        DataCommand::Pull { remote, dataset } => {
            let d = dataset.unwrap_or_else(default);
            let url = remote_url(config, remote)?;
            let r = stream::remote::Remote::open(&url)?.pull(&store, &d).await?;
            println!(
                "pulled {d} from {url}: {} versions, {} objects ({} bytes), {} objects already here{}",
                r.versions,
                r.objects,
                r.bytes,
                r.skipped,
                along(&r)
            );
        }
        DataCommand::Gc { dry_run } => {
            let retention = config.snapshot.raw_retention_secs;
            let r = store.gc(dry_run, (retention > 0).then(|| Duration::from_secs(retention)))?;
            let verb = if dry_run { "would remove" } else { "removed" };
            if retention > 0 {
                let x = &r.raw;
                println!(
                    "raw data older than {retention} s: {} {} objects ({} rows); kept {} not yet cleaned into a \
                     processed dataset and {} a processed version shares",
                    if dry_run { "would expire" } else { "expired" },
                    x.expired,
                    x.rows,
                    x.not_cleaned,
                    x.shared
                );
            }
            println!(
                "{verb} {} unreferenced objects ({} bytes) and {} data keys, kept {}",
                r.removed, r.bytes, r.keys_removed, r.kept
            );
        }
        DataCommand::Verify { version, dataset } => {
            let m = resolve(&store, &dataset.unwrap_or_else(default), &version)?;
            store.verify(&m)?;
            let live = store.live_files(&m).len();
            let expired = match m.files.len() - live {
                0 => String::new(),
                n => format!(" ({n} expired by raw-data retention)"),
            };
            println!("{} v{} {}: {live} objects verified{expired}", m.dataset, m.seq, m.short_id());
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

/// `snapshot.raw_dataset`, `auto` when raw data is off (import and reprocess need one).
fn raw_setting(config: &Config) -> &str {
    match config.snapshot.raw_dataset.as_str() {
        "" => "auto",
        r => r,
    }
}

/// What a push or pull moved besides the dataset's own versions (counts included above).
fn along(r: &stream::remote::SyncReport) -> String {
    let mut parts = Vec::new();
    if !r.raw_datasets.is_empty() {
        parts.push(format!("raw data {}", r.raw_datasets.join(", ")));
    }
    if r.expired > 0 {
        parts.push(format!("{} expiry records of raw objects retention removed", r.expired));
    }
    if r.specs > 0 {
        parts.push(format!("{} cleaning spec{}", r.specs, if r.specs == 1 { "" } else { "s" }));
    }
    if parts.is_empty() { String::new() } else { format!(" (with {})", parts.join(" and ")) }
}

/// `DATASET@VERSION`, or a version of `dataset`.
fn resolve(store: &SnapshotStore, dataset: &str, reference: &str) -> Result<Manifest> {
    let (d, v) = reference.split_once('@').unwrap_or((dataset, reference));
    Ok(store.resolve(d, v)?)
}

/// `data reprocess`: the raw version cleaned into `dataset`, with progress on stderr.
async fn reprocess(
    store: SnapshotStore,
    plan: std::sync::Arc<stream::clean::CleanPlan>,
    dataset: String,
    raw: Manifest,
    tags: Vec<String>,
) -> Result<String> {
    let started = std::time::Instant::now();
    let done = tokio::task::spawn_blocking(move || -> Result<(stream::derive::CatchUp, Manifest, String)> {
        let latest = store.latest(&dataset)?;
        let mut seen = match (&latest, plan.dedupe()) {
            (Some(m), true) => stream::derive::content_hashes(&store, m)?,
            _ => Default::default(),
        };
        let bar = ingest::publish::progress_bar(Some(raw.rows), "reprocess");
        let mut progress = |rows: u64, _bytes: u64| bar.set_position(rows);
        let r = stream::derive::catch_up(&store, &plan, &dataset, &raw, &mut seen, &tags, &mut progress)?;
        bar.finish_and_clear();
        if r.stale {
            bail!("dataset `{dataset}` was written by another run meanwhile; run data reprocess again");
        }
        Ok((r, raw, plan.hash().to_string()))
    })
    .await??;
    let (r, raw, spec) = done;
    Ok(report::reprocess(&raw, &spec, &r, started.elapsed()))
}

/// `--remote`, else `snapshot.remote`.
fn remote_url(config: &Config, remote: Option<String>) -> Result<String> {
    match remote.filter(|r| !r.is_empty()).or_else(|| config.snapshot.remote.clone()) {
        None => bail!("no remote: pass --remote URL or set snapshot.remote"),
        Some(r) => Ok(r),
    }
}
