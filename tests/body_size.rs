//! A rule's `maxRequestBodyBytes` (ingress-nginx's `proxy-body-size`) through the real binary:
//! a declared length over it is 413 before the backend is asked; a chunked or HTTP/2 body of
//! unknown length is cut when it passes it (413), and the backend connection it was streaming
//! on is not used again; a rule without the limit passes any body.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::binary::Binary;
use common::{ConfigDir, backend_yaml, eventually, route_yaml};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw: requests per connection number, and the connections on which a
/// request body broke off.
#[derive(Default)]
struct Seen {
    requests: Vec<usize>,
    broken: Vec<usize>,
}

/// An upstream that reads the whole body and answers `conn K read N bytes`.
async fn reading_upstream() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        s.lock().unwrap().requests.push(conn);
                        let text = match req.into_body().collect().await {
                            Ok(b) => format!("conn {conn} read {} bytes", b.to_bytes().len()),
                            Err(_) => {
                                s.lock().unwrap().broken.push(conn);
                                "broken".to_owned()
                            }
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn config(up: SocketAddr) -> ConfigDir {
    let cfg = ConfigDir::new();
    cfg.write(
        "all.yaml",
        &(backend_yaml("up", &[up])
            + &route_yaml(
                "limited",
                "/limited",
                "up",
                "      maxRequestBodyBytes: 1000\n",
            )
            + &route_yaml("open", "/", "up", "")),
    );
    cfg
}

/// One HTTP/1.1 exchange on a new connection (`Connection: close`): the whole answer.
async fn h1(gw: SocketAddr, head: &str, body: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for (i, part) in body.iter().enumerate() {
        if i > 0 {
            // Let the gateway forward what it has before the rest comes.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The gateway may answer (and close) before it reads everything.
        if s.write_all(part).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn chunked(total: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_backend_is_asked() {
    let (up, seen) = reading_upstream().await;
    let cfg = config(up);
    let gw = Binary::start(cfg.path(), &[]);
    let post = |len: usize| {
        format!(
            "POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let body = vec![b'x'; 1000];
    let r = h1(gw.http, &post(1000), &[&body]).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("read 1000 bytes"), "{r}");
    // Over: answered from the head alone (the body is never sent here).
    let r = h1(gw.http, &post(1001), &[]).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.ends_with("request body too large\n"), "{r}");
    assert_eq!(
        seen.lock().unwrap().requests.len(),
        1,
        "the backend was not asked"
    );
    // Another rule has no limit.
    let body = vec![b'x'; 5000];
    let r = h1(
        gw.http,
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
        &[&body],
    )
    .await;
    assert!(r.ends_with("read 5000 bytes"), "{r}");
}

#[tokio::test]
async fn a_chunked_body_is_cut_past_the_limit_and_its_backend_connection_is_not_reused() {
    let (up, seen) = reading_upstream().await;
    let cfg = config(up);
    let gw = Binary::start(cfg.path(), &[]);
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
    };
    // At the limit: through.
    let r = h1(gw.http, &head("/limited"), &[&chunked(1000, 300)]).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("read 1000 bytes"), "{r}");
    // Over it: 413, and the backend saw its body break off.
    let over = chunked(1500, 500);
    let (first, rest) = over.split_at(600);
    let r = h1(gw.http, &head("/limited"), &[first, rest]).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let broken = eventually(
        Duration::from_secs(5),
        "the backend sees the body cut",
        || {
            let b = seen.lock().unwrap().broken.clone();
            async move { (!b.is_empty()).then_some(b) }
        },
    )
    .await;
    assert_eq!(seen.lock().unwrap().requests.len(), 2);
    // The next requests are whole, on connections other than the one cut.
    for _ in 0..3 {
        let r = h1(gw.http, &head("/limited"), &[&chunked(10, 10)]).await;
        assert!(r.ends_with("read 10 bytes"), "{r}");
        let conn: usize = r
            .rsplit("conn ")
            .next()
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            !broken.contains(&conn),
            "conn {conn} was cut and used again"
        );
    }
    // Without the limit, a long chunked body passes.
    let r = h1(gw.http, &head("/"), &[&chunked(5000, 1000)]).await;
    assert!(r.ends_with("read 5000 bytes"), "{r}");
}

#[tokio::test]
async fn over_http2_a_body_of_unknown_length_is_cut_and_a_declared_one_refused() {
    let (up, _seen) = reading_upstream().await;
    let cfg = config(up);
    let gw = Binary::start(cfg.path(), &[]);
    let io = TokioIo::new(TcpStream::connect(gw.http).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let full = |n: usize| {
        Full::new(Bytes::from(vec![b'x'; n]))
            .map_err(|e| match e {})
            .boxed()
    };
    let streamed = |parts: Vec<usize>| {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = parts
            .into_iter()
            .map(|n| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n]))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed()
    };
    let status = |resp: Response<hyper::body::Incoming>| resp.status();

    let r = send
        .send_request(Request::post("http://h/limited").body(full(1000)).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes())
            .ends_with("read 1000 bytes")
    );
    let r = send
        .send_request(
            Request::post("http://h/limited")
                .header("content-length", "1001")
                .body(full(1001))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::PAYLOAD_TOO_LARGE);
    let r = send
        .send_request(
            Request::post("http://h/limited")
                .body(streamed(vec![400, 400, 400]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::PAYLOAD_TOO_LARGE);
    let r = send
        .send_request(
            Request::post("http://h/limited")
                .body(streamed(vec![400, 400]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::OK, "the connection keeps serving");
    let r = send
        .send_request(
            Request::post("http://h/")
                .body(streamed(vec![4000, 4000]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status(r), StatusCode::OK);
}
