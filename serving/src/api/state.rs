//! What every handler shares: the state, the concurrency/deadline limits and the broker probe.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::handle::ModelHandle;
use crate::metrics::Metrics;
use crate::predlog::PredictionLog;
use crate::{Error, Result};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub model: ModelHandle,
    pub metrics: Metrics,
    pub predlog: Option<PredictionLog>,
    /// Largest number of texts per request.
    pub max_texts: usize,
    pub auth: Arc<crate::auth::JwtAuth>,
    pub limits: Limits,
    /// Whether `/readyz` also requires the broker to answer (`None`: not checked).
    pub broker: Option<BrokerHealth>,
    /// Runs, the registry, aliases and their audit trail.
    pub store: Arc<dyn metastore::MetadataStore>,
    /// The data versions.
    pub snapshots: Arc<stream::store::SnapshotStore>,
    /// Where promotions are announced (`None`: only the store moves; followers poll it).
    pub control: Option<Arc<ingest::control::ControlProducer>>,
    /// The dataset lineage finds predictions in (`snapshot.scored_dataset`).
    pub scored_dataset: String,
    /// The topic the scored records were read from (`<prefix>.text.raw`), which lineage looks
    /// up in the raw dataset.
    pub raw_topic: String,
    /// Whether the UI's session cookie is marked `Secure` (the API is served over TLS).
    pub secure_cookies: bool,
    /// The broker and dead-letter topic `GET /v1/dead-letters` reads (`None`: no broker).
    pub dead_letters: Option<(schemas::config::KafkaConfig, String)>,
}

/// Whether the Kafka broker answered a metadata request recently: a background probe, every
/// [`BrokerHealth::INTERVAL`], so `/readyz` never waits on the broker. The broker counts as
/// reachable while the last probe answered and that answer is younger than
/// [`BrokerHealth::STALE`]: one failed probe (a request, and a retry that can reach another
/// broker) turns it unreachable, so an outage shows within an interval plus two timeouts, and
/// a probe that never returns does so by the clock.
#[derive(Debug, Clone)]
pub struct BrokerHealth {
    since: std::time::Instant,
    /// Milliseconds after `since` of the last answer, `u64::MAX` before the first.
    last_answer_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the latest finished probe failed.
    last_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerHealth {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
    /// How long one probe waits for a metadata answer.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    /// How old the last answer may be: two intervals and a probe's timeout.
    pub const STALE: std::time::Duration = std::time::Duration::from_secs(7);

    /// Starts probing `kafka` now and every interval until `cancel`.
    pub fn probe(
        kafka: &schemas::config::KafkaConfig,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<BrokerHealth> {
        use std::sync::atomic::Ordering::Relaxed;
        let client = Arc::new(ingest::kafka::metadata_client(kafka)?);
        let health = BrokerHealth {
            since: std::time::Instant::now(),
            last_answer_ms: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            last_failed: Arc::default(),
        };
        let (probe, brokers) = (health.clone(), kafka.brokers.clone());
        tokio::spawn(async move {
            loop {
                // A request sent to a broker that just died times out although the others
                // answer: a second one goes to another broker. Both failing is an outage.
                let ok = Self::ask(&client).await || Self::ask(&client).await;
                if ok {
                    probe.last_answer_ms.store(probe.since.elapsed().as_millis() as u64, Relaxed);
                }
                if probe.last_failed.swap(!ok, Relaxed) == ok {
                    tracing::warn!(reachable = ok, brokers, "the Kafka brokers' reachability changed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Self::INTERVAL) => {}
                }
            }
        });
        Ok(health)
    }

    /// One metadata request: whether some broker answered it within [`Self::TIMEOUT`].
    async fn ask(client: &Arc<rdkafka::consumer::BaseConsumer>) -> bool {
        let c = client.clone();
        let answered = tokio::task::spawn_blocking(move || {
            rdkafka::consumer::Consumer::fetch_metadata(c.as_ref(), None, Self::TIMEOUT)
                .is_ok_and(|m| !m.brokers().is_empty())
        });
        matches!(tokio::time::timeout(Self::STALE, answered).await, Ok(Ok(true)))
    }

    pub fn reachable(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_answer_ms.load(Relaxed);
        !self.last_failed.load(Relaxed)
            && last != u64::MAX
            && self.since.elapsed().as_millis() as u64 <= last + Self::STALE.as_millis() as u64
    }
}

/// Bounded concurrency and a per-request deadline for the API routes.
#[derive(Debug, Clone)]
pub struct Limits {
    permits: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

impl Limits {
    pub fn new(max_concurrent: usize, timeout: std::time::Duration) -> Limits {
        Limits { permits: Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1))), timeout }
    }

    pub fn from_config(serve: &schemas::config::ServeConfig) -> Limits {
        Limits::new(serve.max_concurrent_requests, std::time::Duration::from_millis(serve.request_timeout_ms))
    }
}

/// 429 at once when `limits` are all taken (never an unbounded queue), 503 `timeout` past the
/// deadline (the handler's future is dropped, so its work is abandoned).
pub async fn limit(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire() else {
        return Error::Overloaded.into_response();
    };
    let path = req.uri().path().to_string();
    match tokio::time::timeout(limits.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path, timeout_ms = limits.timeout.as_millis() as u64, "request timed out");
            Error::Timeout.into_response()
        }
    }
}
