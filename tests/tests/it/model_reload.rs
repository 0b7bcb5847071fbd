//! Hot reload refuses bad models and keeps serving: `driftwood serve` runs while clients keep
//! calling it; promoting a version whose cleaning-spec hash differs from the running plan, then
//! one whose weights file is corrupt, leaves the running model in place (no failed request);
//! a good version promoted next is swapped in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metastore::{MetadataStore, ModelVersion, SqliteStore};
use tests::{TestEnv, free_addr};
use tokio_util::sync::CancellationToken;

/// A copy of `mv`'s artifacts in `dir`, changed by `edit`, registered as the next version.
async fn register_copy(
    store: &dyn MetadataStore,
    mv: &ModelVersion,
    dir: PathBuf,
    edit: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<ModelVersion> {
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&mv.artifact_dir)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    edit(&dir)?;
    let card = trainer::artifact::read_card(&dir)?;
    let copy = ModelVersion {
        version: 0,
        artifact_dir: dir.display().to_string(),
        spec_hash: card.spec_hash,
        ..mv.clone()
    };
    Ok(store.register_model(copy).await?)
}

async fn current_version(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http.get(format!("{base}/v1/models/current")).send().await?.json().await?;
    v["version"].as_u64().ok_or_else(|| anyhow::anyhow!("no version in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_models_leave_the_running_one_serving() -> anyhow::Result<()> {
    let env = TestEnv::start("reload")?;
    let mut config = env.config();
    config.serve.listen = free_addr()?;
    config.serve.scorer = false;
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    tests::train_production(&config, 600).await?;
    let store = SqliteStore::in_data_dir(env.dir())?;
    let v1 = store.get_model_version("spam", 1).await?;

    // v2: a real model file whose card says it was trained with another cleaning spec.
    let v2 = register_copy(&store, &v1, env.dir().join("v2-other-spec"), |d| {
        let path = d.join(trainer::card::CARD_FILE);
        let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        card["spec_hash"] = serde_json::json!("0".repeat(64));
        std::fs::write(&path, serde_json::to_vec_pretty(&card)?)?;
        Ok(())
    })
    .await?;
    // v3: the weights file corrupted after registration (its hash no longer matches).
    let v3 = register_copy(&store, &v1, env.dir().join("v3-corrupt"), |_| Ok(())).await?;
    let weights = Path::new(&v3.artifact_dir).join(trainer::card::WEIGHTS_FILE);
    let mut bytes = std::fs::read(&weights)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&weights, bytes)?;
    // v4: an unchanged copy, which must be swapped in.
    let v4 = register_copy(&store, &v1, env.dir().join("v4-good"), |_| Ok(())).await?;
    assert_eq!((v2.version, v3.version, v4.version), (2, 3, 4));

    let _serve = tests::spawn_driftwood(&config, &["serve"], "serve.log")?;
    let base = format!("http://{}", config.serve.listen);
    let http = reqwest::Client::new();
    tests::wait_ready(&base).await?;
    assert_eq!(current_version(&http, &base).await?, 1);

    // Clients keep calling the API the whole time.
    let stop = CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, ok, failed, http, base) =
            (stop.clone(), ok.clone(), failed.clone(), http.clone(), base.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let body = serde_json::json!({"text": "win a free prize now, click here"});
                match http.post(format!("{base}/v1/predict")).json(&body).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let serve_log = || std::fs::read_to_string(env.dir().join("serve.log")).unwrap_or_default();
    for (bad, why) in [(2u32, "spec"), (3, "hashes to")] {
        let r = http
            .post(format!("{base}/v1/models/spam/promote"))
            .json(&serde_json::json!({"version": bad, "reason": "test"}))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "the alias moves; the server decides what it loads");
        // The server follows the alias every 2 s: wait until it has tried this version.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !serve_log().contains("new model refused") || !serve_log().contains(why) {
            anyhow::ensure!(Instant::now() < deadline, "v{bad} was never refused:\n{}", serve_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(current_version(&http, &base).await?, 1, "v{bad} replaced the running model");
    }

    http.post(format!("{base}/v1/models/spam/promote"))
        .json(&serde_json::json!({"version": 4}))
        .send()
        .await?
        .error_for_status()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while current_version(&http, &base).await? != 4 {
        anyhow::ensure!(Instant::now() < deadline, "v4 was never swapped in:\n{}", serve_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    client.await?;
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "only {ok} requests answered");
    assert_eq!(failed, 0, "requests failed while bad models were refused ({ok} answered)");
    Ok(())
}
