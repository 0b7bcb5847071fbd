//! Test harness for Driftwood's integration tests: real services on loopback.
//!
//! [`Tansu`] starts a real Kafka-protocol broker (the `tansu` binary installed by
//! `scripts/setup`) on a free `127.0.0.1` port with in-memory storage and kills it on drop.
//! [`config_for`] builds a configuration pointing at it with a temporary data dir and a unique
//! topic prefix; [`TestEnv`] holds the three together. The tests themselves are in `tests/tests/it/` (one binary).

pub mod cassandra;
pub mod jvm;
pub mod kafka;
pub mod store_suite;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use schemas::Config;

/// A running tansu broker; killed on drop.
pub struct Tansu {
    child: Child,
    pub brokers: String,
    _dir: tempfile::TempDir,
}

/// Path of the tansu binary (`DRIFTWOOD_TANSU_BIN`, set by `scripts/setup`).
pub fn tansu_bin() -> Result<PathBuf> {
    let path = std::env::var("DRIFTWOOD_TANSU_BIN")
        .context("DRIFTWOOD_TANSU_BIN is not set: run scripts/setup (or scripts/test)")?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{} does not exist: run scripts/setup", path.display());
    }
    Ok(path)
}

/// The MiniLM-L6 directory (`DRIFTWOOD_MINILM_DIR`, installed by `scripts/setup`).
pub fn minilm_dir() -> Result<PathBuf> {
    Ok(std::env::var("DRIFTWOOD_MINILM_DIR")
        .context("DRIFTWOOD_MINILM_DIR is not set: run scripts/setup")?
        .into())
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free loopback address, for a server's `listen` setting.
pub fn free_addr() -> Result<std::net::SocketAddr> {
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

impl Tansu {
    /// Starts a broker with in-memory storage.
    pub fn start() -> Result<Tansu> {
        Self::start_with_storage("memory://tansu/")
    }

    pub fn start_with_storage(storage: &str) -> Result<Tansu> {
        Self::start_advertising(storage, None)
    }

    /// Starts a broker that tells clients to connect to `advertised` (a port in front of it)
    /// instead of the port it listens on; `brokers` is still the port it listens on.
    pub fn start_advertising(storage: &str, advertised: Option<u16>) -> Result<Tansu> {
        let bin = tansu_bin()?;
        let dir = tempfile::tempdir()?;
        for _attempt in 0..5 {
            let port = free_port()?;
            let url = format!("tcp://127.0.0.1:{port}");
            let advertised_url = advertised.map_or(url.clone(), |p| format!("tcp://127.0.0.1:{p}"));
            let log = std::fs::File::create(dir.path().join("tansu.log"))?;
            let mut child = Command::new(&bin)
                .arg("broker")
                .args(["--listener-url", &url, "--advertised-listener-url", &advertised_url])
                .args(["--storage-engine", storage])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    // Lost the port race or failed to start: try another port.
                    tracing_free_log(&dir, status);
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Tansu { child, brokers: format!("127.0.0.1:{port}"), _dir: dir });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("tansu did not start; see its log in {}", dir.path().display())
    }
}

fn tracing_free_log(dir: &tempfile::TempDir, status: std::process::ExitStatus) {
    let log = std::fs::read_to_string(dir.path().join("tansu.log")).unwrap_or_default();
    eprintln!("tansu exited with {status}: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker reachable only over TLS: tansu listens on a private port and advertises the
/// port of a TLS-terminating proxy (rustls, with the certificate of [`make_tls`]) in front of
/// it, so every Kafka connection — bootstrap and those the metadata points at — is TLS.
/// (tansu 0.6 itself has no TLS listener.)
pub struct TlsTansu {
    pub brokers: String,
    /// TLS handshakes completed and refused by the proxy.
    pub handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
    proxy: Option<std::thread::JoinHandle<()>>,
    _tansu: Tansu,
}

impl TlsTansu {
    /// `tls_dir` holds `server.pem` and `server.key` (see [`make_tls`]).
    pub fn start(tls_dir: &Path) -> Result<TlsTansu> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tls = schemas::config::TlsConfig {
            cert_file: tls_dir.join("server.pem").display().to_string(),
            key_file: tls_dir.join("server.key").display().to_string(),
        };
        let mut server = (*serving::tls::server_config(&tls)?).clone();
        server.alpn_protocols.clear();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let front = TcpListener::bind("127.0.0.1:0")?;
        let port = front.local_addr()?.port();
        let tansu = Tansu::start_advertising("memory://tansu/", Some(port))?;
        let target: SocketAddr = tansu.brokers.parse()?;
        let (handshakes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = tokio_util::sync::CancellationToken::new();
        front.set_nonblocking(true)?;
        let proxy = {
            let (handshakes, refused, stop) = (handshakes.clone(), refused.clone(), stop.clone());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    let Ok(front) = tokio::net::TcpListener::from_std(front) else { return };
                    loop {
                        let (tcp, _) = tokio::select! {
                            () = stop.cancelled() => return,
                            accepted = front.accept() => match accepted {
                                Ok(a) => a,
                                Err(_) => continue,
                            },
                        };
                        let (acceptor, handshakes, refused) =
                            (acceptor.clone(), handshakes.clone(), refused.clone());
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(tcp).await else {
                                refused.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            handshakes.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                            }
                        });
                    }
                })
            })
        };
        Ok(TlsTansu {
            brokers: format!("127.0.0.1:{port}"),
            handshakes,
            refused,
            stop,
            proxy: Some(proxy),
            _tansu: tansu,
        })
    }
}

impl Drop for TlsTansu {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(p) = self.proxy.take() {
            let _ = p.join();
        }
    }
}

/// Which broker a Kafka-semantics test runs on: tansu (the embedded default, one per test) or
/// Apache Kafka (the binary's shared single-node cluster, [`kafka::Kafka::shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Tansu,
    Kafka,
}

/// A running broker of either kind.
pub enum Broker {
    Tansu(Tansu),
    Kafka(&'static kafka::Kafka),
}

impl Broker {
    pub fn start(on: On) -> Result<Broker> {
        Ok(match on {
            On::Tansu => Broker::Tansu(Tansu::start()?),
            On::Kafka => Broker::Kafka(kafka::Kafka::shared()?),
        })
    }

    /// `host:port,...`, for `kafka.brokers`.
    pub fn brokers(&self) -> &str {
        match self {
            Broker::Tansu(t) => &t.brokers,
            Broker::Kafka(k) => &k.brokers,
        }
    }
}

/// Defines a test module `$name` with two tests, `tansu` and `kafka`, each running the body
/// with its broker ([`On`]) — the Kafka-semantics suite runs on both, as the store suite runs
/// on both backends.
#[macro_export]
macro_rules! on_both_brokers {
    ($(#[$doc:meta])* async fn $name:ident($on:ident) $body:block) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($on: $crate::On) -> anyhow::Result<()> $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tansu() -> anyhow::Result<()> {
                run($crate::On::Tansu).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kafka() -> anyhow::Result<()> {
                run($crate::On::Kafka).await
            }
        }
    };
}

/// What most integration tests start with: a broker, a data dir and a configuration pointing
/// at both under a unique topic prefix ([`config_for`]). The broker stops (tansu) and the data
/// dir is removed when it drops.
pub struct TestEnv {
    pub broker: Broker,
    dir: tempfile::TempDir,
    prefix: String,
}

impl TestEnv {
    /// Starts a tansu broker (in-memory storage) and makes a data dir; topics are not created,
    /// so a test may change the partition count first.
    pub fn start(prefix: &str) -> Result<TestEnv> {
        Self::on(On::Tansu, prefix)
    }

    /// Like [`TestEnv::start`] on the broker `on`. On the shared Apache Kafka cluster the
    /// prefix gets a number unique in this process, so no two tests share a topic or group.
    pub fn on(on: On, prefix: &str) -> Result<TestEnv> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let prefix = match on {
            On::Tansu => prefix.to_string(),
            On::Kafka => {
                format!("{prefix}{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            }
        };
        Ok(TestEnv { broker: Broker::start(on)?, dir: tempfile::tempdir()?, prefix })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh test configuration for this broker, data dir and prefix. On Apache Kafka
    /// `resume_rewind` is 0: it returns the batch that contains a fetch offset, so tansu's
    /// workaround is not needed (and the suite shows resuming is exact without it).
    pub fn config(&self) -> Config {
        let mut c = config_for(self.broker.brokers(), self.dir.path(), &self.prefix);
        if let Broker::Kafka(_) = self.broker {
            c.kafka.resume_rewind = 0;
        }
        c
    }
}

/// A configuration for tests: the broker, a data dir, a unique topic prefix, small batches.
pub fn config_for(brokers: &str, data_dir: &std::path::Path, prefix: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.topic_prefix = prefix.to_string();
    c.kafka.group_id = format!("{prefix}-group");
    c.data_dir = data_dir.display().to_string();
    c.ingest.batch_max_rows = 1000;
    c.ingest.batch_max_wait_ms = 100;
    c.serve.listen = ([127, 0, 0, 1], 0).into();
    c.flight.listen = ([127, 0, 0, 1], 0).into();
    c.validate().expect("test config is valid");
    c
}

/// The SpamAssassin corpus directory installed by `scripts/setup`.
pub fn corpus_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("DRIFTWOOD_CORPUS_DIR")
            .context("DRIFTWOOD_CORPUS_DIR is not set: run scripts/setup")?,
    );
    if !dir.join("spam-1").is_dir() {
        bail!("{} has no corpus: run scripts/setup", dir.display());
    }
    Ok(dir)
}

/// The `driftwood` binary built next to the test executables (`scripts/test` builds it first).
pub fn driftwood_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/driftwood
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("driftwood"))
        .context("cannot locate the target dir")?;
    if !bin.is_file() {
        bail!("{} is missing: run `cargo build` first (scripts/test does)", bin.display());
    }
    Ok(bin)
}

/// The Python of the venv made by `scripts/setup` (with confluent-kafka, pyarrow, ...).
pub fn python() -> Result<PathBuf> {
    let p = PathBuf::from(
        std::env::var("DRIFTWOOD_PYTHON").context("DRIFTWOOD_PYTHON is not set: run scripts/setup")?,
    );
    if !p.is_file() {
        bail!("{} is missing: run scripts/setup", p.display());
    }
    Ok(p)
}

/// Environment variables that point a `driftwood` subprocess at `config`: the whole
/// configuration, written as TOML into the data dir.
pub fn env_for(config: &Config) -> Vec<(String, String)> {
    let path = std::path::Path::new(&config.data_dir).join("driftwood.test.toml");
    let text = toml::to_string(config).expect("configs serialize");
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    std::fs::write(&path, text).expect("writing the test config");
    vec![("DRIFTWOOD_CONFIG".into(), path.display().to_string())]
}

/// Publishes `records` to `topic` and checks every one was acknowledged.
pub async fn publish(config: &Config, topic: &str, records: Vec<ingest::source::Outgoing>) -> Result<()> {
    let producer = ingest::kafka::producer(&config.kafka, &config.ingest)?;
    let progress = ingest::publish::progress_bar(None, "test");
    let n = records.len() as u64;
    let cancel = tokio_util::sync::CancellationToken::new();
    let s =
        ingest::publish::publish(&producer, topic, records.into_iter().map(Ok), &progress, &cancel).await?;
    anyhow::ensure!(s.sent == n && s.failed == 0, "publish: {s}");
    Ok(())
}

/// A text made of letters only, unique per `i` (numbers would be normalised away by the
/// cleaning plan and then deduplicated).
pub fn unique_text(i: usize) -> String {
    let mut n = i;
    let mut word = String::new();
    loop {
        word.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    format!("synthetic record {word} about nothing in particular, {word} again")
}

/// Every message of `topic` up to its end as seen now, read by explicit assignment.
pub async fn read_all(config: &Config, topic: &str) -> Result<Vec<ingest::consume::RawMessage>> {
    use ingest::consume::{MessageReader, Mode};
    let mode = Mode::Assigned { start: Default::default(), until_idle: true };
    let mut reader = MessageReader::new(&config.kafka, topic, mode).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    while let Some((messages, _)) = reader.next(10_000, Duration::from_millis(100), &cancel).await? {
        out.extend(messages);
    }
    Ok(out)
}

/// The sum of the series at `base`'s `/metrics` whose lines start with `series` (a metric name,
/// optionally with the start of its labels); 0 until it answers.
pub async fn metric_sum(base: &str, series: &str) -> u64 {
    let Ok(r) = reqwest::get(format!("{base}/metrics")).await else { return 0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A deterministic Fisher–Yates shuffle (xorshift seeded by `seed`).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// Runs the drift monitor over `config`'s scored topic to its end, for version 1 of `model`
/// trained with `card`; returns each window with its decision.
pub async fn drift_windows(
    config: &Config,
    model: &str,
    card: &trainer::card::ModelCard,
) -> Result<Vec<(drift::window::WindowReport, drift::decider::Decision)>> {
    let watch = drift::window::Watch {
        model: model.to_string(),
        version: 1,
        reference: card.reference.clone(),
        reference_accuracy: card.metrics.get("test_accuracy").copied(),
    };
    let references: drift::monitor::References = std::sync::Arc::new(|_, _| Box::pin(async { None }));
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut windows = Vec::new();
    let monitor =
        drift::monitor::Monitor { config, watch, references, until_idle: true, outputs: Default::default() };
    drift::monitor::run_monitor(monitor, &cancel, |r, d| windows.push((r.clone(), d.clone()))).await?;
    Ok(windows)
}

/// One snapshot run with the default cleaning plan, until caught up with `text.raw`.
pub async fn snapshot_until_idle(
    config: &Config,
    store: &stream::store::SnapshotStore,
) -> Result<stream::job::SnapshotReport> {
    let plan = std::sync::Arc::new(stream::clean::CleanPlan::compile(stream::clean::CleanSpec::default())?);
    let opts = stream::job::SnapshotOptions::from_config(config, true);
    let cancel = tokio_util::sync::CancellationToken::new();
    Ok(stream::job::run_snapshot(config, plan, store, &opts, None, &cancel).await?)
}

/// Scored records per id on `config`'s scored topic, read whole (with `isolation.level` set
/// when given: `read_committed` or `read_uncommitted`).
pub async fn scored_ids(
    config: &Config,
    isolation: Option<&str>,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut reader = config.clone();
    if let Some(isolation) = isolation {
        reader.kafka.client.insert("isolation.level".into(), isolation.into());
    }
    let mut ids = std::collections::BTreeMap::new();
    for m in read_all(&reader, &reader.topics().scored).await? {
        let v: serde_json::Value = serde_json::from_slice(m.value.as_deref().unwrap_or_default())?;
        *ids.entry(v["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    Ok(ids)
}

/// Publishes [`numbered_raw`] records `0..records` onto `config`'s raw topic, `step` at a
/// time with `pace` between steps, on a task of its own.
pub fn paced_stream(
    config: &Config,
    records: usize,
    step: usize,
    pace: Duration,
) -> tokio::task::JoinHandle<Result<()>> {
    let config = config.clone();
    tokio::spawn(async move {
        for start in (0..records).step_by(step) {
            publish(&config, &config.topics().raw, numbered_raw(start..(start + step).min(records))).await?;
            tokio::time::sleep(pace).await;
        }
        Ok(())
    })
}

/// Raw records `r00000`, `r00001`, ... of `range`, each with a text of its own ([`unique_text`]).
pub fn numbered_raw(range: std::ops::Range<usize>) -> Vec<ingest::source::Outgoing> {
    range
        .map(|i| {
            let r = schemas::records::RawRecord {
                id: format!("r{i:05}"),
                text: unique_text(i),
                label: None,
                source: None,
                ts: None,
                meta: None,
            };
            ingest::source::Outgoing::from_record(&r)
        })
        .collect()
}

/// Corpus records as the producer sends them.
pub fn outgoing(records: &[schemas::records::RawRecord]) -> Vec<ingest::source::Outgoing> {
    records.iter().map(ingest::source::Outgoing::from_record).collect()
}

/// A child process (a `driftwood` service, Prometheus) stopped when dropped: SIGTERM, then
/// SIGKILL if it has not exited within 10 s.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return; // already stopped
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd`; its stdout, or an error with its output.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// An argon2id hash of `password` made by `driftwood auth hash-password` (for users files).
pub fn hash_password(password: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(driftwood_bin()?)
        .args(["auth", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "hash-password: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A dev CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost (`server.pem`,
/// `server.key`) in `dir`, made with the openssl CLI.
pub fn make_tls(dir: &Path) -> Result<()> {
    let d = |f: &str| dir.join(f).display().to_string();
    run_ok(
        Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
            "-subj",
            "/CN=driftwood test CA",
        ]),
    )?;
    run_ok(
        Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
            .args(["-keyout", &d("server.key"), "-out", &d("server.csr")]),
    )?;
    std::fs::write(dir.join("ext.cnf"), "subjectAltName = IP:127.0.0.1, DNS:localhost\n")?;
    run_ok(Command::new("openssl").args(["x509", "-req", "-days", "2"]).args([
        "-in",
        &d("server.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-out",
        &d("server.pem"),
        "-extfile",
        &d("ext.cnf"),
    ]))?;
    Ok(())
}

/// REST API state for tests: no model loaded yet, `auth` as given, empty metadata and snapshot
/// stores under `dir`, no broker check, no control topic. Tests override what they exercise.
pub fn app_state(dir: &Path, auth: std::sync::Arc<serving::auth::JwtAuth>) -> Result<serving::api::AppState> {
    use driftwood::services::serve::{ApiParts, api_state, model_handle};
    use std::sync::Arc;
    let mut serve = schemas::config::ServeConfig::default();
    (serve.max_batch, serve.max_request_texts, serve.max_concurrent_requests) = (8, 16, 64);
    serve.request_timeout_ms = 10_000;
    let plan = Arc::new(stream::clean::CleanPlan::compile(stream::clean::CleanSpec::default())?);
    let parts = ApiParts {
        model: model_handle(&serve, plan)?,
        metrics: serving::metrics::Metrics::new(),
        auth,
        store: Arc::new(metastore::SqliteStore::in_data_dir(dir)?),
        snapshots: Arc::new(stream::store::SnapshotStore::open(dir)?),
    };
    Ok(api_state(&serve, parts))
}

/// `env`'s configuration for the closed loop on the corpus: 1 s snapshot commits, windows of
/// 500, drift confirmed by 2 windows, a retrain promoted at any gain on 30+ holdout rows, the
/// API on a free port.
pub fn closed_loop_config(env: &TestEnv) -> Result<Config> {
    let mut config = env.config();
    config.snapshot.commit_interval_secs = 1;
    config.drift.window = 500;
    config.drift.consecutive = 2;
    config.drift.cooldown_windows = 1000;
    config.retrain.margin = 0.001;
    config.retrain.min_holdout = 30;
    config.serve.listen = free_addr()?;
    Ok(config)
}

/// Commits one version of `dataset` holding a `text` column of `texts` (spec hash `h`): a
/// data version for tests of the routes and pages that list versions and rows.
pub fn commit_texts(
    snapshots: &stream::store::SnapshotStore,
    dataset: &str,
    texts: &[&str],
) -> Result<stream::store::Manifest> {
    use std::sync::Arc;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "text",
        arrow::datatypes::DataType::Utf8,
        false,
    )]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow::array::StringArray::from(texts.to_vec()))],
    )?;
    let mut writer = snapshots.object_writer(schema.clone())?;
    writer.write(&batch)?;
    let draft = stream::store::Draft {
        dataset: dataset.into(),
        spec_hash: "h".into(),
        schema,
        parts: vec![stream::store::DraftPart { consumed: None, file: writer.finish()? }],
        tags: vec![],
        replace_files: false,
        imported: vec![],
        raw: None,
    };
    snapshots.commit(draft, chrono::Utc::now())?.manifest.context("the commit wrote a version")
}

/// Trains the `spam` logreg and points `production` at it, through the `driftwood` binary: the
/// first `rows` texts of corpus period 1 (shuffled) are published under the prefix
/// `<prefix>-history`, snapshotted into `config`'s data dir, and trained on.
pub async fn train_production(config: &Config, rows: usize) -> Result<()> {
    let mut history = config.clone();
    history.kafka.topic_prefix = format!("{}-history", config.kafka.topic_prefix);
    ingest::kafka::ensure_topics(&history.kafka, &history.topics().all()).await?;
    let mut period1 = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_1)?;
    shuffle(&mut period1, 5);
    period1.truncate(rows);
    publish(&history, &history.topics().raw, outgoing(&period1)).await?;
    driftwood(&history, &["snapshot"])?;
    driftwood(&history, &["train", "--alias", "production"])?;
    Ok(())
}

/// Waits until `GET {base}/readyz` answers 200 (a model is loaded and the broker answers), for
/// at most 60 s.
pub async fn wait_ready(base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(format!("{base}/readyz")).await.map(|r| r.status() != 200).unwrap_or(true) {
        anyhow::ensure!(Instant::now() < deadline, "{base} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs `driftwood ARGS` against `config`; its stdout, or an error with its output.
pub fn driftwood(config: &Config, args: &[&str]) -> Result<String> {
    run_ok(Command::new(driftwood_bin()?).args(args).envs(env_for(config)))
}

/// Starts the long-running `driftwood ARGS` against `config`, its log (stderr) in
/// `<data_dir>/<log>`; stopped when the handle drops.
pub fn spawn_driftwood(config: &Config, args: &[&str], log: &str) -> Result<Killed> {
    let log = std::fs::File::create(Path::new(&config.data_dir).join(log))?;
    let child = Command::new(driftwood_bin()?)
        .args(args)
        .envs(env_for(config))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Killed(child))
}

/// Trains `config.train.model` end to end through the binary on the first `rows` texts of
/// corpus period 1 (shuffled; published, snapshotted, trained as `production`) and checks what
/// every tokenizer family must do: beat the majority-class baseline clearly (it finds the
/// minority class), load from its artifacts alone and predict probabilities, and refuse a
/// tampered tokenizer. `before_tamper` gets the version and its card for the family's own
/// checks, before the tokenizer is tampered with.
pub async fn tokenizer_family_end_to_end(
    config: &Config,
    rows: usize,
    before_tamper: impl AsyncFnOnce(&metastore::ModelVersion, &trainer::card::ModelCard) -> Result<()>,
) -> Result<()> {
    let family = config.train.model.as_str();
    ingest::kafka::ensure_topics(&config.kafka, &config.topics().all()).await?;
    let mut corpus = ingest::source::corpus(&corpus_dir()?, ingest::source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 12);
    corpus.truncate(rows);
    publish(config, &config.topics().raw, outgoing(&corpus)).await?;
    driftwood(config, &["snapshot"])?;
    eprintln!("{}", driftwood(config, &["train", "--alias", "production"])?);

    let meta = metastore::SqliteStore::in_data_dir(Path::new(&config.data_dir))?;
    let mv = trainer::registry::resolve(&meta, "spam", "production").await?;
    anyhow::ensure!(mv.family == family, "trained {} instead of {family}", mv.family);
    let card = trainer::artifact::read_card(Path::new(&mv.artifact_dir))?;
    let eval = card.evaluation.clone().context("an evaluation")?;
    let majority = eval.per_class.values().map(|c| c.support).max().unwrap_or(0) as f64 / eval.n as f64;
    eprintln!("{family} test accuracy {:.4}, majority baseline {majority:.4}", eval.accuracy);
    anyhow::ensure!(
        eval.accuracy >= majority + 0.05,
        "accuracy {} vs majority baseline {majority}",
        eval.accuracy
    );
    anyhow::ensure!(eval.per_class["spam"].recall >= 0.5 && eval.macro_f1 >= 0.8, "{eval:?}");
    // Loaded from the artifacts alone (the tokenizer travels with them), it predicts.
    let model = trainer::model::load(&mv, None)?;
    let p = model.predict(&[
        "win a free prize now click here to claim your money",
        "the meeting notes are attached",
    ])?;
    anyhow::ensure!(p.iter().all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-4), "{p:?}");
    before_tamper(&mv, &card).await?;
    // A tampered tokenizer is refused.
    let tok = Path::new(&mv.artifact_dir).join(trainer::bilstm::TOKENIZER_FILE);
    let mut bytes = std::fs::read(&tok)?;
    bytes.push(b' ');
    std::fs::write(&tok, bytes)?;
    let err =
        trainer::model::load(&mv, None).err().context("a tampered tokenizer must be refused")?.to_string();
    anyhow::ensure!(err.contains("does not match the card"), "{err}");
    Ok(())
}
