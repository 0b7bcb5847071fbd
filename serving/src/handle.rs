//! The model thread: one loaded model, fed through a bounded channel, with dynamic batching.
//!
//! ```text
//!  HTTP handlers ─┐  Job{texts, reply: oneshot}            ┌──► LoadedModel::predict(batch)
//!                 ├──────────► flume (bounded) ──► thread ─┤
//!  Kafka scorer ──┘                                         └──► replies, per job
//! ```
//!
//! Raw texts are cleaned by the caller ([`ModelHandle::predict_raw`], in parallel across the
//! runtime's workers), so the one model thread only featurizes and runs the model.
//! libtorch never runs on the async runtime. A swap message replaces the model between batches:
//! jobs queued before it finish on the old model.
//!
//! Dynamic batching: from the first job, the thread takes every queued job into the batch and
//! closes it when it holds `max_batch` texts, when `max_wait` has passed, or when the queue is
//! empty and no request is on its way (none is being cleaned by a handler). Requests not yet
//! read from their connections are not waited for: waiting on the chance of one would delay
//! every request in the batch, while under load they ride the next pass as this one runs. So a
//! lone request is answered at once, not after `max_wait`, which bounds only the wait for
//! requests being cleaned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stream::clean::CleanPlan;
use tokio::sync::oneshot;
use trainer::model::LoadedModel;

use crate::{Error, Result};

/// What is being served.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub name: String,
    pub version: u32,
    /// `logreg`, `bilstm`, `minilm` or `torchscript`.
    #[schema(value_type = String, example = "logreg")]
    pub family: schemas::Family,
    pub labels: Vec<String>,
    pub spec_hash: String,
    pub data_version: String,
    pub metrics: std::collections::BTreeMap<String, f64>,
}

impl ModelInfo {
    /// Label → probability, for probabilities in this model's label order.
    pub fn by_label(&self, probabilities: &[f32]) -> std::collections::BTreeMap<String, f32> {
        self.labels.iter().cloned().zip(probabilities.iter().copied()).collect()
    }

    fn of(m: &LoadedModel) -> ModelInfo {
        ModelInfo {
            name: m.version.name.clone(),
            version: m.version.version,
            family: m.card.family,
            labels: m.card.labels.clone(),
            spec_hash: m.card.spec_hash.clone(),
            data_version: m.card.data.version.clone(),
            metrics: m.card.metrics.clone(),
        }
    }
}

/// One prediction; `None` in a reply means the cleaning plan dropped the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    /// In the model's label order ([`ModelInfo::labels`]).
    pub probabilities: Vec<f32>,
    /// Share of its words outside the model's training vocabulary.
    pub oov_rate: Option<f64>,
}

impl Prediction {
    /// The probability of the predicted label.
    pub fn confidence(&self) -> f32 {
        self.probabilities.iter().copied().fold(0.0, f32::max)
    }

    /// This prediction's prediction-log entry — the one mapping every channel (REST, stream)
    /// logs through.
    pub fn log_entry(
        &self,
        model: &ModelInfo,
        channel: &str,
        id: Option<String>,
        latency_us: u64,
    ) -> metastore::PredictionLogEntry {
        metastore::PredictionLogEntry {
            at: chrono::Utc::now(),
            id,
            channel: channel.to_string(),
            model: model.name.clone(),
            version: model.version,
            label: self.label.clone(),
            confidence: self.confidence(),
            latency_us,
        }
    }
}

/// A batch of answers and the model that produced them.
#[derive(Debug, Clone)]
pub struct Answer {
    pub model: Arc<ModelInfo>,
    pub predictions: Vec<Option<Prediction>>,
    /// Time in the model (the whole dynamic batch), microseconds.
    pub model_us: u64,
    /// Texts in that forward pass, this job's and the others batched with it.
    pub batch_texts: usize,
}

enum Msg {
    /// Cleaned texts; `None` where the cleaning plan dropped the text.
    Predict {
        texts: Vec<Option<String>>,
        reply: oneshot::Sender<Result<Answer>>,
    },
    Swap {
        model: Box<LoadedModel>,
        reply: oneshot::Sender<Result<Arc<ModelInfo>>>,
    },
}

/// Dynamic batching limits.
#[derive(Debug, Clone, Copy)]
pub struct BatchingConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Jobs that may wait in the queue; beyond it HTTP gets 429 and the scorer waits.
    pub queue: usize,
}

/// A cheap, cloneable handle to the model thread.
#[derive(Clone)]
pub struct ModelHandle {
    tx: flume::Sender<Msg>,
    info: Arc<RwLock<Option<Arc<ModelInfo>>>>,
    /// The running plan: raw texts are cleaned by the caller, off the model thread.
    plan: Arc<CleanPlan>,
    /// Requests being cleaned, not yet queued: the batch waits for them.
    incoming: Arc<AtomicUsize>,
}

/// Counts a request as on its way to the queue while it lives.
struct OnItsWay<'a>(&'a AtomicUsize);

impl<'a> OnItsWay<'a> {
    fn enter(count: &'a AtomicUsize) -> OnItsWay<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        OnItsWay(count)
    }
}

impl Drop for OnItsWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Raw texts up to this many bytes are cleaned inline on the caller's task (tens of µs); more
/// go to a blocking thread.
const INLINE_CLEAN_BYTES: usize = 8 * 1024;

impl ModelHandle {
    /// Starts the model thread with `model` (checked against `plan`), or with none: requests
    /// then fail with `NotReady` until a model is swapped in.
    pub fn start(
        model: Option<LoadedModel>,
        plan: Arc<CleanPlan>,
        cfg: BatchingConfig,
    ) -> Result<ModelHandle> {
        if let Some(m) = &model {
            check_spec(m, &plan)?;
        }
        let info = Arc::new(RwLock::new(model.as_ref().map(|m| Arc::new(ModelInfo::of(m)))));
        let (tx, rx) = flume::bounded(cfg.queue);
        let shared = info.clone();
        let thread_plan = plan.clone();
        let incoming = Arc::new(AtomicUsize::new(0));
        let waiting_for = incoming.clone();
        std::thread::Builder::new()
            .name("driftwood-model".into())
            .spawn(move || model_thread(model, thread_plan, cfg, rx, shared, waiting_for))
            .map_err(|e| Error::Internal(format!("cannot start the model thread: {e}")))?;
        Ok(ModelHandle { tx, info, plan, incoming })
    }

    /// Jobs waiting for the model thread.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// The model currently served, if any.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        self.info.read().expect("info lock").clone()
    }

    /// Predicts raw texts: cleaned here with the running plan (so the single model thread only
    /// runs the model), then batched. Fails fast with `Overloaded` when the queue is full.
    pub async fn predict_raw(&self, texts: Vec<String>) -> Result<Answer> {
        let on_its_way = OnItsWay::enter(&self.incoming);
        let clean = |plan: &CleanPlan, texts: &[String]| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            plan.clean_texts(&refs)
        };
        let bytes: usize = texts.iter().map(String::len).sum();
        let texts = if bytes <= INLINE_CLEAN_BYTES {
            clean(&self.plan, &texts)
        } else {
            let plan = self.plan.clone();
            tokio::task::spawn_blocking(move || clean(&plan, &texts))
                .await
                .map_err(|e| Error::Internal(format!("cleaning task failed: {e}")))?
        };
        let (reply, rx) = oneshot::channel();
        // No longer "on its way" before it is queued: the model thread must never wait for the
        // very request it has just taken (it would sit out `max_wait` for nothing). At worst a
        // batch closes a moment early and this request rides the next one.
        drop(on_its_way);
        let queued = self.tx.try_send(Msg::Predict { texts, reply });
        queued.map_err(|e| match e {
            flume::TrySendError::Full(_) => Error::Overloaded,
            flume::TrySendError::Disconnected(_) => Error::Internal("model thread stopped".into()),
        })?;
        rx.await.map_err(|_| Error::Internal("model thread dropped a request".into()))?
    }

    /// Predicts already-cleaned texts, waiting for queue space (back-pressure for the scorer).
    pub async fn predict_cleaned(&self, texts: Vec<String>) -> Result<Answer> {
        let (reply, rx) = oneshot::channel();
        let texts = texts.into_iter().map(Some).collect();
        self.tx
            .send_async(Msg::Predict { texts, reply })
            .await
            .map_err(|_| Error::Internal("model thread stopped".into()))?;
        rx.await.map_err(|_| Error::Internal("model thread dropped a request".into()))?
    }

    /// Replaces the served model after the queued jobs; refused (the old model stays) when its
    /// cleaning spec differs from the running plan.
    pub async fn swap(&self, model: LoadedModel) -> Result<Arc<ModelInfo>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_async(Msg::Swap { model: Box::new(model), reply })
            .await
            .map_err(|_| Error::Internal("model thread stopped".into()))?;
        rx.await.map_err(|_| Error::Internal("model thread dropped a swap".into()))?
    }
}

fn check_spec(model: &LoadedModel, plan: &CleanPlan) -> Result<()> {
    model.spec_mismatch(plan).map_or(Ok(()), |why| Err(Error::SpecMismatch(why)))
}

fn model_thread(
    model: Option<LoadedModel>,
    plan: Arc<CleanPlan>,
    cfg: BatchingConfig,
    rx: flume::Receiver<Msg>,
    shared: Arc<RwLock<Option<Arc<ModelInfo>>>>,
    incoming: Arc<AtomicUsize>,
) {
    // The model and what is reported with its answers, built once per model.
    let mut model = model.map(|m| {
        let info = Arc::new(ModelInfo::of(&m));
        (m, info)
    });
    let mut pending: Option<Msg> = None;
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return, // every handle dropped
            },
        };
        let mut jobs = match first {
            Msg::Swap { model: new, reply } => {
                let result = check_spec(&new, &plan).map(|()| {
                    let info = Arc::new(ModelInfo::of(&new));
                    model = Some((*new, info.clone()));
                    *shared.write().expect("info lock") = Some(info.clone());
                    tracing::info!(model = %info.name, version = info.version, "model swapped");
                    info
                });
                let _ = reply.send(result);
                continue;
            }
            Msg::Predict { texts, reply } => vec![(texts, reply)],
        };
        let mut n: usize = jobs[0].0.len();
        let deadline = Instant::now() + cfg.max_wait;
        while n < cfg.max_batch {
            let next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(flume::TryRecvError::Disconnected) => None,
                Err(flume::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || incoming.load(Ordering::SeqCst) == 0 {
                        None // nothing more is coming soon
                    } else {
                        rx.recv_timeout(left).ok()
                    }
                }
            };
            match next {
                Some(Msg::Predict { texts, reply }) => {
                    n += texts.len();
                    jobs.push((texts, reply));
                }
                Some(swap @ Msg::Swap { .. }) => {
                    pending = Some(swap);
                    break;
                }
                None => break,
            }
        }
        match &model {
            Some((m, info)) => run_batch(m, info, jobs),
            None => {
                for (_, reply) in jobs {
                    let _ = reply.send(Err(Error::NotReady));
                }
            }
        }
    }
}

type Reply = oneshot::Sender<Result<Answer>>;
type Job = (Vec<Option<String>>, Reply);

fn run_batch(model: &LoadedModel, info: &Arc<ModelInfo>, jobs: Vec<Job>) {
    let started = Instant::now();
    // One forward pass over every kept text of every job.
    let inputs: Vec<&str> = jobs.iter().flat_map(|(c, _)| c.iter().flatten().map(String::as_str)).collect();
    let batch_texts = inputs.len();
    let result = model.predict_with_oov(&inputs);
    let model_us = started.elapsed().as_micros() as u64;
    match result {
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in jobs {
                let _ = reply.send(Err(Error::Internal(format!("prediction failed: {msg}"))));
            }
        }
        Ok(probs) => {
            let mut probs = probs.into_iter();
            for (cleaned, reply) in jobs {
                let predictions = cleaned
                    .into_iter()
                    .map(|c| {
                        c.as_ref()?;
                        let (p, oov_rate) = probs.next()?;
                        let best =
                            p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                        Some(Prediction { label: info.labels[best].clone(), probabilities: p, oov_rate })
                    })
                    .collect();
                let _ = reply.send(Ok(Answer { model: info.clone(), predictions, model_us, batch_texts }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prediction_maps_to_labels_and_a_log_entry_one_way() {
        let info = ModelInfo {
            name: "spam".into(),
            version: 3,
            family: schemas::Family::LogReg,
            labels: vec!["ham".into(), "spam".into()],
            spec_hash: "h".into(),
            data_version: "d".into(),
            metrics: Default::default(),
        };
        let p = Prediction { label: "spam".into(), probabilities: vec![0.25, 0.75], oov_rate: None };
        assert_eq!(p.confidence(), 0.75);
        let by_label = info.by_label(&p.probabilities);
        assert_eq!(by_label.get("ham"), Some(&0.25));
        assert_eq!(by_label.get("spam"), Some(&0.75));
        let e = p.log_entry(&info, "rest", Some("id-1".into()), 42);
        assert_eq!(
            (e.id.as_deref(), e.channel.as_str(), e.model.as_str(), e.version, e.label.as_str()),
            (Some("id-1"), "rest", "spam", 3, "spam")
        );
        assert_eq!((e.confidence, e.latency_us), (0.75, 42));
    }
}
