//! Remotes on real servers: push and pull keep moving only what the other side lacks and
//! verify every object's hash — on a directory, on S3 (moto), on Azure Blob Storage (Azurite)
//! and, pull only, on Google Cloud Storage (fake-gcs-server): its XML API refuses the uploads
//! `object_store` sends, so the bucket is filled through the JSON API, as Google's clients do.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stream::store::SnapshotStore;
use tests::{TestEnv, driftwood_bin, env_for, publish, python, snapshot_until_idle};

use crate::data_path::{records, rows_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delete_pull_reads_back_identical_rows() -> anyhow::Result<()> {
    let env = TestEnv::start("remote")?;
    let remote_dir = tempfile::tempdir()?;
    let config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let store = SnapshotStore::open(env.dir())?;
    publish(&config, &topics.raw, records(0..1500)).await?;
    snapshot_until_idle(&config, &store).await?;
    publish(&config, &topics.raw, records(1500..2000)).await?;
    snapshot_until_idle(&config, &store).await?;
    let versions = store.versions("text")?;
    assert_eq!(versions.len(), 2);
    let before: Vec<String> =
        versions.iter().map(|m| rows_of(&store, m).map(|r| r.1)).collect::<anyhow::Result<_>>()?;

    // The raw data the versions were cleaned from, and their spec, go along.
    let raw = store.versions("text_raw")?;
    assert_eq!(raw.len(), 2);
    let remote = stream::remote::Remote::open(&format!("file://{}", remote_dir.path().display()))?;
    let pushed = remote.push(&store, "text", None).await?;
    // (Objects are content-addressed: a raw object the spec left unchanged is the same object.)
    let objects: std::collections::BTreeSet<&str> =
        versions[1].files.iter().chain(&raw[1].files).map(|f| f.hash.as_str()).collect();
    assert_eq!(
        (pushed.versions, pushed.objects, pushed.specs, pushed.raw_datasets.clone()),
        (4, objects.len(), 1, vec!["text_raw".to_string()])
    );
    let again = remote.push(&store, "text", None).await?;
    assert_eq!((again.versions, again.objects, again.specs), (0, 0, 0), "only missing objects are sent");

    // Lose every local object and manifest, then pull.
    std::fs::remove_dir_all(env.dir().join("snapshots"))?;
    let store = SnapshotStore::open(env.dir())?;
    let pulled = remote.pull(&store, "text").await?;
    assert_eq!(pulled.versions, 4, "two of text, two of text_raw");
    let after: Vec<String> = store
        .versions("text")?
        .iter()
        .map(|m| rows_of(&store, m).map(|r| r.1))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(before, after, "identical rows (hash-equal) in every version");
    store.verify(&store.resolve("text", "latest")?)?;
    assert_eq!((pulled.specs, pulled.raw_datasets.clone()), (1, vec!["text_raw".to_string()]));
    let spec = store.spec(&versions[1].spec_hash)?.expect("the spec came along");
    assert_eq!(spec.hash(), versions[1].spec_hash);
    assert_eq!(store.versions("text_raw")?, raw, "the raw versions, identical");

    // A tampered object on the remote is refused on pull.
    let victim = walk(remote_dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("object");
    let mut bytes = std::fs::read(&victim)?;
    bytes[20] ^= 0xff;
    std::fs::write(&victim, bytes)?;
    std::fs::remove_dir_all(env.dir().join("snapshots"))?;
    let store = SnapshotStore::open(env.dir())?;
    let err = remote.pull(&store, "text").await.expect_err("corrupt object refused");
    assert!(err.to_string().contains("hashes to"), "{err}");
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// An emulator (moto, Azurite, fake-gcs-server) on a loopback port; killed on drop.
struct Emulator(std::process::Child);

impl Emulator {
    fn start(cmd: &mut Command, port: u16) -> anyhow::Result<Emulator> {
        let what = cmd.get_program().to_string_lossy().into_owned();
        let emulator = Emulator(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "{what} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(emulator)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test's store after `n` records were snapshotted, and the hash of the latest version's rows.
async fn snapshotted(name: &str, n: usize) -> anyhow::Result<(TestEnv, schemas::Config, String)> {
    let env = TestEnv::start(name)?;
    let config = env.config();
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;
    let store = SnapshotStore::open(env.dir())?;
    publish(&config, &topics.raw, records(0..n)).await?;
    snapshot_until_idle(&config, &store).await?;
    let before = rows_of(&store, &store.resolve("text", "latest")?)?.1;
    Ok((env, config, before))
}

/// Runs the driftwood binary with the test's config and `vars`.
fn driftwood(config: &schemas::Config, vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    Ok(Command::new(driftwood_bin()?).args(args).envs(env_for(config)).envs(vars.iter().copied()).output()?)
}

/// [`driftwood`], which must succeed: its stdout.
fn driftwood_ok(config: &schemas::Config, vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<String> {
    let out = driftwood(config, vars, args)?;
    anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a Python snippet with `arg` as `sys.argv[1]` (the emulators' own vendors' clients).
fn python_ok(code: &str, arg: &str) -> anyhow::Result<()> {
    let out = Command::new(python()?).args(["-c", code, arg]).output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_remote_push_and_pull_through_the_cli() -> anyhow::Result<()> {
    let (env, config, before) = snapshotted("s3", 700).await?;
    // moto's S3 server, installed by scripts/setup next to the venv's Python.
    let port = tests::free_port()?;
    let _moto = Emulator::start(
        Command::new(python()?.with_file_name("moto_server")).args([
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]),
        port,
    )?;
    let url = format!("http://127.0.0.1:{port}");
    python_ok(
        "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='driftwood')",
        &url,
    )?;
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", url.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    push_delete_pull(&env, &config, "s3://driftwood/team/snapshots", &aws, before)
}

/// `data push` to `remote`, the local snapshots deleted, `data pull`: the same rows again, and
/// a second push moves nothing.
fn push_delete_pull(
    env: &TestEnv,
    config: &schemas::Config,
    remote: &str,
    vars: &[(&str, &str)],
    before: String,
) -> anyhow::Result<()> {
    let pushed = driftwood_ok(config, vars, &["data", "push", "--remote", remote])?;
    assert!(pushed.contains("(with raw data text_raw and 1 cleaning spec)"), "{pushed}");
    std::fs::remove_dir_all(env.dir().join("snapshots"))?;
    let pulled = driftwood_ok(config, vars, &["data", "pull", "--remote", remote])?;
    let store = SnapshotStore::open(env.dir())?;
    let after = rows_of(&store, &store.resolve("text", "latest")?)?.1;
    assert_eq!(before, after, "identical rows after push, delete, pull (push: {pushed}; pull: {pulled})");
    let again = driftwood_ok(config, vars, &["data", "push", "--remote", remote])?;
    assert!(again.contains(": 0 versions, 0 objects"), "a second push moved something: {again}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_remote_push_and_pull_through_the_cli() -> anyhow::Result<()> {
    let (env, config, before) = snapshotted("azure", 300).await?;
    let bin = std::env::var("DRIFTWOOD_AZURITE_BIN")
        .map_err(|_| anyhow::anyhow!("DRIFTWOOD_AZURITE_BIN is not set: run scripts/setup"))?;
    let port = tests::free_port()?;
    let data = env.dir().join("azurite");
    std::fs::create_dir_all(&data)?;
    let _azurite = Emulator::start(
        Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(&data)
            .args(["--skipApiVersionCheck", "--silent"]),
        port,
    )?;
    // The container, by Microsoft's own Python client with Azurite's well-known account.
    let url = format!("http://127.0.0.1:{port}");
    python_ok(
        "import sys; from azure.storage.blob import BlobServiceClient; \
         key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='; \
         conn = f'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={sys.argv[1]}/devstoreaccount1;'; \
         BlobServiceClient.from_connection_string(conn).create_container('driftwood')",
        &url,
    )?;
    let azure = [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", url.as_str())];
    push_delete_pull(&env, &config, "az://driftwood/team/snapshots", &azure, before)
}

/// Google Cloud Storage through fake-gcs-server v1.56.1, the emulator the Go module proxy
/// serves. It answers `object_store`'s XML-API listings and downloads, but refuses its XML-API
/// uploads (`PUT /bucket/object` → 400 "invalid uploadType", fsouza/fake-gcs-server#1164;
/// object_store's own CI uses a fork the proxy does not serve), so the bucket is filled the
/// way Google's JSON-API clients upload (`uploadType=media`, by curl) from a `file://` push,
/// and `data pull --remote gs://…` is what is tested: the same rows, specs and raw data, only
/// missing objects fetched, a tampered object refused; and `data import gs://…` of a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_remote_pull_through_the_cli() -> anyhow::Result<()> {
    let (env, config, before) = snapshotted("gcs", 400).await?;
    let raw_before = SnapshotStore::open(env.dir())?.versions("text_raw")?;
    let bin = std::env::var("DRIFTWOOD_FAKE_GCS_BIN")
        .map_err(|_| anyhow::anyhow!("DRIFTWOOD_FAKE_GCS_BIN is not set: run scripts/setup"))?;
    let port = tests::free_port()?;
    let host = format!("127.0.0.1:{port}");
    let seed = env.dir().join("gcs-seed");
    std::fs::create_dir_all(seed.join("driftwood"))?; // the bucket
    let _gcs = Emulator::start(
        Command::new(bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
            .args(["-public-host", &host, "-external-url", &format!("http://{host}")])
            .args(["-backend", "memory", "-log-level", "error", "-data"])
            .arg(&seed),
        port,
    )?;
    let key = format!(
        r#"{{"gcs_base_url":"http://{host}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#
    );
    let gcs = [("GOOGLE_SERVICE_ACCOUNT_KEY", key.as_str())];
    let upload = |rel: &str, file: &std::path::Path| -> anyhow::Result<()> {
        let url = format!("http://{host}/upload/storage/v1/b/driftwood/o?uploadType=media&name=team/{rel}");
        let out = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "POST", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(&url)
            .output()?;
        anyhow::ensure!(out.status.success(), "upload of {rel}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    let staged = env.dir().join("staged");
    driftwood_ok(&config, &[], &["data", "push", "--remote", &format!("file://{}", staged.display())])?;
    let files = walk(&staged);
    let rel = |f: &std::path::Path| f.strip_prefix(&staged).map(|r| r.to_string_lossy().into_owned());
    for f in &files {
        upload(&rel(f)?, f)?;
    }

    std::fs::remove_dir_all(env.dir().join("snapshots"))?;
    let pull = ["data", "pull", "--remote", "gs://driftwood/team"];
    let pulled = driftwood_ok(&config, &gcs, &pull)?;
    assert!(pulled.contains("(with raw data text_raw and 1 cleaning spec)"), "{pulled}");
    let store = SnapshotStore::open(env.dir())?;
    assert_eq!(rows_of(&store, &store.resolve("text", "latest")?)?.1, before, "identical rows: {pulled}");
    assert_eq!(store.versions("text_raw")?, raw_before);
    let again = driftwood_ok(&config, &gcs, &pull)?;
    assert!(again.contains(": 0 versions, 0 objects"), "a second pull moved something: {again}");

    // A file on the bucket is a source, imported by content.
    let inbox = env.dir().join("inbox.jsonl");
    std::fs::write(&inbox, "{\"id\":\"g1\",\"text\":\"From The Bucket\"}\n{\"text\":\"  \"}\n")?;
    let url = format!("http://{host}/upload/storage/v1/b/driftwood/o?uploadType=media&name=inbox/a.jsonl");
    let out = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "--data-binary"])
        .arg(format!("@{}", inbox.display()))
        .arg(&url)
        .output()?;
    anyhow::ensure!(out.status.success(), "upload: {}", String::from_utf8_lossy(&out.stderr));
    let imported = driftwood_ok(
        &config,
        &gcs,
        &["data", "import", "gs://driftwood/inbox/a.jsonl", "--dataset", "inbox"],
    )?;
    assert!(imported.contains("imported gs://driftwood/inbox/a.jsonl: 1 rows, 1 refused"), "{imported}");
    let store = SnapshotStore::open(env.dir())?;
    let inbox_raw = store.resolve("inbox_raw", "latest")?;
    assert_eq!(inbox_raw.added.imported[0].sha256, schemas::sha256_hex(&std::fs::read(&inbox)?));

    // An object changed on the bucket is refused when pulled.
    let victim = files.iter().find(|p| p.extension().is_some_and(|e| e == "parquet")).expect("an object");
    let mut bytes = std::fs::read(victim)?;
    bytes[20] ^= 0xff;
    let tampered = env.dir().join("tampered.parquet");
    std::fs::write(&tampered, bytes)?;
    upload(&rel(victim)?, &tampered)?;
    std::fs::remove_dir_all(env.dir().join("snapshots"))?;
    let out = driftwood(&config, &gcs, &pull)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("hashes to"), "tampered object refused: {stderr}");
    Ok(())
}
