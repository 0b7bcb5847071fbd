//! Batch scoring (`driftwood models predict`): JSON lines of texts in, one JSON line per text
//! out, through the model thread like every other prediction (libtorch never runs on the
//! async runtime).
//!
//! ```text
//!  {"text": "..."} | "..."  ─► parse_texts ─► chunks ─► ModelHandle::predict_raw ─► one line each
//! ```

use std::io::Write;

use futures::{StreamExt, TryStreamExt};

use crate::handle::{Answer, ModelHandle};
use crate::{Error, Result};

/// Chunks in flight at once: the next chunk is cleaned while the model runs the current one.
const IN_FLIGHT: usize = 2;

/// The texts of JSON lines: each non-blank line is `{"text": "..."}` or a JSON string.
/// A bad line is refused by its number; nothing is scored then.
pub fn parse_texts(input: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for (n, line) in input.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::BadRequest(format!("line {}: not JSON ({e})", n + 1)))?;
        match value.get("text").unwrap_or(&value).as_str() {
            Some(t) => texts.push(t.to_string()),
            None => {
                return Err(Error::BadRequest(format!(
                    "line {}: expected {{\"text\": \"...\"}} or a JSON string",
                    n + 1
                )));
            }
        }
    }
    Ok(texts)
}

/// Scores `texts` in chunks of `chunk` and writes one JSON line per text, in order:
/// `{"label", "confidence", "probabilities"}` (probabilities in the model's label order), or
/// `null` where the cleaning plan drops the text. Returns the texts scored.
pub async fn score(
    handle: &ModelHandle,
    texts: Vec<String>,
    chunk: usize,
    out: &mut impl Write,
) -> Result<usize> {
    let chunk = chunk.max(1);
    let n = texts.len();
    let mut chunks = Vec::with_capacity(n.div_ceil(chunk));
    let mut texts = texts.into_iter();
    loop {
        let c: Vec<String> = texts.by_ref().take(chunk).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    let mut answers =
        futures::stream::iter(chunks).map(|c| handle.predict_raw(c)).buffered(IN_FLIGHT).into_stream();
    while let Some(answer) = answers.try_next().await? {
        for line in lines(&answer) {
            writeln!(out, "{line}").map_err(Error::Output)?;
        }
    }
    out.flush().map_err(Error::Output)?;
    Ok(n)
}

/// One output line per text of `answer`.
fn lines(answer: &Answer) -> impl Iterator<Item = serde_json::Value> + '_ {
    answer.predictions.iter().map(|p| match p {
        None => serde_json::Value::Null,
        Some(p) => serde_json::json!({
            "label": p.label,
            "confidence": p.confidence(),
            "probabilities": p.probabilities,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_strings_are_read_and_bad_lines_named() {
        let texts = parse_texts("{\"text\": \"a b\", \"id\": 3}\n\n\"plain\"\n  \n").expect("valid");
        assert_eq!(texts, vec!["a b".to_string(), "plain".to_string()]);
        for (input, line) in
            [("\"ok\"\n{\"txt\": 1}\n", "line 2:"), ("\n\nnot json\n", "line 3:"), ("7\n", "line 1:")]
        {
            let e = parse_texts(input).expect_err(input).to_string();
            assert!(e.starts_with(line), "{input:?}: {e}");
            assert!(matches!(parse_texts(input), Err(Error::BadRequest(_))));
        }
        assert!(parse_texts("").expect("empty is fine").is_empty());
    }
}
