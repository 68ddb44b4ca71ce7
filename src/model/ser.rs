//! Serialization of `http` types in the table's JSON/YAML views (`/config`, golden files).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Serializer;
use serde::ser::SerializeSeq;

/// An unresolved backendRef is shown as `unresolved: true` (resolved ones show nothing).
pub fn unresolved<S: Serializer>(_: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(true)
}

pub fn header_name<S: Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

pub fn opt_header_name<S: Serializer>(n: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.serialize_str(n.as_str()),
        None => s.serialize_none(),
    }
}

pub fn header_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for n in v {
        seq.serialize_element(n.as_str())?;
    }
    seq.end()
}

pub fn header_pairs<S: Serializer>(
    v: &[(HeaderName, HeaderValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for (n, val) in v {
        let mut one = std::collections::BTreeMap::new();
        one.insert("name", n.as_str());
        one.insert("value", val.to_str().unwrap_or("<binary>"));
        seq.serialize_element(&one)?;
    }
    seq.end()
}

pub fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or("<binary>"))
}

pub fn opt_header_value<S: Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v.to_str().unwrap_or("<binary>")),
        None => s.serialize_none(),
    }
}

pub fn opt_method<S: Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(m.as_str()),
        None => s.serialize_none(),
    }
}

pub fn status<S: Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

pub fn bytes_str<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

pub fn duration<S: Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

pub fn display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn duration_str<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `1h2m3s4ms`, the form users write durations in.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

pub fn plain_duration<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Unix seconds as an RFC 3339 UTC time (`2027-01-01T00:00:00Z`).
pub fn unix_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}
