//! What the JVM servers of the tests (Apache Kafka, Apache Cassandra) share: their jars in the
//! cache (installed by `scripts/setup` from Maven Central), a guarded `java` process that dies
//! with the test process, and waiting for a port with a deadline.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The jars of `part` (`kafka`, `cassandra`) installed by `scripts/setup`.
pub fn lib(part: &str) -> Result<PathBuf> {
    let cache = std::env::var("DRIFTWOOD_CACHE").context("DRIFTWOOD_CACHE is not set: run scripts/setup")?;
    let dir = Path::new(&cache).join(part);
    if !dir.join(".driftwood-ok").is_file() {
        bail!("{part} is not installed in {}: run scripts/setup {part}", dir.display());
    }
    Ok(dir.join("lib"))
}

/// A `java` server process under a small shell guard: the JVM's pid is in `dir/java.pid`, its
/// output in `dir/stdout.log`, and the guard kills it when the test process (the guard's parent)
/// is gone or when the guard itself is killed, so no JVM outlives the tests.
pub struct Guarded {
    guard: Child,
    dir: PathBuf,
}

impl Guarded {
    /// Runs `java <args>` (a shell word list, already quoted) in `dir`.
    pub fn spawn(dir: &Path, args: &str, what: &str) -> Result<Guarded> {
        let script = format!(
            "(cd '{dir}' && exec java {args} >>'{out}' 2>&1) & j=$!; echo $j >'{pid}'; \
             trap 'kill -9 $j 2>/dev/null' EXIT TERM; \
             while kill -0 {parent} 2>/dev/null && kill -0 $j 2>/dev/null; do sleep 1; done",
            dir = dir.display(),
            out = dir.join("stdout.log").display(),
            pid = dir.join("java.pid").display(),
            parent = std::process::id(),
        );
        let guard = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Guarded { guard, dir: dir.to_path_buf() })
    }

    /// SIGKILLs the JVM, as a crash would, waits until it is gone (its sockets closed), and
    /// reaps the guard. The JVM is found by its directory on its command line (every server's
    /// arguments name its own directory), not by the pid file alone: a pid that was not the
    /// JVM once left a killed broker listening.
    pub fn kill(mut self) {
        let marker = self.dir.display().to_string();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("java.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        let _ = self.guard.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = Command::new("pkill").args(["-KILL", "-f", &marker]).status();
            let alive =
                Command::new("pgrep").args(["-f", &marker]).output().is_ok_and(|o| !o.stdout.is_empty());
            if !alive || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.guard.wait();
    }

    /// Waits until `port` on loopback accepts connections; fails early if the JVM exits.
    pub fn wait_port(&mut self, port: u16, timeout: Duration, what: &str) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + timeout;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.guard.try_wait()? {
                bail!("{what} exited with {status}; see {}", self.dir.display());
            }
            if Instant::now() > deadline {
                bail!("{what} did not listen on {port} within {timeout:?}; see {}", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// Runs a short-lived `java` tool with the jars of `lib` and returns its stdout.
pub fn run_tool(lib: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("java")
        .args(["-Xmx256m", "-cp", &format!("{}/*", lib.display())])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running java (a JDK 17 is needed for the Kafka and Cassandra tests)")?;
    if !out.status.success() {
        bail!(
            "java {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
