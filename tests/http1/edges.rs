//! Edge cases on the native path: response framing, pooling, hand-off to hyper.

use super::*;

pub(crate) const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";

/// A chunked upstream response (with extensions and trailers) reaches the client with the same
/// data, and the upstream connection is reused after its last chunk.
#[tokio::test]
pub(crate) async fn a_chunked_upstream_response_reaches_the_client_intact() {
    let up = Recorder::answering(|_, _| {
        Answer::Keep(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..3 {
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"hello world"[..]),
            "{r:#?}"
        );
    }
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection was not reused"
    );
}

/// A response delimited by the upstream closing (no length, no chunking) reaches the client
/// whole, re-framed as chunked so the client connection stays usable.
#[tokio::test]
pub(crate) async fn a_close_delimited_upstream_response_reaches_the_client_completely() {
    let body = pattern(300_000);
    let answer = cat(&[
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n",
        &body,
    ]);
    let up = Recorder::answering(move |s, _| {
        if s.target == "/close" {
            Answer::Close(answer.clone())
        } else {
            Answer::Keep(ok_for(s))
        }
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, "chunked", "{:?}", r.headers);
    assert_eq!(r.body, Blob(body));
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().body.0, b"ok");
}

/// A HEAD response carries the upstream's `Content-Length` and no body: the next response on
/// the same client connection (and the same upstream connection) parses cleanly.
#[tokio::test]
pub(crate) async fn a_head_response_keeps_its_length_and_has_no_body() {
    let up = Recorder::answering(|s, _| {
        if s.method == "HEAD" {
            Answer::Keep(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1234\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Answer::Keep(ok_for(s))
        }
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..2 {
        c.send(b"HEAD /doc HTTP/1.1\r\nHost: h\r\n\r\n").await;
        let r = c.reply(true).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("1234"), "{r:#?}");
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", Blob(c.buf.clone()));
    assert_eq!(up.connections(), 1);
}

/// 204 and 304 responses reach the client without a body (and a 204 without
/// `Content-Length`, RFC 9110 §8.6), and both connections stay in step.
#[tokio::test]
pub(crate) async fn no_content_and_not_modified_have_no_body() {
    let up = Recorder::answering(|s, _| match s.target.as_str() {
        "/204" => {
            Answer::Keep(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-k: 1\r\n\r\n".to_vec())
        }
        "/304" => Answer::Keep(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".to_vec()),
        _ => Answer::Keep(ok_for(s)),
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for _ in 0..2 {
        c.send(b"DELETE /204 HTTP/1.1\r\nHost: h\r\n\r\n").await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.header("x-k"), Some("1"));
        assert_eq!(r.header("content-length"), None, "{r:#?}");
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(b"GET /304 HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"v1\"\r\n\r\n")
            .await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(r.status, 304);
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert_eq!(r.header("transfer-encoding"), None, "{r:#?}");
        c.send(GET).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", Blob(c.buf.clone()));
    assert_eq!(up.connections(), 1);
}

/// An upstream that closes a keep-alive connection while it sits idle in the pool (after a
/// response without `connection: close`) does not fail the next request.
#[tokio::test]
pub(crate) async fn an_upstream_closing_an_idle_pooled_connection_does_not_fail_the_next_request() {
    let up =
        Recorder::answering(|s, _| Answer::CloseIdle(ok_for(s), Duration::from_millis(30))).await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    // A 100 KB body cannot be re-sent (it is not kept): only noticing the close at checkout
    // saves it.
    let big = pattern(100_000);
    for i in 0..3 {
        let raw = cat(&[
            format!("POST /{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
            &big,
        ]);
        c.send(&raw).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"ok"[..]),
            "request {i}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(up.take().len(), 3);
    assert_eq!(up.connections(), 3);
}

/// A recorder for the keep-alive race: the first request on a connection is answered, a
/// later one is read whole and met by a close, as when the upstream closed the idle connection
/// just as the request was written to it.
pub(crate) async fn racing_upstream() -> Recorder {
    Recorder::answering(|s, n| {
        if n == 0 {
            Answer::Keep(ok_for(s))
        } else {
            Answer::Hangup
        }
    })
    .await
}

/// The keep-alive race on an idempotent request: it is re-sent on a fresh connection and
/// succeeds.
#[tokio::test]
pub(crate) async fn an_idempotent_request_on_a_pooled_connection_the_upstream_just_closed_is_retried()
 {
    let up = racing_upstream().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    let requests: [&[u8]; 4] = [
        GET,
        b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n",
        b"PUT /put HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        b"DELETE /del HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ];
    for (i, raw) in requests.iter().enumerate() {
        c.send(raw).await;
        let r = c.reply(false).await.unwrap();
        assert_eq!(
            (r.status, &r.body.0[..]),
            (200, &b"ok"[..]),
            "request {i}: {r:#?}"
        );
    }
    let seen: Vec<(String, Blob)> = up.take().into_iter().map(|s| (s.target, s.body)).collect();
    assert_eq!(
        seen,
        [
            ("/".to_owned(), Blob::default()),
            ("/again".to_owned(), Blob::default()),
            ("/put".to_owned(), Blob(b"body".to_vec())),
            ("/del".to_owned(), Blob(b"abc".to_vec())),
        ]
    );
    // One connection per request, plus the one each retried request found closed.
    assert_eq!(up.connections(), 4);
}

/// The keep-alive race on a POST the upstream received whole: the proxy cannot know whether it
/// was applied, so it must not send it again (RFC 9112 §9.3.1.1: "A proxy MUST NOT
/// automatically retry non-idempotent requests"; the route's own retry policy also leaves POST
/// alone unless `nonIdempotent` is set). The client gets an error instead.
#[tokio::test]
pub(crate) async fn a_non_idempotent_request_is_never_delivered_twice() {
    let up = racing_upstream().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().status, 200);
    c.send(b"POST /charge HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n100EUR")
        .await;
    let r = c.reply(false).await;
    let mut delivered: Vec<String> = up
        .hung_up
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    delivered.extend(up.take().into_iter().skip(1).map(|s| s.target));
    assert_eq!(
        delivered,
        ["/charge"],
        "the upstream received the POST {} times; the client got {r:?}",
        delivered.len()
    );
}

/// An upstream that dies in the middle of a response body: the client sees the message cut
/// short (the connection closes before the announced length or the last chunk), never a
/// complete message with the wrong content.
#[tokio::test]
pub(crate) async fn an_upstream_dying_mid_body_truncates_the_response() {
    let up = Recorder::answering(|s, _| match s.target.as_str() {
        "/cut-length" => {
            Answer::Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
        }
        "/cut-chunked" => Answer::Close(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n".to_vec(),
        ),
        "/cut-big" => {
            let mut b = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
            b.extend(pattern(300_000));
            Answer::Close(b)
        }
        _ => Answer::Keep(ok_for(s)),
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    for target in ["/cut-length", "/cut-chunked", "/cut-big"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        match once(gw.addr(), raw.as_bytes()).await {
            Err(Cut::Truncated(_)) => {}
            other => panic!("{target}: {other:#?}"),
        }
    }
    assert_eq!(once(gw.addr(), GET).await.unwrap().status, 200);
}

/// A 1 MiB response body (with a length, and chunked) streams through intact.
#[tokio::test]
pub(crate) async fn a_one_mebibyte_response_streams_through_intact() {
    let body = pattern(1 << 20);
    let (with_length, with_chunks) = (
        cat(&[b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n", &body]),
        cat(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            &chunked(&body, 40_000),
        ]),
    );
    let up = Recorder::answering(move |s, _| {
        Answer::Keep(if s.target == "/chunked" {
            with_chunks.clone()
        } else {
            with_length.clone()
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(GET).await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.header("content-length"), Some("1048576"));
    assert_eq!(r.body, Blob(body.clone()));
    c.send(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.framing, "chunked");
    assert_eq!(r.body, Blob(body));
}

/// An h2c client (prior knowledge) is handed to hyper by the native gateway and still reaches
/// the HTTP/1.1 upstream, body included.
#[tokio::test]
pub(crate) async fn an_h2c_client_still_works_on_the_native_gateway() {
    let up = Recorder::start().await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let h2 = HttpClient::h2c();
    let r = h2
        .get(gw.addr(), "h", "/over-h2?x=1", &[("x-a", "1")])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.version, r.body.as_str()),
        (200, http::Version::HTTP_2, "ok")
    );
    let post = http::Request::post(format!("http://{}/upload", gw.addr()))
        .header("host", "h")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"h2 body",
        )))
        .unwrap();
    let r = h2.send(post).await.unwrap();
    assert_eq!(r.status.as_u16(), 200);
    let seen = up.take();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].target.as_str(),
            seen[0].version.as_str()
        ),
        ("GET", "/over-h2?x=1", "HTTP/1.1")
    );
    assert_eq!(
        (seen[0].header("host"), seen[0].header("x-a")),
        (Some("h"), Some("1"))
    );
    assert_eq!(
        (seen[1].method.as_str(), &seen[1].body.0[..]),
        ("POST", &b"h2 body"[..])
    );
}

/// A WebSocket upgrade is still proxied by the native gateway (hyper serves upgrades).
#[tokio::test]
pub(crate) async fn a_websocket_upgrade_is_still_proxied() {
    let up = Upstream::start("ws").await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr()))
        .await
        .expect("websocket through the gateway");
    assert_eq!(resp.status().as_u16(), 101);
    for msg in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
}

/// A connection that starts with requests served natively and then asks for an upgrade is
/// handed to hyper mid-connection, and the tunnel works.
#[tokio::test]
pub(crate) async fn an_upgrade_after_native_requests_on_the_same_connection_is_proxied() {
    let up = Upstream::start("ws").await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"POST /plain HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:#?}");
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 101, "{r:#?}");
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // A masked text frame "ping"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 4];
    frame.extend_from_slice(&mask);
    frame.extend(b"ping".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    c.send(&frame).await;
    let echo = c.take(6).await.unwrap();
    assert_eq!(echo, [0x81, 4, b'p', b'i', b'n', b'g']);
}

/// Requests pipelined after one that says `Connection: close` are not served: the connection
/// closes after the first response and only the first request reaches the upstream.
#[tokio::test]
pub(crate) async fn requests_pipelined_after_connection_close_are_not_served() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(
        b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n\
GET /second HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .await;
    let r = c.reply(false).await.unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed().await, "a second response or an open connection");
    let seen: Vec<String> = up.take().into_iter().map(|s| s.target).collect();
    assert_eq!(seen, ["/first"]);
}

/// A client that goes away in the middle of its request body never makes the upstream see a
/// complete request: the proxy neither pads a `Content-Length` body nor ends a chunked one.
#[tokio::test]
pub(crate) async fn a_client_leaving_mid_body_never_completes_the_upstream_request() {
    let (gw, up) = native_gateway().await;
    for (name, partial) in [
        (
            "Content-Length",
            &b"POST /cut HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789"[..],
        ),
        (
            "chunked",
            b"POST /cut HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        ),
        (
            "chunked, cut inside a chunk",
            b"POST /cut HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789",
        ),
    ] {
        let mut c = Wire::connect(gw.addr()).await;
        c.send(partial).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.io.shutdown().await.unwrap();
        if let Ok(r) = c.reply(false).await {
            assert!(!(200..300).contains(&r.status), "{name}: {r:#?}");
        }
        // The upstream side of the exchange ends when the proxy drops its connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(up.take(), [], "{name}: the upstream got a complete request");
    }
}

/// A client that half-closes its side right after a request (as `nc -q` or HTTP/1.0-style
/// clients do) still gets the response.
#[tokio::test]
pub(crate) async fn a_client_that_half_closes_after_its_request_still_gets_the_response() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"POST /half HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    c.io.shutdown().await.unwrap();
    let r = c.reply(false).await.unwrap();
    assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
    assert!(c.closed().await);
    assert_eq!(up.take().len(), 1);
}

/// A client that sends `Expect: 100-continue` and waits for the interim response before its
/// body gets the `100 Continue`, and the body reaches the upstream.
#[tokio::test]
pub(crate) async fn an_expect_100_continue_client_that_waits_gets_its_interim_response() {
    let (gw, up) = native_gateway().await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"PUT /wait HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    let (start, _) = c.head().await.unwrap().expect("an interim response");
    assert!(start.starts_with("HTTP/1.1 100"), "{start:?}");
    c.send(b"hello").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:#?}");
    let seen = up.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.0, b"hello");
}

/// An upstream connection whose response says `connection: close` (HTTP/1.1) or lacks
/// keep-alive (HTTP/1.0) is never reused, even if the upstream leaves the socket open.
#[tokio::test]
pub(crate) async fn an_upstream_connection_marked_close_is_never_reused() {
    let up = Recorder::answering(|s, _| {
        Answer::Keep(if s.target == "/ten" {
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec()
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    for (i, target) in ["/", "/", "/ten", "/ten"].iter().enumerate() {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
        assert_eq!(r.header("connection"), None, "hop-by-hop, not forwarded");
        assert_eq!(
            up.connections(),
            i + 1,
            "request {i} reused a closing connection"
        );
    }
}

/// An upstream response with both `Content-Length` and `Transfer-Encoding: chunked` is read as
/// chunked and forwarded without the conflicting length (RFC 9112 §6.3), so the client frames
/// the same body the proxy read and the next response is not poisoned.
#[tokio::test]
pub(crate) async fn an_upstream_response_with_both_lengths_is_forwarded_as_chunked() {
    let up = Recorder::answering(|s, _| {
        Answer::Keep(if s.target == "/both" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        } else {
            ok_for(s)
        })
    })
    .await;
    let gw = gateway(up.addr, Http1Codec::Native).await;
    let mut c = Wire::connect(gw.addr()).await;
    c.send(b"GET /both HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.body.0, b"hello", "{r:#?}");
    assert_ne!(r.header("content-length"), Some("3"), "{r:#?}");
    c.send(GET).await;
    assert_eq!(c.reply(false).await.unwrap().body.0, b"ok");
}

/// An upstream that answers a large upload before reading it (a 413, as Go's net/http or an
/// upload limit does) and closes: the client gets that answer, as it does through hyper, not a
/// 502 made up by the proxy.
#[tokio::test]
pub(crate) async fn an_early_upstream_answer_to_a_large_upload_reaches_the_client() {
    // Reads the head only, answers, and closes with the body unread (the kernel resets).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut w = Wire {
                    io,
                    buf: Vec::new(),
                    wait: None,
                };
                let _ = w.head().await;
                let _ = w
                    .io
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let upload = cat(&[
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 8388608\r\n\r\n",
        &pattern(8 << 20),
    ]);
    let mut got = Vec::new();
    for codec in [Http1Codec::Hyper, Http1Codec::Native] {
        let gw = gateway(addr, codec).await;
        let (mut rd, mut wr) = TcpStream::connect(gw.addr()).await.unwrap().into_split();
        let body = upload.clone();
        // The client keeps sending while it reads, as a real one would.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&body).await;
            wr
        });
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while find(&buf, b"\r\n\r\n").is_none() {
            let n = tokio::time::timeout(WAIT, rd.read(&mut chunk))
                .await
                .expect("a response in time")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        writer.abort();
        let status = String::from_utf8_lossy(&buf)
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        got.push((codec, status));
    }
    assert_eq!(
        got,
        [
            (Http1Codec::Hyper, Some(413)),
            (Http1Codec::Native, Some(413))
        ]
    );
}

/// A client whose request body is malformed or cut short is the client's failure, not the
/// upstream's: with passive health checking on, such requests do not eject a healthy endpoint
/// (which would let any client take a backend out of service).
#[tokio::test]
pub(crate) async fn a_client_with_a_broken_body_does_not_eject_a_healthy_upstream() {
    let up = Recorder::start().await;
    let passive = "  healthCheck: { passive: { consecutiveFailures: 3, ejectionTime: 30s } }\n";
    let gw = gateway_with(&config_yaml(up.addr, passive), ProxyConfig::default()).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let bad = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        answers.push(once(gw.addr(), bad).await.map(|r| r.status));
    }
    let r = once(gw.addr(), GET).await.unwrap();
    assert_eq!(
        (r.status, &r.body),
        (200, &Blob(b"ok".to_vec())),
        "after three malformed bodies (answered {answers:?})"
    );
    assert_eq!(up.take().len(), 1);
}

/// An upstream's header lines written plainly reach an HTTP/1.1 client as written (the native
/// client keeps them raw, without a map), framing headers re-made by the gateway; the
/// gateway's request id replaces the upstream's; and where something reads or changes the
/// headers — a response filter, an h2c client served by hyper — every header is there.
#[tokio::test]
pub(crate) async fn plainly_written_upstream_headers_reach_every_client_whole() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: up/1\r\nSet-Cookie: a=1\r\n\
        Connection: keep-alive\r\nSet-Cookie: b=2\r\nX-Drop: x\r\nContent-Length: 2\r\n\r\nok";
    let up = Recorder::answering(|s, _| {
        let mut answer = HEAD.to_vec();
        if s.target == "/with-id" {
            answer.splice(17..17, b"X-Request-Id: from-upstream\r\n".iter().copied());
        }
        Answer::Keep(answer)
    })
    .await;
    let yaml = config_yaml(up.addr, "").replace(
        "  rules:\n",
        "  rules:\n    - matches: [{ path: { value: /filtered } }]\n      filters:\n        \
         - responseHeaderModifier: { remove: [x-drop], set: [{ name: server, value: gw }] }\n      \
         backendRefs: [{ name: up }]\n",
    );
    let gw = gateway_with(&yaml, ProxyConfig::default()).await;
    // As written, names' case included (the upstream's request id, replaced, has the gateway
    // build the map: names are written lower-case from it).
    let mut raw = TcpStream::connect(gw.addr()).await.unwrap();
    for (path, server) in [("/", "Server"), ("/with-id", "server")] {
        let get = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
        raw.write_all(get.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\nok") {
            let mut buf = [0u8; 1024];
            let n = raw.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains(&format!("\r\n{server}: up/1\r\n")), "{text}");
    }
    let mut c = Wire::connect(gw.addr()).await;
    for path in ["/", "/with-id", "/"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
            .await;
        let r = c.reply(false).await.unwrap();
        assert_eq!((r.status, &r.body.0[..]), (200, &b"ok"[..]), "{r:#?}");
        let named = |n: &str| -> Vec<&str> {
            let found = r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(n));
            found.map(|(_, v)| v.as_str()).collect()
        };
        assert_eq!(named("server"), ["up/1"]);
        assert_eq!(named("set-cookie"), ["a=1", "b=2"], "{r:#?}");
        assert_eq!(named("x-drop"), ["x"]);
        assert_eq!(named("content-length"), ["2"]);
        let id = named("x-request-id");
        assert!(id.len() == 1 && id[0] != "from-upstream", "{r:#?}");
        assert_eq!(named("date").len(), 1);
        assert!(named("connection").is_empty(), "{r:#?}");
    }
    c.send(b"GET /filtered HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let r = c.reply(false).await.unwrap();
    assert_eq!(r.header("server"), Some("gw"), "{r:#?}");
    assert_eq!(r.header("x-drop"), None, "{r:#?}");
    let cookies = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"));
    assert_eq!(cookies.count(), 2, "{r:#?}");
    for path in ["/", "/with-id"] {
        let h2 = HttpClient::h2c().get(gw.addr(), "h", path, &[]).await;
        assert_eq!((h2.status.as_u16(), h2.body.as_str()), (200, "ok"));
        let cookies: Vec<_> = h2.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "{:?}", h2.headers);
        assert_eq!(h2.headers.get("server").unwrap(), "up/1");
        assert_eq!(h2.headers.get_all("x-request-id").iter().count(), 1);
        assert_ne!(h2.headers.get("x-request-id").unwrap(), "from-upstream");
        assert!(h2.headers.get("connection").is_none());
    }
}
