//! Encryption at rest on real parts: snapshots and model weights written by the `driftwood`
//! binary with a keyring hold no readable text; a wrong key, a missing key and a flipped byte
//! are refused; rotation keeps every version readable, re-encryption moves all data keys and
//! weights to the new key, and no key ever shows up in what the commands print or log.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use datafusion::prelude::SessionConfig;
use metastore::{MetadataStore, SqliteStore};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::Config;
use stream::crypto::{self, Keyring};
use stream::store::{Manifest, SnapshotStore};
use tests::{TestEnv, corpus_dir, driftwood_bin, env_for, outgoing, publish, shuffle};

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// Files under `dir` that give away text: plaintext Parquet (readable without a key) or any
/// file containing one of `markers` verbatim (manifests, cards, the SQLite store, logs).
fn leaks(dir: &Path, markers: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files(dir) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.ends_with(b"PAR1")
            || std::fs::File::open(&path).is_ok_and(|f| ParquetRecordBatchReaderBuilder::try_new(f).is_ok())
        {
            found.push(format!("{}: readable Parquet", path.display()));
        }
        if let Some(m) = markers.iter().find(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes())) {
            found.push(format!("{}: contains {m:?}", path.display()));
        }
    }
    found
}

/// Texts of a version, read through `store`.
fn texts(store: &SnapshotStore, m: &Manifest) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for batch in store.read(m) {
        let batch = batch?;
        let col = batch.column_by_name("text").context("text column")?;
        let col = arrow::array::AsArray::as_string::<i32>(col);
        out.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// Runs `driftwood ARGS` with debug logging; stdout + stderr, which must not hold a secret.
fn run_logged(config: &Config, extra_env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(driftwood_bin()?)
        .args(args)
        .envs(env_for(config))
        .env("DRIFTWOOD_LOG", "debug")
        .envs(extra_env.iter().copied())
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "driftwood {args:?} failed: {text}");
    Ok(text)
}

fn flip_byte(path: &Path, at: usize) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(path)?;
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The base64 keys of a keyring file (what must never be printed).
fn secrets(key_file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(key_file)?;
    let parsed: toml::Table = toml::from_str(&text)?;
    Ok(parsed["keys"]
        .as_table()
        .context("[keys]")?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_weights_are_encrypted_rotated_and_reencrypted() -> anyhow::Result<()> {
    let env = TestEnv::start("enc")?;
    let keys_dir = tempfile::tempdir()?; // keys live outside the data dir
    let key_file = keys_dir.path().join("keys.toml");
    let mut config = env.config();
    config.encryption.key_file = key_file.display().to_string();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let mut output = String::new();

    let mut corpus = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 21);
    output += &run_logged(&config, &[], &["keys", "add", "k1"])?;
    let mut all_secrets = secrets(&key_file)?;
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file)?.permissions()) & 0o777,
        0o600
    );
    publish(&config, &topics.raw, outgoing(&corpus[..400])).await?;
    output += &run_logged(&config, &[], &["snapshot"])?;
    output += &run_logged(&config, &[], &["train", "--alias", "production"])?;

    let keyring = std::sync::Arc::new(Keyring::load(&config.encryption, None)?.context("keyring")?);
    let store = SnapshotStore::open(env.dir())?.with_keyring(Some(keyring.clone()));
    let v1 = store.latest("text")?.context("a version")?;
    assert!(v1.files.iter().all(|f| f.key.is_some()), "every object names its data key");
    let v1_texts = texts(&store, &v1)?;
    assert_eq!(v1_texts.len() as u64, v1.rows);
    // Markers: pieces of the stored (cleaned) texts, long enough to be unique.
    let markers: Vec<String> = v1_texts
        .iter()
        .filter_map(|t| t.get(t.len() / 3..).and_then(|s| s.get(..40)).map(str::to_string))
        .filter(|m| m.chars().filter(|c| c.is_alphabetic()).count() > 25)
        .step_by(5)
        .collect();
    assert!(markers.len() > 20, "{} markers", markers.len());
    let found = leaks(env.dir(), &markers);
    assert!(found.is_empty(), "plaintext in the data dir: {found:#?}");

    // The scanner is not blind: the same rows written without a keyring are caught.
    let control_dir = tempfile::tempdir()?;
    let control = SnapshotStore::open(control_dir.path())?;
    let mut w = control.object_writer(schemas::records::clean_schema())?;
    for batch in store.read(&v1) {
        w.write(&batch?)?;
    }
    w.finish()?;
    assert!(!leaks(control_dir.path(), &markers).is_empty(), "a plaintext object went unnoticed");

    // Wrong key, no key, a flipped byte: errors, never garbage.
    let wrong =
        SnapshotStore::open(env.dir())?.with_keyring(Some(std::sync::Arc::new(Keyring::generate("k1")?)));
    let err = texts(&wrong, &v1).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    let err = texts(&SnapshotStore::open(env.dir())?, &v1).unwrap_err().to_string();
    assert!(err.contains("no keyring is configured"), "{err}");
    let object = store.object_path(&v1.files[0].hash);
    let len = std::fs::metadata(&object)?.len() as usize;
    flip_byte(&object, len / 2)?;
    assert!(texts(&store, &v1).is_err(), "a flipped byte in an encrypted object went unnoticed");
    flip_byte(&object, len / 2)?;
    let dek = store.key_path(v1.files[0].key.as_deref().context("key")?);
    flip_byte(&dek, std::fs::metadata(&dek)?.len() as usize - 3)?;
    let err = texts(&store, &v1).unwrap_err().to_string();
    assert!(err.contains("authentication failed"), "{err}");
    flip_byte(&dek, std::fs::metadata(&dek)?.len() as usize - 3)?;
    assert_eq!(texts(&store, &v1)?, v1_texts, "restored bytes read again");

    // Model weights: sealed by k1; a flipped byte or no keyring refuses the model.
    let meta = SqliteStore::in_data_dir(env.dir())?;
    let mv = trainer::registry::resolve(&meta, "spam", "production").await?;
    let weights = Path::new(&mv.artifact_dir).join(trainer::card::WEIGHTS_FILE);
    assert_eq!(crypto::sealed_by(&std::fs::read(&weights)?), Some("k1"));
    let model = trainer::model::load(&mv, Some(&keyring))?;
    let before = model.predict(&["win a free prize now"])?;
    let err = trainer::model::load(&mv, None).err().context("loaded without a key")?.to_string();
    assert!(err.contains("no keyring"), "{err}");
    flip_byte(&weights, 100)?;
    assert!(trainer::model::load(&mv, Some(&keyring)).is_err(), "tampered weights were loaded");
    flip_byte(&weights, 100)?;

    // Rotation: k2 becomes active; new data uses it, old data stays readable.
    output += &run_logged(&config, &[], &["keys", "add", "k2"])?;
    all_secrets = secrets(&key_file)?.into_iter().chain(all_secrets).collect();
    publish(&config, &topics.raw, outgoing(&corpus[400..600])).await?;
    // The keyring may also come from the environment (how a Secret reaches a pod).
    let env_config = Config { encryption: Default::default(), ..config.clone() };
    let keyring_text = std::fs::read_to_string(&key_file)?;
    output += &run_logged(&env_config, &[(crypto::KEYS_ENV, &keyring_text)], &["snapshot"])?;
    let keyring = std::sync::Arc::new(Keyring::load(&config.encryption, None)?.context("keyring")?);
    let store = store.with_keyring(Some(keyring.clone()));
    let v2 = store.latest("text")?.context("v2")?;
    assert_eq!(v2.seq, v1.seq + 1);
    let usage = store.key_usage()?;
    assert!(usage.get("k1").is_some_and(|&n| n > 0) && usage.get("k2").is_some_and(|&n| n > 0), "{usage:?}");
    assert_eq!(texts(&store, &v1)?, v1_texts);
    let err = run_logged(&config, &[], &["keys", "remove", "k1"]).unwrap_err().to_string();
    assert!(err.contains("still seals"), "{err}");

    // Re-encrypt: every data key and the weights move to k2; then k1 can go.
    let ids: Vec<String> = store.versions("text")?.into_iter().map(|m| m.id).collect();
    output += &run_logged(&config, &[], &["keys", "reencrypt"])?;
    assert_eq!(store.key_usage()?.keys().collect::<Vec<_>>(), vec!["k2"]);
    assert_eq!(crypto::sealed_by(&std::fs::read(&weights)?), Some("k2"));
    output += &run_logged(&config, &[], &["keys", "remove", "k1"])?;
    let keyring = std::sync::Arc::new(Keyring::load(&config.encryption, None)?.context("keyring")?);
    assert_eq!(keyring.ids().collect::<Vec<_>>(), vec!["k2"]);
    let store = store.with_keyring(Some(keyring.clone()));
    assert_eq!(
        store.versions("text")?.into_iter().map(|m| m.id).collect::<Vec<_>>(),
        ids,
        "version ids stay"
    );
    assert_eq!(texts(&store, &v1)?, v1_texts);
    let v2_rows = texts(&store, &v2)?.len() as u64;
    assert_eq!(v2_rows, v2.rows);
    let reloaded = trainer::model::load(&mv, Some(&keyring))?;
    assert_eq!(reloaded.predict(&["win a free prize now"])?, before);

    // DataFusion (Flight SQL's engine, and diff) reads the encrypted objects through the
    // store's decryption.
    let diff = stream::diff::diff(&store, &v1, &v2, 0).await?;
    assert_eq!(diff.added, v2.rows - v1.rows);
    let ctx = stream::query::session_context(&store, SessionConfig::new());
    ctx.register_table("v2", stream::query::version_table(&store, &v2)?)?;
    let counted = ctx.sql("SELECT COUNT(*) AS n FROM v2 WHERE text IS NOT NULL").await?.collect().await?;
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(counted[0].column(0)).value(0);
    assert_eq!(n as u64, v2.rows);
    let found = leaks(env.dir(), &markers);
    assert!(found.is_empty(), "plaintext in the data dir: {found:#?}");

    // Every key change is audited with who did it.
    let audit = meta.audit_log(100).await?;
    let actions: Vec<&str> =
        audit.iter().filter(|a| a.action.starts_with("keys.")).map(|a| a.action.as_str()).collect();
    for action in ["keys.add", "keys.reencrypt", "keys.remove"] {
        assert!(actions.contains(&action), "{actions:?}");
    }
    assert!(audit.iter().filter(|a| a.action.starts_with("keys.")).all(|a| a.actor.starts_with("cli:")));
    assert_eq!(actions.iter().filter(|a| **a == "keys.add").count(), 2);

    // Nothing printed or logged (at debug level) holds a key, in any encoding we store.
    assert!(
        output.contains("INFO") && output.contains("snapshot committed"),
        "the capture has the logs: {output}"
    );
    for secret in &all_secrets {
        assert!(!output.contains(secret.as_str()), "a key leaked into the output");
    }
    Ok(())
}

/// A whole run at debug level — snapshot, train, then `driftwood up` with auth, a keyring and
/// Kafka secrets, answering a password login, a client-credentials login and predictions —
/// logs no secret: no key, no password, no client secret, no token, no private-key PEM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_no_secret() -> anyhow::Result<()> {
    let env = TestEnv::start("secrets")?;
    let secrets_dir = tempfile::tempdir()?;
    let mut config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

    let key_file = secrets_dir.path().join("keys.toml");
    std::fs::write(&key_file, Keyring::generate("k1")?.to_toml())?;
    config.encryption.key_file = key_file.display().to_string();
    let jwt_key = secrets_dir.path().join("jwt.pem");
    tests::run_ok(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&jwt_key),
    )?;
    let (password, client_secret) = ("correct-horse-7781", "svc-secret-5519");
    std::fs::write(
        secrets_dir.path().join("users.toml"),
        format!(
            "[[user]]\nname = \"ana\"\npassword_hash = \"{}\"\nroles = [\"predictor\"]\n\n\
             [[client]]\nid = \"svc\"\nsecret_hash = \"{}\"\nroles = [\"predictor\"]\n",
            tests::hash_password(password)?,
            tests::hash_password(client_secret)?
        ),
    )?;
    config.auth.enabled = true;
    config.auth.signing_keys = vec![jwt_key.display().to_string()];
    config.auth.users_file = secrets_dir.path().join("users.toml").display().to_string();
    // A librdkafka secret passed through (unused on a plaintext listener, but configured).
    let kafka_secret = "sasl-secret-3307";
    config.kafka.client.insert("sasl.username".into(), "driftwood".into());
    config.kafka.client.insert("sasl.password".into(), kafka_secret.into());
    config.serve.listen = tests::free_addr()?;

    let mut corpus = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 5);
    publish(&config, &topics.raw, outgoing(&corpus[..300])).await?;
    let mut output = run_logged(&config, &[], &["snapshot"])?;
    output += &run_logged(&config, &[], &["train", "--alias", "production"])?;

    let log_path = env.dir().join("up.log");
    let up = tests::Killed(
        Command::new(driftwood_bin()?)
            .arg("up")
            .envs(env_for(&config))
            .env("DRIFTWOOD_LOG", "debug")
            .stdout(std::fs::File::create(env.dir().join("up.out"))?)
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()?,
    );
    let base = format!("http://{}", config.serve.listen);
    tests::wait_ready(&base).await?;
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    let login = http
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "password"), ("username", "ana"), ("password", password)])
        .send()
        .await?;
    assert_eq!(login.status(), 200);
    tokens.push(
        login.json::<serde_json::Value>().await?["access_token"].as_str().context("token")?.to_string(),
    );
    let service = http
        .post(format!("{base}/oauth/token"))
        .basic_auth("svc", Some(client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    assert_eq!(service.status(), 200);
    tokens.push(
        service.json::<serde_json::Value>().await?["access_token"].as_str().context("token")?.to_string(),
    );
    for token in &tokens {
        let r = http
            .post(format!("{base}/v1/predict"))
            .bearer_auth(token)
            .json(&serde_json::json!({"texts": ["win a free prize now"]}))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    // A wrong password is refused (and logged as a refusal, without the attempt).
    let wrong = http
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "password"), ("username", "ana"), ("password", "wrong-guess-1234")])
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    drop(up); // SIGTERM, and wait for it to stop
    output += &std::fs::read_to_string(&log_path)?;
    assert!(output.contains("REST API listening") && output.contains("model swapped"), "{output}");

    let pem = std::fs::read_to_string(&jwt_key)?;
    let mut forbidden: Vec<String> =
        vec![password.into(), client_secret.into(), kafka_secret.into(), "wrong-guess-1234".into()];
    forbidden.extend(secrets(&key_file)?);
    forbidden.extend(tokens);
    // Any line of the private key's base64 body.
    forbidden.extend(pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_string));
    let leaked: Vec<&String> = forbidden.iter().filter(|s| output.contains(s.as_str())).collect();
    assert!(leaked.is_empty(), "{} secrets in {} bytes of logs", leaked.len(), output.len());
    Ok(())
}
