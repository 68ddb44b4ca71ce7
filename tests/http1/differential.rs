//! The differential run: the same corpus through the native codec and hyper.

use super::*;

/// One step of a conversation on one client connection.
pub(crate) enum Step {
    /// Write these bytes in one write.
    Send(Vec<u8>),
    /// Write these bytes a few at a time, pausing between writes.
    Trickle(Vec<u8>),
    /// Read a response.
    Recv,
    /// Read the response to a HEAD request.
    RecvHead,
    /// Expect the gateway to close the connection.
    Eof,
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) steps: Vec<Step>,
}

/// A single request on its own connection, read as one response.
pub(crate) fn single(name: &'static str, raw: impl Into<Vec<u8>>) -> Case {
    let raw = raw.into();
    let recv = if raw.starts_with(b"HEAD ") {
        Step::RecvHead
    } else {
        Step::Recv
    };
    Case {
        name,
        steps: vec![Step::Send(raw), recv],
    }
}

pub(crate) const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

pub(crate) fn corpus() -> Vec<Case> {
    use Step::{Eof, Recv, RecvHead, Send, Trickle};
    let mib = pattern(1 << 20);
    let many: String = (0..90)
        .map(|i| format!("X-Many-{i}: value {i}\r\n"))
        .collect();
    let long_path = format!("/long/{}", "a".repeat(6000));
    vec![
        single(
            "GET with a query",
            "GET /search?q=a+b&x=%41&empty=&flag HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nUser-Agent: corpus/1\r\n\r\n",
        ),
        single("HEAD", "HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "POST with Content-Length",
            "POST /post HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        ),
        single(
            "POST chunked with extensions and trailers",
            "POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5;name=value\r\nhello\r\n6;flag;q=\"a b\"\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n",
        ),
        single("PUT with no body", "PUT /empty HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "PUT with Content-Length: 0",
            "PUT /empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        ),
        single(
            "POST with an empty chunked body",
            "POST /empty-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        single("DELETE", "DELETE /items/1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        single("OPTIONS on a path", "OPTIONS /opt HTTP/1.1\r\nHost: h\r\n\r\n"),
        single(
            "PATCH with a JSON body",
            "PATCH /items/1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
        ),
        single(
            "GET with a body",
            "GET /get-body HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        ),
        single(
            "90 headers",
            format!("GET /many HTTP/1.1\r\nHost: h\r\n{many}\r\n"),
        ),
        single(
            "repeated non-framing headers",
            "GET /repeat HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: b\r\nX-A: 2\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: text/html\r\nAccept: */*\r\n\r\n",
        ),
        single(
            "mixed-case names and odd whitespace",
            "GET /case HTTP/1.1\r\nhOsT: h\r\nX-MiXeD-CaSe:   padded value  \r\nCONTENT-TYPE:text/plain\r\nx-tab:\tv\t\r\nX-Empty:\r\n\r\n",
        ),
        single(
            "percent-encoded path",
            "GET /a%20b/%2F/%7e/caf%C3%A9;p=1?x=%00&y=%zz HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "dot segments",
            "GET /public/../admin/./x HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "a 6 KB target",
            format!("GET {long_path}?q=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        ),
        single(
            "obs-text in a header value",
            b"GET /obs-text HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n".to_vec(),
        ),
        Case {
            name: "Connection: close",
            steps: vec![
                Send(b"POST /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
                Recv,
                Eof,
            ],
        },
        single(
            "hop-by-hop headers and ones Connection names",
            "GET /hop HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
        ),
        single(
            "TE other than trailers",
            "GET /te HTTP/1.1\r\nHost: h\r\nTE: gzip\r\n\r\n",
        ),
        single(
            "client x-request-id and traceparent",
            format!(
                "GET /ids HTTP/1.1\r\nHost: h\r\nX-Request-Id: client-chosen-id\r\ntraceparent: 00-{TRACE}-00f067aa0ba902b7-01\r\ntracestate: a=b\r\n\r\n"
            ),
        ),
        single(
            "forwarding headers from the client",
            "GET /fwd HTTP/1.1\r\nHost: H.Example:8080\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n",
        ),
        Case {
            name: "HTTP/1.0",
            steps: vec![
                Send(b"GET /ten HTTP/1.0\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
                Eof,
            ],
        },
        Case {
            name: "HTTP/1.0 keep-alive",
            steps: vec![
                Send(b"GET /ten-a HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n".to_vec()),
                Recv,
                Send(b"POST /ten-b HTTP/1.0\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
                Recv,
                Eof,
            ],
        },
        single(
            "Expect: 100-continue",
            "POST /expect HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        ),
        single(
            "absolute-form target",
            "GET http://h/abs?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "1 MiB body with Content-Length",
            cat(&[
                b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n",
                &mib,
            ]),
        ),
        single(
            "1 MiB body chunked",
            cat(&[
                b"POST /big-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                &chunked(&mib, 50_000),
            ]),
        ),
        Case {
            name: "keep-alive sequence with a hand-off to hyper in the middle",
            steps: vec![
                Send(b"GET /ka/1 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
                Send(b"POST /ka/2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec()),
                Recv,
                Send(b"HEAD /ka/3 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                RecvHead,
                Send(b"POST /ka/4 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
                Recv,
                Send(b"GET /ka/5 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()),
                Recv,
            ],
        },
        Case {
            name: "pipelined requests in one write",
            steps: vec![
                Send(
                    b"GET /pipe/1 HTTP/1.1\r\nHost: h\r\n\r\n\
POST /pipe/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nfirst\
POST /pipe/3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n\
HEAD /pipe/4 HTTP/1.1\r\nHost: h\r\n\r\n\
GET /pipe/5 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                ),
                Recv,
                Recv,
                Recv,
                RecvHead,
                Recv,
                Eof,
            ],
        },
        Case {
            name: "pipelined requests with a hand-off to hyper in the middle",
            steps: vec![
                Send(
                    b"GET /handoff/1 HTTP/1.1\r\nHost: h\r\n\r\n\
GET http://h/handoff/2 HTTP/1.1\r\nHost: h\r\n\r\n\
GET /handoff/3 HTTP/1.1\r\nHost: h\r\n\r\n"
                        .to_vec(),
                ),
                Recv,
                Recv,
                Recv,
            ],
        },
        Case {
            name: "a request trickled a few bytes at a time",
            steps: vec![
                Trickle(b"POST /trickle HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n4\r\nwiki\r\n5;e=1\r\npedia\r\n0\r\n\r\n".to_vec()),
                Recv,
            ],
        },
        Case {
            name: "30 pipelined requests in one write",
            steps: std::iter::once(Send(
                (0..30)
                    .map(|i| {
                        if i % 3 == 1 {
                            format!("POST /many/{i} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{:02}", i)
                        } else {
                            format!("GET /many/{i} HTTP/1.1\r\nHost: h\r\n\r\n")
                        }
                    })
                    .collect::<String>()
                    .into_bytes(),
            ))
            .chain((0..30).map(|_| Recv))
            .collect(),
        },
        single(
            "a chunked response from the upstream",
            "GET /resp/chunked HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "a close-delimited response from the upstream",
            "GET /resp/close HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
        single(
            "103 Early Hints before the response",
            "GET /resp/early HTTP/1.1\r\nHost: h\r\n\r\n",
        ),
    ]
}

/// The corpus upstream: [`OK`], except for `/resp/...` targets that exercise response framing.
pub(crate) fn corpus_answer(seen: &Seen, _: usize) -> Answer {
    match seen.target.as_str() {
        "/resp/chunked" => Answer::Keep(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nx-t: 1\r\n\r\n"
                .to_vec(),
        ),
        "/resp/close" => Answer::Close(cat(&[
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n",
            &pattern(100_000),
        ])),
        "/resp/early" => Answer::Keep(
            b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints"
                .to_vec(),
        ),
        _ => Answer::Keep(ok_for(seen)),
    }
}

/// What one side saw of a case.
#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) client: Vec<Event>,
    pub(crate) upstream: Vec<Seen>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Reply(Result<Reply, Cut>),
    Closed(bool),
}

pub(crate) async fn run(addr: SocketAddr, up: &Recorder, steps: &[Step]) -> Outcome {
    let mut c = Wire::connect(addr).await;
    let mut client = Vec::new();
    for step in steps {
        match step {
            Step::Send(b) => c.send(b).await,
            Step::Trickle(b) => {
                for piece in b.chunks(5) {
                    c.send(piece).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Step::Recv => client.push(Event::Reply(c.reply(false).await.map(client_view))),
            Step::RecvHead => client.push(Event::Reply(c.reply(true).await.map(client_view))),
            Step::Eof => client.push(Event::Closed(c.closed().await)),
        }
    }
    Outcome {
        client,
        upstream: up.take().into_iter().map(upstream_view).collect(),
    }
}

/// Response headers that legitimately differ between two runs: `date` (the clock) and
/// `x-request-id` (generated per request).
pub(crate) fn client_view(mut r: Reply) -> Reply {
    r.headers
        .retain(|(n, _)| n != "date" && n != "x-request-id");
    r.headers.sort_by(|a, b| a.0.cmp(&b.0));
    r
}

/// What reached the upstream, with the values that legitimately differ between two runs
/// masked: a generated `x-request-id` (32 random hex digits; a client's own id is kept and
/// compared) and the `traceparent` span id (new per hop) and trace id (new when the client
/// sent none). Names are sorted, keeping the order of a repeated name's values: the order of
/// distinct fields carries no meaning (RFC 9110 §5.3).
pub(crate) fn upstream_view(mut s: Seen) -> Seen {
    for (name, value) in &mut s.headers {
        match name.as_str() {
            "x-request-id" if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
                *value = "<generated>".into();
            }
            "traceparent" => {
                let parts: Vec<&str> = value.split('-').collect();
                assert_eq!(parts.len(), 4, "traceparent {value:?}");
                let trace = if parts[1] == TRACE { TRACE } else { "<new>" };
                *value = format!("{}-{trace}-<span>-{}", parts[0], parts[3]);
            }
            _ => {}
        }
    }
    s.headers.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

/// The two paths agree on a corpus of ordinary requests: the client gets the same responses
/// (status, 1xx, headers, framing, body) and the same closes, and the upstream receives the same
/// requests (method, target, version, headers, body, trailers). Only values that legitimately
/// differ between runs are masked (see `client_view` and `upstream_view`); hop-by-hop and
/// framing headers (`content-length`, `transfer-encoding`, `connection`) are compared as sent,
/// and the one place they differ is asserted in `legitimate_differences`. Request trailers are
/// compared too: both paths drop them.
#[tokio::test]
pub(crate) async fn native_and_hyper_agree_on_a_corpus_of_requests() {
    let up = Recorder::answering(corpus_answer).await;
    let native = gateway(up.addr, Http1Codec::Native).await;
    let hyper = gateway(up.addr, Http1Codec::Hyper).await;
    let mut mismatches = Vec::new();
    for case in corpus() {
        let n = run(native.addr(), &up, &case.steps).await;
        let mut h = run(hyper.addr(), &up, &case.steps).await;

        // Every corpus request is valid: the native path must serve each one, exactly once.
        let replies = n
            .client
            .iter()
            .filter(|e| matches!(e, Event::Reply(_)))
            .count();
        for e in &n.client {
            match e {
                Event::Reply(Ok(r)) if r.status == 200 => {}
                Event::Closed(true) => {}
                other => mismatches.push(format!("{}: native: {other:?}", case.name)),
            }
        }
        if n.upstream.len() != replies {
            mismatches.push(format!(
                "{}: the upstream saw {} requests for {replies} responses: {:#?}",
                case.name,
                n.upstream.len(),
                n.upstream
            ));
        }

        legitimate_differences(case.name, &n, &mut h);
        if n != h {
            mismatches.push(format!(
                "{}:\n--- native\n{n:#?}\n--- hyper\n{h:#?}",
                case.name
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

/// Asserts the differences between the paths that are expected, and aligns `hyper` on `native`
/// for them so the rest is compared strictly.
pub(crate) fn legitimate_differences(case: &str, native: &Outcome, hyper: &mut Outcome) {
    // A body-carrying method without a body: the native client states `content-length: 0`
    // (RFC 9110 §8.6: a user agent SHOULD send it for POST/PUT/PATCH), hyper's client sends
    // no framing header at all. Both mean "no body".
    if case == "PUT with no body" {
        assert_eq!(native.upstream[0].header("content-length"), Some("0"));
        assert_eq!(hyper.upstream[0].header("content-length"), None);
        hyper.upstream[0] = native.upstream[0].clone();
    }
}
