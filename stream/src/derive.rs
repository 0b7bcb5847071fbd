//! Processed data derived from raw data: cleaning the raw versions a processed dataset does not
//! hold yet into one new version linked to the raw version it reached.
//!
//! ```text
//!  raw dataset      r1 ── r2 ── r3 ── r4          (records as read, spec_hash "raw")
//!                          │                 │
//!  processed       p1 ─── p2 ──────────────► p3   p3.raw = r4: r3's and r4's objects cleaned
//! ```
//!
//! The snapshot job calls [`catch_up`] when the raw dataset is ahead of its dataset (a crash
//! between the two commits, another worker's raw commit, or a new dataset following an old raw
//! history); `driftwood data reprocess` calls it to build a dataset with another spec from a
//! raw version. Each raw object becomes one processed object, read batch by batch, so memory is
//! bounded by a batch whatever the history's size, and the same spec on the same raw version
//! writes the same objects and the same version (its time is the raw version's).

use std::collections::HashSet;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use schemas::records::{clean_schema, col};

use crate::clean::{CleanPlan, content_hash};
use crate::job::strings;
use crate::store::{
    Derivation, Draft, DraftPart, FileEntry, Manifest, RawLink, SnapshotStore, SourceOffsets,
};
use crate::{Error, Result};

/// The raw dataset of `dataset` for `snapshot.raw_dataset = configured`: a name is itself;
/// `auto` is the raw dataset the dataset's latest version was cleaned from, else
/// `<dataset>_raw` — so a dataset made by `data reprocess` follows the raw data it came from,
/// and datasets fed from different topics never share one.
pub fn raw_dataset_for(store: &SnapshotStore, configured: &str, dataset: &str) -> Result<String> {
    if configured != "auto" {
        return Ok(configured.to_string());
    }
    Ok(match store.latest(dataset)?.and_then(|m| m.raw) {
        Some(link) => link.dataset,
        None => format!("{dataset}_raw"),
    })
}

/// What one [`catch_up`] did.
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    /// The version committed; None when the dataset already held `upto`, or when it was
    /// `stale` (another writer committed first: derive again).
    pub manifest: Option<Manifest>,
    pub stale: bool,
    /// Raw rows read and the bytes of their texts.
    pub raw_rows: u64,
    pub raw_text_bytes: u64,
    /// Rows the spec's filters dropped, and duplicates of a text already in the dataset.
    pub filtered: u64,
    pub duplicates: u64,
}

/// Progress of a catch-up: raw rows and text bytes done so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Brings `dataset` up to the raw version `upto`: cleans with `plan` every raw object the
/// dataset's latest version does not hold, deduplicating against `seen` (the content hashes
/// already in the dataset, extended with the new rows' on success), and commits one version
/// linked to `upto`, stamped with `upto`'s time.
///
/// Refused (`Conflict`) when the dataset was cleaned with another spec, is derived from another
/// raw dataset or from a raw version not in `upto`'s history, or predates raw data and overlaps
/// the raw offsets.
pub fn catch_up(
    store: &SnapshotStore,
    plan: &CleanPlan,
    dataset: &str,
    upto: &Manifest,
    seen: &mut HashSet<u64>,
    tags: &[String],
    progress: Progress,
) -> Result<CatchUp> {
    if !upto.is_raw() {
        return Err(Error::Spec(format!(
            "version {} of `{}` is not raw data (spec {})",
            upto.short_id(),
            upto.dataset,
            upto.spec_hash
        )));
    }
    let latest = store.latest(dataset)?;
    if let Some(m) = &latest
        && m.spec_hash != plan.hash()
    {
        return Err(Error::Conflict(format!(
            "dataset `{dataset}` was cleaned with spec {} but this plan is {}; derive into another dataset",
            &m.spec_hash[..12.min(m.spec_hash.len())],
            &plan.hash()[..12]
        )));
    }
    let Some(todo) = pending_raw(store, latest.as_ref(), upto)? else { return Ok(CatchUp::default()) };
    store.save_spec(plan.spec())?;
    let mut out = CatchUp::default();
    let mut added: Vec<u64> = Vec::new();
    let mut parts: Vec<DraftPart> =
        todo.consumed.into_iter().map(|c| DraftPart { consumed: Some(c), file: None }).collect();
    for file in todo.files {
        let mut writer = store.object_writer(clean_schema())?;
        for batch in store.read_files(vec![file]) {
            let batch = batch?;
            let texts = strings(&batch, col::TEXT)?;
            out.raw_rows += batch.num_rows() as u64;
            out.raw_text_bytes += texts.iter().flatten().map(|t| t.len() as u64).sum::<u64>();
            let cleaned = plan.apply(&batch)?;
            let kept = cleaned.kept()?;
            out.filtered += (batch.num_rows() - kept.num_rows()) as u64;
            let kept = if plan.dedupe() {
                let unique = first_of_each_text(&kept, seen, &mut added)?;
                out.duplicates += (kept.num_rows() - unique.true_count()) as u64;
                filter_record_batch(&kept, &unique)?
            } else {
                kept
            };
            writer.write(&kept)?;
            progress(out.raw_rows, out.raw_text_bytes);
        }
        parts.push(DraftPart { consumed: None, file: writer.finish()? });
    }
    let draft = Draft {
        dataset: dataset.to_string(),
        spec_hash: plan.hash().to_string(),
        schema: clean_schema(),
        parts,
        tags: tags.to_vec(),
        replace_files: false,
        imported: vec![],
        raw: Some(Derivation {
            link: RawLink::of(upto),
            after: latest.as_ref().and_then(|m| m.raw.as_ref()).map(|r| r.version.clone()),
        }),
    };
    let committed = store.commit(draft, upto.created_at)?;
    if committed.manifest.is_none() {
        // Nothing of this attempt is in the dataset: forget its texts.
        for h in &added {
            seen.remove(h);
        }
        out.stale = committed.stale;
    }
    out.manifest = committed.manifest;
    Ok(out)
}

/// The raw objects and offset ranges a processed version lacks up to `upto`; None when it
/// holds them all.
struct Todo {
    files: Vec<FileEntry>,
    consumed: Vec<SourceOffsets>,
}

fn pending_raw(store: &SnapshotStore, latest: Option<&Manifest>, upto: &Manifest) -> Result<Option<Todo>> {
    let everything = || Todo { files: upto.files.clone(), consumed: upto.sources.clone() };
    let Some(latest) = latest else { return Ok(Some(everything())) };
    let Some(link) = &latest.raw else {
        // A dataset older than its raw data: the raw records must all come after its offsets.
        let next = latest.resume_offsets_all();
        let overlap = upto
            .sources
            .iter()
            .find(|s| next.get(&(s.topic.clone(), s.partition)).is_some_and(|&n| s.first < n));
        if let Some(s) = overlap {
            return Err(Error::Conflict(format!(
                "dataset `{}` predates raw data and raw dataset `{}` overlaps it ({} partition {} from offset {}); \
                 write its raw data to another raw dataset (snapshot.raw_dataset)",
                latest.dataset, upto.dataset, s.topic, s.partition, s.first
            )));
        }
        return Ok(Some(everything()));
    };
    if link.dataset != upto.dataset {
        return Err(Error::Conflict(format!(
            "dataset `{}` is derived from raw dataset `{}`, not `{}`",
            latest.dataset, link.dataset, upto.dataset
        )));
    }
    if link.version == upto.id {
        return Ok(None);
    }
    let versions = store.versions(&upto.dataset)?;
    let base = versions.iter().find(|v| v.id == link.version).ok_or_else(|| {
        Error::Conflict(format!(
            "dataset `{}` is derived from raw version v{} ({}), which raw dataset `{}` no longer has",
            latest.dataset,
            link.seq,
            &link.version[..12.min(link.version.len())],
            upto.dataset
        ))
    })?;
    if base.seq > upto.seq {
        return Err(Error::Conflict(format!(
            "dataset `{}` already holds raw version v{}, after v{}",
            latest.dataset, base.seq, upto.seq
        )));
    }
    if upto.files.get(..base.files.len()) != Some(&base.files[..]) {
        return Err(Error::Corrupt(format!(
            "raw version v{} of `{}` does not extend v{}: raw datasets only ever add objects",
            upto.seq, upto.dataset, base.seq
        )));
    }
    let consumed = versions
        .iter()
        .filter(|v| v.seq > base.seq && v.seq <= upto.seq)
        .flat_map(|v| v.added.consumed.iter().cloned())
        .collect();
    Ok(Some(Todo { files: upto.files[base.files.len()..].to_vec(), consumed }))
}

/// Which rows to keep: the first of each cleaned text not in `seen`; kept texts are added to
/// `seen` and to `added`.
fn first_of_each_text(
    batch: &RecordBatch,
    seen: &mut HashSet<u64>,
    added: &mut Vec<u64>,
) -> Result<BooleanArray> {
    let texts = strings(batch, col::TEXT)?;
    Ok(texts
        .iter()
        .map(|t| {
            let h = content_hash(t.unwrap_or_default());
            let new = seen.insert(h);
            if new {
                added.push(h);
            }
            Some(new)
        })
        .collect())
}

/// The content hashes of a version's texts (for deduplication across runs).
pub fn content_hashes(store: &SnapshotStore, m: &Manifest) -> Result<HashSet<u64>> {
    let mut out = HashSet::with_capacity(m.rows as usize);
    for batch in store.read(m) {
        let batch = batch?;
        for text in strings(&batch, col::TEXT)?.iter().flatten() {
            out.insert(content_hash(text));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use ingest::batch::{Provenance, RawBatchBuilder, RowSink};
    use schemas::records::RawRecord;

    use super::*;
    use crate::clean::CleanSpec;
    use crate::store::{ExpiryReport, RAW_SPEC};

    /// Commits `texts` to the raw dataset `raw` as records of partition 0 from offset `first`.
    fn raw_commit(store: &SnapshotStore, texts: &[&str], first: i64, minute: u32) -> Manifest {
        let mut b = RawBatchBuilder::new();
        for (i, text) in texts.iter().enumerate() {
            let offset = first + i as i64;
            let r = RawRecord {
                id: format!("id{offset}"),
                text: text.to_string(),
                label: Some("ham".into()),
                source: None,
                ts: Some(0),
                meta: None,
            };
            b.push(&r, Provenance { partition: 0, offset, timestamp_ms: None });
        }
        let mut w = store.object_writer(clean_schema()).unwrap();
        w.write(&b.finish()).unwrap();
        let draft = Draft {
            dataset: "raw".into(),
            spec_hash: RAW_SPEC.into(),
            schema: clean_schema(),
            parts: vec![DraftPart {
                consumed: Some(SourceOffsets {
                    topic: "t".into(),
                    partition: 0,
                    first,
                    next: first + texts.len() as i64,
                }),
                file: w.finish().unwrap(),
            }],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap();
        store.commit(draft, at).unwrap().manifest.expect("accepted")
    }

    fn derive(store: &SnapshotStore, plan: &CleanPlan, dataset: &str, upto: &Manifest) -> CatchUp {
        let mut seen = match store.latest(dataset).unwrap() {
            Some(m) => content_hashes(store, &m).unwrap(),
            None => HashSet::new(),
        };
        catch_up(store, plan, dataset, upto, &mut seen, &[], &mut |_, _| {}).unwrap()
    }

    fn texts(store: &SnapshotStore, m: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        for b in store.read(m) {
            let b = b.unwrap();
            out.extend(strings(&b, col::TEXT).unwrap().iter().map(|t| t.unwrap().to_string()));
        }
        out
    }

    #[test]
    fn a_dataset_follows_its_raw_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
        raw_commit(&store, &["Hello  World", "Note: x\n\ny"], 0, 0);
        let r2 = raw_commit(&store, &["hello world", "   ", "Fresh"], 2, 1);
        let c = derive(&store, &plan, "p", &r2);
        let p1 = c.manifest.expect("committed");
        // The duplicate and the empty text are dropped; the raw version's offsets and time.
        assert_eq!((c.raw_rows, c.duplicates, c.filtered), (5, 1, 1));
        assert_eq!(texts(&store, &p1), ["hello world", "note: x y", "fresh"]);
        assert_eq!(p1.raw, Some(RawLink { dataset: "raw".into(), version: r2.id.clone(), seq: 2 }));
        assert_eq!((p1.sources.clone(), p1.created_at), (r2.sources.clone(), r2.created_at));
        assert_eq!(p1.files.len(), 2, "one processed object per raw object");
        // Up to date: nothing to do.
        assert!(derive(&store, &plan, "p", &r2).manifest.is_none());
        // A third raw version: only its records are cleaned, deduplicated against the dataset.
        let r3 = raw_commit(&store, &["HELLO world", "new"], 5, 2);
        let c = derive(&store, &plan, "p", &r3);
        let p2 = c.manifest.expect("committed");
        assert_eq!((c.raw_rows, c.duplicates, p2.added.rows, p2.rows), (2, 1, 1, 4));
        assert_eq!(p2.sources, r3.sources);
        assert_eq!(p2.raw.as_ref().map(|l| l.seq), Some(3));
        // An older raw version than the dataset holds is refused.
        let r1 = store.resolve("raw", "v1").unwrap();
        let mut seen = HashSet::new();
        let err = catch_up(&store, &plan, "p", &r1, &mut seen, &[], &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("already holds raw version v3"), "{err}");
    }

    #[test]
    fn the_same_spec_on_the_same_raw_version_writes_the_same_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
        raw_commit(&store, &["<p>One</p>", "Two 2"], 0, 0);
        let r = raw_commit(&store, &["Three", "one"], 2, 1);
        let first = derive(&store, &plan, "p", &r).manifest.unwrap();
        std::fs::remove_dir_all(dir.path().join("snapshots/datasets/p")).unwrap();
        let again = derive(&store, &plan, "p", &r).manifest.unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.files, first.files);
        // Another spec: another version of other objects.
        let other = CleanPlan::compile(CleanSpec::first_default()).unwrap();
        let m = derive(&store, &other, "q", &r).manifest.unwrap();
        assert_ne!(m.spec_hash, first.spec_hash);
        // A spec with other steps writes other objects.
        let upper = CleanPlan::compile(
            CleanSpec::from_toml("version = 1\n[[steps]]\nop = \"strip_html\"\n").unwrap(),
        )
        .unwrap();
        let u = derive(&store, &upper, "u", &r).manifest.unwrap();
        assert_ne!(u.files, first.files);
        assert_eq!(texts(&store, &u), [" One ", "Two 2", "Three", "one"]);
    }

    #[test]
    fn a_stale_derivation_commits_nothing_and_forgets_its_texts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
        let r1 = raw_commit(&store, &["a text"], 0, 0);
        let r2 = raw_commit(&store, &["b text"], 1, 1);
        derive(&store, &plan, "p", &r1).manifest.unwrap();
        // Another writer moves the dataset to r2 while this one still derives from r1's state.
        let mut seen = content_hashes(&store, &store.latest("p").unwrap().unwrap()).unwrap();
        derive(&store, &plan, "p", &r2).manifest.unwrap();
        let stale = Draft {
            dataset: "p".into(),
            spec_hash: plan.hash().into(),
            schema: clean_schema(),
            parts: vec![],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: Some(Derivation {
                link: RawLink { dataset: "raw".into(), version: r2.id.clone(), seq: 2 },
                after: Some(r1.id.clone()),
            }),
        };
        let committed = store.commit(stale, Utc::now()).unwrap();
        assert!(committed.stale && committed.manifest.is_none());
        assert_eq!(store.latest("p").unwrap().unwrap().seq, 2);
        let before = seen.len();
        let c = catch_up(&store, &plan, "p", &r2, &mut seen, &[], &mut |_, _| {}).unwrap();
        assert!(c.manifest.is_none() && !c.stale, "already at r2");
        assert_eq!(seen.len(), before);
    }

    #[test]
    fn what_cannot_be_derived_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
        let r = raw_commit(&store, &["a text", "b text"], 0, 0);
        let other = CleanPlan::compile(CleanSpec::first_default()).unwrap();
        derive(&store, &plan, "p", &r).manifest.unwrap();
        let mut seen = HashSet::new();
        let mut run = |plan: &CleanPlan, dataset: &str, upto: &Manifest| {
            catch_up(&store, plan, dataset, upto, &mut seen, &[], &mut |_, _| {}).unwrap_err().to_string()
        };
        assert!(run(&other, "p", &r).contains("was cleaned with spec"));
        let p = store.latest("p").unwrap().unwrap();
        assert!(run(&plan, "q", &p).contains("is not raw data"));
        // A dataset older than raw data whose offsets overlap the raw records'.
        let mut w = store.object_writer(clean_schema()).unwrap();
        w.write(&ingest::batch::batch_of(&[RawRecord {
            id: "old".into(),
            text: "old".into(),
            label: None,
            source: None,
            ts: None,
            meta: None,
        }]))
        .unwrap();
        let legacy = Draft {
            dataset: "legacy".into(),
            spec_hash: plan.hash().into(),
            schema: clean_schema(),
            parts: vec![DraftPart {
                consumed: Some(SourceOffsets { topic: "t".into(), partition: 0, first: 0, next: 1 }),
                file: w.finish().unwrap(),
            }],
            tags: vec![],
            replace_files: false,
            imported: vec![],
            raw: None,
        };
        store.commit(legacy, Utc::now()).unwrap().manifest.unwrap();
        assert!(run(&plan, "legacy", &r).contains("predates raw data"));
    }

    #[test]
    fn retention_expires_raw_objects_once_cleaned_and_readers_skip_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
        let r1 = raw_commit(&store, &["One", "Two"], 0, 0);
        let r2 = raw_commit(&store, &["Three", "Four", "Five"], 2, 1);
        let p1 = derive(&store, &plan, "p", &r2).manifest.unwrap();
        let r3 = raw_commit(&store, &["Six"], 5, 2);
        let day = Some(std::time::Duration::from_secs(86_400)); // the commits are days old

        // A dry run counts and touches nothing; no retention expires nothing.
        let dry = store.gc(true, day).unwrap();
        assert_eq!((dry.raw.expired, dry.raw.rows, dry.raw.not_cleaned, dry.removed), (2, 5, 1, 2));
        assert!(store.gc(false, None).unwrap().raw.objects.is_empty());
        assert_eq!(texts(&store, &r3).len(), 6);

        // r1's and r2's objects were cleaned into p: expired and deleted; r3's was not: kept.
        let gc = store.gc(false, day).unwrap();
        assert_eq!((gc.raw.expired, gc.raw.rows, gc.raw.not_cleaned, gc.removed), (2, 5, 1, 2));
        for f in r2.files.iter() {
            assert!(store.is_expired(&f.hash) && !store.has_object(&f.hash));
            assert_eq!(store.expiry(&f.hash).unwrap().unwrap().retention_secs, 86_400);
        }
        // Manifests are untouched; a raw version reads as the rows it still has.
        assert_eq!(store.resolve("raw", "v3").unwrap(), r3);
        assert_eq!(texts(&store, &r3), ["Six"]);
        assert!(texts(&store, &r1).is_empty());
        store.verify(&r3).unwrap();
        assert_eq!(texts(&store, &p1), ["one", "two", "three", "four", "five"], "processed data stays");
        // The dataset still follows its raw data; reprocessing gets what is kept.
        let p2 = derive(&store, &plan, "p", &r3).manifest.unwrap();
        assert_eq!((p2.rows, p2.raw.as_ref().map(|l| l.seq)), (6, Some(3)));
        let q = derive(&store, &plan, "q", &r3).manifest.unwrap();
        assert_eq!(texts(&store, &q), ["six"]);
        // Once cleaned, r3's object expires too; then nothing is left to expire.
        assert_eq!(store.gc(false, day).unwrap().raw.expired, 1);
        assert_eq!(store.gc(false, day).unwrap().raw, ExpiryReport::default());
    }
}
