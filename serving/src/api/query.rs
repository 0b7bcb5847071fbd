//! Reading query strings as pairs (`Query<Vec<(String, String)>>`), so a repeated, missing
//! or malformed parameter is refused with the JSON error shape rather than axum's plain text.

use crate::{Error, Result};

/// The value of query parameter `name`, refused when given twice (the query is read as pairs,
/// so every refusal has the JSON error shape).
pub(crate) fn single(pairs: &[(String, String)], name: &str) -> Result<Option<String>> {
    let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (_, Some(_)) => Err(Error::BadRequest(format!("`{name}` is given more than once"))),
        (v, None) => Ok(v.cloned()),
    }
}

/// A whole-number query parameter within `range`, or `default` when absent.
pub(crate) fn query_number(
    name: &str,
    value: Option<&str>,
    range: std::ops::RangeInclusive<usize>,
    default: usize,
) -> Result<usize> {
    let Some(v) = value else { return Ok(default) };
    v.parse::<usize>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        Error::BadRequest(format!(
            "`{name}` must be a whole number from {} to {}, not `{v}`",
            range.start(),
            range.end()
        ))
    })
}
