//! The Rust side of `scripts/bench/flight` (run it through that script).
//!
//! `bench_flight DATA_DIR CORPUS.jsonl N PORT CACHED_PORT` writes a version of N rows (the
//! corpus texts, cut to 256 characters, cycled under new ids) into dataset `text` of a fresh
//! store, then prints one JSON line per measurement:
//! * `datafusion`: `SELECT * FROM latest` executed in-process by DataFusion over the same
//!   Parquet objects (no network, no IPC);
//! * DoGet of the same query by the Rust Flight SQL client over loopback, from a server with
//!   the version cache off (PORT: every DoGet decodes Parquet) and from one with the default
//!   cache holding the version (CACHED_PORT);
//!
//! and then serves both (plaintext, auth off) until killed, printing `ready` and the version's
//! Parquet paths so the Python peers can read the same table.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_flight::sql::client::FlightSqlServiceClient;
use flight::FlightSql;
use futures::TryStreamExt;
use schemas::auth::{AuthError, Authenticator, IssuedToken, Principal};
use schemas::config::FlightConfig;
use schemas::records::clean_schema;
use stream::store::{Draft, DraftPart, SnapshotStore};
use tokio_util::sync::CancellationToken;

/// Runs of each measurement; the script prints the best (the first run warms caches).
const RUNS: usize = 4;

/// Authentication off, as on a developer's machine.
#[derive(Debug)]
struct Open;

impl Authenticator for Open {
    fn enabled(&self) -> bool {
        false
    }
    fn login(&self, _: &str, _: &str) -> Result<IssuedToken, AuthError> {
        Err(AuthError::Unavailable("off".into()))
    }
    fn verify(&self, _: &str) -> Result<Principal, AuthError> {
        Ok(Principal::anonymous_admin())
    }
}

fn arrow_bytes(b: &RecordBatch) -> usize {
    b.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0)).sum()
}

fn report(what: &str, rows: usize, bytes: usize, secs: f64) {
    println!(
        "{}",
        serde_json::json!({"what": what, "rows": rows, "bytes": bytes, "secs": secs,
            "mb_per_s": bytes as f64 / 1e6 / secs, "rows_per_s": rows as f64 / secs})
    );
}

fn write_version(store: &SnapshotStore, corpus: &str, n: usize) -> Result<stream::store::Manifest> {
    let texts: Vec<(String, Option<String>)> = std::io::BufReader::new(std::fs::File::open(corpus)?)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l?)?;
            let text: String = v["text"].as_str().unwrap_or_default().chars().take(256).collect();
            Ok((text, v["label"].as_str().map(String::from)))
        })
        .collect::<Result<_>>()?;
    let mut writer = store.object_writer(clean_schema())?;
    let chunk = 65_536;
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let rows = start..end;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.clone().map(|i| format!("b{i}")))),
            Arc::new(StringArray::from_iter_values(rows.clone().map(|i| texts[i % texts.len()].0.clone()))),
            Arc::new(StringArray::from_iter(rows.clone().map(|i| texts[i % texts.len()].1.clone()))),
            Arc::new(StringArray::from_iter(rows.clone().map(|_| Some("bench")))),
            Arc::new(
                arrow::array::TimestampMillisecondArray::from_iter_values(rows.clone().map(|i| i as i64))
                    .with_timezone(schemas::records::TS_TZ),
            ),
            Arc::new(StringArray::from_iter(rows.clone().map(|_| None::<String>))),
            Arc::new(Int32Array::from_iter_values(rows.clone().map(|i| (i % 4) as i32))),
            Arc::new(Int64Array::from_iter_values(rows.map(|i| i as i64))),
        ];
        writer.write(&RecordBatch::try_new(clean_schema(), cols)?)?;
    }
    let file = writer.finish()?.context("no rows written")?;
    let draft = Draft {
        dataset: "text".into(),
        spec_hash: "bench".into(),
        schema: clean_schema(),
        parts: vec![DraftPart { consumed: None, file: Some(file) }],
        tags: vec![],
        replace_files: false,
        imported: vec![],
        raw: None,
    };
    store.commit(draft, chrono::Utc::now())?.manifest.context("not committed")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, corpus, n, port, cached_port] = args.as_slice() else {
        anyhow::bail!("usage: bench_flight DATA_DIR CORPUS.jsonl N PORT CACHED_PORT");
    };
    let n: usize = n.parse().context("N")?;
    let store = SnapshotStore::open(std::path::Path::new(dir))?;
    let m = write_version(&store, corpus, n)?;
    // The same server twice: with the version cache off (every DoGet decodes the Parquet
    // objects) and with the configured default cache, once the version is in.
    let parquet = FlightSql::new(store.clone(), "text", Arc::new(Open), 16, 0);
    let cached =
        FlightSql::new(store.clone(), "text", Arc::new(Open), 16, FlightConfig::default().cache_mb << 20);
    let sql = "SELECT * FROM latest";

    // In-process DataFusion over the same objects.
    for _ in 0..RUNS {
        let started = Instant::now();
        let (mut rows, mut bytes) = (0, 0);
        let mut stream = parquet.plan(sql, None, Default::default()).await?.execute_stream().await?;
        while let Some(b) = stream.try_next().await? {
            rows += b.num_rows();
            bytes += arrow_bytes(&b);
        }
        report("datafusion in-process (no Flight)", rows, bytes, started.elapsed().as_secs_f64());
    }

    // The first query of the version starts loading it into the cache.
    cached.plan(sql, None, Default::default()).await?.collect().await?;
    let loading = Instant::now();
    while cached.cache().get(&m.id).is_none() {
        anyhow::ensure!(loading.elapsed().as_secs() < 120, "the version was not cached");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let cancel = CancellationToken::new();
    let mut servers = Vec::new();
    for (service, port, what) in [
        (parquet, port, "driftwood DoGet, from Parquet (Rust client)"),
        (cached, cached_port, "driftwood DoGet, version cached (Rust client)"),
    ] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        servers.push(tokio::spawn(flight::serve(addr, Default::default(), service, cancel.clone())));
        let channel = loop {
            match tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        let mut client = FlightSqlServiceClient::new(channel);
        for _ in 0..RUNS {
            let started = Instant::now();
            let (mut rows, mut bytes) = (0, 0);
            let info = client.execute(sql.to_string(), None).await?;
            for endpoint in info.endpoint {
                let mut stream = client.do_get(endpoint.ticket.context("ticket")?).await?;
                while let Some(b) = stream.try_next().await? {
                    rows += b.num_rows();
                    bytes += arrow_bytes(&b);
                }
            }
            report(what, rows, bytes, started.elapsed().as_secs_f64());
        }
    }
    let paths: Vec<String> =
        m.files.iter().map(|f| store.object_path(&f.hash).display().to_string()).collect();
    println!("{}", serde_json::json!({"ready": true, "parquet": paths, "rows": m.rows}));
    for server in servers {
        server.await??;
    }
    Ok(())
}
