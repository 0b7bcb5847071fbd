//! The baseline of `scripts/bench/serving` (b): a bare rdkafka `BaseConsumer` poll loop that only
//! counts `N` records of a topic (every partition assigned from the beginning, Driftwood's fetch
//! settings). Prints one JSON line: records, seconds from the first record to the last,
//! records/s. Built in the root package so it shares the `driftwood` binary's dependency build.
//!
//! Usage: bench_consume BROKERS TOPIC N

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, n] = args.as_slice() else {
        bail!("usage: bench_consume BROKERS TOPIC N");
    };
    let n: u64 = n.parse().context("N")?;
    let kafka = schemas::config::KafkaConfig { brokers: brokers.clone(), ..Default::default() };
    let consumer: BaseConsumer = ingest::consume::consumer_config(&kafka, "bench.bare").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let (mut count, mut started) = (0u64, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Instant::now);
                count += u64::from(m.payload().is_some());
            }
            Some(Err(e)) => bail!("poll: {e}"),
            None => {}
        }
    }
    if count < n {
        bail!("read {count} of {n} records");
    }
    let secs = started.map_or(0.0, |s: Instant| s.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({"records": count, "secs": secs, "records_per_sec": count as f64 / secs})
    );
    Ok(())
}
