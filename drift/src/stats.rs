//! Statistics over plain slices — no I/O.

/// Smoothing for empty bins: a live bin's fraction is `(count + ε) / (n + k·ε)` with `ε = 0.5`
/// (a Jeffreys-style pseudo-count), and the reference fraction `e` is smoothed the same way as
/// if it were observed on `n` records, `(e·n + ε) / (n + k·ε)`. PSI stays finite when either side
/// leaves a bin empty, and identical distributions give exactly 0.
pub const PSI_PSEUDO_COUNT: f64 = 0.5;

/// The bin of `v` among sorted interior `edges` (k−1 edges make k bins); values equal to an
/// edge fall in the lower bin.
pub fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|e| *e < v)
}

/// Counts of `values` per bin.
pub fn bin_counts(edges: &[f64], values: impl IntoIterator<Item = f64>) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for v in values {
        counts[bin_of(edges, v)] += 1;
    }
    counts
}

/// Population stability index of live bin `counts` against reference bin `expected` fractions:
/// `Σ (aᵢ − eᵢ)·ln(aᵢ/eᵢ)` over smoothed fractions. `None` for an empty window or mismatched
/// bins. Always ≥ 0; 0 when the distributions match.
pub fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    if expected.len() != counts.len() || expected.is_empty() {
        return None;
    }
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let k = counts.len() as f64;
    let denom = n as f64 + k * PSI_PSEUDO_COUNT;
    let value = expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let a = (c as f64 + PSI_PSEUDO_COUNT) / denom;
            let e = (e * n as f64 + PSI_PSEUDO_COUNT) / denom;
            (a - e) * (a / e).ln()
        })
        .sum::<f64>();
    Some(value.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins() {
        let edges = [1.0, 2.0, 3.0];
        assert_eq!(bin_of(&edges, 0.5), 0);
        assert_eq!(bin_of(&edges, 1.0), 0);
        assert_eq!(bin_of(&edges, 1.5), 1);
        assert_eq!(bin_of(&edges, 9.0), 3);
        assert_eq!(bin_counts(&edges, [0.0, 1.5, 1.7, 4.0]), vec![1, 2, 0, 1]);
    }

    #[test]
    fn psi_values() {
        let e = [0.25, 0.25, 0.25, 0.25];
        // Identical distribution: exactly 0.
        assert_eq!(psi(&e, &[250, 250, 250, 250]).unwrap(), 0.0);
        // An empty reference bin stays finite.
        assert!(psi(&[0.5, 0.5, 0.0], &[50, 50, 0]).unwrap() < 1e-12);
        // Everything in one bin: large.
        let shifted = psi(&e, &[1000, 0, 0, 0]).unwrap();
        assert!(shifted > 2.0, "{shifted}");
        // A moderate shift, by hand: a = (400.5, 300.5, 200.5, 100.5)/1002, e = 250.5/1002.
        let a: Vec<f64> = [400.5, 300.5, 200.5, 100.5].iter().map(|c| c / 1002.0).collect();
        let e1 = 250.5 / 1002.0;
        let by_hand: f64 = a.iter().map(|a| (a - e1) * (a / e1).ln()).sum();
        assert!((psi(&e, &[400, 300, 200, 100]).unwrap() - by_hand).abs() < 1e-12);
        assert_eq!(psi(&e, &[0, 0, 0, 0]), None);
        assert_eq!(psi(&e, &[1, 2]), None);
    }
}
