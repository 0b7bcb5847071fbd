//! The drift monitor: tumbling count windows over `text.scored`, PSI per feature against the
//! model version's reference profile.
//!
//! [`Window`] is the pure part (bounded memory: one bin-count vector per feature, whatever the
//! window size); [`run_monitor`] is the Kafka adapter.

use std::collections::BTreeMap;
use std::time::Duration;

use ingest::consume::{MessageReader, Mode};
use schemas::Config;
use schemas::records::{ScoreStatus, ScoredRecord};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::profile::ReferenceProfile;
use crate::stats::{bin_of, psi};

/// What the monitor watches.
#[derive(Debug, Clone)]
pub struct Watch {
    pub model: String,
    pub version: u32,
    pub reference: ReferenceProfile,
    /// Records per tumbling window.
    pub window: usize,
    /// PSI above which a feature is reported as drifting.
    pub psi_threshold: f64,
}

/// The statistics of one closed window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowReport {
    /// 0 for the first window.
    pub index: u64,
    pub model: String,
    pub version: u32,
    pub records: u64,
    pub psi: BTreeMap<String, f64>,
    /// Features whose PSI is above the threshold.
    pub drifting: Vec<String>,
}

/// A tumbling count window of bin counts per feature.
#[derive(Debug)]
pub struct Window {
    watch: Watch,
    counts: BTreeMap<String, Vec<u64>>,
    records: u64,
    index: u64,
}

impl Window {
    pub fn new(watch: Watch) -> Window {
        let mut w = Window { watch, counts: BTreeMap::new(), records: 0, index: 0 };
        w.reset();
        w
    }

    fn reset(&mut self) {
        self.counts = self
            .watch
            .reference
            .features
            .iter()
            .map(|(k, p)| (k.clone(), vec![0; p.fractions.len()]))
            .collect();
        self.records = 0;
    }

    /// Adds one scored record; returns the report when it closes the window. Records of other
    /// model versions and skipped records are ignored.
    pub fn observe(&mut self, r: &ScoredRecord) -> Option<WindowReport> {
        if r.status != ScoreStatus::Scored
            || r.model != self.watch.model
            || r.model_version != self.watch.version
        {
            return None;
        }
        for (name, counts) in self.counts.iter_mut() {
            if let (Some(v), Some(p)) = (r.features.get(name), self.watch.reference.features.get(name)) {
                counts[bin_of(&p.edges, *v)] += 1;
            }
        }
        self.records += 1;
        if self.records < self.watch.window as u64 {
            return None;
        }
        let mut report = WindowReport {
            index: self.index,
            model: self.watch.model.clone(),
            version: self.watch.version,
            records: self.records,
            psi: BTreeMap::new(),
            drifting: Vec::new(),
        };
        for (name, counts) in &self.counts {
            let p = &self.watch.reference.features[name];
            if let Some(value) = psi(&p.fractions, counts) {
                if value > self.watch.psi_threshold {
                    report.drifting.push(name.clone());
                }
                report.psi.insert(name.clone(), value);
            }
        }
        self.index += 1;
        self.reset();
        Some(report)
    }
}

/// Consumes `text.scored` (consumer group `<group_id>.drift`) until cancelled, calling
/// `on_report` for every closed window. With `until_idle`, reads from the beginning with
/// explicit assignment and stops at the end of the topic.
pub async fn run_monitor(
    config: &Config,
    watch: Watch,
    until_idle: bool,
    cancel: &CancellationToken,
    mut on_report: impl FnMut(&WindowReport),
) -> Result<u64> {
    let topic = config.topics().scored;
    let mode = if until_idle {
        Mode::Assigned { start: BTreeMap::new(), until_idle: true }
    } else {
        Mode::Group { group_id: format!("{}.drift", config.kafka.group_id) }
    };
    let mut reader = MessageReader::new(&config.kafka, &topic, mode).await?;
    let mut window = Window::new(watch);
    let mut malformed = 0u64;
    while let Some((messages, ranges)) = reader.next(4096, Duration::from_millis(200), cancel).await? {
        for m in &messages {
            match m.value.as_deref().map(serde_json::from_slice::<ScoredRecord>) {
                Some(Ok(r)) => {
                    if let Some(report) = window.observe(&r) {
                        tracing::info!(
                            window = report.index,
                            model = %report.model,
                            version = report.version,
                            psi = ?report.psi,
                            drifting = ?report.drifting,
                            "drift window"
                        );
                        on_report(&report);
                    }
                }
                _ => malformed += 1,
            }
        }
        if !until_idle {
            reader.commit(&ranges)?;
        }
    }
    if malformed > 0 {
        tracing::warn!(malformed, topic = %topic, "records on the scored topic were not scored records");
    }
    Ok(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::text_features;

    fn scored(text: &str, version: u32) -> ScoredRecord {
        ScoredRecord {
            v: 1,
            id: "x".into(),
            status: ScoreStatus::Scored,
            reason: None,
            model: "m".into(),
            model_version: version,
            label: Some("ham".into()),
            probabilities: BTreeMap::new(),
            features: text_features(text),
            partition: 0,
            offset: 0,
            scored_at: 0,
            latency_us: 0,
        }
    }

    #[test]
    fn windows_close_and_detect_a_shift() {
        let reference_texts: Vec<String> = (0..400).map(|i| "word ".repeat(5 + i % 40)).collect();
        let rows: Vec<_> = reference_texts.iter().map(|t| text_features(t)).collect();
        let reference = ReferenceProfile::build(rows.iter());
        let watch = Watch { model: "m".into(), version: 1, reference, window: 100, psi_threshold: 0.2 };
        let mut w = Window::new(watch);
        let mut reports = Vec::new();
        for t in reference_texts.iter().take(200) {
            reports.extend(w.observe(&scored(t, 1)));
            assert!(w.observe(&scored(t, 2)).is_none(), "other versions are ignored");
        }
        for _ in 0..100 {
            reports.extend(w.observe(&scored(&"longer ".repeat(400), 1)));
        }
        assert_eq!(reports.len(), 3);
        assert!(reports[0].drifting.is_empty(), "{:?}", reports[0]);
        assert!(reports[1].drifting.is_empty(), "{:?}", reports[1]);
        assert!(reports[2].drifting.contains(&"chars".to_string()), "{:?}", reports[2]);
        assert_eq!(reports[2].index, 2);
    }
}
