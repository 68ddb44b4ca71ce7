//! Request smuggling: shapes the native codec refuses.

use super::*;

/// Sends `raw` (a refused head, often with a request hidden after it) and checks the refusal:
/// `status`, the connection closed, nothing else answered, nothing reached the upstream.
pub(crate) async fn assert_refused(gw: &Gw, up: &Recorder, name: &str, raw: &str, status: u16) {
    let mut c = Wire::connect(gw.addr()).await;
    c.send(raw.as_bytes()).await;
    let r = c.reply(false).await;
    let r = r.unwrap_or_else(|e| panic!("{name}: no response: {e:?}"));
    assert_eq!(r.status, status, "{name}: {r:#?}");
    assert!(
        c.closed().await,
        "{name}: the connection stays open after a refusal"
    );
    assert_eq!(up.take(), [], "{name}: reached the upstream");
}

/// `Content-Length` together with `Transfer-Encoding: chunked`, in both orders, is refused:
/// the classic CL.TE / TE.CL desync never reaches the upstream.
#[tokio::test]
pub(crate) async fn a_request_with_both_lengths_is_refused() {
    let (gw, up) = native_gateway().await;
    let hidden = format!("0\r\n\r\n{SMUGGLED}");
    let cases = [
        (
            "CL then TE",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "TE then CL",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{hidden}"
            ),
        ),
        (
            "CL then TE in odd case",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\nTRANSFER-ENCODING: Chunked\r\n\r\n{hidden}"
            ),
        ),
    ];
    for (name, raw) in cases {
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A repeated `Content-Length` (even with the same value), a list, a sign, hex, an empty or an
/// overflowing value are all refused.
#[tokio::test]
pub(crate) async fn a_repeated_or_malformed_content_length_is_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("hello{SMUGGLED}");
    for (name, lengths) in [
        (
            "the same length twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        ("two lengths", "Content-Length: 5\r\nContent-Length: 41\r\n"),
        ("a plus sign", "Content-Length: +5\r\n"),
        ("a list", "Content-Length: 5, 5\r\n"),
        ("a negative length", "Content-Length: -5\r\n"),
        ("hex", "Content-Length: 0x5\r\n"),
        ("an empty value", "Content-Length: \r\n"),
        ("an overflow", "Content-Length: 18446744073709551621\r\n"),
        ("a space inside", "Content-Length: 1 5\r\n"),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{lengths}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A transfer coding other than exactly one `chunked` is refused: 501 for a coding the proxy
/// does not implement, 400 for `chunked` twice or an empty value.
#[tokio::test]
pub(crate) async fn a_transfer_coding_other_than_one_chunked_is_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    for (name, te, status) in [
        ("gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", 501),
        ("identity", "Transfer-Encoding: identity\r\n", 501),
        ("chunked, gzip", "Transfer-Encoding: chunked, gzip\r\n", 501),
        (
            "chunked then gzip lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            501,
        ),
        ("a lookalike", "Transfer-Encoding: xchunked\r\n", 501),
        (
            "chunked, chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
            400,
        ),
        (
            "chunked on two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("an empty value", "Transfer-Encoding: \r\n", 400),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{te}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, status).await;
    }
}

/// obs-fold (a header line continued with a space or tab) and whitespace between a field name
/// and its colon are refused: parsers disagree on both, which is how `Transfer-Encoding` gets
/// hidden from one of them.
#[tokio::test]
pub(crate) async fn obs_fold_and_space_before_a_colon_are_refused() {
    let (gw, up) = native_gateway().await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, lines) in [
        (
            "obs-fold with a space",
            format!("{cl}X-A: 1\r\n Transfer-Encoding: chunked\r\n"),
        ),
        (
            "obs-fold with a tab",
            format!("{cl}X-A: 1\r\n\tTransfer-Encoding: chunked\r\n"),
        ),
        (
            "a folded Transfer-Encoding",
            format!("{cl}Transfer-Encoding:\r\n chunked\r\n"),
        ),
        (
            "a space before the colon",
            format!("{cl}Transfer-Encoding : chunked\r\n"),
        ),
        (
            "a tab before the colon",
            format!("{cl}Transfer-Encoding\t: chunked\r\n"),
        ),
        (
            "a space before the colon of Content-Length",
            "Content-Length : 5\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        ),
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n{body}");
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// Two `Host` headers (which one routes?) and an HTTP/1.1 request without one are refused.
#[tokio::test]
pub(crate) async fn a_repeated_or_missing_host_is_refused() {
    let (gw, up) = native_gateway().await;
    let cases = [
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: h\r\nHost: admin.internal\r\n\r\n{SMUGGLED}"),
        ),
        (
            "no Host",
            format!("GET / HTTP/1.1\r\nX-A: 1\r\n\r\n{SMUGGLED}"),
        ),
        (
            "Host with a space before the colon",
            format!("GET / HTTP/1.1\r\nHost : h\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, raw) in cases {
        assert_refused(&gw, &up, name, &raw, 400).await;
    }
}

/// A head with more than 100 fields gets 431.
#[tokio::test]
pub(crate) async fn a_head_with_more_than_100_fields_gets_431() {
    let (gw, up) = native_gateway().await;
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n{SMUGGLED}");
    assert_refused(&gw, &up, "101 header fields", &raw, 431).await;
}

/// A head larger than `max_header_bytes` (64 KiB by default) gets 431, however the reads that
/// bring it in happen to be split.
#[tokio::test]
pub(crate) async fn a_head_larger_than_max_header_bytes_gets_431() {
    let (gw, up) = native_gateway().await;
    for kib in [65, 70, 100, 127, 200] {
        let big = "x".repeat(kib * 1024);
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n{SMUGGLED}");
        assert_refused(&gw, &up, &format!("a {kib} KiB head"), &raw, 431).await;
    }
}

/// A malformed chunk line comes after a valid head, so the request may already be on its way;
/// still, no request hidden after it is answered 2xx or reaches the upstream, the connection
/// closes, and the upstream never receives the broken request as a complete one.
#[tokio::test]
pub(crate) async fn a_malformed_chunk_never_lets_a_smuggled_request_through() {
    let (gw, up) = native_gateway().await;
    let head = "POST /first HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (name, body) in [
        ("a negative size", format!("-1\r\nx\r\n0\r\n\r\n{SMUGGLED}")),
        (
            "a hex prefix",
            format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a size that overflows",
            format!("fffffffffffffffff\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        ("no CRLF after the data", format!("5\r\nhello{SMUGGLED}")),
        (
            "junk after the data",
            format!("5\r\nhelloXX0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF after the size",
            format!("5\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF after the data",
            format!("5\r\nhello\n0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "a bare LF ending the body",
            format!("5\r\nhello\r\n0\n\n{SMUGGLED}"),
        ),
        (
            "a space inside the size",
            format!("5 5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        ),
    ] {
        let mut c = Wire::connect(gw.addr()).await;
        c.send(format!("{head}{body}").as_bytes()).await;
        let mut answers = Vec::new();
        loop {
            match c.reply(false).await {
                Ok(r) => answers.push(r.status),
                Err(Cut::Closed) => break,
                Err(e) => panic!("{name}: {e:?} after {answers:?}"),
            }
        }
        assert!(
            answers.len() <= 1 && answers.iter().all(|s| !(200..300).contains(s)),
            "{name}: the client got {answers:?}"
        );
        assert_eq!(up.take(), [], "{name}: reached the upstream");
    }
}

/// The native codec is stricter than hyper on purpose: the framing shapes hyper tolerates
/// (serving the chunked reading, or the first `Host`) are refused by the native path and never
/// reach the upstream. Shapes both refuse are listed too; their statuses may differ (the native
/// codec answers 501 for a coding it does not implement, hyper 400).
#[tokio::test]
pub(crate) async fn the_native_codec_refuses_shapes_hyper_tolerates() {
    let up = Recorder::start().await;
    let native = gateway(up.addr, Http1Codec::Native).await;
    let hyper = gateway(up.addr, Http1Codec::Hyper).await;
    // (name, request, native status, hyper status)
    let cases = [
        (
            "Content-Length and chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            200,
        ),
        (
            "the same Content-Length twice",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
            400,
            200,
        ),
        (
            "gzip, chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
            200,
        ),
        (
            "chunked, chunked",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            400,
            200,
        ),
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: h\r\nHost: other\r\n\r\n",
            400,
            200,
        ),
        // Refused by both.
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
            400,
            400,
        ),
        (
            "identity",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
            400,
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
            400,
            400,
        ),
        (
            "a space before the colon",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            400,
            400,
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", 400, 400),
    ];
    let mut wrong = Vec::new();
    for (name, raw, native_status, hyper_status) in cases {
        let n = once(native.addr(), raw.as_bytes()).await.map(|r| r.status);
        let native_seen = up.take();
        let h = once(hyper.addr(), raw.as_bytes()).await.map(|r| r.status);
        up.take();
        if n != Ok(native_status) || !native_seen.is_empty() || h != Ok(hyper_status) {
            wrong.push(format!(
                "{name}: native {n:?} (upstream saw {native_seen:?}), hyper {h:?}; expected native {native_status}, hyper {hyper_status}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
