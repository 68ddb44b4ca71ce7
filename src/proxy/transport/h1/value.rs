//! Header values the codec takes from heads `httparse` has already checked.
//!
//! `HeaderValue::from_maybe_shared` checks every byte of a value again, although `httparse`
//! accepted a value only if each of its bytes is HTAB, SP, a visible ASCII character or
//! obs-text (0x80–0xFF) — exactly the bytes a `HeaderValue` may hold (`b >= 0x20 && b != 0x7f`
//! or HTAB). Taking the value unchecked saves that second pass over every header of every
//! request and response (measured with `bench/callgrind.sh`: see the README's Performance
//! section). The two byte sets are held equal by a test over all 256 bytes, through both
//! crates' public APIs, so an update of either that parts them fails the build's tests.

use bytes::Bytes;
use http::HeaderValue;

/// A header value from bytes `httparse` returned as a header's value.
///
/// Callers pass only a value span of a head `httparse` parsed as complete, unmodified since.
#[inline]
pub(super) fn parsed(bytes: Bytes) -> HeaderValue {
    // SAFETY: `bytes` is a value httparse accepted, so each byte is one `HeaderValue` allows
    // (module comment; `same_bytes_as_httparse` below checks the two sets are one). In debug
    // builds `http` checks the bytes anyway and panics on a bad one (without allocating:
    // `tests/h1_alloc.rs` counts allocations in a debug build).
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte `httparse` accepts inside a request's or a response's header value is one
    /// `HeaderValue` accepts, and (so that nothing is taken unchecked that was refused before)
    /// the reverse.
    #[test]
    fn same_bytes_as_httparse() {
        for b in 0..=255u8 {
            let by_http = HeaderValue::from_bytes(&[b'a', b, b'a']).is_ok();
            for start in [&b"GET / HTTP/1.1\r\n"[..], b"HTTP/1.1 200 OK\r\n"] {
                let mut head = [start, b"X: a"].concat();
                head.push(b);
                head.extend_from_slice(b"a\r\n\r\n");
                let mut headers = [httparse::EMPTY_HEADER; 4];
                let complete =
                    |r: httparse::Result<usize>| matches!(r, Ok(httparse::Status::Complete(_)));
                let by_httparse = if start.starts_with(b"GET") {
                    let mut req = httparse::Request::new(&mut headers);
                    complete(req.parse(&head)) && req.headers[0].value.len() == 3
                } else {
                    let mut resp = httparse::Response::new(&mut headers);
                    complete(resp.parse(&head)) && resp.headers[0].value.len() == 3
                };
                assert_eq!(by_httparse, by_http, "byte {b:#04x} after {start:?}");
            }
        }
    }

    #[test]
    fn parsed_keeps_the_bytes() {
        let v = parsed(Bytes::from_static(b"text/html; charset=\xe9"));
        assert_eq!(v.as_bytes(), b"text/html; charset=\xe9");
    }
}
