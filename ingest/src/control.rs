//! Publishing typed control events (`<prefix>.control`).

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::events::{ControlEvent, ControlMessage};

use crate::{Error, Result};

/// Sends control events and waits for their acknowledgement.
#[derive(Clone)]
pub struct ControlProducer {
    producer: FutureProducer,
    topic: String,
}

impl ControlProducer {
    pub fn new(producer: FutureProducer, topic: impl Into<String>) -> Self {
        ControlProducer { producer, topic: topic.into() }
    }

    /// Sends `event` in a versioned envelope, keyed by its type.
    pub async fn send(&self, event: ControlEvent) -> Result<ControlMessage> {
        let message = ControlMessage::new(event, chrono::Utc::now());
        let payload = message.encode();
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(message.event.kind()).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| Error::kafka(format!("sending a control event to {}", self.topic))(e))?;
        Ok(message)
    }
}
