//! The Rust side of `scripts/bench/data_path` (run it through that script).
//!
//! `consume BROKERS TOPIC N WARM` reads TOPIC from the beginning and prints one JSON line per
//! reader, timing N records after the first [`SKIP`]: `driftwood` (BatchReader → raw-schema RecordBatches, per-record validation)
//! and `bare` (an rdkafka BaseConsumer poll loop that only counts, same fetch settings). Each
//! reader first lets librdkafka prefetch the topic into its local queue for WARM seconds (the
//! last argument; 0 = none): with 0 the figures are the end-to-end rate from the local broker
//! (tansu serves ~120 MB/s here, slower than any of the clients), with a warm-up they measure
//! the client alone.
//! `decode FILE.jsonl` prints one core's JSON -> RecordBatch rate, one-pass and through serde.
//! `clean FILE.jsonl` runs the default cleaning plan (without the stateful dedupe step) over the
//! file's texts in batches and prints the input MB/s. Timings exclude start-up and file reading.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ingest::batch::{RawBatchBuilder, RowSink};
use ingest::consume::{BatchLimits, BatchReader, Mode, consumer_config};
use ingest::decode::{Provenance, decode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use schemas::Config;
use stream::clean::{CleanPlan, CleanSpec, Step};
use tokio_util::sync::CancellationToken;

fn main() -> Result<()> {
    ingest::alloc::tune(); // as the driftwood binary does
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
            let (records, secs, bytes) = rt.block_on(consume_batches(&config, topic, n, warm))?;
            report(
                "consume",
                &format!("driftwood BatchReader -> RecordBatch ({phase})"),
                records,
                bytes,
                secs,
            );
            let (records, secs, bytes) = rt.block_on(stream_loop(&config, topic, n, warm))?;
            let what = format!("rdkafka StreamConsumer recv loop, no work ({phase})");
            report("consume", &what, records, bytes, secs);
            let (records, secs, bytes) = bare_loop(&config, topic, n, warm)?;
            report("consume", &format!("bare rdkafka poll loop, no work ({phase})"), records, bytes, secs);
        }
        ["clean", file] => clean(file)?,
        ["decode", file] => decode_rate(file)?,
        _ => bail!(
            "usage: bench_data_path consume BROKERS TOPIC N WARM_SECS | decode FILE.jsonl | clean FILE.jsonl"
        ),
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

/// Records every reader (here and in the Python peers) reads before its clock starts: the
/// first batches of a process fault in fresh memory and are no measure of a running reader.
/// The topic holds N + 2 × SKIP records, so no reader's last batch waits at the topic's end.
const SKIP: u64 = 10_000;

/// Counts records; timing starts once [`SKIP`] records have been read, at a batch boundary.
#[derive(Default)]
struct Meter {
    seen: u64,
    timed: u64,
    bytes: u64,
    started: Option<Instant>,
}

impl Meter {
    fn add(&mut self, records: u64, bytes: u64) {
        self.seen += records;
        if self.started.is_some() {
            self.timed += records;
            self.bytes += bytes;
        } else if self.seen >= SKIP {
            self.started = Some(Instant::now());
        }
    }

    fn done(&self, n: u64) -> bool {
        self.timed >= n
    }

    /// (records timed, seconds, bytes)
    fn result(&self, n: u64) -> Result<(u64, f64, u64)> {
        if !self.done(n) {
            bail!("read {} of {} records", self.seen, n + SKIP);
        }
        Ok((self.timed, self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()), self.bytes))
    }
}

/// Records timed, seconds, and payload bytes of reading N records after [`SKIP`].
async fn consume_batches(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(u64, f64, u64)> {
    let mode = Mode::Assigned { start: BTreeMap::new(), until_idle: false };
    let mut reader =
        BatchReader::new(&config.kafka, topic, mode, BatchLimits::from(&config.ingest), None).await?;
    tokio::time::sleep(warm).await;
    let cancel = CancellationToken::new();
    let mut meter = Meter::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !meter.done(n) && Instant::now() < deadline {
        let Some(batch) = reader.next_batch(&cancel).await? else { break };
        meter.add((batch.batch_rows() + batch.rejected.len()) as u64, batch.bytes);
    }
    meter.result(n)
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

/// The same with a StreamConsumer recv loop, counting only.
async fn stream_loop(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(u64, f64, u64)> {
    let consumer: rdkafka::consumer::StreamConsumer =
        consumer_config(&config.kafka, "bench.stream").create()?;
    assign_all(&consumer, topic)?;
    tokio::time::sleep(warm).await;
    let mut meter = Meter::default();
    while !meter.done(n) {
        let m = consumer.recv().await?;
        meter.add(1, m.payload_len() as u64);
    }
    meter.result(n)
}

/// The same with a `BaseConsumer` poll loop.
fn bare_loop(config: &Config, topic: &str, n: u64, warm: Duration) -> Result<(u64, f64, u64)> {
    let consumer: BaseConsumer = consumer_config(&config.kafka, "bench.bare").create()?;
    assign_all(&consumer, topic)?;
    std::thread::sleep(warm);
    let mut meter = Meter::default();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !meter.done(n) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => meter.add(1, m.payload_len() as u64),
            Some(Err(e)) => bail!("bare loop: {e}"),
            None => {}
        }
    }
    meter.result(n)
}

/// One thread decoding every line of a JSONL file into raw-schema batches of ~3,000 rows, the
/// BatchReader's way (`Decoder::decode_into`) and through `serde_json::Value` (`decode`, then
/// `RawBatchBuilder::push`), best of three: the per-core rate of JSON -> RecordBatch.
fn decode_rate(file: &str) -> Result<()> {
    let text = std::fs::read(file).with_context(|| format!("reading {file}"))?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let time = |one_pass: bool| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let mut decoder = ingest::decode::Decoder::default();
            // Sized per batch as the BatchReader sizes its builders.
            let per_row = bytes / lines.len().max(1) + 1;
            let mut builder = RawBatchBuilder::with_capacity(3000, 3000 * per_row);
            for (i, line) in lines.iter().enumerate() {
                let at = Provenance { partition: 0, offset: i as i64, timestamp_ms: Some(0) };
                if one_pass {
                    decoder.decode_into(&mut builder, None, Some(line), at, usize::MAX)
                } else {
                    decode(None, Some(line), at, usize::MAX).map(|r| builder.push(&r, at))
                }
                .map_err(|r| anyhow::anyhow!("{}", r.detail))?;
                if builder.rows() == 3000 {
                    builder.finish();
                    builder = RawBatchBuilder::with_capacity(3000, 3000 * per_row);
                }
            }
            builder.finish();
            best = best.min(started.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    for (what, one_pass) in
        [("Decoder::decode_into (one pass)", true), ("decode + push (serde_json::Value)", false)]
    {
        let secs = time(one_pass)?;
        let us = secs * 1e6 / lines.len() as f64;
        eprintln!("  {what:<36} {us:>6.2} us per record, {:>7.1} MB/s", bytes as f64 / 1e6 / secs);
    }
    Ok(())
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
        std::hint::black_box(plan.clean_texts(&[t.as_str()]));
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
