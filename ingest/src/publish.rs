//! Publishing records to a topic with an idempotent producer, a progress bar and a summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::oneshot::Canceled;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::source::Outgoing;
use crate::{Error, Result};

/// Most deliveries awaited at once; beyond that, publishing waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 50_000;

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishSummary {
    pub sent: u64,
    pub failed: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Stopped early by cancellation (Ctrl-C); everything handed to the producer was flushed.
    pub interrupted: bool,
    /// The first delivery error, if any.
    pub first_error: Option<String>,
}

impl PublishSummary {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} records ({:.1} MB), {} failed, in {:.2}s ({:.0} records/s){}",
            self.sent,
            self.bytes as f64 / 1e6,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            if self.interrupted { ", interrupted" } else { "" }
        )
    }
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
pub fn progress_bar(len: Option<u64>, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = match len {
        Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target)
            .with_style(ProgressStyle::with_template("{msg} {pos} ({per_sec})").expect("valid template")),
    };
    pb.set_message(what.to_string());
    pb
}

/// Sends every record to `topic`, then flushes. Stops taking new records when `cancel` fires
/// but still waits for everything already handed to the producer.
pub async fn publish<I>(
    producer: &FutureProducer,
    topic: &str,
    records: I,
    progress: &ProgressBar,
    cancel: &CancellationToken,
) -> Result<PublishSummary>
where
    I: IntoIterator<Item = Result<Outgoing>>,
{
    let start = Instant::now();
    let mut summary = PublishSummary::default();
    let mut in_flight: FuturesUnordered<DeliveryFuture> = FuturesUnordered::new();

    let settle = |summary: &mut PublishSummary, r: Result<OwnedDeliveryResult, Canceled>| {
        match r {
            Ok(Ok(_)) => summary.sent += 1,
            Ok(Err((e, _))) => {
                summary.failed += 1;
                summary.first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                summary.failed += 1;
                summary.first_error.get_or_insert_with(|| "producer dropped".into());
            }
        }
        progress.inc(1);
    };

    for item in records {
        if cancel.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let out = item?;
        summary.bytes += out.value.len() as u64;
        loop {
            let mut record = FutureRecord::to(topic).payload(&out.value);
            if let Some(k) = out.key.as_deref() {
                record = record.key(k);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Back-pressure: wait for one acknowledgement, or a moment.
                    match tokio::time::timeout(Duration::from_millis(100), in_flight.next()).await {
                        Ok(Some(r)) => settle(&mut summary, r),
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => return Err(Error::kafka(format!("producing to {topic}"))(e)),
            }
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            if let Some(r) = in_flight.next().await {
                settle(&mut summary, r);
            }
        }
    }
    producer.flush(Duration::from_secs(60)).map_err(Error::kafka(format!("flushing to {topic}")))?;
    while let Some(r) = in_flight.next().await {
        settle(&mut summary, r);
    }
    summary.elapsed = start.elapsed();
    progress.finish_and_clear();
    Ok(summary)
}
