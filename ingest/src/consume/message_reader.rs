//! [`MessageReader`]: a topic of the pipeline's own JSON payloads (scored records, labels,
//! control events) as micro-batches of owned messages; the caller decodes them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use schemas::config::KafkaConfig;
use tokio_util::sync::CancellationToken;

use super::poll::{PollLimits, Poller};
use super::{Mode, OffsetRange};
use crate::Result;

/// One record as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// Headers, in order (e.g. the reason of a dead letter).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawMessage {
    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads a topic of the pipeline's own JSON payloads (scored records, labels, control events)
/// in micro-batches of owned messages; the caller decodes them.
pub struct MessageReader {
    poller: Poller,
}

impl MessageReader {
    pub async fn new(kafka: &KafkaConfig, topic: &str, mode: Mode) -> Result<Self> {
        Ok(MessageReader { poller: Poller::open(kafka, topic, mode).await? })
    }

    /// Up to `max` messages, waiting at most `max_wait` after the first; `None` when cancelled
    /// or (assigned, until idle) caught up.
    pub async fn next(
        &mut self,
        max: usize,
        max_wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<Option<(Vec<RawMessage>, BTreeMap<i32, OffsetRange>)>> {
        let limits = PollLimits { max_records: max, max_bytes: u64::MAX, max_wait, quiet: None };
        let Some(polled) = self.poller.poll(limits, cancel).await? else { return Ok(None) };
        let out = polled
            .messages
            .iter()
            .map(|msg| RawMessage {
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp_ms: msg.timestamp().to_millis(),
                headers: msg
                    .headers()
                    .map(|h| {
                        h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Some((out, polled.ranges)))
    }

    /// Commits (group mode) the next offsets after `ranges`.
    pub fn commit(&self, ranges: &BTreeMap<i32, OffsetRange>) -> Result<()> {
        self.poller.commit(ranges)
    }
}
