//! Files as data sources: `driftwood data import PATH|URL` commits the rows of CSV (with a
//! header), Parquet, JSON lines files or a folder of text files (folder names as labels) as a
//! raw version whose sources are the files' content hashes.
//!
//! Each row goes through the same validation as a Kafka record ([`ingest::decode::decode`] on
//! the row as a JSON object): a bad row is written to the rejects file (JSON lines: source, row,
//! reason code, detail, the row) and counted, the rest are committed. A file already imported
//! into the raw dataset (by content; a folder's file by path and content) is skipped, so
//! importing the same file twice adds nothing. Imported rows carry `kafka_partition = -1` and
//! their row number as `kafka_offset`, so they are never taken for Kafka positions.
//!
//! Local paths and `file://` / `s3://` URLs (through [`crate::remote`]'s object stores); a URL
//! is downloaded into the store's temporary directory first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use chrono::Utc;
use ingest::batch::{Provenance, RawBatchBuilder, RowSink};
use schemas::records::{DeadReason, clean_schema};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::store::{Draft, DraftPart, ImportedFile, Manifest, RAW_SPEC, SnapshotStore};
use crate::{Error, Result};

/// The Kafka partition imported rows carry.
pub const IMPORTED_PARTITION: i32 = -1;

/// Rows per batch written to the raw object.
const BATCH_ROWS: usize = 8192;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The raw dataset to commit to.
    pub raw_dataset: String,
    /// Largest row, in bytes of its JSON form (`ingest.max_record_bytes`).
    pub max_bytes: usize,
    /// Where refused rows are written (JSON lines), created only if a row is refused.
    pub rejects: PathBuf,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The files imported now.
    pub files: Vec<ImportedFile>,
    /// Files skipped as already imported: name and SHA-256.
    pub skipped: Vec<(String, String)>,
    pub rows: u64,
    /// Refused rows by reason code.
    pub rejected: BTreeMap<String, u64>,
    /// Columns of CSV or Parquet files that are not record fields, ignored.
    pub ignored_columns: BTreeSet<String>,
    /// The raw version committed (None: nothing new).
    pub raw: Option<Manifest>,
    /// The rejects file, when a row was refused.
    pub rejects: Option<PathBuf>,
}

/// One row of a file: a record-shaped object to validate, or refused while reading.
enum Row {
    Object(Map<String, Value>),
    Refused { reason: DeadReason, detail: String, raw: String },
}

/// One file to read.
struct Entry {
    /// As reported: the path or URL given, or a folder file's path relative to the folder.
    name: String,
    path: PathBuf,
    format: Format,
}

#[derive(Debug, Clone, PartialEq)]
enum Format {
    Csv,
    Parquet,
    JsonLines,
    /// One text per file; the label is the folder the file is in (none at the top).
    Text {
        label: Option<String>,
    },
}

/// Imports `source` (a path or URL) into `opts.raw_dataset`.
pub async fn import(store: &SnapshotStore, source: &str, opts: &ImportOptions) -> Result<ImportReport> {
    let (entries, _downloads) = entries(store, source).await?;
    let store = store.clone();
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || import_entries(&store, &entries, &opts))
        .await
        .map_err(|e| Error::Internal(format!("import task failed: {e}")))?
}

fn import_entries(store: &SnapshotStore, entries: &[Entry], opts: &ImportOptions) -> Result<ImportReport> {
    let mut seen_hashes = BTreeSet::new();
    let mut seen_named = BTreeSet::new();
    for v in store.versions(&opts.raw_dataset)? {
        for f in v.added.imported {
            seen_named.insert((f.name.clone(), f.sha256.clone()));
            seen_hashes.insert(f.sha256);
        }
    }
    let mut report = ImportReport::default();
    let mut writer = store.object_writer(clean_schema())?;
    let mut rejects = Rejects { path: opts.rejects.clone(), file: None };
    let mut builder = RawBatchBuilder::new();
    for entry in entries {
        let sha256 = file_sha256(&entry.path)?;
        let already = match entry.format {
            Format::Text { .. } => seen_named.contains(&(entry.name.clone(), sha256.clone())),
            _ => seen_hashes.contains(&sha256),
        };
        if already {
            report.skipped.push((entry.name.clone(), sha256));
            continue;
        }
        let mut file =
            ImportedFile { name: entry.name.clone(), sha256: sha256.clone(), rows: 0, rejected: 0 };
        let mut row = 0i64;
        let mut take = |r: Row| -> Result<()> {
            let at = Provenance { partition: IMPORTED_PARTITION, offset: row, timestamp_ms: None };
            row += 1;
            let (reason, detail, bytes) = match r {
                Row::Refused { reason, detail, raw } => (reason, detail, raw.into_bytes()),
                Row::Object(mut object) => {
                    let id = format!("{}-{}", &sha256[..12], at.offset);
                    object.entry("id").or_insert(Value::String(id));
                    let bytes = serde_json::to_vec(&Value::Object(object)).expect("JSON serializes");
                    match ingest::decode::decode(None, Some(&bytes), at, opts.max_bytes) {
                        Ok(record) => {
                            builder.push(&record, at);
                            file.rows += 1;
                            if builder.rows() >= BATCH_ROWS {
                                writer.write(&builder.finish())?;
                            }
                            return Ok(());
                        }
                        Err(rejection) => (rejection.reason, rejection.detail, bytes),
                    }
                }
            };
            rejects.write(&entry.name, at.offset, reason, &detail, &bytes)?;
            *report.rejected.entry(reason.code().to_string()).or_default() += 1;
            file.rejected += 1;
            Ok(())
        };
        let ignored = match &entry.format {
            Format::JsonLines => {
                read_json_lines(&entry.path, &mut take)?;
                BTreeSet::new()
            }
            Format::Csv => read_csv(&entry.path, &mut take)?,
            Format::Parquet => read_parquet(&entry.path, &mut take)?,
            Format::Text { label } => {
                take(text_file(&entry.path, &entry.name, label.as_deref())?)?;
                BTreeSet::new()
            }
        };
        report.ignored_columns.extend(ignored);
        report.rows += file.rows;
        seen_hashes.insert(file.sha256.clone());
        seen_named.insert((file.name.clone(), file.sha256.clone()));
        report.files.push(file);
    }
    if builder.rows() > 0 {
        writer.write(&builder.finish())?;
    }
    report.rejects = rejects.file.is_some().then(|| rejects.path.clone());
    if let Some(f) = rejects.file.as_mut() {
        f.flush().map_err(Error::io(&rejects.path))?;
    }
    if report.files.is_empty() {
        return Ok(report);
    }
    let draft = Draft {
        dataset: opts.raw_dataset.clone(),
        spec_hash: RAW_SPEC.to_string(),
        schema: clean_schema(),
        parts: vec![DraftPart { consumed: None, file: writer.finish()? }],
        tags: Vec::new(),
        replace_files: false,
        raw: None,
        imported: report.files.clone(),
    };
    report.raw = store.commit(draft, Utc::now())?.manifest;
    Ok(report)
}

/// The refused rows' file, opened on the first one.
struct Rejects {
    path: PathBuf,
    file: Option<std::io::BufWriter<File>>,
}

impl Rejects {
    fn write(
        &mut self,
        source: &str,
        row: i64,
        reason: DeadReason,
        detail: &str,
        value: &[u8],
    ) -> Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
            }
            let f = File::create(&self.path).map_err(Error::io(&self.path))?;
            self.file = Some(std::io::BufWriter::new(f));
        }
        let line = serde_json::json!({
            "source": source,
            "row": row,
            "reason": reason.code(),
            "detail": detail,
            "value": String::from_utf8_lossy(value),
        });
        let f = self.file.as_mut().expect("just opened");
        writeln!(f, "{line}").map_err(Error::io(&self.path))
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The record fields a CSV or Parquet column may fill.
const FIELDS: [&str; 4] = ["id", "text", "label", "source"];

/// Each line a record as on Kafka: a JSON object (or plain text); unreadable lines are refused.
fn read_json_lines(path: &Path, each: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
    let f = BufReader::new(File::open(path).map_err(Error::io(path))?);
    for line in f.split(b'\n') {
        let line = line.map_err(Error::io(path))?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                let raw = String::from_utf8_lossy(line).into_owned();
                each(Row::Refused {
                    reason: DeadReason::InvalidUtf8,
                    detail: format!("line is not UTF-8: {e}"),
                    raw,
                })?;
                continue;
            }
        };
        let raw = text.to_string();
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => each(Row::Object(object))?,
            Ok(other) => each(Row::Refused {
                reason: DeadReason::NotAnObject,
                detail: format!("line is {}, expected a JSON object", ingest::decode::kind(&other)),
                raw,
            })?,
            Err(e) => each(Row::Refused {
                reason: DeadReason::MalformedJson,
                detail: format!("invalid JSON: {e}"),
                raw,
            })?,
        }
    }
    Ok(())
}

/// A CSV file with a header row; returns the columns that are not record fields. A row whose
/// field count differs from the header's is refused as `bad_field`, one with a field that is
/// not UTF-8 as `invalid_utf8`.
fn read_csv(path: &Path, each: &mut dyn FnMut(Row) -> Result<()>) -> Result<BTreeSet<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
    let headers: Vec<String> = reader
        .byte_headers()
        .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if !headers.iter().any(|h| h == "text") {
        return Err(Error::Spec(format!(
            "{}: the CSV header has no `text` column (columns: {})",
            path.display(),
            headers.join(", ")
        )));
    }
    let ignored = headers.iter().filter(|h| !FIELDS.contains(&h.as_str())).cloned().collect();
    for record in reader.byte_records() {
        let record = record.map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
        let raw =
            || record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>().join(",");
        if record.len() != headers.len() {
            let detail = format!("{} fields where the header has {}", record.len(), headers.len());
            each(Row::Refused { reason: DeadReason::BadField, detail, raw: raw() })?;
            continue;
        }
        let mut object = Map::new();
        let mut bad = None;
        for (name, value) in headers.iter().zip(record.iter()) {
            if !FIELDS.contains(&name.as_str()) || (value.is_empty() && name != "text") {
                continue;
            }
            match std::str::from_utf8(value) {
                Ok(v) => {
                    object.insert(name.clone(), Value::String(v.to_string()));
                }
                Err(_) => bad = Some(format!("column `{name}` is not UTF-8")),
            }
        }
        match bad {
            Some(detail) => each(Row::Refused { reason: DeadReason::InvalidUtf8, detail, raw: raw() })?,
            None => each(Row::Object(object))?,
        }
    }
    Ok(ignored)
}

/// A Parquet file whose `text` column is a string; `id`, `label` and `source` are read when
/// present (strings, or integers for `id`).
fn read_parquet(path: &Path, each: &mut dyn FnMut(Row) -> Result<()>) -> Result<BTreeSet<String>> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let file = File::open(path).map_err(Error::io(path))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::Spec(format!("{}: not a Parquet file: {e}", path.display())))?;
    let schema = builder.schema().clone();
    let ignored =
        schema.fields().iter().map(|f| f.name().clone()).filter(|n| !FIELDS.contains(&n.as_str())).collect();
    let text_ok = schema
        .field_with_name("text")
        .is_ok_and(|f| matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
    if !text_ok {
        return Err(Error::Spec(format!(
            "{}: no string column `text` in the Parquet schema",
            path.display()
        )));
    }
    for batch in builder.with_batch_size(BATCH_ROWS).build()? {
        let batch: RecordBatch = batch?;
        let strings: Vec<(&str, arrow::array::ArrayRef)> = FIELDS
            .iter()
            .filter_map(|name| {
                let column = batch.column_by_name(name)?;
                let cast = match column.data_type() {
                    DataType::Utf8 => column.clone(),
                    DataType::Int64 | DataType::Int32 | DataType::LargeUtf8 | DataType::Utf8View => {
                        arrow::compute::cast(column, &DataType::Utf8).ok()?
                    }
                    _ => return None,
                };
                Some((*name, cast))
            })
            .collect();
        for i in 0..batch.num_rows() {
            let mut object = Map::new();
            for (name, column) in &strings {
                let column = column.as_string::<i32>();
                if column.is_valid(i) {
                    object.insert(name.to_string(), Value::String(column.value(i).to_string()));
                }
            }
            each(Row::Object(object))?;
        }
    }
    Ok(ignored)
}

/// One text file: its content is the text, its path (relative to the folder) the id.
fn text_file(path: &Path, name: &str, label: Option<&str>) -> Result<Row> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let raw = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let detail = format!("the file is not UTF-8: {}", e.utf8_error());
            return Ok(Row::Refused { reason: DeadReason::InvalidUtf8, detail, raw });
        }
    };
    let mut object = Map::new();
    object.insert("id".into(), Value::String(name.to_string()));
    object.insert("text".into(), Value::String(text));
    if let Some(label) = label {
        object.insert("label".into(), Value::String(label.to_string()));
    }
    Ok(Row::Object(object))
}

/// The files `source` names, downloaded first when it is a URL (the downloads are removed when
/// the second value drops).
async fn entries(store: &SnapshotStore, source: &str) -> Result<(Vec<Entry>, Option<TempDir>)> {
    if source.contains("://") && !source.starts_with("file://") {
        let dir = TempDir::new(store)?;
        let files = crate::remote::download(source, dir.path()).await?;
        let mut out = Vec::new();
        for (name, path) in files {
            out.push(match source.ends_with('/') {
                // A prefix is a folder: its objects are text files labelled by their folder.
                true => {
                    let label = name
                        .rsplit_once('/')
                        .map(|(dir, _)| dir.rsplit('/').next().unwrap_or(dir).to_string());
                    Entry { name, path, format: Format::Text { label } }
                }
                false => entry_for(source.to_string(), path)?,
            });
        }
        if out.is_empty() {
            return Err(Error::Spec(format!("{source}: no object there")));
        }
        return Ok((out, Some(dir)));
    }
    let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
    let meta = std::fs::metadata(&path).map_err(Error::io(&path))?;
    if !meta.is_dir() {
        return Ok((vec![entry_for(source.to_string(), path)?], None));
    }
    let mut out = Vec::new();
    walk(&path, &path, &mut out)?;
    if out.is_empty() {
        return Err(Error::Spec(format!("{}: the folder holds no files", path.display())));
    }
    Ok((out, None))
}

/// A folder's files, sorted, each labelled with the folder it is in (none at the top).
fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    children.sort();
    for child in children {
        if child.is_dir() {
            walk(root, &child, out)?;
        } else if child.is_file() {
            let name = child.strip_prefix(root).unwrap_or(&child).to_string_lossy().replace('\\', "/");
            let label = child
                .parent()
                .filter(|p| *p != root)
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            out.push(Entry { name, path: child, format: Format::Text { label } });
        }
    }
    Ok(())
}

fn entry_for(name: String, path: PathBuf) -> Result<Entry> {
    let lower = name.to_ascii_lowercase();
    let format = if lower.ends_with(".csv") {
        Format::Csv
    } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
        Format::Parquet
    } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") || lower.ends_with(".json") {
        Format::JsonLines
    } else {
        return Err(Error::Spec(format!(
            "{name}: unknown file type (import .csv with a header, .parquet, .jsonl / .ndjson, or a folder of text files)"
        )));
    };
    Ok(Entry { name, path, format })
}

/// A directory under the store's `tmp/` for downloads, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(store: &SnapshotStore) -> Result<TempDir> {
        let dir = store.root().join("tmp").join(format!("import-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn opts(dir: &Path) -> ImportOptions {
        ImportOptions { raw_dataset: "files".into(), max_bytes: 1 << 20, rejects: dir.join("rejects.jsonl") }
    }

    /// (id, text, label) of every row of a version.
    fn rows(store: &SnapshotStore, m: &Manifest) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        for b in store.read(m) {
            let b = b.unwrap();
            let col = |i: usize| b.column(i).as_any().downcast_ref::<StringArray>().unwrap().clone();
            let (ids, texts, labels) = (col(0), col(1), col(2));
            for i in 0..b.num_rows() {
                let label = labels.is_valid(i).then(|| labels.value(i).to_string());
                out.push((ids.value(i).to_string(), texts.value(i).to_string(), label));
            }
        }
        out
    }

    fn reasons(path: &Path) -> Vec<(String, i64)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["reason"].as_str().unwrap().to_string(), v["row"].as_i64().unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn csv_rows_are_validated_and_a_second_import_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let csv = dir.path().join("texts.csv");
        std::fs::write(
            &csv,
            "id,text,label,extra\nа1,\"Hello, world\",ham,x\n,no id here,spam,y\nb3,   ,ham,z\nb4,short row\nb5,\"multi\nline\",ham,w\n",
        )
        .unwrap();
        let r = import(&store, csv.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert_eq!((r.rows, r.files.len()), (3, 1));
        assert_eq!(r.rejected, BTreeMap::from([("bad_field".into(), 1), ("blank_text".into(), 1)]));
        assert_eq!(r.ignored_columns, BTreeSet::from(["extra".to_string()]));
        let m = r.raw.expect("committed");
        assert_eq!((m.spec_hash.as_str(), m.added.imported.len(), m.added.consumed.len()), (RAW_SPEC, 1, 0));
        let got = rows(&store, &m);
        let sha = &r.files[0].sha256;
        assert_eq!(got[0], ("а1".into(), "Hello, world".into(), Some("ham".into())));
        assert_eq!(got[1], (format!("{}-1", &sha[..12]), "no id here".into(), Some("spam".into())));
        assert_eq!(got[2].1, "multi\nline");
        assert_eq!(
            reasons(&dir.path().join("rejects.jsonl")),
            [("blank_text".into(), 2), ("bad_field".into(), 3)]
        );
        // Once imported, the same bytes add nothing, under any name.
        let copy = dir.path().join("copy.csv");
        std::fs::copy(&csv, &copy).unwrap();
        let again = import(&store, copy.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert!(again.raw.is_none() && again.files.is_empty());
        assert_eq!(again.skipped.len(), 1);
        assert_eq!(store.versions("files").unwrap().len(), 1);
    }

    #[tokio::test]
    async fn json_lines_parquet_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let jsonl = dir.path().join("a.jsonl");
        std::fs::write(&jsonl, "{\"id\":\"j1\",\"text\":\"first\"}\n\n[1,2]\n{\"text\": 7}\nnot json\n{\"text\":\"second\",\"label\":\"spam\"}\n")
            .unwrap();
        let r = import(&store, jsonl.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert_eq!(r.rows, 2);
        assert_eq!(
            r.rejected,
            BTreeMap::from([
                ("malformed_json".into(), 1),
                ("not_an_object".into(), 1),
                ("text_not_string".into(), 1)
            ])
        );

        let parquet = dir.path().join("b.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![Some(10), None, Some(12)])),
                Arc::new(StringArray::from(vec![Some("from parquet"), Some("no id"), None])),
                Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0, 3.0])),
            ],
        )
        .unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&parquet).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let r = import(&store, parquet.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert_eq!((r.rows, r.rejected.get("missing_text")), (2, Some(&1)));
        assert_eq!(r.ignored_columns, BTreeSet::from(["score".to_string()]));
        let got = rows(&store, r.raw.as_ref().unwrap());
        let ids: Vec<&str> = got.iter().rev().take(2).map(|(id, _, _)| id.as_str()).collect();
        assert!(ids.contains(&"10"), "{got:?}");

        let folder = dir.path().join("mail");
        for (label, name, text) in
            [("ham", "1.txt", "hello"), ("spam", "2.txt", "buy now"), ("spam", "3.txt", "")]
        {
            std::fs::create_dir_all(folder.join(label)).unwrap();
            std::fs::write(folder.join(label).join(name), text).unwrap();
        }
        std::fs::write(folder.join("ham").join("4.txt"), [0xff, 0xfe]).unwrap();
        let r = import(&store, folder.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert_eq!(r.files.len(), 4);
        assert_eq!(
            (r.rows, r.rejected.get("blank_text"), r.rejected.get("invalid_utf8")),
            (2, Some(&1), Some(&1))
        );
        let got = rows(&store, r.raw.as_ref().unwrap());
        let tail: Vec<_> = got.iter().rev().take(2).rev().cloned().collect();
        assert_eq!(
            tail,
            [
                ("ham/1.txt".into(), "hello".into(), Some("ham".into())),
                ("spam/2.txt".into(), "buy now".into(), Some("spam".into()))
            ]
        );
        // A new file in the folder: only it is imported.
        std::fs::write(folder.join("ham").join("5.txt"), "new mail").unwrap();
        let r = import(&store, folder.to_str().unwrap(), &opts(dir.path())).await.unwrap();
        assert_eq!((r.files.len(), r.skipped.len(), r.rows), (1, 4, 1));
        // Unknown types and a CSV without `text` are refused whole.
        let other = dir.path().join("x.xlsx");
        std::fs::write(&other, "x").unwrap();
        let e = import(&store, other.to_str().unwrap(), &opts(dir.path())).await.unwrap_err().to_string();
        assert!(e.contains("unknown file type"), "{e}");
        let bad = dir.path().join("no-text.csv");
        std::fs::write(&bad, "id,body\n1,hi\n").unwrap();
        let e = import(&store, bad.to_str().unwrap(), &opts(dir.path())).await.unwrap_err().to_string();
        assert!(e.contains("no `text` column"), "{e}");
    }
}
