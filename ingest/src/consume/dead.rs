//! The dead-letter sink: an undecodable record's original key and value, sent with its reason,
//! detail and source (topic, partition, offset) as headers, acknowledged before the batch that
//! held it is returned.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::records::{DeadReason, dead_letter_header as hdr};

use crate::{Error, Result};

/// Sends undecodable records, with their reason, to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// One dead letter: the original key and value plus why and where.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub reason: DeadReason,
    pub detail: String,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        DeadLetters { producer, topic: topic.into() }
    }

    /// Sends all letters and waits until the broker has acknowledged every one.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> Result<()> {
        let sends = letters.iter().map(|l| {
            let partition = l.partition.to_string();
            let offset = l.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: hdr::REASON, value: Some(l.reason.code()) })
                .insert(Header { key: hdr::DETAIL, value: Some(l.detail.as_str()) })
                .insert(Header { key: hdr::SOURCE_TOPIC, value: Some(l.source_topic.as_str()) })
                .insert(Header { key: hdr::SOURCE_PARTITION, value: Some(partition.as_str()) })
                .insert(Header { key: hdr::SOURCE_OFFSET, value: Some(offset.as_str()) });
            let mut record = FutureRecord::to(&self.topic).payload(&l.value).headers(headers);
            if let Some(k) = l.key.as_deref() {
                record = record.key(k);
            }
            async move {
                self.producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| Error::kafka("sending a dead letter")(e))
            }
        });
        try_join_all(sends).await.map(|_| ())
    }
}
