//! The Rust side of `scripts/bench/drift` (run it through that script).
//!
//! `bench_drift DIR N` writes N reference and N live values (N(0,1) and N(0.05, 1.1²), fixed
//! seed) to DIR/reference.f64 and DIR/live.f64 for the Python peer, then prints JSON lines:
//! PSI + exact KS of the two samples (one call each, sorting included), the streaming update
//! rate of a live feature summary and of a whole window (4 features per scored record), and
//! |D_binned − D_exact| of the bounded summary.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use drift::profile::{DEFAULT_BINS, FeatureProfile, ReferenceProfile};
use drift::stats::compare_samples;
use drift::window::{FeatureSummary, Watch, Window};
use schemas::config::DriftConfig;
use schemas::records::{ScoreStatus, ScoredRecord};

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box–Muller.
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn report(what: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({ "bench": "drift", "what": what });
    line.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
    println!("{line}");
}

fn write(path: &std::path::Path, values: &[f64]) -> Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().context("usage: bench_drift DIR [N]")?);
    let n: usize = args.get(1).map_or(Ok(1_000_000), |s| s.parse()).context("N")?;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let reference: Vec<f64> = (0..n).map(|_| rng.normal(0.0, 1.0)).collect();
    let live: Vec<f64> = (0..n).map(|_| rng.normal(0.05, 1.1)).collect();
    write(&dir.join("reference.f64"), &reference)?;
    write(&dir.join("live.f64"), &live)?;

    // PSI (reference quantile bins) + exact two-sample KS, as one would call scipy + numpy.
    let started = Instant::now();
    let (value, ks) = compare_samples(&reference, &live, DEFAULT_BINS).context("compare")?;
    let secs = started.elapsed().as_secs_f64();
    report(
        "driftwood PSI + KS (exact D, asymptotic p)",
        serde_json::json!({
            "n": n, "secs": secs, "psi": value, "ks_d": ks.d, "ks_p": ks.p,
        }),
    );

    // Streaming: one feature summary (PSI bins + the 1000-quantile KS grid), value by value.
    let profile = FeatureProfile::build(&reference, DEFAULT_BINS).context("profile")?;
    let mut summary = FeatureSummary::new(&profile);
    let started = Instant::now();
    for &v in &live {
        summary.observe(v);
    }
    let secs = started.elapsed().as_secs_f64();
    let binned = summary.ks().context("binned ks")?;
    report(
        "driftwood streaming feature summary",
        serde_json::json!({
            "n": n, "secs": secs, "events_per_sec": n as f64 / secs,
            "ks_d_binned": binned.d, "ks_d_exact": ks.d, "abs_error": (binned.d - ks.d).abs(),
            "error_bound": binned.error_bound, "psi": summary.psi(),
        }),
    );

    // A whole window: scored records with 4 features each, as the monitor sees them.
    let names = ["chars", "tokens", "non_letter_share", "confidence"];
    let rows: Vec<BTreeMap<String, f64>> = (0..10_000)
        .map(|i| names.iter().map(|k| (k.to_string(), reference[i * 7 % n].abs() * 100.0)).collect())
        .collect();
    let records: Vec<ScoredRecord> = (0..n.min(200_000))
        .map(|i| ScoredRecord {
            v: 1,
            id: String::new(),
            status: ScoreStatus::Scored,
            reason: None,
            model: "m".into(),
            model_version: 1,
            label: Some("ham".into()),
            truth: None,
            probabilities: BTreeMap::new(),
            features: names.iter().map(|k| (k.to_string(), live[i].abs() * 100.0)).collect(),
            partition: 0,
            offset: i as i64,
            scored_at: 0,
            latency_us: 0,
        })
        .collect();
    let watch = Watch {
        model: "m".into(),
        version: 1,
        reference: ReferenceProfile::build(rows.iter()).with_classes(["ham", "spam"]),
        reference_accuracy: None,
    };
    let mut window = Window::new(watch, DriftConfig { window: 10_000, ..DriftConfig::default() });
    let started = Instant::now();
    let mut windows = 0;
    for r in &records {
        windows += usize::from(window.observe(r).is_some());
    }
    let secs = started.elapsed().as_secs_f64();
    report(
        "driftwood window (4 features + class per record)",
        serde_json::json!({
            "n": records.len(), "secs": secs, "events_per_sec": records.len() as f64 / secs, "windows": windows,
        }),
    );
    Ok(())
}
