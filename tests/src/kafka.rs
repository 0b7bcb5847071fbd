//! Apache Kafka (KRaft, combined controller + broker nodes) on loopback for the tests that need
//! what tansu lacks: transactions, broker failures, consumer-group evictions.
//!
//! The jars come from `scripts/setup` (part `kafka`, Maven Central) in `$DRIFTWOOD_CACHE/kafka/lib`;
//! each node runs `java kafka.Kafka` after `kafka.tools.StorageTool format`. Start-up takes
//! seconds, so a test binary shares one cluster ([`Kafka::shared`]) and tests isolate themselves
//! by topic prefix and group id. A node runs guarded ([`crate::jvm::Guarded`]), so no JVM
//! outlives the tests. Logs stay in the cluster's directory, which is kept (and named on
//! stderr) when a start fails.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;

use crate::free_port;
use crate::jvm::{Guarded, lib, run_tool};

/// Held by the tests that stream through Apache Kafka while killing things (`kafka_eos`,
/// `kafka_failures`): on two cores, two of them at once with their JVMs starve each other.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a node may take to open its broker port.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A KRaft cluster of 1 or 3 nodes on loopback.
pub struct Kafka {
    /// `host:port,...` of the brokers, for `kafka.brokers`.
    pub brokers: String,
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    id: usize,
    broker_port: u16,
    process: Option<Guarded>,
}

impl Kafka {
    /// One single-node cluster per test binary, started on first use.
    pub fn shared() -> Result<&'static Kafka> {
        static SHARED: OnceLock<std::result::Result<Kafka, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Kafka::start(1).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Starts `nodes` (1 or 3) combined controller + broker nodes. With 3, internal topics have
    /// RF 3 and `min.insync.replicas = 2`.
    pub fn start(nodes: usize) -> Result<Kafka> {
        anyhow::ensure!(nodes == 1 || nodes == 3, "a cluster of 1 or 3 nodes");
        let lib = lib("kafka")?;
        let dir = tempfile::Builder::new().prefix("driftwood-kafka-").tempdir()?.keep();
        let ports: Vec<(u16, u16)> =
            (0..nodes).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
        let voters: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1)).collect();
        let cluster_id =
            run_tool(&lib, &dir, &["kafka.tools.StorageTool", "random-uuid"])?.trim().to_string();
        let mut cluster = Kafka {
            brokers: ports.iter().map(|(b, _)| format!("127.0.0.1:{b}")).collect::<Vec<_>>().join(","),
            nodes: Vec::new(),
            dir: dir.clone(),
        };
        for (i, (broker, controller)) in ports.iter().enumerate() {
            let id = i + 1;
            let node_dir = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let properties = node_dir.join("server.properties");
            std::fs::write(
                &properties,
                server_properties(id, *broker, *controller, &voters, &node_dir, nodes),
            )?;
            std::fs::write(node_dir.join("log4j2.properties"), log_properties(&node_dir))?;
            let properties = properties.display().to_string();
            run_tool(
                &lib,
                &node_dir,
                &["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c", &properties],
            )?;
            cluster.nodes.push(Node { id, broker_port: *broker, process: None });
        }
        for i in 0..nodes {
            cluster.spawn(i)?;
        }
        for i in 0..nodes {
            if let Err(e) = cluster.wait_listening(i) {
                eprintln!("Kafka did not start; its logs are in {}", dir.display());
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// The cluster's directory (configs, data and a `server.log` per node).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs node `index` (0-based), as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(process) = self.nodes[index].process.take() {
            process.kill();
        }
    }

    /// Starts node `index` again (after [`Kafka::kill`]) and waits for its broker port.
    pub fn restart(&mut self, index: usize) -> Result<()> {
        self.spawn(index)?;
        self.wait_listening(index)
    }

    /// SIGKILLs every node, then starts them all again together (a node's broker port opens
    /// only once a quorum of controllers is back) and waits for each.
    pub fn restart_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_listening(i)?;
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let lib = lib("kafka")?;
        let node = &mut self.nodes[index];
        let node_dir = self.dir.join(format!("node-{}", node.id));
        let args = format!(
            "-Xms128m -Xmx512m -XX:+UseSerialGC -Dlog4j2.configurationFile={log4j} -cp '{lib}/*' \
             kafka.Kafka {props}",
            log4j = node_dir.join("log4j2.properties").display(),
            lib = lib.display(),
            props = node_dir.join("server.properties").display(),
        );
        node.process = Some(Guarded::spawn(&node_dir, &args, "a Kafka node")?);
        Ok(())
    }

    fn wait_listening(&mut self, index: usize) -> Result<()> {
        let node = &mut self.nodes[index];
        let what = format!("Kafka node {}", node.id);
        match &mut node.process {
            Some(process) => process.wait_port(node.broker_port, START_TIMEOUT, &what),
            None => anyhow::bail!("{what} is not running"),
        }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("Kafka logs kept in {}", self.dir.display());
        }
    }
}

fn server_properties(
    id: usize,
    broker: u16,
    controller: u16,
    voters: &[String],
    dir: &Path,
    nodes: usize,
) -> String {
    let rf = nodes.min(3);
    let min_isr = if nodes >= 3 { 2 } else { 1 };
    format!(
        "process.roles=broker,controller\n\
         node.id={id}\n\
         controller.quorum.voters={voters}\n\
         listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{broker}\n\
         controller.listener.names=CONTROLLER\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         inter.broker.listener.name=PLAINTEXT\n\
         log.dirs={data}\n\
         num.partitions=1\n\
         default.replication.factor={rf}\n\
         min.insync.replicas={min_isr}\n\
         offsets.topic.replication.factor={rf}\n\
         offsets.topic.num.partitions=4\n\
         transaction.state.log.replication.factor={rf}\n\
         transaction.state.log.min.isr={min_isr}\n\
         transaction.state.log.num.partitions=4\n\
         group.initial.rebalance.delay.ms=0\n\
         auto.create.topics.enable=false\n",
        voters = voters.join(","),
        data = dir.join("data").display(),
    )
}

fn log_properties(dir: &Path) -> String {
    format!(
        "rootLogger.level=INFO\n\
         rootLogger.appenderRef.file.ref=file\n\
         appender.file.type=File\n\
         appender.file.name=file\n\
         appender.file.fileName={}\n\
         appender.file.layout.type=PatternLayout\n\
         appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
        dir.join("server.log").display()
    )
}
