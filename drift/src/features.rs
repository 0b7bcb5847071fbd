//! Per-record drift features of a cleaned text (and of its prediction).

use std::collections::BTreeMap;

/// Feature names, stable: they are keys of scored records, profiles and metric labels.
pub mod name {
    pub const CHARS: &str = "chars";
    pub const TOKENS: &str = "tokens";
    pub const NON_LETTER_SHARE: &str = "non_letter_share";
    pub const CONFIDENCE: &str = "confidence";
    /// Share of words outside the model's training vocabulary.
    pub const OOV_RATE: &str = "oov_rate";
}

/// Length in characters, whitespace-separated token count, and the share of characters that
/// are neither letters nor whitespace.
pub fn text_features(text: &str) -> BTreeMap<String, f64> {
    let mut chars = 0usize;
    let mut other = 0usize;
    for c in text.chars() {
        chars += 1;
        if !c.is_alphabetic() && !c.is_whitespace() {
            other += 1;
        }
    }
    let tokens = text.split_whitespace().count();
    BTreeMap::from([
        (name::CHARS.to_string(), chars as f64),
        (name::TOKENS.to_string(), tokens as f64),
        (name::NON_LETTER_SHARE.to_string(), if chars == 0 { 0.0 } else { other as f64 / chars as f64 }),
    ])
}

/// Adds the out-of-vocabulary rate, when the text has words.
pub fn with_oov_rate(mut features: BTreeMap<String, f64>, oov_rate: Option<f64>) -> BTreeMap<String, f64> {
    if let Some(r) = oov_rate {
        features.insert(name::OOV_RATE.to_string(), r);
    }
    features
}

/// Adds the prediction's confidence (the largest class probability).
pub fn with_confidence(mut features: BTreeMap<String, f64>, probabilities: &[f32]) -> BTreeMap<String, f64> {
    let max = probabilities.iter().copied().fold(0.0f32, f32::max);
    features.insert(name::CONFIDENCE.to_string(), f64::from(max));
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_a_text() {
        let f = text_features("héllo w0rld !");
        assert_eq!(f[name::CHARS], 13.0);
        assert_eq!(f[name::TOKENS], 3.0);
        assert!((f[name::NON_LETTER_SHARE] - 2.0 / 13.0).abs() < 1e-12);
        assert_eq!(text_features("")[name::NON_LETTER_SHARE], 0.0);
        assert_eq!(with_confidence(f, &[0.2, 0.8])[name::CONFIDENCE], 0.800000011920929);
    }
}
