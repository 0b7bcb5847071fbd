//! What the CLI prints: each function formats one command's result as text (stdout), so the
//! wording lives in one place and is tested without running a command.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::SecondsFormat;
use stream::store::Manifest;

/// `committed <dataset> v<seq> <id>: +N rows, M rows in all`, one line per commit.
pub fn commits(commits: &[Manifest]) -> String {
    let mut s = String::new();
    for m in commits {
        let _ = writeln!(
            s,
            "committed {} v{} {}: +{} rows, {} rows in all",
            m.dataset,
            m.seq,
            m.short_id(),
            m.added.rows,
            m.rows
        );
    }
    s
}

/// The text snapshot job's summary.
pub fn snapshot(report: &stream::job::SnapshotReport, raw_topic: &str) -> String {
    let mut s = commits(&report.commits);
    if report.commits.is_empty() {
        let _ = writeln!(s, "nothing new on {raw_topic}");
    }
    let dead: u64 = report.dead.values().sum();
    let _ = writeln!(
        s,
        "read {} records, {} dropped by cleaning, {} duplicates, {} dead letters {:?}",
        report.records, report.filtered, report.duplicates, dead, report.dead
    );
    s
}

/// The scored snapshot job's summary.
pub fn scored_snapshot(report: &stream::scored::ScoredReport) -> String {
    let mut s = commits(&report.commits);
    let _ = writeln!(
        s,
        "read {} scored records, {} duplicates, {} dead letters",
        report.records, report.duplicates, report.dead
    );
    s
}

/// `data list`: one dataset's versions with their tags (named tags and manifest tags).
pub fn versions(dataset: &str, versions: &[Manifest], tags: &BTreeMap<String, String>) -> String {
    let mut s = format!("dataset {dataset}\n");
    let _ = writeln!(
        s,
        "  {:>4}  {:12}  {:25}  {:>9}  {:>9}  {:12}  tags",
        "seq", "id", "created", "rows", "added", "parent"
    );
    for m in versions {
        let mut t: Vec<&str> = tags.iter().filter(|(_, id)| **id == m.id).map(|(t, _)| t.as_str()).collect();
        t.extend(m.tags.iter().map(String::as_str));
        let _ = writeln!(
            s,
            "  {:>4}  {:12}  {:25}  {:>9}  {:>9}  {:12}  {}",
            format!("v{}", m.seq),
            m.short_id(),
            m.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            m.rows,
            format!("+{}", m.added.rows),
            m.parent.as_deref().map_or("-", |p| &p[..12]),
            t.join(",")
        );
    }
    s
}

/// `data diff`: the counts, then example ids per kind.
pub fn diff(a: &Manifest, b: &Manifest, diff: &stream::diff::Diff) -> String {
    let from = if a.dataset == b.dataset { String::new() } else { format!("{}@", b.dataset) };
    let mut s = format!(
        "{} v{} → {from}v{}: +{} added, -{} removed, ~{} changed, {} unchanged\n",
        a.dataset, a.seq, b.seq, diff.added, diff.removed, diff.changed, diff.unchanged
    );
    for (what, ids) in [
        ("added", &diff.examples_added),
        ("removed", &diff.examples_removed),
        ("changed", &diff.examples_changed),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(s, "  {what}: {}", ids.join(", "));
        }
    }
    s
}

/// `train`: the run, the registered version, the rows per split and the test metrics.
pub fn trained(out: &trainer::train::TrainOutcome) -> String {
    let e = &out.evaluation;
    let mut s = format!(
        "run {}: trained {} v{} on {} ({} train / {} validation / {} test rows) in {:.1}s\n",
        out.run.run_id,
        out.model.name,
        out.model.version,
        &out.model.data_version[..12],
        out.rows[0],
        out.rows[1],
        out.rows[2],
        out.seconds
    );
    let _ = writeln!(s, "test accuracy {:.4}, macro F1 {:.4}", e.accuracy, e.macro_f1);
    for (label, c) in &e.per_class {
        let _ = writeln!(
            s,
            "  {label:>12}: precision {:.4} recall {:.4} f1 {:.4} (n={})",
            c.precision, c.recall, c.f1, c.support
        );
    }
    s
}

/// `tune`: trials finished and failed, and the best by `metric`.
pub fn tuned(out: &trainer::tune::TuneOutcome, metric: &str) -> String {
    let mut s = format!(
        "tuning run {}: {} trials finished, {} failed\n",
        out.parent.run_id,
        out.trials.len(),
        out.failed.len()
    );
    for (params, why) in &out.failed {
        let _ = writeln!(s, "  failed {params:?}: {why}");
    }
    if let Some(best) = out.best.map(|b| &out.trials[b]) {
        let _ = writeln!(s, "best: run {} {metric} {:.4}", best.run.run_id, best.run.metrics[metric]);
    }
    s
}

/// `models list`: one model's versions with their aliases.
pub fn model_versions(
    name: &str,
    versions: &[metastore::ModelVersion],
    aliases: &BTreeMap<String, u32>,
) -> String {
    let mut s = format!("model {name}\n");
    for mv in versions {
        let a: Vec<&str> =
            aliases.iter().filter(|(_, v)| **v == mv.version).map(|(a, _)| a.as_str()).collect();
        let _ = writeln!(
            s,
            "  v{:<3} {:8} data {}  test_accuracy {:.4}  run {}  {}",
            mv.version,
            mv.family,
            &mv.data_version[..12],
            mv.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN),
            mv.run_id,
            a.join(",")
        );
    }
    s
}

/// `runs list`: one line per run.
pub fn runs(runs: &[metastore::Run]) -> String {
    let mut s = String::new();
    for r in runs {
        let _ = writeln!(
            s,
            "{}  {:10}  {:8}  {}  test_accuracy {:.4}",
            r.run_id,
            r.experiment,
            format!("{:?}", r.status).to_lowercase(),
            r.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            r.metrics.get("test_accuracy").copied().unwrap_or(f64::NAN)
        );
    }
    s
}

/// The drift monitor's line for one closed window (no newline).
pub fn drift_window(r: &drift::window::WindowReport, decision: &drift::decider::Decision) -> String {
    let psi: Vec<String> = r.psi.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
    let ks: Vec<String> = r.ks.iter().map(|(k, v)| format!("{k} {:.3}", v.d)).collect();
    let mut flag = String::new();
    if !r.signals.is_empty() {
        let names: Vec<String> = r.signals.iter().map(|s| format!("{} {}", s.feature, s.statistic)).collect();
        flag = format!("  drifting: {}", names.join(", "));
    }
    if decision.retrain {
        flag.push_str("  → RetrainRequested");
    }
    format!(
        "v{} window {:>3} ({} records): PSI {} | KS D {}{}",
        r.version,
        r.index,
        r.records,
        psi.join(", "),
        ks.join(", "),
        flag
    )
}

/// `keys list`: each key with the data keys it seals, then sealing keys the keyring lacks.
pub fn keys(keyring: &stream::crypto::Keyring, usage: &BTreeMap<String, u64>) -> String {
    let mut s = String::new();
    for id in keyring.ids() {
        let active = if id == keyring.active() { " (active)" } else { "" };
        let sealed = usage.get(id).copied().unwrap_or_default();
        let _ = writeln!(s, "{id}{active}: seals {sealed} data keys");
    }
    for (id, n) in usage.iter().filter(|(id, _)| !keyring.ids().any(|k| k == id.as_str())) {
        let _ = writeln!(s, "{id} (NOT IN THE KEYRING): seals {n} data keys, unreadable");
    }
    s
}

/// `data reprocess`: what was read, what was kept, the version, the rate.
pub fn reprocess(
    raw: &Manifest,
    spec: &str,
    r: &stream::derive::CatchUp,
    took: std::time::Duration,
) -> String {
    let secs = took.as_secs_f64().max(1e-9);
    let mb = r.raw_text_bytes as f64 / 1e6;
    let mut s = format!(
        "read {} raw rows ({mb:.1} MB of text) from {} v{} {} with spec {}: {} dropped by cleaning, {} duplicates\n",
        r.raw_rows,
        raw.dataset,
        raw.seq,
        raw.short_id(),
        &spec[..12.min(spec.len())],
        r.filtered,
        r.duplicates
    );
    match &r.manifest {
        Some(m) => s.push_str(&commits(std::slice::from_ref(m))),
        None => s.push_str("already up to date with that raw version: nothing committed\n"),
    }
    let _ = writeln!(s, "{secs:.1} s, {:.1} MB/s of raw text", mb / secs);
    s
}

/// `lineage`: one step per line, from the prediction back to the spec.
pub fn lineage(l: &trainer::lineage::Lineage) -> String {
    let short = |id: &str| id[..12.min(id.len())].to_string();
    let offsets = |sources: &[stream::store::SourceOffsets]| {
        sources
            .iter()
            .map(|s| format!("{}[{}]:{}..{}", s.topic, s.partition, s.first, s.next))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = String::new();
    if let Some(p) = &l.prediction {
        let _ = writeln!(
            s,
            "prediction  {} → {} (scored version {}; raw record partition {} offset {}{})",
            p.id,
            p.label.as_deref().unwrap_or("skipped"),
            short(&p.scored_version),
            p.raw_partition,
            p.raw_offset,
            p.raw_version.as_deref().map(|v| format!(", raw version {}", short(v))).unwrap_or_default()
        );
    }
    let m = &l.model;
    let _ = writeln!(
        s,
        "model       {} v{} ({}), weights sha256 {}",
        m.name,
        m.version,
        m.family,
        short(&m.artifact_sha256)
    );
    let metric = |k: &str| l.run.metrics.get(k).map(|v| format!(" {k}={v:.4}")).unwrap_or_default();
    let _ = writeln!(
        s,
        "run         {} ({:?}{}{})",
        l.run.run_id,
        l.run.status,
        metric("test_accuracy"),
        metric("test_macro_f1")
    );
    match (&l.data, &l.raw) {
        (None, _) => {
            let _ = writeln!(s, "data        {} (not in this snapshot store)", short(&l.model.data_version));
        }
        (Some(d), raw) => {
            let _ = writeln!(
                s,
                "data        {} v{} {}: {} rows, spec {}",
                d.dataset,
                d.seq,
                short(&d.id),
                d.rows,
                short(&d.spec_hash)
            );
            let _ = match raw {
                Some(r) => {
                    let expired = match r.expired_rows {
                        0 => String::new(),
                        n => format!(" ({n} expired by retention)"),
                    };
                    let from = match (r.sources.is_empty(), r.imported.len()) {
                        (false, 0) => offsets(&r.sources),
                        (true, n) => format!("{n} imported files"),
                        (false, n) => format!("{} and {n} imported files", offsets(&r.sources)),
                    };
                    let _ = writeln!(
                        s,
                        "raw data    {} v{} {}: {} records{expired} from {from}",
                        r.dataset,
                        r.seq,
                        short(&r.id),
                        r.rows
                    );
                    r.imported.iter().try_for_each(|f| {
                        writeln!(s, "            {} sha256 {} ({} rows)", f.name, short(&f.sha256), f.rows)
                    })
                }
                None => writeln!(
                    s,
                    "raw data    none kept (the version predates raw data); offsets {}",
                    offsets(&d.sources)
                ),
            };
        }
    }
    let _ = writeln!(s, "spec        {}", l.spec.hash);
    match &l.spec.toml {
        Some(t) => t.lines().for_each(|line| {
            let _ = writeln!(s, "            {line}");
        }),
        None => s.push_str("            (not kept in this store)\n"),
    }
    s
}

/// `data import`: the files imported and skipped, the rows, the refused rows and where they are.
pub fn import(r: &stream::import::ImportReport) -> String {
    let mut s = String::new();
    for f in &r.files {
        let _ = writeln!(
            s,
            "imported {}: {} rows, {} refused (sha256 {})",
            f.name,
            f.rows,
            f.rejected,
            &f.sha256[..12]
        );
    }
    for (name, hash) in &r.skipped {
        let _ = writeln!(s, "skipped {name}: already imported (sha256 {})", &hash[..12]);
    }
    if !r.ignored_columns.is_empty() {
        let columns: Vec<&str> = r.ignored_columns.iter().map(String::as_str).collect();
        let _ = writeln!(s, "ignored columns: {}", columns.join(", "));
    }
    let refused: u64 = r.rejected.values().sum();
    let _ = writeln!(s, "{} rows imported, {refused} refused {:?}", r.rows, r.rejected);
    if let Some(path) = &r.rejects {
        let _ = writeln!(s, "refused rows, with their reasons: {}", path.display());
    }
    match &r.raw {
        Some(m) => s.push_str(&commits(std::slice::from_ref(m))),
        None => s.push_str("nothing new to import\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lists_every_key_and_every_unknown_sealer() -> anyhow::Result<()> {
        let mut ring = stream::crypto::Keyring::generate("old")?;
        ring.add("new")?;
        let usage = BTreeMap::from([("old".to_string(), 3), ("gone".to_string(), 2)]);
        assert_eq!(
            keys(&ring, &usage),
            "new (active): seals 0 data keys\nold: seals 3 data keys\n\
             gone (NOT IN THE KEYRING): seals 2 data keys, unreadable\n"
        );
        Ok(())
    }

    #[test]
    fn an_empty_snapshot_says_nothing_is_new_and_sums_dead_letters() {
        let report = stream::job::SnapshotReport {
            records: 5,
            filtered: 1,
            duplicates: 2,
            dead: BTreeMap::from([("invalid_utf8".to_string(), 3), ("no_text".to_string(), 4)]),
            ..Default::default()
        };
        assert_eq!(
            snapshot(&report, "p.text.raw"),
            "nothing new on p.text.raw\nread 5 records, 1 dropped by cleaning, 2 duplicates, 7 dead letters \
             {\"invalid_utf8\": 3, \"no_text\": 4}\n"
        );
    }
}
