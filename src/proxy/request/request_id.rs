//! `x-request-id`: kept when the client sent one, generated when absent.

use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The request-id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-process random seeds, so ids from different replicas do not collide: the first half of
/// every id (in hex, as it is written), and the salt of the second.
static SEED: LazyLock<([u8; 16], u64)> = LazyLock::new(|| {
    let s = std::collections::hash_map::RandomState::new();
    let mut a = s.build_hasher();
    a.write_u64(std::process::id() as u64);
    let mut b = s.build_hasher();
    b.write_u64(a.finish());
    (hex(a.finish()), b.finish())
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new id: 32 lower-case hex digits, the process seed, then a counter scrambled by a
/// bijective mix. Also the trace id of a request that comes without a `traceparent` (see
/// `trace::propagate`, which does not take one of all zeros: the odds are 2^-64 a process).
pub fn new_id() -> [u8; 32] {
    let (hi, salt) = *SEED;
    let lo = splitmix64(COUNTER.fetch_add(1, Ordering::Relaxed) ^ salt);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&hi);
    buf[16..].copy_from_slice(&hex(lo));
    buf
}

/// `id` as a header value, marked sensitive: it is unique to its request, and HTTP/2's HPACK
/// would otherwise insert every one into the connection's header table (hashing it and evicting
/// an older entry: ~3,000 instructions of an h2c request); a sensitive value is sent as a
/// "never indexed" literal and skips the table. HTTP/1.1 writes it the same either way.
pub fn value_of(id: &[u8; 32]) -> HeaderValue {
    let mut value = super::headers::made_value(id.len(), |out| out.extend_from_slice(id))
        .expect("hex digits are a valid header value");
    value.set_sensitive(true);
    value
}

/// A new id as a header value ([`new_id`]).
#[cfg(test)]
pub fn generate() -> HeaderValue {
    value_of(&new_id())
}

/// A request's id: one the gateway made (its digits, made a header value only where a map
/// needs one: making it one cost ~110 instructions per request, most of them checking the
/// digits) or the client's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestId {
    /// Made for a request that came without one ([`new_id`]).
    Made([u8; 32]),
    /// The client's, or one made and put in the request's map ([`ensure`]).
    Given(HeaderValue),
}

impl RequestId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Made(digits) => digits,
            RequestId::Given(v) => v.as_bytes(),
        }
    }

    /// The id as text, `None` when it is not visible ASCII (a client's may not be).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RequestId::Made(digits) => std::str::from_utf8(digits).ok(),
            RequestId::Given(v) => v.to_str().ok(),
        }
    }

    /// The id as a header value.
    pub fn into_value(self) -> HeaderValue {
        match self {
            RequestId::Made(digits) => value_of(&digits),
            RequestId::Given(v) => v,
        }
    }
}

/// The request's id, inserting a new one when the request has none (or an empty one), and the
/// new one's digits. One lookup of the name either way (a lookup and then an insert hashed it
/// twice).
pub fn ensure(headers: &mut HeaderMap) -> (HeaderValue, Option<[u8; 32]>) {
    let fresh = || {
        let made = new_id();
        (value_of(&made), Some(made))
    };
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(e) if !e.get().is_empty() => (e.get().clone(), None),
        Entry::Occupied(mut e) => {
            let made = fresh();
            e.insert(made.0.clone());
            made
        }
        Entry::Vacant(e) => {
            let made = fresh();
            e.insert(made.0.clone());
            made
        }
    }
}

/// A fresh pseudo-random number: a scrambled process-wide counter (unique within the process,
/// unpredictable enough for ids; not for secrets).
pub fn random_u64() -> u64 {
    let (_, salt) = *SEED;
    splitmix64(COUNTER.fetch_add(1, Ordering::Relaxed) ^ salt.rotate_left(17))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `v` as 16 lower-case hex digits (most significant first). Three hex strings are made per
/// request (id, trace, span), so the digits are made eight at a time in a `u64`'s bytes rather
/// than looked up one by one (~25 instructions a half instead of ~60).
pub(crate) fn hex(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex_half((v >> 32) as u32));
    out[8..].copy_from_slice(&hex_half(v as u32));
    out
}

/// `v`'s 8 hex digits: each nibble spread into a byte of its own (the most significant into
/// the highest byte, written first), then made a digit: '0' + n, and 'a' - 10 + n for n > 9.
#[inline]
fn hex_half(v: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte holding 10..=15: adding 6 carries it into the byte's fifth bit.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_the_value_most_significant_first() {
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex(0xff), b"00000000000000ff");
        assert_eq!(&hex(u64::MAX), b"ffffffffffffffff");
        // Every nibble value in every place, against the formatter.
        let mut v = 0x0123_4567_89ab_cdefu64;
        for _ in 0..64 {
            assert_eq!(hex(v), format!("{v:016x}").as_bytes());
            v = v.rotate_left(1) ^ splitmix64(v);
        }
    }

    #[test]
    fn generated_ids_are_unique_and_hex() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn an_existing_id_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc"));
        assert_eq!(ensure(&mut h), (HeaderValue::from_static("abc"), None));
        let mut none = HeaderMap::new();
        let (id, made) = ensure(&mut none);
        assert_eq!(none.get(&X_REQUEST_ID), Some(&id));
        assert_eq!(made.as_ref().map(|m| &m[..]), Some(id.as_bytes()));
        // An empty id is replaced, every copy of it.
        let mut empty = HeaderMap::new();
        empty.insert(X_REQUEST_ID.clone(), HeaderValue::from_static(""));
        empty.append(X_REQUEST_ID.clone(), HeaderValue::from_static("x"));
        let (id, made) = ensure(&mut empty);
        assert_eq!(id.len(), 32);
        assert!(made.is_some());
        let all: Vec<_> = empty.get_all(&X_REQUEST_ID).iter().collect();
        assert_eq!(all, [&id]);
    }
}
