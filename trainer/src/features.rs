//! Hashed n-gram features of cleaned text (the input of `logreg`) — pure, no libtorch.
//!
//! Words are runs of alphanumeric characters, or a `<token>` written by the cleaning plan
//! (`<url>`, `<num>`, ...). Word unigrams and bigrams are hashed (FNV-1a, 64-bit, stable across
//! platforms and releases) into `2^bits` buckets; term frequencies are sublinear (`1 + ln tf`).
//! Inverse document frequencies and L2 normalization are applied by the model.

use serde::{Deserialize, Serialize};

/// How texts become bucket ids; stored in the model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashingConfig {
    /// log2 of the number of buckets.
    pub bits: u32,
    /// Longest word n-gram (1 = unigrams, 2 = uni + bigrams).
    pub max_ngram: u32,
}

impl HashingConfig {
    pub fn buckets(&self) -> usize {
        1usize << self.bits
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The words of a cleaned text.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            let start = rest.find(|c: char| c.is_alphanumeric() || c == '<')?;
            rest = &rest[start..];
            if rest.starts_with('<') {
                match rest[1..].find(|c: char| !c.is_ascii_lowercase()) {
                    Some(n) if n > 0 && rest[1 + n..].starts_with('>') => {
                        let (w, tail) = rest.split_at(n + 2);
                        rest = tail;
                        return Some(w);
                    }
                    _ => {
                        rest = &rest[1..];
                        continue;
                    }
                }
            }
            let end = rest.find(|c: char| !c.is_alphanumeric()).unwrap_or(rest.len());
            let (w, tail) = rest.split_at(end);
            rest = tail;
            return Some(w);
        }
    })
}

/// The hashing buckets of a cleaned text's words (unigrams), in order.
pub fn word_buckets<'a>(cfg: &HashingConfig, text: &'a str) -> impl Iterator<Item = u32> + 'a {
    let mask = (cfg.buckets() - 1) as u64;
    words(text).map(move |w| (fnv(FNV_OFFSET, w.as_bytes()) & mask) as u32)
}

/// Sparse features of one text: `(bucket, weight)` pairs, buckets unique and sorted.
pub fn featurize(cfg: &HashingConfig, text: &str, out: &mut Vec<(u32, f32)>) {
    featurize_with(cfg, text, out, |_| {});
}

/// [`featurize`], also calling `on_word` with each word's unigram bucket, in order (what
/// [`word_buckets`] yields) — one tokenization for the features and the per-word statistics.
pub fn featurize_with(
    cfg: &HashingConfig,
    text: &str,
    out: &mut Vec<(u32, f32)>,
    mut on_word: impl FnMut(u32),
) {
    out.clear();
    let mask = (cfg.buckets() - 1) as u64;
    let mut prev: Option<u64> = None;
    for w in words(text) {
        let h = fnv(FNV_OFFSET, w.as_bytes());
        on_word((h & mask) as u32);
        out.push(((h & mask) as u32, 1.0));
        if cfg.max_ngram >= 2
            && let Some(p) = prev
        {
            let bigram = fnv(p ^ 0x9e37_79b9_7f4a_7c15, w.as_bytes());
            out.push(((bigram & mask) as u32, 1.0));
        }
        prev = Some(h);
    }
    out.sort_unstable_by_key(|(b, _)| *b);
    // Merge duplicates into counts, then sublinear tf.
    let mut merged: Vec<(u32, f32)> = Vec::with_capacity(out.len());
    for &(b, w) in out.iter() {
        match merged.last_mut() {
            Some((lb, lw)) if *lb == b => *lw += w,
            _ => merged.push((b, w)),
        }
    }
    for (_, w) in merged.iter_mut() {
        *w = 1.0 + w.ln();
    }
    *out = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_tokens() {
        let w: Vec<&str> = words("win <num> dollars, at <url>! a<b c-d é9 <NOT>").collect();
        assert_eq!(w, ["win", "<num>", "dollars", "at", "<url>", "a", "b", "c", "d", "é9", "NOT"]);
    }

    #[test]
    fn features_are_stable_and_sublinear() {
        let cfg = HashingConfig { bits: 16, max_ngram: 2 };
        let mut f = Vec::new();
        featurize(&cfg, "spam spam spam eggs", &mut f);
        // unigrams spam(3), eggs(1); bigrams spam_spam(2), spam_eggs(1)
        assert_eq!(f.len(), 4);
        let mut weights: Vec<f32> = f.iter().map(|(_, w)| *w).collect();
        weights.sort_by(f32::total_cmp);
        assert_eq!(weights, vec![1.0, 1.0, 1.0 + 2f32.ln(), 1.0 + 3f32.ln()]);
        // Stable hashing: the bucket of a word never changes between releases.
        featurize(&HashingConfig { bits: 20, max_ngram: 1 }, "spam", &mut f);
        assert_eq!(f, vec![((fnv(FNV_OFFSET, b"spam") & 0xFFFFF) as u32, 1.0)]);
        featurize(&cfg, "", &mut f);
        assert!(f.is_empty());
    }
}
