//! `driftwood publish`: records from a corpus, JSON lines, a folder or stdin onto a topic.

use anyhow::{Context, Result, bail};
use ingest::source::{self, Outgoing};
use schemas::Config;

use crate::cli::PublishArgs;
use crate::runtime::shutdown_token;

pub(super) async fn run(config: &Config, args: PublishArgs) -> Result<()> {
    let records: Vec<ingest::Result<Outgoing>> = if let Some(dir) = &args.corpus {
        let groups: Vec<&str> = if args.groups.is_empty() {
            source::CORPUS_PERIOD_1.to_vec()
        } else {
            args.groups.iter().map(String::as_str).collect()
        };
        source::corpus(dir, &groups)?.iter().map(|r| Ok(Outgoing::from_record(r))).collect()
    } else if let Some(file) = &args.jsonl {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        source::lines(std::io::BufReader::new(f)).collect()
    } else if let Some(dir) = &args.dir {
        source::text_dir(dir, args.labels_from_dirs)?.into_iter().map(Ok).collect()
    } else if args.stdin {
        source::lines(std::io::stdin().lock()).collect()
    } else {
        bail!("give a source: --corpus DIR, --jsonl FILE, --dir DIR or --stdin");
    };
    let records: Vec<_> = records.into_iter().take(args.limit.unwrap_or(usize::MAX)).collect();
    let topics = config.topics();
    let topic = if args.labels { &topics.labels } else { &topics.raw };
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let progress = ingest::publish::progress_bar(Some(records.len() as u64), "publishing");
    let summary = ingest::publish::publish(&producer, topic, records, &progress, &shutdown_token()).await?;
    println!("{topic}: {summary}");
    if let Some(e) = &summary.first_error {
        bail!("{} records failed, first error: {e}", summary.failed);
    }
    Ok(())
}
