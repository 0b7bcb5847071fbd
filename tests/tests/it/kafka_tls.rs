//! Kafka over TLS: librdkafka's SSL settings, given in `[kafka.client]`, reach every client the
//! binary makes (admin, producer, consumer). The broker is tansu behind a TLS-only front (tansu
//! 0.6 has no TLS listener of its own), so a plaintext client and a client that does not trust
//! the broker's CA are refused.

use std::io::Write;
use std::sync::atomic::Ordering;

use stream::store::SnapshotStore;
use tests::{TlsTansu, config_for, driftwood, make_tls, unique_text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_speak_tls_when_configured_and_plaintext_is_refused() -> anyhow::Result<()> {
    let tls_dir = tempfile::tempdir()?;
    make_tls(tls_dir.path())?;
    let broker = TlsTansu::start(tls_dir.path())?;
    let dir = tempfile::tempdir()?;
    let mut config = config_for(&broker.brokers, dir.path(), "tls");
    config.kafka.client.insert("security.protocol".into(), "ssl".into());
    config.kafka.client.insert("ssl.ca.location".into(), tls_dir.path().join("ca.pem").display().to_string());
    let topics = config.topics();
    ingest::kafka::ensure_topics(&config.kafka, &topics.all()).await?;

    // Publish and snapshot through the binary: producer and consumer over TLS.
    let jsonl = dir.path().join("records.jsonl");
    let mut f = std::fs::File::create(&jsonl)?;
    for i in 0..50 {
        writeln!(f, "{}", serde_json::json!({ "id": format!("tls-{i}"), "text": unique_text(i) }))?;
    }
    drop(f);
    driftwood(&config, &["publish", "--jsonl", &jsonl.display().to_string()])?;
    driftwood(&config, &["snapshot"])?;
    let latest = SnapshotStore::open(dir.path())?.latest("text")?.expect("a version");
    assert_eq!(latest.rows, 50);
    let handshakes = broker.handshakes.load(Ordering::Relaxed);
    assert!(handshakes >= 3, "{handshakes} TLS sessions for admin, producer and consumer");

    // A plaintext client gets nowhere: the front refuses it, the broker never sees it.
    let mut plain = config.clone();
    plain.kafka.client.clear();
    let refused = broker.refused.load(Ordering::Relaxed);
    assert!(ingest::kafka::watermarks(&plain.kafka, &topics.raw).await.is_err());
    assert!(broker.refused.load(Ordering::Relaxed) > refused, "the plaintext attempt reached the TLS front");

    // A client that trusts another CA refuses the broker's certificate.
    let other_ca = tempfile::tempdir()?;
    make_tls(other_ca.path())?;
    let mut untrusting = config.clone();
    untrusting
        .kafka
        .client
        .insert("ssl.ca.location".into(), other_ca.path().join("ca.pem").display().to_string());
    let err = ingest::kafka::watermarks(&untrusting.kafka, &topics.raw).await.unwrap_err();
    eprintln!("untrusted broker: {err}");

    // And with the right settings the same call works.
    let marks = ingest::kafka::watermarks(&config.kafka, &topics.raw).await?;
    assert!(!marks.is_empty(), "{marks:?}");
    Ok(())
}
