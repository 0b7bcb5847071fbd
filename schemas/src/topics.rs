//! Topic names, all derived from one prefix (default `driftwood`).

use serde::{Deserialize, Serialize};

/// The five topics of a Driftwood deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Raw text from producers.
    pub raw: String,
    /// One scored record per raw record.
    pub scored: String,
    /// Late ground truth `{id, label}`.
    pub labels: String,
    /// Records that could not be read, with the reason in headers.
    pub dead: String,
    /// Control events (JSON, versioned).
    pub control: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        let t = |s: &str| format!("{prefix}.{s}");
        Topics {
            raw: t("text.raw"),
            scored: t("text.scored"),
            labels: t("text.labels"),
            dead: t("text.dead"),
            control: t("control"),
        }
    }

    pub fn all(&self) -> [&str; 5] {
        [&self.raw, &self.scored, &self.labels, &self.dead, &self.control]
    }
}

/// Consumer-group ids, all derived from `kafka.group_id`: one group per job, so two jobs never
/// share (or steal) each other's partitions and offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    base: String,
}

impl Groups {
    pub fn with_base(group_id: &str) -> Groups {
        Groups { base: group_id.to_string() }
    }

    fn of(&self, job: &str) -> String {
        format!("{}.{job}", self.base)
    }

    /// Snapshot workers sharing `text.raw` (`snapshot --group`).
    pub fn snapshot(&self) -> String {
        self.of("snapshot")
    }

    /// Scorers sharing `text.raw`.
    pub fn scorer(&self) -> String {
        self.of("scorer")
    }

    /// The retrainer on the control topic.
    pub fn retrainer(&self) -> String {
        self.of("retrainer")
    }

    /// The drift monitor on `text.scored`.
    pub fn drift(&self) -> String {
        self.of("drift")
    }

    /// The drift monitor's join of late labels.
    pub fn drift_labels(&self) -> String {
        self.of("drift-labels")
    }

    /// Readers with assigned partitions (never committing; librdkafka wants a group id).
    pub fn reader(&self) -> String {
        self.of("reader")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_has_its_own_group() {
        let g = Groups::with_base("acme");
        let all = [g.snapshot(), g.scorer(), g.retrainer(), g.drift(), g.drift_labels(), g.reader()];
        assert_eq!(all[0], "acme.snapshot");
        assert_eq!(all[4], "acme.drift-labels");
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn names_follow_the_prefix() {
        let t = Topics::with_prefix("acme");
        assert_eq!(t.raw, "acme.text.raw");
        assert_eq!(t.dead, "acme.text.dead");
        assert_eq!(t.control, "acme.control");
    }
}
