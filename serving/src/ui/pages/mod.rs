//! The pages, one module per section. Each handler gets its numbers from the function behind
//! the matching `/v1` route (so a script fetching that route sees what the page shows) and
//! turns them into a view of display strings for its template; templates only lay out.

pub(crate) mod audit;
pub(crate) mod data;
pub(crate) mod dead;
pub(crate) mod drift;
pub(crate) mod models;
pub(crate) mod overview;
pub(crate) mod predictions;
pub(crate) mod runs;

use chrono::{DateTime, Utc};

/// A metric or probability as shown: four decimals, or an integer as is.
pub(crate) fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A query string of `pairs`, `?`-prefixed (empty when there are none).
pub(crate) fn query(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

/// The previous / next page links of a paged list.
pub(crate) struct Pager {
    pub(crate) first: usize,
    pub(crate) last: usize,
    pub(crate) total: Option<usize>,
    pub(crate) prev: Option<String>,
    pub(crate) next: Option<String>,
}

impl Pager {
    /// Links that keep every parameter of `pairs` but `offset`.
    pub(crate) fn new(
        pairs: &[(String, String)],
        offset: usize,
        limit: usize,
        shown: usize,
        more: bool,
        total: Option<usize>,
    ) -> Pager {
        let at = |o: usize| {
            let mut p: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "offset").cloned().collect();
            if o > 0 {
                p.push(("offset".into(), o.to_string()));
            }
            query(&p)
        };
        Pager {
            first: if shown == 0 { 0 } else { offset + 1 },
            last: offset + shown,
            total,
            prev: (offset > 0).then(|| at(offset.saturating_sub(limit))),
            next: more.then(|| at(offset + limit)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_pager_links() {
        assert_eq!((num(3.0), num(0.123456)), ("3".to_string(), "0.1235".to_string()));
        let pairs =
            vec![("sort".to_string(), "metrics.f1".to_string()), ("offset".to_string(), "50".to_string())];
        let p = Pager::new(&pairs, 50, 50, 50, true, Some(120));
        assert_eq!((p.first, p.last), (51, 100));
        assert_eq!(p.prev.as_deref(), Some("?sort=metrics.f1"));
        assert_eq!(p.next.as_deref(), Some("?sort=metrics.f1&offset=100"));
        assert!(Pager::new(&[], 0, 50, 3, false, None).prev.is_none());
    }
}
