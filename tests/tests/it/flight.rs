//! Arrow Flight SQL over data versions and predictions, queried by clients nobody here wrote
//! (the ADBC Flight SQL driver and pyarrow.flight from PyPI), with authentication and TLS on.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use ingest::source;
use metastore::{MetadataStore, SqliteStore};
use stream::clean::{CleanPlan, CleanSpec};
use stream::store::SnapshotStore;
use tests::{TestEnv, corpus_dir, free_port, outgoing, publish, python, shuffle};
use tokio_util::sync::CancellationToken;

/// Rows of every batch of a version, read in Rust straight from the store.
fn version_rows(
    store: &SnapshotStore,
    dataset: &str,
    reference: &str,
) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
    let m = store.resolve(dataset, reference)?;
    let mut out = Vec::new();
    for b in store.read(&m) {
        let b = b?;
        let ids = b.column_by_name("id").expect("id").as_string::<i32>().clone();
        let labels = b.column_by_name("label").expect("label").as_string::<i32>().clone();
        let texts = b.column_by_name("text").expect("text").as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i).to_string(),
                labels.is_valid(i).then(|| labels.value(i).to_string()),
                texts.value(i).to_string(),
            ));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_and_pyarrow_query_versions_and_predictions_over_tls_with_auth() -> anyhow::Result<()> {
    let env = TestEnv::start("flight")?;
    let mut config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

    // Two data versions: 300 emails, then 200 more; the first tagged.
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 7);
    corpus.truncate(500);
    // Everything at rest is encrypted: the queries below decrypt on the server.
    let keys_dir = tempfile::tempdir()?;
    let key_file = keys_dir.path().join("keys.toml");
    std::fs::write(&key_file, stream::crypto::Keyring::generate("k1")?.to_toml())?;
    config.encryption.key_file = key_file.display().to_string();
    let keyring = Arc::new(stream::crypto::Keyring::load(&config.encryption, None)?.expect("a keyring"));
    let store = SnapshotStore::open(env.dir())?.with_keyring(Some(keyring.clone()));
    publish(&config, &topics.raw, outgoing(&corpus[..300])).await?;
    tests::snapshot_until_idle(&config, &store).await?;
    store.tag("text", "baseline", "v1")?;
    assert!(store.latest("text")?.expect("v1").files.iter().all(|f| f.key.is_some()));
    let meta: Arc<dyn MetadataStore> = Arc::new(SqliteStore::in_data_dir(env.dir())?);
    let req = trainer::train::TrainRequest {
        dataset: "text".into(),
        version: "v1".into(),
        params: config.train.clone(),
        data_dir: env.dir().to_path_buf(),
        alias: Some("production".into()),
        actor: "test".into(),
    };
    trainer::train::train(meta.as_ref(), &store, &req, None).await?;
    publish(&config, &topics.raw, outgoing(&corpus[300..])).await?;
    tests::snapshot_until_idle(&config, &store).await?;

    // Predictions: the scorer scores all 500, the scored snapshot job versions them.
    let plan = Arc::new(CleanPlan::compile(CleanSpec::default())?);
    let mv = trainer::registry::resolve(meta.as_ref(), "spam", "production").await?;
    let handle = serving::handle::ModelHandle::start(
        Some(trainer::model::load(&mv, Some(&keyring))?),
        plan.clone(),
        serving::handle::BatchingConfig { max_batch: 64, max_wait: Duration::from_millis(2), queue: 1024 },
    )?;
    let scorer = serving::scorer::Scorer {
        config: config.clone(),
        plan,
        model: handle,
        metrics: serving::metrics::Metrics::new(),
        predlog: None,
    };
    let cancel = CancellationToken::new();
    scorer.run(true, &cancel).await?;
    let opts = stream::job::SnapshotOptions::from_config(&config, true);
    let scored = stream::scored::run_scored_snapshot(&config, &store, &opts, &cancel).await?;
    assert_eq!(scored.records, 500, "{scored:?}");
    // At-least-once on the topic, exactly once in the dataset: a second run adds nothing.
    let again = stream::scored::run_scored_snapshot(&config, &store, &opts, &cancel).await?;
    assert!(again.commits.is_empty() && again.records == 0, "{again:?}");

    // Auth and TLS: a signing key, two users (one without roles), a CA and a server cert.
    let secrets = env.dir().join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let key = secrets.join("jwt.pem");
    tests::run_ok(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key),
    )?;
    tests::make_tls(&secrets)?;
    let users = format!(
        "[[user]]\nname = \"ana\"\npassword_hash = \"{}\"\nroles = [\"viewer\"]\n\n\
         [[user]]\nname = \"ex\"\npassword_hash = \"{}\"\nroles = []\n",
        tests::hash_password("correct horse")?,
        tests::hash_password("battery staple")?
    );
    std::fs::write(secrets.join("users.toml"), users)?;
    config.auth.enabled = true;
    config.auth.signing_keys = vec![key.display().to_string()];
    config.auth.users_file = secrets.join("users.toml").display().to_string();
    config.tls.cert_file = secrets.join("server.pem").display().to_string();
    config.tls.key_file = secrets.join("server.key").display().to_string();
    let port = free_port()?;
    config.flight.listen = ([127, 0, 0, 1], port).into();
    let _server = tests::spawn_driftwood(&config, &["flight"], "flight.log")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the Flight SQL server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/flight_client.py");
    let out = Command::new(python()?)
        .arg(script)
        .args([&format!("grpc+tls://127.0.0.1:{port}"), "ana", "correct horse", "ex", "battery staple"])
        .arg(secrets.join("ca.pem"))
        .output()?;
    let server_log = std::fs::read_to_string(env.dir().join("flight.log")).unwrap_or_default();
    anyhow::ensure!(
        out.status.success(),
        "flight_client.py: {}\nserver log:\n{server_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    println!("client results: {got:#}");

    // Expected values, computed from the store directly.
    let v1 = version_rows(&store, "text", "v1")?;
    let v2 = version_rows(&store, "text", "v2")?;
    assert!(v1.len() > 250 && v2.len() > v1.len(), "{} {}", v1.len(), v2.len());
    assert_eq!(got["count_v1"], v1.len());
    assert_eq!(got["count_tag"], v1.len());
    assert_eq!(got["count_v2"], v2.len());
    let v1_ids: HashSet<&str> = v1.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(got["added_v1_to_v2"], v2.iter().filter(|r| !v1_ids.contains(r.0.as_str())).count());
    let mut long: BTreeMap<String, usize> = BTreeMap::new();
    for (_, label, text) in &v2 {
        if text.chars().count() > 200 {
            *long.entry(label.clone().unwrap_or_default()).or_default() += 1;
        }
    }
    let expected_long: Vec<serde_json::Value> = long.iter().map(|(l, n)| serde_json::json!([l, n])).collect();
    assert_eq!(got["long_by_label"], serde_json::Value::Array(expected_long));
    let count = |label: &str| v2.iter().filter(|r| r.1.as_deref() == Some(label)).count();
    assert_eq!(got["spam_count"], count("spam"));
    assert_eq!(got["ham_count"], count("ham"));
    assert!(count("spam") > 0 && count("ham") > 0);
    assert_eq!(got["streamed_rows"], v2.len());
    assert_eq!(got["versions"][0][0], 1);
    assert_eq!(got["versions"][0][1], v1.len());
    assert_eq!(got["versions"][0][3], "baseline");
    assert_eq!(got["versions"][1][1], v2.len());

    // Predictions joined with data version 1: every text of v1 was scored once by spam v1.
    let join = got["scored_join"].as_array().expect("rows");
    assert_eq!(join.len(), 1, "{join:?}");
    assert_eq!(join[0][0], "spam");
    assert_eq!(join[0][1], 1);
    assert_eq!(join[0][2], v1.len());
    let correct = join[0][3].as_u64().expect("number") as f64 / v1.len() as f64;
    assert!(correct > 0.9, "training-data accuracy {correct}");

    // Metadata: schemas and tables as named in the README (the raw data too), table schemas as
    // stored.
    let tables: Vec<&str> =
        got["tables"].as_array().expect("list").iter().filter_map(|v| v.as_str()).collect();
    for t in [
        "text.latest",
        "text.versions",
        "text.baseline",
        "text.v1",
        "text.v2",
        "scored.latest",
        "scored.v1",
        "text_raw.latest",
        "text_raw.v2",
    ] {
        assert!(tables.contains(&t), "{t} missing from {tables:?}");
    }
    assert_eq!(got["catalogs"], serde_json::json!(["driftwood"]));
    assert_eq!(got["vendor"], "Driftwood");
    assert_eq!(got["latest_schema"][0], serde_json::json!(["id", "string", false]));
    assert_eq!(
        got["streamed_schema"],
        serde_json::json!([["id", "string", false], ["text", "string", false]])
    );

    // Refusals.
    let refusal =
        |k: &str| got[k].as_str().map(str::to_string).unwrap_or_else(|| panic!("{k} was not refused: {got}"));
    assert!(
        refusal("wrong_password").contains("UNAUTHENTICATED")
            || refusal("wrong_password").contains("Unauthenticated"),
        "{}",
        refusal("wrong_password")
    );
    assert!(refusal("no_role").contains("lacks the `viewer` role"), "{}", refusal("no_role"));
    assert!(
        refusal("anonymous").contains("no bearer token") || refusal("anonymous").contains("Unauthenticated"),
        "{}",
        refusal("anonymous")
    );
    assert!(refusal("bad_sql").contains("no_such_version"), "{}", refusal("bad_sql"));
    assert_eq!(got["handshake_header"], "authorization");
    assert_eq!(got["handshake_token_parts"], 3);

    // Plaintext clients get no answer from the TLS port.
    let plain = Command::new(python()?)
        .args([
            "-c",
            &format!(
                "import pyarrow.flight as f\nc = f.FlightClient('grpc://127.0.0.1:{port}')\n\
             c.authenticate_basic_token('ana', 'correct horse', f.FlightCallOptions(timeout=5))"
            ),
        ])
        .output()?;
    assert!(!plain.status.success(), "a plaintext client was served");
    // TLS 1.1 is refused by the server (an alert comes back), as on the REST API.
    let old = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    let (text, err) = (String::from_utf8_lossy(&old.stdout), String::from_utf8_lossy(&old.stderr));
    assert!(!old.status.success() && !text.contains("TLSv1.1,"), "TLS 1.1 negotiated: {text}");
    assert!(err.contains("alert"), "{err}");
    Ok(())
}
