//! Outcomes of labelled predictions: accuracy and macro-F1 over (truth, predicted) counts, and
//! [`LabelJoin`], which pairs late labels with predictions by id in bounded memory. Pure: no
//! Kafka, no clock of its own (callers pass `now`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Accuracy and macro F1 of a window's labelled predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AccuracyReport {
    pub labelled: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
}

/// Counts of (truth, predicted) pairs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcomes {
    pairs: BTreeMap<(String, String), u64>,
}

impl Outcomes {
    pub(crate) fn add(&mut self, truth: &str, predicted: &str) {
        *self.pairs.entry((truth.to_string(), predicted.to_string())).or_default() += 1;
    }

    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &Outcomes) {
        for (pair, n) in &other.pairs {
            *self.pairs.entry(pair.clone()).or_default() += n;
        }
    }

    pub(crate) fn report(&self) -> Option<AccuracyReport> {
        let n: u64 = self.pairs.values().sum();
        if n == 0 {
            return None;
        }
        let correct: u64 = self.pairs.iter().filter(|((t, p), _)| t == p).map(|(_, c)| c).sum();
        let mut classes: Vec<&str> = self.pairs.keys().flat_map(|(t, p)| [t.as_str(), p.as_str()]).collect();
        classes.sort_unstable();
        classes.dedup();
        let f1s: Vec<f64> = classes
            .iter()
            .map(|c| {
                let tp = self.pairs.get(&(c.to_string(), c.to_string())).copied().unwrap_or(0) as f64;
                let predicted: u64 = self.pairs.iter().filter(|((_, p), _)| p == c).map(|(_, n)| n).sum();
                let actual: u64 = self.pairs.iter().filter(|((t, _), _)| t == c).map(|(_, n)| n).sum();
                let denominator = (predicted + actual) as f64;
                if denominator == 0.0 { 0.0 } else { 2.0 * tp / denominator }
            })
            .collect();
        Some(AccuracyReport { labelled: n, accuracy: correct as f64 / n as f64, macro_f1: f64s_mean(&f1s) })
    }
}

fn f64s_mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

/// Joins late labels (text.labels) with predictions (text.scored) by id, whichever comes
/// first, in bounded memory: at most `capacity` unmatched entries per side, each kept at most
/// `ttl`; the oldest go first.
#[derive(Debug)]
pub struct LabelJoin {
    capacity: usize,
    ttl: Duration,
    predictions: std::collections::HashMap<String, (u32, String, Instant)>,
    labels: std::collections::HashMap<String, (String, Instant)>,
    order: std::collections::VecDeque<(bool, String, Instant)>,
}

impl LabelJoin {
    pub fn new(capacity: usize, ttl: Duration) -> LabelJoin {
        LabelJoin {
            capacity: capacity.max(1),
            ttl,
            predictions: Default::default(),
            labels: Default::default(),
            order: Default::default(),
        }
    }

    /// Unmatched entries held (predictions, labels).
    pub fn pending(&self) -> (usize, usize) {
        (self.predictions.len(), self.labels.len())
    }

    fn evict(&mut self, now: Instant) {
        while let Some((is_prediction, id, at)) = self.order.front().cloned() {
            let over = self.predictions.len() > self.capacity || self.labels.len() > self.capacity;
            if !over && now.duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            // Remove only if this queue entry is still the live one for the id.
            if is_prediction {
                if self.predictions.get(&id).is_some_and(|e| e.2 == at) {
                    self.predictions.remove(&id);
                }
            } else if self.labels.get(&id).is_some_and(|e| e.1 == at) {
                self.labels.remove(&id);
            }
        }
    }

    /// A prediction of model `version` arrived; returns the truth if its label is waiting.
    pub fn prediction(&mut self, id: &str, version: u32, predicted: &str, now: Instant) -> Option<String> {
        if let Some((truth, _)) = self.labels.remove(id) {
            return Some(truth);
        }
        self.predictions.insert(id.to_string(), (version, predicted.to_string(), now));
        self.order.push_back((true, id.to_string(), now));
        self.evict(now);
        None
    }

    /// A label arrived; returns `(version, predicted)` if the prediction is waiting.
    pub fn label(&mut self, id: &str, truth: &str, now: Instant) -> Option<(u32, String)> {
        if let Some((version, predicted, _)) = self.predictions.remove(id) {
            return Some((version, predicted));
        }
        self.labels.insert(id.to_string(), (truth.to_string(), now));
        self.order.push_back((false, id.to_string(), now));
        self.evict(now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_join_matches_either_order_in_bounded_memory() {
        let now = Instant::now();
        let mut join = LabelJoin::new(2, Duration::from_secs(60));
        assert_eq!(join.prediction("a", 1, "spam", now), None);
        assert_eq!(join.label("a", "ham", now), Some((1, "spam".into())));
        assert_eq!(join.label("b", "spam", now), None);
        assert_eq!(join.prediction("b", 3, "ham", now), Some("spam".into()));
        assert_eq!(join.pending(), (0, 0));
        // Capacity: the oldest unmatched prediction goes first.
        for id in ["p1", "p2", "p3"] {
            join.prediction(id, 1, "ham", now);
        }
        assert_eq!(join.pending(), (2, 0));
        assert_eq!(join.label("p1", "ham", now), None, "p1 was evicted");
        assert!(join.label("p3", "ham", now).is_some());
        // TTL: a label older than the TTL is gone when the next entry arrives.
        let mut join = LabelJoin::new(100, Duration::from_secs(10));
        join.label("old", "spam", now);
        join.label("new", "spam", now + Duration::from_secs(11));
        assert_eq!(join.prediction("old", 1, "spam", now + Duration::from_secs(11)), None);
        assert_eq!(join.prediction("new", 1, "spam", now + Duration::from_secs(11)), Some("spam".into()));
    }
}
