//! The Rust side of `scripts/bench/data_path` (run it through that script).
//!
//! `consume BROKERS TOPIC N` reads N records of TOPIC from the beginning and prints one JSON
//! line per reader: `driftwood` (BatchReader → raw-schema RecordBatches, per-record validation)
//! and `bare` (an rdkafka BaseConsumer poll loop that only counts, same fetch settings). Each
//! reader first lets librdkafka prefetch the topic into its local queue for WARM seconds (the
//! last argument; 0 = none): with 0 the figures are the end-to-end rate from the local broker
//! (tansu serves ~120 MB/s here, slower than any of the clients), with a warm-up they measure
//! the client alone.
//! `clean FILE.jsonl` runs the default cleaning plan (without the stateful dedupe step) over the
//! file's texts in batches and prints the input MB/s. Timings exclude start-up and file reading.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ingest::batch::RawBatchBuilder;
use ingest::consume::{BatchLimits, BatchReader, Mode, consumer_config};
use ingest::decode::{Provenance, decode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::Config;
use stream::clean::{CleanPlan, CleanSpec, Step};
use tokio_util::sync::CancellationToken;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["consume", brokers, topic, n, warm] => {
            let n: u64 = n.parse().context("N")?;
            let warm = Duration::from_secs(warm.parse().context("WARM")?);
            let phase = if warm.is_zero() { "from broker" } else { "prefetched" };
            let mut config = Config::default();
            config.kafka.brokers = brokers.to_string();
            config.kafka.client.insert("queued.max.messages.kbytes".into(), "2097151".into());
            config.kafka.client.insert("queued.min.messages".into(), "10000000".into());
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let (secs, bytes) = rt.block_on(consume_batches(&config, topic, n, warm))?;
            report("consume", &format!("driftwood BatchReader -> RecordBatch ({phase})"), n, bytes, secs);
            let (secs, bytes) = rt.block_on(stream_loop(&config, topic, n, warm))?;
            report(
                "consume",
                &format!("rdkafka StreamConsumer recv loop, no work ({phase})"),
                n,
                bytes,
                secs,
            );
            let (secs, bytes) = bare_loop(&config, topic, n, warm)?;
            report("consume", &format!("bare rdkafka poll loop, no work ({phase})"), n, bytes, secs);
        }
        ["clean", file] => clean(file)?,
        _ => bail!("usage: bench_data_path consume BROKERS TOPIC N WARM_SECS | clean FILE.jsonl"),
    }
    Ok(())
}

fn report(bench: &str, what: &str, records: u64, bytes: u64, secs: f64) {
    let line = serde_json::json!({
        "bench": bench,
        "what": what,
        "records": records,
        "bytes": bytes,
        "secs": secs,
        "records_per_sec": records as f64 / secs,
        "mb_per_sec": bytes as f64 / 1e6 / secs,
    });
    println!("{line}");
}

/// Seconds from the first record to the N-th, and payload bytes.
async fn consume_batches(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(f64, u64)> {
    let mode = Mode::Assigned { start: BTreeMap::new(), until_idle: false };
    let mut reader =
        BatchReader::new(&config.kafka, topic, mode, BatchLimits::from(&config.ingest), None).await?;
    tokio::time::sleep(warm).await;
    let cancel = CancellationToken::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while rows < n && Instant::now() < deadline {
        let Some(batch) = reader.next_batch(&cancel).await? else { break };
        if batch.ranges.is_empty() {
            continue;
        }
        started.get_or_insert_with(Instant::now);
        rows += (batch.batch_rows() + batch.rejected.len()) as u64;
        bytes += batch.bytes;
    }
    if rows < n {
        bail!("read {rows} of {n} records");
    }
    Ok((started.map_or(0.0, |s| s.elapsed().as_secs_f64()), bytes))
}

/// Assigns every partition of `topic` from the beginning.
fn assign_all<C: rdkafka::consumer::ConsumerContext>(consumer: &impl Consumer<C>, topic: &str) -> Result<()> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Seconds from the first of `n` messages to the last, and payload bytes, counting only.
async fn stream_loop(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(f64, u64)> {
    let consumer: rdkafka::consumer::StreamConsumer =
        consumer_config(&config.kafka, "bench.stream").create()?;
    assign_all(&consumer, topic)?;
    tokio::time::sleep(warm).await;
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut started: Option<Instant> = None;
    while count < n {
        let m = consumer.recv().await?;
        started.get_or_insert_with(Instant::now);
        count += 1;
        bytes += m.payload_len() as u64;
    }
    Ok((started.map_or(0.0, |s| s.elapsed().as_secs_f64()), bytes))
}

/// The same with a `BaseConsumer` poll loop.
fn bare_loop(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(f64, u64)> {
    let consumer: BaseConsumer = consumer_config(&config.kafka, "bench.bare").create()?;
    assign_all(&consumer, topic)?;
    std::thread::sleep(warm);
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                count += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("bare loop: {e}"),
            None => {}
        }
    }
    if count < n {
        bail!("read {count} of {n} records");
    }
    Ok((started.map_or(0.0, |s| s.elapsed().as_secs_f64()), bytes))
}

fn clean(file: &str) -> Result<()> {
    let text = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let mut batches = Vec::new();
    let mut builder = RawBatchBuilder::new();
    let mut bytes = 0u64;
    let mut texts = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let at = Provenance { partition: 0, offset: i as i64, timestamp_ms: Some(0) };
        let record = decode(None, Some(line), at, usize::MAX).map_err(|r| anyhow::anyhow!("{}", r.detail))?;
        bytes += record.text.len() as u64;
        builder.push(&record, at);
        texts.push(record.text);
        if builder.rows() == 4096 {
            batches.push(builder.finish());
        }
    }
    if builder.rows() > 0 {
        batches.push(builder.finish());
    }
    let mut spec = CleanSpec::default();
    spec.steps.retain(|s| !matches!(s, Step::Dedupe));
    let plan = CleanPlan::compile(spec)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let started = Instant::now();
    let mut kept = 0;
    for b in &batches {
        kept += plan.apply(b)?.keep.true_count();
    }
    let secs = started.elapsed().as_secs_f64();
    report("clean", "driftwood CleanPlan (DataFusion UDFs)", rows as u64, bytes, secs);
    eprintln!("kept {kept} of {rows} rows");
    steps(texts.clone());
    // One text per call, as the REST API cleans a request.
    let started = Instant::now();
    for t in &texts {
        plan.clean_texts(&[t.as_str()])?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  one text per call (clean_texts): {:.1} us per text, {:.1} MB/s",
        secs * 1e6 / texts.len() as f64,
        bytes as f64 / 1e6 / secs
    );
    Ok(())
}

/// Each text step alone over the corpus (its input: the previous steps' output), on stderr:
/// where the cleaning plan's time goes.
fn steps(mut texts: Vec<String>) {
    use stream::clean::text;
    let keep = vec!["subject".to_string()];
    type Step<'a> = (&'a str, Box<dyn Fn(&str, &mut String) + 'a>);
    let steps: Vec<Step> = vec![
        ("strip_email_headers", Box::new(|t, o| text::strip_email_headers(t, &keep, o))),
        ("strip_html", Box::new(text::strip_html)),
        ("nfkc", Box::new(text::nfkc)),
        ("strip_control", Box::new(text::strip_control)),
        ("lowercase", Box::new(text::lowercase)),
        ("replace_urls", Box::new(|t, o| text::replace(&text::URL, "<url>", t, o))),
        ("replace_emails", Box::new(|t, o| text::replace(&text::EMAIL, "<email>", t, o))),
        ("replace_numbers", Box::new(|t, o| text::replace(&text::NUMBER, "<num>", t, o))),
        ("collapse_whitespace", Box::new(text::collapse_whitespace)),
        ("truncate", Box::new(|t, o| text::truncate(t, 20_000, o))),
    ];
    for (name, step) in steps {
        let bytes: usize = texts.iter().map(String::len).sum();
        let ascii: usize = texts.iter().filter(|t| t.is_ascii()).map(String::len).sum();
        let started = Instant::now();
        texts = texts
            .iter()
            .map(|t| {
                let mut out = String::with_capacity(t.len());
                step(t, &mut out);
                out
            })
            .collect();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "  step {name:<20} {:>8.1} MB/s  ({:.1} ms; {:.0}% of the input in all-ASCII texts)",
            bytes as f64 / 1e6 / secs,
            secs * 1e3,
            100.0 * ascii as f64 / bytes.max(1) as f64
        );
    }
}
