//! The prediction log: entries go through a bounded channel to a task that writes them to the
//! metadata store in batches. Callers never wait: when the buffer is full the entry is dropped
//! and counted (`driftwood_prediction_log_dropped_total`). The store itself keeps blocking work
//! off the runtime (the SQLite backend runs each call on a blocking thread), so a batch's
//! insert never stalls a worker that is serving requests.

use std::sync::Arc;
use std::time::Duration;

use metastore::{MetadataStore, PredictionLogEntry};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Entries buffered before dropping.
pub const BUFFER: usize = 100_000;
/// Largest batch written at once.
const BATCH: usize = 2000;

#[derive(Clone)]
pub struct PredictionLog {
    tx: flume::Sender<PredictionLogEntry>,
    metrics: Metrics,
}

impl PredictionLog {
    /// Starts the writer task; it drains the buffer and stops when `cancel` fires.
    pub fn start(
        store: Arc<dyn MetadataStore>,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> (PredictionLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = flume::bounded::<PredictionLogEntry>(BUFFER);
        let task = tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    r = rx.recv_async() => match r { Ok(e) => e, Err(_) => break },
                    _ = cancel.cancelled() => break,
                };
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(BATCH - 1));
                if let Err(e) = store.log_predictions(&batch).await {
                    tracing::warn!(error = %e, entries = batch.len(), "prediction log write failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            // Drain what is buffered before stopping.
            let rest: Vec<_> = rx.try_iter().collect();
            for chunk in rest.chunks(BATCH) {
                let _ = store.log_predictions(chunk).await;
            }
        });
        (PredictionLog { tx, metrics }, task)
    }

    /// Queues entries without waiting.
    pub fn record(&self, entries: impl IntoIterator<Item = PredictionLogEntry>) {
        for e in entries {
            let channel = e.channel.clone();
            if self.tx.try_send(e).is_err() {
                self.metrics.log_dropped.with_label_values(&[channel.as_str()]).inc();
            }
        }
    }
}
