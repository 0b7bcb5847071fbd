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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topics::with_prefix("acme");
        assert_eq!(t.raw, "acme.text.raw");
        assert_eq!(t.dead, "acme.text.dead");
        assert_eq!(t.control, "acme.control");
    }
}
