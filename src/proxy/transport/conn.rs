//! Per-connection state: who the peer is and whether the connection is busy (for idle timeouts).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::time::{Duration, Instant};

/// Limits every client connection runs under, whichever codec serves it.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// A client must send the whole request head within this time.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// A request body whose next bytes take longer than this is cut (`None`: no limit).
    pub body_read_timeout: Option<Duration>,
}

/// What a request handler knows about its connection.
pub struct ConnCtx {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https` as seen by the client.
    pub scheme: &'static str,
    /// Busy/idle tracking.
    pub activity: Arc<Activity>,
    /// The client certificate verified in the TLS handshake (mTLS hosts only).
    pub client_cert: Option<Arc<ClientIdentity>>,
}

/// A client certificate the TLS handshake verified, as the request layer uses it.
#[derive(Debug)]
pub struct ClientIdentity {
    /// Fingerprint of the CA bundle that verified it: a rule accepts it only when that is its
    /// own CA (a client may name one host in the handshake and another in `Host`).
    pub ca_fingerprint: Box<str>,
    /// The `x-forwarded-client-cert` value: `Hash=<SHA-256 hex>;Subject="...";DNS="...";
    /// URI="...";IP="..."` (quoted values escaped, anything but printable ASCII replaced).
    pub header: http::HeaderValue,
}

impl ClientIdentity {
    /// The identity of a verified leaf certificate (DER), verified by CA bundle `ca`.
    pub fn of(leaf: &[u8], ca: &str) -> Option<Self> {
        use std::fmt::Write;
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        let hash = ring::digest::digest(&ring::digest::SHA256, leaf);
        let mut v = String::from("Hash=");
        for b in hash.as_ref() {
            let _ = write!(v, "{b:02x}");
        }
        let mut field = |key: &str, value: &str| {
            v.push(';');
            v.push_str(key);
            v.push_str("=\"");
            for c in value.chars() {
                match c {
                    '"' | '\\' => {
                        v.push('\\');
                        v.push(c);
                    }
                    ' '..='~' => v.push(c),
                    _ => v.push('?'),
                }
            }
            v.push('"');
        };
        field("Subject", &cert.subject().to_string());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => field("DNS", d),
                    GeneralName::URI(u) => field("URI", u),
                    GeneralName::IPAddress(ip) => {
                        let ip = match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip).map(std::net::IpAddr::from).ok(),
                            16 => <[u8; 16]>::try_from(*ip).map(std::net::IpAddr::from).ok(),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            field("IP", &ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(Self {
            ca_fingerprint: ca.into(),
            header: http::HeaderValue::try_from(v).ok()?,
        })
    }
}

/// Counts requests in flight and remembers when the last one ended.
pub struct Activity {
    start: Instant,
    inflight: AtomicUsize,
    last_done_ms: AtomicU64,
}

impl Activity {
    /// A connection that was just accepted (idle from now).
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    /// When the connection becomes idle-expired, or `None` while a request is in flight.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_done_ms.load(Ordering::Relaxed));
        Some(self.start + last + idle)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Held by a request (and then its response body) while it is in flight.
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done_ms
            .store(a.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.inflight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity header cannot be used to smuggle a second field or a non-ASCII byte: a
    /// quote is escaped, anything outside printable ASCII becomes `?`.
    #[test]
    fn the_identity_header_is_sanitised() {
        let mut params =
            rcgen::CertificateParams::new(vec!["a.test".to_owned(), "b.test".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "evil\";DNS=\"admin é");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = ClientIdentity::of(cert.der(), "ca").unwrap();
        let value = id.header.to_str().unwrap();
        let hash = ring::digest::digest(&ring::digest::SHA256, cert.der());
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            value,
            format!(
                "Hash={hex};Subject=\"CN=evil\\\";DNS=\\\"admin ?\";DNS=\"a.test\";DNS=\"b.test\""
            )
        );
        assert_eq!(&*id.ca_fingerprint, "ca");
    }
}
