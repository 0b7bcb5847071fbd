//! The REST API and the online scorer around one model thread, with the prediction log and
//! hot reload of the served alias.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use metastore::MetadataStore;
use schemas::Config;
use schemas::config::ServeConfig;
use serving::api::AppState;
use serving::handle::{BatchingConfig, ModelHandle};
use stream::clean::CleanPlan;
use stream::store::SnapshotStore;
use tokio_util::sync::CancellationToken;

use crate::open;

/// Jobs that may wait for the model thread; beyond it HTTP gets 429 and the scorer waits.
const MODEL_QUEUE: usize = 1024;

/// The model thread `[serve]` describes (dynamic batching), with no model yet.
pub fn model_handle(serve: &ServeConfig, plan: Arc<CleanPlan>) -> Result<ModelHandle> {
    let batching = BatchingConfig {
        max_batch: serve.max_batch,
        max_wait: Duration::from_millis(serve.max_wait_ms),
        queue: MODEL_QUEUE,
    };
    Ok(ModelHandle::start(None, plan, batching)?)
}

/// What the API's state holds that `[serve]` does not describe.
pub struct ApiParts {
    pub model: ModelHandle,
    pub metrics: serving::metrics::Metrics,
    pub auth: Arc<serving::auth::JwtAuth>,
    pub store: Arc<dyn MetadataStore>,
    pub snapshots: Arc<SnapshotStore>,
}

/// The API's state with `[serve]`'s limits; no prediction log, broker probe or control
/// producer ([`run`] adds those it runs).
pub fn api_state(serve: &ServeConfig, parts: ApiParts) -> AppState {
    let ApiParts { model, metrics, auth, store, snapshots } = parts;
    AppState {
        model,
        metrics,
        predlog: None,
        max_texts: serve.max_request_texts,
        auth,
        limits: serving::api::Limits::from_config(serve),
        broker: None,
        store,
        snapshots,
        control: None,
        scored_dataset: schemas::config::SnapshotConfig::default().scored_dataset,
        raw_topic: Config::default().topics().raw,
        secure_cookies: false,
        dead_letters: None,
    }
}

/// What [`run`] is given besides the configuration.
pub struct Serve {
    pub store: Arc<dyn MetadataStore>,
    /// The process's metrics (its registry is served on `/metrics`).
    pub metrics: serving::metrics::Metrics,
    /// Run the Kafka scorer beside the API.
    pub scorer: bool,
    pub auth: Arc<serving::auth::JwtAuth>,
}

/// Serves until `token` is cancelled; a scorer failure stops the API too.
pub async fn run(config: &Config, serve: Serve, token: CancellationToken) -> Result<()> {
    let Serve { store, metrics, scorer, auth } = serve;
    let plan = open::plan(config)?;
    let handle = model_handle(&config.serve, plan.clone())?;
    let (predlog, predlog_task) =
        serving::predlog::PredictionLog::start(store.clone(), metrics.clone(), token.clone());
    // One keyring for the snapshot store and the model weights.
    let snapshots = Arc::new(open::snapshots(config)?);
    let follower = serving::reload::AliasFollower {
        store: store.clone(),
        handle: handle.clone(),
        name: config.serve.model.clone(),
        alias: config.serve.alias.clone(),
        keyring: snapshots.keyring().cloned(),
    };
    let (name, alias) = (&follower.name, &follower.alias);
    match follower.reload_once().await {
        Ok(Some(v)) => tracing::info!(model = %name, version = v, "serving"),
        Ok(None) => {
            tracing::warn!(model = %name, alias = %alias, "no model yet; /readyz stays 503 until one is promoted")
        }
        Err(e) => tracing::error!(error = %e, "could not load the model; waiting for another version"),
    }
    let reload = tokio::spawn(follower.clone().follow(Duration::from_secs(2), token.clone()));
    let parts =
        ApiParts { model: handle.clone(), metrics: metrics.clone(), auth, store: store.clone(), snapshots };
    let state = AppState {
        predlog: Some(predlog.clone()),
        broker: Some(serving::api::BrokerHealth::probe(&config.kafka, token.clone())?),
        control: Some(Arc::new(open::control(config)?)),
        scored_dataset: config.snapshot.scored_dataset.clone(),
        raw_topic: config.topics().raw,
        secure_cookies: config.tls.enabled(),
        dead_letters: Some((config.kafka.clone(), config.topics().dead)),
        ..api_state(&config.serve, parts)
    };
    let listener = tokio::net::TcpListener::bind(config.serve.listen)
        .await
        .with_context(|| format!("binding {}", config.serve.listen))?;
    tracing::info!(addr = %listener.local_addr()?, tls = config.tls.enabled(), "REST API listening");
    let t = token.clone();
    let (router, shutdown) = (serving::api::router(state), async move { t.cancelled().await });
    let api = if config.tls.enabled() {
        let tls = serving::tls::server_config(&config.tls)?;
        let listener = serving::tls::TlsListener::new(listener, tls)?;
        tokio::spawn(serving::api::serve(listener, router, shutdown))
    } else {
        tokio::spawn(serving::api::serve(listener, router, shutdown))
    };
    let scorer_task = scorer.then(|| {
        let s = serving::scorer::Scorer {
            config: config.clone(),
            plan,
            model: handle,
            metrics,
            predlog: Some(predlog),
        };
        let t = token.clone();
        tokio::spawn(async move { s.run(false, &t).await })
    });
    if let Some(task) = scorer_task
        && let Err(e) = task.await?
    {
        token.cancel();
        api.await??;
        bail!("scorer failed: {e}");
    }
    api.await??;
    reload.await?;
    predlog_task.await?;
    Ok(())
}
