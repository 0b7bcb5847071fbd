//! Resuming a partition at an offset inside a record batch — what every restart of the snapshot
//! job and the scorer does. Apache Kafka returns the batch that contains the fetch offset (the
//! client drops the records before it), so `kafka.resume_rewind = 0` is exact there. tansu 0.6
//! returns only batches whose base offset is at or after the fetch offset: with 0 it silently
//! skips the rest of the batch, which is why the default rewinds and skips forward.

use std::collections::BTreeMap;

use ingest::consume::{MessageReader, Mode};
use tests::{On, TestEnv, publish};

const RECORDS: i64 = 1000;
const STARTS: [i64; 4] = [101, 333, 500, 777];

/// The offsets read from partition 0, resuming at `start` with `rewind`, until the end or until
/// nothing arrives for 4 s (tansu without a rewind may return nothing at all: resuming inside
/// its last batch, every fetch is empty while the high watermark is still ahead).
async fn offsets_from(config: &schemas::Config, start: i64, rewind: i64) -> anyhow::Result<Vec<i64>> {
    let mut config = config.clone();
    config.kafka.resume_rewind = rewind;
    let mode = Mode::Assigned { start: BTreeMap::from([(0, start)]), until_idle: true };
    let mut reader = MessageReader::new(&config.kafka, &config.topics().raw, mode).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut offsets = Vec::new();
    let quiet = std::time::Duration::from_secs(4);
    while let Ok(next) =
        tokio::time::timeout(quiet, reader.next(10_000, std::time::Duration::from_millis(100), &cancel)).await
    {
        let Some((messages, _)) = next? else { break };
        offsets.extend(messages.iter().map(|m| m.offset));
    }
    Ok(offsets)
}

tests::on_both_brokers! {
    async fn resuming_inside_a_record_batch(on) {
        let env = TestEnv::on(on, "resume")?;
        let mut config = env.config();
        config.kafka.partitions = 1;
        ingest::kafka::ensure_topics(&config.kafka, &[config.topics().raw.as_str()]).await?;
        // One burst: the producer packs it into a few large batches.
        publish(&config, &config.topics().raw, tests::numbered_raw(0..RECORDS as usize)).await?;

        let mut skipped = Vec::new();
        for start in STARTS {
            let exact: Vec<i64> = (start..RECORDS).collect();
            // The default rewind is exact on both brokers.
            let rewound = offsets_from(&config, start, 10_000).await?;
            assert_eq!(rewound, exact, "resume at {start} with the default rewind");
            let plain = offsets_from(&config, start, 0).await?;
            match on {
                On::Kafka => assert_eq!(plain, exact, "resume at {start} without a rewind on Kafka"),
                On::Tansu => {
                    let first = plain.first().copied().unwrap_or(RECORDS);
                    assert!(first >= start, "read before the resume offset: {first}");
                    assert_eq!(plain, (first..RECORDS).collect::<Vec<_>>(), "a gap after {first}");
                    skipped.push(first - start);
                }
            }
        }
        if on == On::Tansu {
            eprintln!("records tansu skipped without a rewind, per resume: {skipped:?}");
            assert!(skipped.iter().any(|&n| n > 0), "tansu returned the containing batch: {skipped:?}");
        }
        Ok(())
    }
}
