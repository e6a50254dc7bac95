//! Helpers shared by the unit tests.

use http::{HeaderMap, HeaderValue};

/// A header map of `(name, value)` pairs, repeated names appended.
pub fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}
