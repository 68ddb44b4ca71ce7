//! TLS termination for the HTTPS listener: rustls with the ring provider, TLS 1.2 and 1.3,
//! ALPN `h2` and `http/1.1`, session resumption by tickets (and a session cache), and the
//! certificate chosen by the client's server name (SNI) from the published table: exact host,
//! then wildcard, then the default certificate, else the handshake fails with the
//! `unrecognized_name` alert.
//!
//! Each certificate gets its own `ServerConfig`, built when a table that holds it is published
//! (and reused while the certificate stays the same); a handshake reads the configs of the
//! table current when its ClientHello arrives. A new certificate serves the next handshake;
//! established connections keep theirs.

use std::io::{self, Read};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    Acceptor, ProducesTickets, ServerConfig, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::conn::ClientIdentity;
use super::sni;
use crate::model::{Certificate, ClientValidation, RoutingTable};

/// A fatal `unrecognized_name` alert (RFC 6066 §3), as a TLS 1.2-framed record: what a client
/// gets when no certificate serves the name it asked for.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// The crypto provider of the whole binary (kube's client uses ring too).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No certificate serves the server name the client asked for.
    #[error("no certificate for server name {0:?}")]
    UnknownName(Option<String>),
    /// The client hello or the handshake failed (bad version, no common cipher, bad data).
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The connection failed or closed during the handshake.
    #[error("connection failed during the TLS handshake: {0}")]
    Io(#[from] io::Error),
}

impl HandshakeError {
    /// The `result` label of `tidegate_tls_handshakes_total`.
    pub fn result(&self) -> &'static str {
        match self {
            HandshakeError::UnknownName(_) => "unrecognized_name",
            HandshakeError::Tls(_) => "failed",
            HandshakeError::Io(_) => "aborted",
        }
    }
}

/// What the HTTPS listener serves: the certificates of the current table, as rustls configs.
struct Certs {
    table: Arc<RoutingTable>,
    /// One per `table.tls.certificates` entry; `None` for a key rustls cannot load (the
    /// compiler has checked it, so this does not happen in practice).
    configs: Vec<Option<Arc<ServerConfig>>>,
    /// One per `table.tls.hosts` entry that asks for client certificates (mTLS): its
    /// certificate with a client verifier. Hosts without mTLS use `configs`, untouched.
    client_auth: Vec<Option<Arc<ServerConfig>>>,
}

/// Accepts TLS connections with the certificates of the latest published table.
pub struct TlsAcceptor {
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    current: ArcSwap<Certs>,
}

impl TlsAcceptor {
    /// An acceptor with no certificate (every handshake fails until a table with one is
    /// published).
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            provider: crypto_provider(),
            // One ticket key set (rotated by rustls) for every certificate and every table, so
            // a rotation does not end resumption.
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(4096),
            current: ArcSwap::from_pointee(Certs {
                table: Arc::new(RoutingTable::default()),
                configs: Vec::new(),
                client_auth: Vec::new(),
            }),
        })
    }

    /// Serves the certificates of `table` to the next handshakes.
    pub fn publish(&self, table: &Arc<RoutingTable>) {
        let previous = self.current.load();
        let configs = table
            .tls
            .certificates
            .iter()
            .map(|c| {
                let same = previous
                    .table
                    .tls
                    .certificates
                    .iter()
                    .position(|p| p.fingerprint == c.fingerprint && p.source == c.source);
                match same.and_then(|i| previous.configs.get(i).cloned().flatten()) {
                    Some(config) => Some(config),
                    None => self.config(c, None),
                }
            })
            .collect();
        let client_auth = table
            .tls
            .hosts
            .iter()
            .map(|h| {
                let v = h.client_validation.as_deref()?;
                self.config(&table.tls.certificates[h.certificate], Some(v))
            })
            .collect();
        self.current.store(Arc::new(Certs {
            table: table.clone(),
            configs,
            client_auth,
        }));
    }

    /// A client verifier for `v`: its CA bundle, the client certificate required or not. A
    /// host whose CA bundle could not be read gets none: its handshakes fail (closed).
    fn client_verifier(&self, v: &ClientValidation) -> Option<Arc<dyn ClientCertVerifier>> {
        let ca = v.ca.as_deref()?;
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(ca.certificates.iter().cloned());
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone());
        let builder = if v.required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        match builder.build() {
            Ok(verifier) => Some(verifier),
            Err(e) => {
                tracing::error!(ca = %ca.source, error = %e, "cannot verify client certificates");
                None
            }
        }
    }

    fn config(&self, c: &Certificate, v: Option<&ClientValidation>) -> Option<Arc<ServerConfig>> {
        let key = match self
            .provider
            .key_provider
            .load_private_key(c.key.clone_key())
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(certificate = %c.source, error = %e, "cannot load the private key");
                return None;
            }
        };
        let resolver = SingleCertAndKey::from(CertifiedKey::new(c.chain.clone(), key));
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .ok()?;
        let builder = match v {
            None => builder.with_no_client_auth(),
            Some(v) => builder.with_client_cert_verifier(self.client_verifier(v)?),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = self.ticketer.clone();
        config.session_storage = self.sessions.clone();
        Some(Arc::new(config))
    }

    /// Reads the ClientHello, picks the certificate for its server name (and the client
    /// verifier of a host with mTLS) and completes the handshake. With mTLS, the verified
    /// client certificate's identity comes along.
    pub async fn accept(&self, mut stream: TcpStream) -> Result<Handshake, HandshakeError> {
        let mut acceptor = Acceptor::default();
        // With TLS passthrough Routes, the ClientHello is read here first: a server name one
        // of them takes gets the raw bytes; any other goes on to rustls with the bytes read.
        if self.current.load().table.has_passthrough() {
            let mut hello = Vec::with_capacity(1024);
            let name = loop {
                match sni::parse(&hello) {
                    sni::Hello::Complete(name) => break name,
                    sni::Hello::Invalid => break None,
                    sni::Hello::Partial if hello.len() >= sni::MAX_HELLO => break None,
                    sni::Hello::Partial => {}
                }
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                hello.extend_from_slice(&buf[..n]);
            };
            let table = self.current.load().table.clone();
            if let Some(name) = name
                && table.passthrough(&name).is_some()
            {
                return Ok(Handshake::Passthrough {
                    stream,
                    hello,
                    name,
                });
            }
            let mut read = &hello[..];
            while !read.is_empty() {
                acceptor.read_tls(&mut read)?;
            }
        }
        let accepted = loop {
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => {}
                Err((e, mut alert)) => {
                    let mut buf = Vec::new();
                    let _ = alert.write(&mut buf);
                    let _ = stream.write_all(&buf).await;
                    return Err(e.into());
                }
            }
            stream.readable().await?;
            match acceptor.read_tls(&mut TryRead(&stream)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        };
        let name = accepted
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let (config, validation) = {
            let certs = self.current.load();
            let tls = &certs.table.tls;
            match name.as_deref().and_then(|n| tls.host_index(n)) {
                Some(i) => match tls.hosts[i].client_validation.clone() {
                    Some(v) => (certs.client_auth.get(i).cloned().flatten(), Some(v)),
                    None => {
                        let c = tls.hosts[i].certificate;
                        (certs.configs.get(c).cloned().flatten(), None)
                    }
                },
                None => (
                    tls.default
                        .and_then(|c| certs.configs.get(c).cloned().flatten()),
                    None,
                ),
            }
        };
        let Some(config) = config else {
            let _ = stream.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            return Err(HandshakeError::UnknownName(name));
        };
        let stream = StartHandshake::from_parts(accepted, stream)
            .into_stream(config)
            .await
            .map_err(|e| {
                // tokio-rustls wraps the TLS error in an io::Error.
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => HandshakeError::Tls(tls.clone()),
                    None => HandshakeError::Io(e),
                }
            })?;
        let identity = validation.and_then(|v| {
            let leaf = stream.get_ref().1.peer_certificates()?.first()?;
            ClientIdentity::of(leaf, v.ca_fingerprint()?, v.nginx_headers).map(Arc::new)
        });
        Ok(Handshake::Terminated(stream, identity))
    }
}

/// What the HTTPS listener does with a connection.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per connection and matched at once; a Box would cost every HTTPS connection an allocation"
)]
pub enum Handshake {
    /// TLS terminated here (with the client's identity under mTLS).
    Terminated(TlsStream<TcpStream>, Option<Arc<ClientIdentity>>),
    /// A TLS passthrough Route takes the server name: the connection, the bytes read so far
    /// (the ClientHello) and the name.
    Passthrough {
        /// The client's connection.
        stream: TcpStream,
        /// What was read of it, to send to the backend first.
        hello: Vec<u8>,
        /// The server name.
        name: String,
    },
}

/// A non-blocking read of a tokio socket, for rustls's synchronous `read_tls`.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `TLSv1.3`/`TLSv1.2`: the `version` label of `tidegate_tls_handshakes_total`.
pub fn version_label(stream: &TlsStream<TcpStream>) -> &'static str {
    match stream.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}
