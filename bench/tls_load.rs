//! The TLS load client of `bench/tls.sh`: rustls, so the benchmark decides what a handshake is
//! (wrk resumes TLS 1.2 sessions on its own, and speaks no TLS 1.3).
//!
//! ```text
//! tls_load ADDR SERVER_NAME CA_FILE MODE CONNECTIONS SECONDS [1.2|1.3]
//! ```
//!
//! MODE: `full` (a new connection and a full handshake per request), `resumed` (a new
//! connection per request, resuming the session of an earlier one with a ticket), `keepalive`
//! (requests on persistent connections). Each request is `GET /` for SERVER_NAME; a request
//! counts when its answer is a `200` read to the end. Prints `requests errors seconds`.

use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Full,
    Resumed,
    KeepAlive,
}

struct Load {
    addr: SocketAddr,
    name: ServerName<'static>,
    host: String,
    connector: TlsConnector,
    mode: Mode,
    until: Instant,
    ok: AtomicU64,
    errors: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, host, ca, mode, connections, seconds, rest @ ..] = &args[..] else {
        eprintln!(
            "usage: tls_load ADDR SERVER_NAME CA_FILE full|resumed|keepalive CONNECTIONS SECONDS [1.2|1.3]"
        );
        std::process::exit(2);
    };
    let mode = match mode.as_str() {
        "full" => Mode::Full,
        "resumed" => Mode::Resumed,
        "keepalive" => Mode::KeepAlive,
        other => panic!("unknown mode {other}"),
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match rest.first().map(String::as_str) {
        None | Some("1.3") => &[&rustls::version::TLS13],
        Some("1.2") => &[&rustls::version::TLS12],
        Some(other) => panic!("unknown TLS version {other}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::File::open(ca).expect("the CA file");
    for cert in rustls_pemfile_certs(pem) {
        roots.add(cert).expect("a CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("the protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if mode == Mode::Full {
        config.resumption = Resumption::disabled();
    }
    let load = Arc::new(Load {
        addr: addr.parse().expect("ADDR is host:port"),
        name: ServerName::try_from(host.clone()).expect("a server name"),
        host: host.clone(),
        connector: TlsConnector::from(Arc::new(config)),
        mode,
        until: Instant::now() + Duration::from_secs_f64(seconds.parse().expect("SECONDS")),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..connections.parse::<usize>().expect("CONNECTIONS"))
            .map(|_| tokio::spawn(client(load.clone())))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!(
        "{} {} {:.3}",
        load.ok.load(Ordering::Relaxed),
        load.errors.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn rustls_pemfile_certs(file: std::fs::File) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut BufReader::new(file), &mut pem).unwrap();
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// One client: connections and requests until the deadline.
async fn client(load: Arc<Load>) {
    let close = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        load.host
    );
    let keep = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", load.host);
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < load.until {
        let Ok(tcp) = TcpStream::connect(load.addr).await else {
            load.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let mut tls = match load.connector.connect(load.name.clone(), tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                if load.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("tls_load: handshake: {e}");
                }
                continue;
            }
        };
        loop {
            let request = if load.mode == Mode::KeepAlive {
                &keep
            } else {
                &close
            };
            let answered = match tls.write_all(request.as_bytes()).await {
                Ok(()) => response(&mut tls, &mut buf).await,
                Err(_) => false,
            };
            let counter = if answered { &load.ok } else { &load.errors };
            counter.fetch_add(1, Ordering::Relaxed);
            if !answered || load.mode != Mode::KeepAlive || Instant::now() >= load.until {
                break;
            }
        }
    }
}

/// Reads one response; whether it was a `200` with its whole body (`Content-Length`).
async fn response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    head.starts_with("http/1.1 200")
}
