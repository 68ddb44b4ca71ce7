//! The upstream clients: hyper's pooled clients (HTTP/1.1 when the native client is off, and
//! h2c), one set per distinct connection settings, and the native client's settings; and the
//! TLS clients (HTTP/1.1 over TLS, HTTP/2 over TLS with ALPN `h2`), one per distinct
//! (connection settings, protocol, TLS settings). A TLS client has its own pool, so TLS and
//! plain connections never mix, and a changed CA or client certificate makes a new client:
//! new connections use it, connections already open finish on the old one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::Uri;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use super::body::RequestBody;
use super::h1::{ClientSettings, IdlePool};
use crate::model::{UpstreamProtocol, UpstreamTls};
use crate::proxy::upstream::{Registry, StatusFuture, TlsProbeClient, TlsProbes, UpstreamSettings};

/// A pooled client to one TLS endpoint.
pub type TlsClient = Client<EndpointConnector, RequestBody>;

/// Connects to one endpoint whatever the request URI names: the URI carries the request's
/// host (HTTP/2's `:authority`), the endpoint is where the connection goes. The TLS server
/// name is the configured one, else the endpoint's host.
#[derive(Clone)]
pub struct EndpointConnector {
    target: Uri,
    tls: HttpsConnector<HttpConnector>,
}

impl tower_service::Service<Uri> for EndpointConnector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tls.poll_ready(cx)
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.tls.call(self.target.clone())
    }
}

/// hyper's pooled clients for one set of connection settings, one per upstream protocol.
pub struct HyperClients {
    /// HTTP/1.1 with keep-alive.
    pub http1: Client<HttpConnector, RequestBody>,
    /// HTTP/2 cleartext, prior knowledge.
    pub h2c: Client<HttpConnector, RequestBody>,
}

impl HyperClients {
    fn new(s: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(s.connect_timeout));
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(s.pool_idle_timeout)
            .pool_max_idle_per_host(s.pool_max_idle_per_host);
        let http1 = builder.build(connector.clone());
        builder.http2_only(true);
        let h2c = builder.build(connector);
        Self { http1, h2c }
    }
}

fn http_connector(s: &UpstreamSettings) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(s.connect_timeout));
    // The TLS connector on top checks that the scheme is https.
    connector.enforce_http(false);
    connector
}

/// The system's trust store (read once): what verifies endpoints of a Backend without a CA.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system CA certificates for TLS to backends");
            Arc::new(roots)
        })
        .clone()
}

/// The rustls client config for `tls`: TLS 1.2 and 1.3, the CA bundle (or the system's
/// roots), the client certificate when set. Verification is on unless the settings say
/// `insecure_skip_verify`.
fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, rustls::Error> {
    let provider = super::tls::crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
    } else {
        let roots = match &tls.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(ca.certificates.iter().cloned());
                Arc::new(roots)
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    match &tls.client_certificate {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key()),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts the server's certificate chain without verifying it (a Backend's
/// `tls.insecureSkipVerify`), while the handshake's signatures are checked as usual against
/// the leaf's key: the peer must hold the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A TLS client to `endpoint` (`host:port`) for `tls` over `protocol` (HTTP1: ALPN
/// `http/1.1`; HTTP2: ALPN `h2` only).
fn tls_client(
    s: &UpstreamSettings,
    protocol: UpstreamProtocol,
    tls: &UpstreamTls,
    endpoint: &str,
) -> Result<TlsClient, String> {
    let target = Uri::try_from(format!("https://{endpoint}/"))
        .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
    let config = client_config(tls).map_err(|e| format!("TLS settings: {e}"))?;
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let builder = match &tls.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("server name {name:?}: {e}"))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let http2 = protocol == UpstreamProtocol::Http2;
    let tls = if http2 {
        builder.enable_http2().wrap_connector(http_connector(s))
    } else {
        builder.enable_http1().wrap_connector(http_connector(s))
    };
    let connector = EndpointConnector { target, tls };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(s.pool_idle_timeout)
        .pool_max_idle_per_host(s.pool_max_idle_per_host)
        .http2_only(http2);
    Ok(client.build(connector))
}

/// A TLS client to `endpoint` for active health probes: the backend's TLS settings and
/// protocol (the same server name, CA and client certificate as its traffic), and no pooling,
/// so that each probe sees what a new connection sees.
pub fn probe_tls_client(
    protocol: UpstreamProtocol,
    tls: &UpstreamTls,
    endpoint: &str,
    connect_timeout: std::time::Duration,
) -> Result<TlsClient, String> {
    let settings = UpstreamSettings {
        connect_timeout,
        pool_max_idle_per_host: 0,
        ..UpstreamSettings::default()
    };
    tls_client(&settings, protocol, tls, endpoint)
}

/// The clients of HTTP probes over TLS, made for the upstream layer's health checks.
pub struct TlsProbeClients;

impl TlsProbes for TlsProbeClients {
    fn client(
        &self,
        protocol: UpstreamProtocol,
        tls: &UpstreamTls,
        endpoint: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<Box<dyn TlsProbeClient>, String> {
        probe_tls_client(protocol, tls, endpoint, connect_timeout)
            .map(|c| Box::new(c) as Box<dyn TlsProbeClient>)
    }
}

impl TlsProbeClient for TlsClient {
    fn get(&self, req: http::Request<()>) -> StatusFuture<'_> {
        let req = req.map(|()| RequestBody::full(bytes::Bytes::new()));
        Box::pin(async move { self.request(req).await.ok().map(|r| r.status()) })
    }
}

/// One TLS client and what it was made for.
struct TlsEntry {
    settings: UpstreamSettings,
    protocol: UpstreamProtocol,
    tls: Arc<UpstreamTls>,
    client: Arc<TlsClient>,
}

/// Every upstream client of a proxy: the gateway's defaults, and those of backends with
/// connection settings of their own (shared by backends whose settings are equal).
pub struct Clients {
    defaults: UpstreamSettings,
    hyper: HyperClients,
    own: Mutex<HashMap<UpstreamSettings, Arc<HyperClients>>>,
    /// By endpoint address.
    tls: Mutex<HashMap<Arc<str>, Vec<TlsEntry>>>,
}

impl Clients {
    /// Clients with the gateway's default settings.
    pub fn new(defaults: &UpstreamSettings) -> Self {
        Self {
            defaults: defaults.clone(),
            hyper: HyperClients::new(defaults),
            own: Mutex::default(),
            tls: Mutex::default(),
        }
    }

    /// The TLS client to `endpoint` for a backend's TLS settings (`own`: its connection
    /// settings, if any), made on first use: its pool holds that endpoint's connections.
    /// Clients whose TLS settings no published table holds any more are dropped when a new
    /// one is made.
    pub fn tls(
        &self,
        own: Option<&UpstreamSettings>,
        protocol: UpstreamProtocol,
        tls: &Arc<UpstreamTls>,
        endpoint: &Arc<str>,
    ) -> Result<Arc<TlsClient>, String> {
        let settings = own.unwrap_or(&self.defaults);
        let mut map = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        let same = |e: &TlsEntry| e.protocol == protocol && e.settings == *settings;
        if let Some(entries) = map.get_mut(endpoint) {
            if let Some(e) = entries.iter().find(|e| Arc::ptr_eq(&e.tls, tls) && same(e)) {
                return Ok(e.client.clone());
            }
            // A recompiled table holds equal settings in a new allocation: adopt it, so the
            // next request finds it by pointer.
            if let Some(e) = entries.iter_mut().find(|e| *e.tls == **tls && same(e)) {
                e.tls = tls.clone();
                return Ok(e.client.clone());
            }
        }
        // Settings only this map still holds are gone from every table.
        map.retain(|_, entries| {
            entries.retain(|e| Arc::strong_count(&e.tls) > 1);
            !entries.is_empty()
        });
        let client = Arc::new(tls_client(settings, protocol, tls, endpoint)?);
        map.entry(endpoint.clone()).or_default().push(TlsEntry {
            settings: settings.clone(),
            protocol,
            tls: tls.clone(),
            client: client.clone(),
        });
        Ok(client)
    }

    /// Sends `req` (its URI absolute) with the gateway's default settings: hyper's HTTP/1.1
    /// client for `http`, the TLS client of `tls` for `https` (the gateway's own requests:
    /// JWKS fetches, external authorization).
    pub async fn send(
        &self,
        tls: Option<&Arc<UpstreamTls>>,
        req: http::Request<RequestBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        match tls {
            Some(tls) => {
                let uri = req.uri();
                let host = uri.host().ok_or("the URI names no host")?;
                let port = uri.port_u16().unwrap_or(443);
                let endpoint: Arc<str> = format!("{host}:{port}").into();
                let client = self.tls(None, UpstreamProtocol::Http1, tls, &endpoint)?;
                client.request(req).await.map_err(|e| format!("{e:?}"))
            }
            None => self
                .hyper
                .http1
                .request(req)
                .await
                .map_err(|e| format!("{e:?}")),
        }
    }

    /// The native HTTP/1.1 client's settings for a backend (`own`: its settings, if any).
    pub fn native(&self, own: Option<&UpstreamSettings>) -> ClientSettings {
        let s = own.unwrap_or(&self.defaults);
        ClientSettings {
            connect_timeout: s.connect_timeout,
            idle_timeout: s.pool_idle_timeout,
            max_idle: s.pool_max_idle_per_host,
        }
    }

    /// hyper's clients for a backend (`own`: its settings, if any), made on first use.
    pub fn hyper(&self, own: Option<&UpstreamSettings>) -> HyperRef<'_> {
        match own {
            None => HyperRef::Default(&self.hyper),
            Some(s) => {
                let mut map = self.own.lock().unwrap_or_else(|e| e.into_inner());
                let clients = map
                    .entry(s.clone())
                    .or_insert_with(|| Arc::new(HyperClients::new(s)));
                HyperRef::Own(clients.clone())
            }
        }
    }

    /// Closes idle native connections of every backend that outlived their idle timeout or
    /// that the upstream closed (hyper's pools reap their own).
    pub fn reap_idle(&self, registry: &Registry) {
        for backend in registry.states() {
            let settings = backend.settings();
            let max_idle = self.native(settings.as_deref()).idle_timeout;
            for endpoint in backend.endpoint_states().iter() {
                if let Some(pool) = endpoint.attached.get::<IdlePool>() {
                    pool.reap(max_idle);
                }
            }
        }
    }
}

/// hyper's clients for one backend: the shared default set, or the backend's own.
pub enum HyperRef<'a> {
    /// The gateway's defaults.
    Default(&'a HyperClients),
    /// The backend's own settings.
    Own(Arc<HyperClients>),
}

impl std::ops::Deref for HyperRef<'_> {
    type Target = HyperClients;

    fn deref(&self) -> &HyperClients {
        match self {
            HyperRef::Default(c) => c,
            HyperRef::Own(c) => c,
        }
    }
}
