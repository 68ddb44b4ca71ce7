//! TLS helpers for tests: a CA signing leaf certificates (rcgen), `kubernetes.io/tls` Secret
//! documents, and a rustls client that tells which certificate a handshake got.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

/// A test CA that signs leaf certificates.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: PEM chain and key, and its DER (to tell which one a server sent).
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tidegate test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf with common name `cn` valid for `names`.
    pub fn leaf(&self, cn: &str, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A `kubernetes.io/tls` Secret document: `data` (base64) or `stringData` (PEM).
pub fn secret_yaml(name: &str, leaf: &Leaf, base64_data: bool) -> String {
    if base64_data {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
            b(&leaf.cert),
            b(&leaf.key)
        )
    } else {
        let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
            indent(&leaf.cert),
            indent(&leaf.key)
        )
    }
}

/// A TLS client trusting the test CA, telling which certificate each handshake got. It does
/// not resume sessions: a resumed session is not sent a certificate (the one it got first
/// still authenticates it), and each handshake here is to show which certificate serves.
pub fn tls_client(ca: &Ca) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A TLS connection to `addr` for `host` with an HTTP/1.1 client on it; the leaf it got.
pub async fn connect(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    host: &'static str,
) -> Result<(Sender, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(host).unwrap();
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, leaf))
}

pub async fn get(sender: &mut Sender, host: &str) -> Result<(), String> {
    let req = http::Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
