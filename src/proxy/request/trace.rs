//! W3C trace context: `traceparent` is continued with a new span id for this hop, or started
//! when absent or malformed; `tracestate` passes through untouched.

use http::{HeaderMap, HeaderName};

use super::headers::{Added, Seen, TRACEPARENT_LEN};
use super::request_id::{hex, random_u64};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A W3C trace id: 32 lower-case hex digits, kept inline (the access log reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id of a version-00 `traceparent` (`00-` then the id's 32 digits).
    pub(crate) fn of_traceparent(value: &[u8; TRACEPARENT_LEN]) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(&value[3..35]);
        TraceId(id)
    }

    /// A request id the gateway made ([`super::request_id::new_id`]: 32 lower-case hex digits)
    /// as a trace id.
    pub(crate) fn of_id(id: [u8; 32]) -> Self {
        TraceId(id)
    }

    /// The id's digits.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id's text.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        // ASCII hex by construction (generated, or checked by `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Takes the client's `traceparent` out of `headers` (`seen` says whether it holds one) and
/// adds the one sent upstream to `added` (whose `trace_id` is the request's trace id). A
/// request without a valid one starts a trace: `made`, the id the gateway made for the request
/// when it came without one (the same id in `X-Request-ID` and the trace, which ties the two
/// together in logs), else a new one.
pub fn propagate(headers: &mut HeaderMap, seen: Seen, added: &mut Added, made: Option<TraceId>) {
    let incoming = seen
        .has(Seen::TRACEPARENT)
        .then(|| headers.remove(&TRACEPARENT))
        .flatten()
        .and_then(|v| parse(v.as_bytes()));
    let (trace, flags) = match (incoming, made) {
        (Some((trace, flags)), _) => (trace, flags),
        // All zeros is not a valid trace id.
        (None, Some(made)) if made.0 != [b'0'; 32] => (made.0, *b"01"),
        (None, _) => {
            let mut t = [0u8; 32];
            t[..16].copy_from_slice(&hex(random_u64()));
            t[16..].copy_from_slice(&hex(random_u64() | 1)); // never all zeros (invalid)
            (t, *b"01")
        }
    };
    let mut out = [0u8; TRACEPARENT_LEN];
    out[..3].copy_from_slice(b"00-");
    out[3..35].copy_from_slice(&trace);
    out[35] = b'-';
    out[36..52].copy_from_slice(&hex(random_u64() | 1));
    out[52] = b'-';
    out[53..55].copy_from_slice(&flags);
    added.set_traceparent(out);
}

/// The trace id and flags of a valid version-00 `traceparent` (lower-case hex, non-zero ids).
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 2])> {
    // Future versions may append fields after the flags; version 00 must be exactly 55 bytes.
    if v.len() < 55
        || v[2] != b'-'
        || v[35] != b'-'
        || v[52] != b'-'
        || (v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    let is_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    if !is_hex(version) || version == b"ff" || (version == b"00" && v.len() != 55) {
        return None;
    }
    if !is_hex(trace) || !is_hex(parent) || !is_hex(flags) {
        return None;
    }
    if trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return None;
    }
    Some((trace.try_into().ok()?, flags.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request::headers::{forwarded, strip_hop_by_hop};
    use http::HeaderValue;

    /// The trace steps of forwarding `h`, with what they add inserted back into it.
    fn propagate_in(h: &mut HeaderMap) -> TraceId {
        propagate_made(h, None)
    }

    /// As [`propagate_in`], for a request the gateway made the id `made` for.
    fn propagate_made(h: &mut HeaderMap, made: Option<TraceId>) -> TraceId {
        let seen = strip_hop_by_hop(h);
        let port = HeaderValue::from_static("80");
        let mut added = forwarded(h, seen, [127, 0, 0, 1].into(), "http", &port, None);
        propagate(h, seen, &mut added, made);
        let trace = added.trace_id().expect("a traceparent is always sent");
        added.insert_into(h);
        assert_eq!(h.get_all(&TRACEPARENT).iter().count(), 1);
        trace
    }

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn keeps_the_trace_id_and_replaces_the_parent_id() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GIVEN));
        let trace = propagate_in(&mut h);
        assert_eq!(trace.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = h[&TRACEPARENT].to_str().unwrap();
        assert_eq!(&out[..36], &GIVEN[..36]);
        assert_ne!(&out[36..52], &GIVEN[36..52]);
        assert_eq!(&out[52..], "-01");
    }

    #[test]
    fn starts_a_trace_when_absent_or_malformed() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some(&GIVEN.to_uppercase()[..]),
        ] {
            let mut h = HeaderMap::new();
            if let Some(b) = bad {
                h.insert(&TRACEPARENT, HeaderValue::from_str(b).unwrap());
            }
            let trace = propagate_in(&mut h);
            let out = h[&TRACEPARENT].to_str().unwrap();
            assert_eq!(out.len(), 55);
            assert!(parse(out.as_bytes()).is_some(), "{out}");
            assert_eq!(&out[3..35], trace.as_str());
            assert_ne!(trace.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn a_trace_started_for_a_request_whose_id_was_made_has_that_id() {
        let made = TraceId::of_id(*b"0123456789abcdef0123456789abcdef");
        let trace = propagate_made(&mut HeaderMap::new(), Some(made));
        assert_eq!(trace, made);
        // A client's trace goes on all the same.
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GIVEN));
        let trace = propagate_made(&mut h, Some(made));
        assert_eq!(trace.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // All zeros is not a trace id: a new one is drawn.
        let zeros = TraceId::of_id([b'0'; 32]);
        let mut h = HeaderMap::new();
        let trace = propagate_made(&mut h, Some(zeros));
        assert_ne!(trace, zeros);
        assert!(parse(h[&TRACEPARENT].as_bytes()).is_some());
    }
}
