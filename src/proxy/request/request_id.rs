//! `x-request-id`: kept when the client sent one, generated when absent.

use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The request-id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-process random seeds, so ids from different replicas do not collide.
static SEED: LazyLock<(u64, u64)> = LazyLock::new(|| {
    let s = std::collections::hash_map::RandomState::new();
    let mut a = s.build_hasher();
    a.write_u64(std::process::id() as u64);
    let mut b = s.build_hasher();
    b.write_u64(a.finish());
    (a.finish(), b.finish())
});
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new 32-hex-digit id: the process seed, then a counter scrambled by a bijective mix.
pub fn generate() -> HeaderValue {
    let (hi, salt) = *SEED;
    let lo = splitmix64(COUNTER.fetch_add(1, Ordering::Relaxed) ^ salt);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&hex(hi));
    buf[16..].copy_from_slice(&hex(lo));
    super::headers::made_value(buf.len(), |out| out.extend_from_slice(&buf))
        .expect("hex digits are a valid header value")
}

/// The request's id, inserting a new one when the request has none (or an empty one). One
/// lookup of the name either way (a lookup and then an insert hashed it twice).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(e) if !e.get().is_empty() => e.get().clone(),
        Entry::Occupied(mut e) => {
            let id = generate();
            e.insert(id.clone());
            id
        }
        Entry::Vacant(e) => {
            let id = generate();
            e.insert(id.clone());
            id
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

/// `v` as 16 lower-case hex digits (most significant first), two digits a byte.
pub(crate) fn hex(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (pair, b) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_the_value_most_significant_first() {
        assert_eq!(&hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex(0xff), b"00000000000000ff");
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
        assert_eq!(ensure(&mut h), "abc");
        let mut none = HeaderMap::new();
        let id = ensure(&mut none);
        assert_eq!(none.get(&X_REQUEST_ID), Some(&id));
        // An empty id is replaced, every copy of it.
        let mut empty = HeaderMap::new();
        empty.insert(X_REQUEST_ID.clone(), HeaderValue::from_static(""));
        empty.append(X_REQUEST_ID.clone(), HeaderValue::from_static("x"));
        let id = ensure(&mut empty);
        assert_eq!(id.len(), 32);
        let all: Vec<_> = empty.get_all(&X_REQUEST_ID).iter().collect();
        assert_eq!(all, [&id]);
    }
}
