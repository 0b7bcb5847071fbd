//! Apache Cassandra 5.0 on loopback for the ScyllaDB/Cassandra backend of the metadata store:
//! a real server with Paxos lightweight transactions, TTLs and password authentication.
//!
//! The jars come from `scripts/setup` (part `cassandra`, Maven Central) in
//! `$DRIFTWOOD_CACHE/cassandra/lib`; the node runs `org.apache.cassandra.service.CassandraDaemon`
//! with a `cassandra.yaml` written here (one token, loopback ports picked free, the
//! `PasswordAuthenticator` on). It takes ~10 s to start and ~1 GB of memory, so a test binary
//! shares one node ([`Cassandra::shared`]) and tests isolate themselves by keyspace
//! ([`Cassandra::store_config`] names a fresh one). Its directory (data and `system.log`) is
//! kept, and named on stderr, when a start fails.
//!
//! Client encryption is on and optional: the native port speaks plaintext and TLS (a PKCS#12
//! keystore made with the openssl CLI from [`crate::make_tls`]'s certificate, valid for
//! 127.0.0.1), so the TLS test shares the node; `system_views.clients` tells which
//! connections are encrypted. The CA is [`Cassandra::ca_file`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use schemas::config::{StoreBackend, StoreConfig};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::free_port;
use crate::jvm::{Guarded, lib};

/// How long the node may take to open its CQL port.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The superuser Cassandra creates on first start when authentication is on.
pub const USER: &str = "cassandra";
pub const PASSWORD: &str = "cassandra";

/// What the JDK 17 must open to Cassandra 5.0 (its `conf/jvm17-server.options`).
const JVM17_MODULES: &[&str] = &[
    "--add-exports java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports java.sql/java.sql=ALL-UNNAMED",
    "--add-exports java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-opens java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens java.base/java.io=ALL-UNNAMED",
    "--add-opens java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens java.base/java.lang=ALL-UNNAMED",
    "--add-opens java.base/java.util=ALL-UNNAMED",
];

/// One Cassandra node on loopback; it is killed when dropped.
pub struct Cassandra {
    /// `127.0.0.1:<port>` of the CQL native transport.
    pub addr: String,
    dir: PathBuf,
    process: Option<Guarded>,
}

impl Cassandra {
    /// One node per test binary, started on first use.
    pub fn shared() -> Result<&'static Cassandra> {
        static SHARED: OnceLock<std::result::Result<Cassandra, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Cassandra::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Starts a node with an empty data directory and waits for its CQL port.
    pub fn start() -> Result<Cassandra> {
        let lib = lib("cassandra")?;
        let dir = tempfile::Builder::new().prefix("driftwood-cassandra-").tempdir()?.keep();
        let (cql, storage, jmx) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(dir.join("cassandra.yaml"), yaml(&dir, cql, storage))?;
        std::fs::write(dir.join("logback.xml"), logback(&dir))?;
        std::fs::write(dir.join("password"), PASSWORD)?;
        keystore(&dir)?;
        let args = format!(
            "-Xms256m -Xmx768m -Xss256k -XX:+UseG1GC -ea -da:net.openhft... -Djava.net.preferIPv4Stack=true \
             -Djdk.attach.allowAttachSelf=true {modules} -Dio.netty.tryReflectionSetAccessible=true \
             -Dcassandra.config=file://{yaml} -Dlogback.configurationFile={logback} \
             -Dcassandra.storagedir={dir} -Dcassandra-foreground=yes -Dcassandra.jmx.local.port={jmx} \
             -Dcassandra.superuser_setup_delay_ms=0 -Dcassandra.ring_delay_ms=0 \
             -Dcassandra.skip_wait_for_gossip_to_settle=0 \
             -cp '{lib}/*' org.apache.cassandra.service.CassandraDaemon",
            modules = JVM17_MODULES.join(" "),
            yaml = dir.join("cassandra.yaml").display(),
            logback = dir.join("logback.xml").display(),
            dir = dir.display(),
            lib = lib.display(),
        );
        let mut process = Guarded::spawn(&dir, &args, "a Cassandra node")?;
        if let Err(e) = process.wait_port(cql, START_TIMEOUT, "Cassandra") {
            eprintln!("Cassandra did not start; its logs are in {}", dir.display());
            process.kill();
            return Err(e);
        }
        let node = Cassandra { addr: format!("127.0.0.1:{cql}"), dir, process: Some(process) };
        node.wait_superuser()?;
        Ok(node)
    }

    /// The PEM file of the CA that signed the node's certificate (for `store.tls_ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    /// The node's directory (`cassandra.yaml`, data, `system.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A metadata-store configuration on this node in a keyspace of its own (`<name>_<pid>_<n>`,
    /// the name cut to fit Cassandra's 48 characters), authenticated as the superuser.
    pub fn store_config(&self, name: &str) -> StoreConfig {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name: String = name.chars().take(24).collect();
        let keyspace = format!("{name}_{}_{n}", std::process::id());
        store_config_at(&self.addr, &keyspace, &self.dir.join("password").display().to_string())
    }

    /// A session as the superuser, for what the tests set up or inspect behind the store.
    pub async fn superuser(&self) -> Result<Session> {
        SessionBuilder::new()
            .known_node(&self.addr)
            .user(USER, PASSWORD)
            .build()
            .await
            .with_context(|| format!("logging in to Cassandra at {} as {USER}", self.addr))
    }

    /// A login role that may do anything in any keyspace (what a deployment's store user
    /// needs), with `password`.
    pub async fn create_role(&self, name: &str, password: &str) -> Result<()> {
        let session = self.superuser().await?;
        let password = password.replace('\'', "''");
        session
            .query_unpaged(
                format!("CREATE ROLE IF NOT EXISTS {name} WITH PASSWORD = '{password}' AND LOGIN = true"),
                (),
            )
            .await?;
        session.query_unpaged(format!("GRANT ALL PERMISSIONS ON ALL KEYSPACES TO {name}"), ()).await?;
        Ok(())
    }

    /// The superuser is created by a task that runs once the node is up; a login before that
    /// is refused, so the start waits for the first login to succeed. It runs on a thread of its own: the start may be called from inside a test's runtime.
    fn wait_superuser(&self) -> Result<()> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.wait_superuser_blocking())
                .join()
                .unwrap_or_else(|_| anyhow::bail!("login thread panicked"))
        })
    }

    fn wait_superuser_blocking(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                match self.superuser().await {
                    Ok(_) => return Ok(()),
                    Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
    }
}

impl Drop for Cassandra {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
        if std::thread::panicking() {
            eprintln!("Cassandra logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A metadata-store configuration for keyspace `keyspace` on the node(s) `nodes`, logging in
/// as the superuser with the password in `password_file` (what [`Cassandra::store_config`]
/// gives, rebuilt by a process that did not start the node).
pub fn store_config_at(nodes: &str, keyspace: &str, password_file: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Scylla,
        nodes: nodes.into(),
        keyspace: keyspace.into(),
        replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
        prediction_shards: 4,
        username: USER.into(),
        password_file: password_file.into(),
        ..StoreConfig::default()
    }
}

/// The password of the node's keystore.
const KEYSTORE_PASSWORD: &str = "driftwood";

/// `tls/` with a CA and a certificate for 127.0.0.1, and `keystore.p12` holding that
/// certificate and its key.
fn keystore(dir: &Path) -> Result<()> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    crate::make_tls(&tls)?;
    let f = |name: &str| tls.join(name).display().to_string();
    crate::run_ok(std::process::Command::new("openssl").args(["pkcs12", "-export"]).args([
        "-in",
        &f("server.pem"),
        "-inkey",
        &f("server.key"),
        "-name",
        "node",
        "-out",
        &dir.join("keystore.p12").display().to_string(),
        "-passout",
        &format!("pass:{KEYSTORE_PASSWORD}"),
    ]))?;
    Ok(())
}

fn yaml(dir: &Path, cql: u16, storage: u16) -> String {
    format!(
        "cluster_name: driftwood-test\n\
         num_tokens: 1\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         commitlog_sync: periodic\n\
         commitlog_sync_period: 10000ms\n\
         commitlog_directory: {d}/commitlog\n\
         data_file_directories:\n  - {d}/data\n\
         saved_caches_directory: {d}/saved_caches\n\
         hints_directory: {d}/hints\n\
         cdc_raw_directory: {d}/cdc_raw\n\
         listen_address: 127.0.0.1\n\
         rpc_address: 127.0.0.1\n\
         storage_port: {storage}\n\
         native_transport_port: {cql}\n\
         start_native_transport: true\n\
         seed_provider:\n  - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n    \
         parameters:\n      - seeds: \"127.0.0.1:{storage}\"\n\
         endpoint_snitch: SimpleSnitch\n\
         authenticator: PasswordAuthenticator\n\
         authorizer: CassandraAuthorizer\n\
         role_manager: CassandraRoleManager\n\
         concurrent_reads: 8\n\
         concurrent_writes: 8\n\
         memtable_allocation_type: heap_buffers\n\
         disk_access_mode: mmap_index_only\n\
         client_encryption_options:\n  enabled: true\n  optional: true\n  \
         keystore: {d}/keystore.p12\n  keystore_password: {KEYSTORE_PASSWORD}\n  store_type: PKCS12\n  \
         require_client_auth: false\n",
        d = dir.display(),
    )
}

fn logback(dir: &Path) -> String {
    format!(
        "<configuration>\n  <appender name=\"FILE\" class=\"ch.qos.logback.core.FileAppender\">\n    \
         <file>{}</file>\n    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>\n  \
         </appender>\n  <root level=\"INFO\"><appender-ref ref=\"FILE\"/></root>\n</configuration>\n",
        dir.join("system.log").display()
    )
}
