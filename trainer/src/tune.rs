//! Hyper-parameter search: grid or random over a space declared in TOML, trials run
//! concurrently within a CPU budget, each trial a child run of one tuning run; the best trial
//! by a validation metric is reported and can be registered.
//!
//! ```toml
//! strategy = "grid"                  # or "random"
//! metric = "validation_accuracy"     # any metric a training run records
//! goal = "max"                       # or "min" (e.g. validation_loss)
//! trials = 8                         # random only: how many draws
//! seed = 7                           # random only
//!
//! [params]
//! learning_rate = [0.05, 0.1, 0.2]   # a list: the values to try
//! hash_bits = [16, 18]
//! weight_decay = { min = 1e-6, max = 1e-3, log = true }   # random only: a range
//! epochs = { min = 3, max = 10, integer = true }
//! ```

use std::collections::BTreeMap;

use chrono::Utc;
use futures::StreamExt;
use ingest::control::ControlProducer;
use schemas::config::TrainConfig;
use serde::Deserialize;
use stream::store::SnapshotStore;

use crate::logreg::SplitMix;
use crate::train::{TrainRequest, Trained, config_from_params, params_of, run_training};
use crate::{Error, Result};
use metastore::{MetadataStore, Run, RunStatus};

/// A search space (the TOML above).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    pub strategy: Strategy,
    #[serde(default = "default_metric")]
    pub metric: String,
    #[serde(default)]
    pub goal: Goal,
    /// Draws of a random search.
    #[serde(default)]
    pub trials: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    pub params: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Grid,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    #[default]
    Max,
    Min,
}

/// The values of one parameter: a list, or (random search) a range.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ParamSpec {
    Values(Vec<toml::Value>),
    Range {
        min: f64,
        max: f64,
        #[serde(default)]
        log: bool,
        #[serde(default)]
        integer: bool,
    },
}

fn default_metric() -> String {
    "validation_accuracy".into()
}

/// Parameters a search may set (the training parameters a run records).
const TUNABLE: &[&str] = &[
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "hash_bits",
    "seed",
    "max_tokens",
    "embedding_dim",
    "hidden_size",
    "finetune_layers",
];

impl SearchSpace {
    pub fn parse(text: &str) -> Result<SearchSpace> {
        let space: SearchSpace =
            toml::from_str(text).map_err(|e| Error::Input(format!("search space: {}", e.message())))?;
        if space.params.is_empty() {
            return Err(Error::Input("search space: [params] names no parameter".into()));
        }
        for (name, spec) in &space.params {
            if !TUNABLE.contains(&name.as_str()) {
                return Err(Error::Input(format!(
                    "search space: `{name}` is not tunable (tunable: {})",
                    TUNABLE.join(", ")
                )));
            }
            match spec {
                ParamSpec::Values(v) if v.is_empty() => {
                    return Err(Error::Input(format!("search space: `{name}` has no values")));
                }
                ParamSpec::Range { .. } if space.strategy == Strategy::Grid => {
                    return Err(Error::Input(format!(
                        "search space: `{name}` is a range; a grid search needs a list of values"
                    )));
                }
                ParamSpec::Range { min, max, log, .. } if min > max || (*log && *min <= 0.0) => {
                    return Err(Error::Input(format!(
                        "search space: `{name}` has an empty or invalid range"
                    )));
                }
                ParamSpec::Values(values) => {
                    for v in values {
                        check_value(name, &value_string(v))?;
                    }
                }
                ParamSpec::Range { .. } => {}
            }
        }
        if space.strategy == Strategy::Random && space.trials.unwrap_or(0) == 0 {
            return Err(Error::Input("search space: a random search needs `trials` > 0".into()));
        }
        Ok(space)
    }

    /// The trials' parameter overrides, in a stable order.
    pub fn trials(&self) -> Vec<BTreeMap<String, String>> {
        match self.strategy {
            Strategy::Grid => {
                let mut out = vec![BTreeMap::new()];
                for (name, spec) in &self.params {
                    let ParamSpec::Values(values) = spec else { unreachable!("checked in parse") };
                    out = out
                        .into_iter()
                        .flat_map(|t| {
                            values.iter().map(move |v| {
                                let mut t = t.clone();
                                t.insert(name.clone(), value_string(v));
                                t
                            })
                        })
                        .collect();
                }
                out
            }
            Strategy::Random => {
                let mut rng = SplitMix(self.seed ^ 0x5eed);
                (0..self.trials.unwrap_or(0))
                    .map(|_| {
                        self.params.iter().map(|(name, spec)| (name.clone(), draw(spec, &mut rng))).collect()
                    })
                    .collect()
            }
        }
    }

    /// Whether `a` is a better value of the metric than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Max => a > b,
            Goal::Min => a < b,
        }
    }
}

/// A value must parse as its parameter's type (training would otherwise fall back to the base
/// value without a word).
fn check_value(name: &str, value: &str) -> Result<()> {
    let ok = match name {
        "learning_rate" | "weight_decay" => value.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 0.0),
        "hash_bits" => value.parse::<u32>().is_ok_and(|b| schemas::config::HASH_BITS.contains(&b)),
        // May be 0: the seed, and fine-tuning no encoder layer (the head only).
        _ => value.parse::<u64>().is_ok_and(|v| name == "seed" || name == "finetune_layers" || v > 0),
    };
    if ok { Ok(()) } else { Err(Error::Input(format!("search space: `{value}` is not a valid {name}"))) }
}

fn value_string(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn draw(spec: &ParamSpec, rng: &mut SplitMix) -> String {
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    match spec {
        ParamSpec::Values(values) => value_string(&values[(rng.next() % values.len() as u64) as usize]),
        ParamSpec::Range { min, max, log, integer } => {
            let x =
                if *log { (min.ln() + unit * (max.ln() - min.ln())).exp() } else { min + unit * (max - min) };
            if *integer { (x.round() as i64).to_string() } else { format!("{x}") }
        }
    }
}

/// What to search.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// Dataset, version, base parameters, data dir and actor, as for one training run.
    pub base: TrainRequest,
    pub space: SearchSpace,
    /// Trials run at once.
    pub parallel: usize,
    /// Cores the whole search may use; each trial gets `cpus / parallel` libtorch threads.
    pub cpus: usize,
}

/// A finished search.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    pub parent: Run,
    /// Finished trials, in the order of the space.
    pub trials: Vec<Trained>,
    /// Trials that failed, with why.
    pub failed: Vec<(BTreeMap<String, String>, String)>,
    /// Index into `trials` of the best by the space's metric.
    pub best: Option<usize>,
}

/// Runs the search: a parent run (tag `kind = tuning`) and one child run per trial, at most
/// `parallel` at a time. A failed trial is reported and the search goes on.
pub async fn tune(
    store: &dyn MetadataStore,
    snapshots: &SnapshotStore,
    req: &TuneRequest,
    control: Option<&ControlProducer>,
) -> Result<TuneOutcome> {
    let overrides = req.space.trials();
    let manifest = snapshots.resolve(&req.base.dataset, &req.base.version)?;
    let parallel = req.parallel.clamp(1, overrides.len().max(1));
    let threads = (req.cpus / parallel).max(1);
    let mut params = params_of(&req.base.params);
    params.insert("tune.strategy".into(), format!("{:?}", req.space.strategy).to_lowercase());
    params.insert("tune.metric".into(), req.space.metric.clone());
    params.insert("tune.trials".into(), overrides.len().to_string());
    params.insert("tune.parallel".into(), parallel.to_string());
    let tags =
        BTreeMap::from([("kind".into(), "tuning".into()), ("dataset".into(), req.base.dataset.clone())]);
    let parent_run = Run::started(&req.base.params.name, None, params, tags, &manifest.id);
    let parent_id = parent_run.run_id.clone();
    store.create_run(&parent_run).await?;
    let requests: Vec<(BTreeMap<String, String>, TrainRequest)> = overrides
        .into_iter()
        .map(|o| {
            let mut r = req.base.clone();
            r.version = manifest.id.clone(); // every trial sees the same version
            r.params = TrainConfig { threads, ..config_from_params(&o, &req.base.params) };
            (o, r)
        })
        .collect();
    let parent = parent_id.as_str();
    let mut results: Vec<(usize, BTreeMap<String, String>, Result<Trained>)> =
        futures::stream::iter(requests.into_iter().enumerate())
            .map(|(i, (o, r))| async move {
                let result = run_training(store, snapshots, &r, Some(parent), control).await;
                (i, o, result)
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    results.sort_by_key(|(i, _, _)| *i);
    let mut outcome = TuneOutcome {
        parent: store.get_run(parent).await?,
        trials: Vec::new(),
        failed: Vec::new(),
        best: None,
    };
    for (_, o, r) in results {
        match r {
            Ok(t) => outcome.trials.push(t),
            Err(e) => {
                tracing::warn!(trial = ?o, error = %e, "trial failed");
                outcome.failed.push((o, e.to_string()));
            }
        }
    }
    let metric = &req.space.metric;
    for (i, t) in outcome.trials.iter().enumerate() {
        let Some(&v) = t.run.metrics.get(metric) else { continue };
        if outcome.best.is_none_or(|b| req.space.better(v, outcome.trials[b].run.metrics[metric])) {
            outcome.best = Some(i);
        }
    }
    let mut summary = BTreeMap::from([
        ("trials_finished".to_string(), outcome.trials.len() as f64),
        ("trials_failed".to_string(), outcome.failed.len() as f64),
    ]);
    if let Some(b) = outcome.best {
        summary.insert(format!("best_{metric}"), outcome.trials[b].run.metrics[metric]);
    }
    store.log_metrics(parent, 0, &summary).await?;
    let status = if outcome.trials.is_empty() { RunStatus::Failed } else { RunStatus::Finished };
    store.finish_run(parent, status, Utc::now()).await?;
    outcome.parent = store.get_run(parent).await?;
    if outcome.best.is_none() {
        return Err(Error::Input(format!(
            "no trial of the search recorded `{metric}` ({} failed)",
            outcome.failed.len()
        )));
    }
    Ok(outcome)
}

/// Runs side by side: the params that differ between them, then the final metrics every
/// selection looks at (those recorded by all of them, validation and test first).
pub fn compare_table(runs: &[Run]) -> String {
    use std::fmt::Write;
    let keys = |m: &dyn Fn(&Run) -> Vec<String>| {
        let mut all: Vec<String> = runs.iter().flat_map(m).collect();
        all.sort();
        all.dedup();
        all
    };
    let params: Vec<String> = keys(&|r: &Run| r.params.keys().cloned().collect())
        .into_iter()
        .filter(|k| !k.starts_with("tune."))
        .filter(|k| runs.iter().map(|r| r.params.get(k)).collect::<std::collections::BTreeSet<_>>().len() > 1)
        .collect();
    let metrics: Vec<String> = keys(&|r: &Run| r.metrics.keys().cloned().collect())
        .into_iter()
        .filter(|k| runs.iter().all(|r| r.metrics.contains_key(k)))
        .filter(|k| {
            k.ends_with("accuracy") || k.ends_with("macro_f1") || k.ends_with("_loss") || k == "train_seconds"
        })
        .collect();
    let mut header = vec!["run".to_string(), "status".to_string()];
    header.extend(params.iter().cloned());
    header.extend(metrics.iter().cloned());
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let mut row = vec![r.run_id.clone(), format!("{:?}", r.status).to_lowercase()];
            row.extend(params.iter().map(|k| r.params.get(k).cloned().unwrap_or_else(|| "-".into())));
            row.extend(metrics.iter().map(|k| format!("{:.4}", r.metrics[k])));
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_the_cartesian_product_and_random_is_seeded() {
        let grid = SearchSpace::parse(
            "strategy = \"grid\"\n[params]\nlearning_rate = [0.05, 0.1]\nhash_bits = [16, 18]\n",
        )
        .unwrap();
        let trials = grid.trials();
        assert_eq!(trials.len(), 4);
        assert!(trials.contains(&BTreeMap::from([
            ("hash_bits".to_string(), "18".to_string()),
            ("learning_rate".to_string(), "0.05".to_string())
        ])));
        let base = TrainConfig::default();
        let applied = config_from_params(&trials[3], &base);
        assert_eq!((applied.hash_bits, applied.learning_rate), (18, 0.1));

        let text = "strategy = \"random\"\ntrials = 5\nseed = 3\n[params]\n\
                    weight_decay = { min = 1e-6, max = 1e-3, log = true }\nepochs = { min = 2, max = 6, integer = true }\n";
        let random = SearchSpace::parse(text).unwrap();
        let a = random.trials();
        assert_eq!(a, SearchSpace::parse(text).unwrap().trials(), "same seed, same draws");
        assert_eq!(a.len(), 5);
        for t in &a {
            let wd: f64 = t["weight_decay"].parse().unwrap();
            let epochs: u32 = t["epochs"].parse().unwrap();
            assert!((1e-6..=1e-3).contains(&wd) && (2..=6).contains(&epochs), "{t:?}");
        }
    }

    #[test]
    fn bad_spaces_are_refused_with_the_reason() {
        for (text, says) in [
            ("strategy = \"grid\"\n[params]\n", "names no parameter"),
            ("strategy = \"grid\"\n[params]\nthreads = [1, 2]\n", "not tunable"),
            ("strategy = \"grid\"\n[params]\nepochs = { min = 1, max = 3 }\n", "needs a list"),
            ("strategy = \"random\"\n[params]\nepochs = [1, 2]\n", "needs `trials`"),
            (
                "strategy = \"random\"\ntrials = 2\n[params]\nweight_decay = { min = 0.0, max = 1.0, log = true }\n",
                "invalid range",
            ),
            ("strategy = \"annealing\"\n[params]\nepochs = [1]\n", "search space"),
            ("strategy = \"grid\"\n[params]\nlearning_rate = [\"fast\"]\n", "not a valid learning_rate"),
            ("strategy = \"grid\"\n[params]\nhash_bits = [40]\n", "not a valid hash_bits"),
            ("strategy = \"grid\"\n[params]\nfinetune_layers = [-1]\n", "not a valid finetune_layers"),
        ] {
            let err = SearchSpace::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        // Fine-tuning no layer at all (the head only) is a valid value.
        let space = SearchSpace::parse("strategy = \"grid\"\n[params]\nfinetune_layers = [0, 2]\n").unwrap();
        assert_eq!(space.trials().len(), 2);
    }
}
