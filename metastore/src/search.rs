//! Finding runs — filter, sort, page — and thinning a metric's step history to a bounded
//! number of points: what the runs page and `GET /v1/search/runs` show, computed the same way
//! for both backends (over [`crate::MetadataStore::list_runs`]).

use std::cmp::Ordering;

use serde::Serialize;

use crate::{Run, RunStatus};

/// What to sort runs by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunSort {
    #[default]
    Started,
    /// A metric's latest value; runs without it sort last.
    Metric(String),
    /// A parameter, compared as a number when both sides are numbers, else as text.
    Param(String),
}

impl RunSort {
    /// `started_at`, `metrics.<key>` or `params.<key>`.
    pub fn parse(s: &str) -> Result<RunSort, String> {
        if s == "started_at" {
            Ok(RunSort::Started)
        } else if let Some(k) = s.strip_prefix("metrics.").filter(|k| !k.is_empty()) {
            Ok(RunSort::Metric(k.to_string()))
        } else if let Some(k) = s.strip_prefix("params.").filter(|k| !k.is_empty()) {
            Ok(RunSort::Param(k.to_string()))
        } else {
            Err(format!("sort by `started_at`, `metrics.<key>` or `params.<key>`, not `{s}`"))
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            RunSort::Started => "started_at".into(),
            RunSort::Metric(k) => format!("metrics.{k}"),
            RunSort::Param(k) => format!("params.{k}"),
        }
    }
}

/// A search over runs: every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub experiment: Option<String>,
    pub status: Option<RunStatus>,
    /// `(key, value)`: the run has tag `key`, equal to `value` when one is given.
    pub tags: Vec<(String, Option<String>)>,
    /// `(key, value)`: the run has parameter `key`, equal to `value` when one is given.
    pub params: Vec<(String, Option<String>)>,
    /// Only the children of this run (a tuning run's trials).
    pub parent: Option<String>,
    pub sort: RunSort,
    /// Newest / largest first when true.
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// A page of runs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunsPage {
    /// Runs matching the filters, over all pages.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub runs: Vec<Run>,
    /// Whether matching runs follow this page.
    pub more: bool,
}

impl RunQuery {
    fn matches(&self, run: &Run) -> bool {
        self.experiment.as_ref().is_none_or(|e| &run.experiment == e)
            && self.status.is_none_or(|s| run.status == s)
            && self.parent.as_ref().is_none_or(|p| run.parent_run_id.as_ref() == Some(p))
            && has_all(&run.tags, &self.tags)
            && has_all(&run.params, &self.params)
    }

    fn compare(&self, a: &Run, b: &Run) -> Ordering {
        // Runs lacking the sort key go last whatever the direction.
        let keyed = |x: Option<Ordering>, a_has: bool, b_has: bool| match (a_has, b_has) {
            (true, true) => x.unwrap_or(Ordering::Equal),
            (true, false) => return_last(self.descending, Ordering::Less),
            (false, true) => return_last(self.descending, Ordering::Greater),
            (false, false) => Ordering::Equal,
        };
        let by = match &self.sort {
            RunSort::Started => a.started_at.cmp(&b.started_at),
            RunSort::Metric(k) => {
                let (x, y) = (a.metrics.get(k), b.metrics.get(k));
                keyed(x.zip(y).and_then(|(x, y)| x.partial_cmp(y)), x.is_some(), y.is_some())
            }
            RunSort::Param(k) => {
                let (x, y) = (a.params.get(k), b.params.get(k));
                let cmp = x.zip(y).map(|(x, y)| match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    _ => x.cmp(y),
                });
                keyed(cmp, x.is_some(), y.is_some())
            }
        };
        // The run id breaks ties, so pages never overlap.
        let by = by.then_with(|| a.run_id.cmp(&b.run_id));
        if self.descending { by.reverse() } else { by }
    }

    /// The page of `runs` this query selects.
    pub fn apply(&self, runs: Vec<Run>) -> RunsPage {
        let mut hits: Vec<Run> = runs.into_iter().filter(|r| self.matches(r)).collect();
        let total = hits.len();
        let end = (self.offset + self.limit).min(total);
        let start = self.offset.min(end);
        // Only the page needs its exact order: partition around the page's end first.
        if end > 0 && end < total {
            hits.select_nth_unstable_by(end - 1, |a, b| self.compare(a, b));
            hits.truncate(end);
        }
        hits.sort_by(|a, b| self.compare(a, b));
        let runs = hits.split_off(start);
        RunsPage { total, offset: self.offset, limit: self.limit, more: end < total, runs }
    }
}

fn has_all(map: &std::collections::BTreeMap<String, String>, wanted: &[(String, Option<String>)]) -> bool {
    wanted.iter().all(|(k, v)| map.get(k).is_some_and(|have| v.as_ref().is_none_or(|v| v == have)))
}

/// `missing` ordered so that, once the whole comparison is reversed for a descending sort, the
/// run lacking the key still comes last.
fn return_last(descending: bool, missing: Ordering) -> Ordering {
    if descending { missing.reverse() } else { missing }
}

/// At most about `max_points` of `points` (sorted by step): the first and last point, and in
/// each of `max_points / 2` equal runs of steps the lowest and the highest value, in step
/// order — a curve's extremes survive (a spike of one step is still drawn), its noise is
/// thinned. Fewer points than the budget come back unchanged.
pub fn downsample(points: &[(u64, f64)], max_points: usize) -> Vec<(u64, f64)> {
    let max_points = max_points.max(4);
    if points.len() <= max_points {
        return points.to_vec();
    }
    let inner = &points[1..points.len() - 1];
    let buckets = (max_points - 2) / 2;
    let mut out = Vec::with_capacity(max_points);
    out.push(points[0]);
    for b in 0..buckets {
        let part = &inner[b * inner.len() / buckets..(b + 1) * inner.len() / buckets];
        let (Some(lo), Some(hi)) =
            (part.iter().min_by(|x, y| x.1.total_cmp(&y.1)), part.iter().max_by(|x, y| x.1.total_cmp(&y.1)))
        else {
            continue;
        };
        match lo.0.cmp(&hi.0) {
            Ordering::Less => out.extend([*lo, *hi]),
            Ordering::Greater => out.extend([*hi, *lo]),
            Ordering::Equal => out.push(*lo),
        }
    }
    out.push(points[points.len() - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, experiment: &str, acc: Option<f64>, lr: &str) -> Run {
        let mut r = Run::started(experiment, None, Default::default(), Default::default(), "v1");
        r.run_id = id.to_string();
        if let Some(a) = acc {
            r.metrics.insert("accuracy".into(), a);
        }
        r.params.insert("lr".into(), lr.into());
        r
    }

    fn ids(page: &RunsPage) -> Vec<&str> {
        page.runs.iter().map(|r| r.run_id.as_str()).collect()
    }

    #[test]
    fn runs_filter_sort_by_metric_and_page_without_overlap() {
        let runs = vec![
            run("a", "x", Some(0.9), "0.1"),
            run("b", "x", Some(0.7), "0.01"),
            run("c", "y", Some(0.95), "1"),
            run("d", "x", None, "0.5"),
            run("e", "x", Some(0.8), "10"),
        ];
        let q = |offset| RunQuery {
            experiment: Some("x".into()),
            sort: RunSort::Metric("accuracy".into()),
            descending: true,
            offset,
            limit: 2,
            ..Default::default()
        };
        let first = q(0).apply(runs.clone());
        assert_eq!((ids(&first), first.total, first.more), (vec!["a", "e"], 4, true));
        let second = q(2).apply(runs.clone());
        // The run without the metric comes last, after the lowest value.
        assert_eq!((ids(&second), second.more), (vec!["b", "d"], false));
        let ascending = RunQuery { descending: false, ..q(0) }.apply(runs.clone());
        assert_eq!(ids(&ascending), vec!["b", "e"]);
        let past_the_end = q(10).apply(runs.clone());
        assert_eq!((ids(&past_the_end).len(), past_the_end.total), (0, 4));
    }

    #[test]
    fn params_sort_as_numbers_and_filters_combine() {
        let runs = vec![run("a", "x", None, "10"), run("b", "x", None, "9"), run("c", "x", None, "0.5")];
        let q = RunQuery { sort: RunSort::Param("lr".into()), limit: 10, ..Default::default() };
        assert_eq!(ids(&q.apply(runs.clone())), vec!["c", "b", "a"], "numeric, not lexical");
        let only =
            RunQuery { params: vec![("lr".into(), Some("9".into()))], limit: 10, ..Default::default() };
        assert_eq!(ids(&only.apply(runs.clone())), vec!["b"]);
        let having = RunQuery { params: vec![("lr".into(), None)], limit: 10, ..Default::default() };
        assert_eq!(having.apply(runs.clone()).total, 3, "a key alone: runs having it");
        let none = RunQuery { tags: vec![("k".into(), Some("v".into()))], limit: 10, ..Default::default() };
        assert_eq!(none.apply(runs).total, 0);
        assert_eq!(RunSort::parse("metrics.f1").unwrap(), RunSort::Metric("f1".into()));
        assert!(RunSort::parse("metrics.").is_err() && RunSort::parse("name").is_err());
    }

    #[test]
    fn downsampling_keeps_the_ends_and_every_bucket_extreme() {
        let mut points: Vec<(u64, f64)> = (0..10_000u64).map(|s| (s, (s as f64 * 0.01).sin())).collect();
        points[5_000].1 = 42.0;
        points[7_000].1 = -42.0;
        let thin = downsample(&points, 200);
        assert!(thin.len() <= 200, "{} points", thin.len());
        assert_eq!((thin[0], *thin.last().unwrap()), (points[0], points[9_999]));
        assert!(thin.contains(&(5_000, 42.0)) && thin.contains(&(7_000, -42.0)), "spikes kept");
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
        let few = &points[..50];
        assert_eq!(downsample(few, 200), few.to_vec());
    }
}
