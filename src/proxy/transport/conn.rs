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
    /// The read side of a connection the native HTTP/1.1 server serves: kept here rather than
    /// in an allocation of its own, since an idle connection's memory is mostly allocations.
    pub(super) native: Option<super::h1::ClientReader>,
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
    /// ingress-nginx's header values, for hosts whose validation asks for them.
    pub nginx: Option<Box<NginxIdentity>>,
}

/// The values of ingress-nginx's `ssl-client-*` headers for one verified certificate.
#[derive(Debug)]
pub struct NginxIdentity {
    /// `ssl-client-subject-dn`: the subject in RFC 2253 form (nginx's `$ssl_client_s_dn`).
    pub subject_dn: http::HeaderValue,
    /// `ssl-client-issuer-dn`: the issuer, likewise (`$ssl_client_i_dn`).
    pub issuer_dn: http::HeaderValue,
    /// `ssl-client-cert`: the PEM, URL-encoded (`$ssl_client_escaped_cert`), when asked for.
    pub escaped_cert: Option<http::HeaderValue>,
}

impl NginxIdentity {
    /// The values for `cert` (DER `leaf`); the escaped PEM with `pass_certificate`.
    fn of(
        leaf: &[u8],
        cert: &x509_parser::certificate::X509Certificate<'_>,
        pass_certificate: bool,
    ) -> Option<Self> {
        let escaped_cert = if pass_certificate {
            Some(http::HeaderValue::try_from(escaped_pem(leaf)).ok()?)
        } else {
            None
        };
        Some(Self {
            subject_dn: http::HeaderValue::try_from(rfc2253(cert.subject())).ok()?,
            issuer_dn: http::HeaderValue::try_from(rfc2253(cert.issuer())).ok()?,
            escaped_cert,
        })
    }
}

/// A distinguished name as OpenSSL prints it with `XN_FLAG_RFC2253` (what nginx's
/// `$ssl_client_s_dn` holds): the last RDN first, `,` between them, `+` inside one,
/// `,+"\<>;` (and a leading `#` or space, a trailing space) escaped with `\`, bytes outside
/// printable ASCII as `\XX`.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (i, rdn) in name
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            let id = oid.to_id_string();
            out.push_str(match id.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.4" => "SN",
                "2.5.4.5" => "serialNumber",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.9" => "street",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.12" => "title",
                "2.5.4.42" => "GN",
                "2.5.4.43" => "initials",
                "2.5.4.46" => "dnQualifier",
                "2.5.4.65" => "pseudonym",
                "0.9.2342.19200300.100.1.1" => "UID",
                "0.9.2342.19200300.100.1.25" => "DC",
                "1.2.840.113549.1.9.1" => "emailAddress",
                other => other,
            });
            out.push('=');
            let value = attr
                .as_str()
                .map(str::as_bytes)
                .unwrap_or(attr.attr_value().data);
            let last = value.len().saturating_sub(1);
            for (k, &b) in value.iter().enumerate() {
                match b {
                    b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                        out.push('\\');
                        out.push(b as char);
                    }
                    b'#' | b' ' if k == 0 => {
                        out.push('\\');
                        out.push(b as char);
                    }
                    b' ' if k == last => out.push_str("\\ "),
                    b' '..=b'~' => out.push(b as char),
                    _ => {
                        let _ = write!(out, "\\{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// The certificate as PEM, URL-encoded as nginx's `$ssl_client_escaped_cert` is: every byte
/// but letters, digits and `-._~` as `%XX`.
fn escaped_pem(der: &[u8]) -> String {
    use base64::Engine;
    use std::fmt::Write;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 3 / 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl ClientIdentity {
    /// The identity of a verified leaf certificate (DER), verified by CA bundle `ca`; with
    /// `nginx`, ingress-nginx's header values too.
    pub fn of(
        leaf: &[u8],
        ca: &str,
        nginx: Option<crate::model::NginxCertHeaders>,
    ) -> Option<Self> {
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
        let nginx = match nginx {
            Some(n) => Some(Box::new(NginxIdentity::of(
                leaf,
                &cert,
                n.pass_certificate,
            )?)),
            None => None,
        };
        Some(Self {
            ca_fingerprint: ca.into(),
            header: http::HeaderValue::try_from(v).ok()?,
            nginx,
        })
    }
}

/// Counts requests in flight and remembers when the last one ended.
pub struct Activity {
    start: Instant,
    inflight: AtomicUsize,
    last_done_ms: AtomicU64,
    /// Whether anything reads it: hyper's connections do (for their idle timeout); the native
    /// HTTP/1.1 server keeps its own, and its requests skip the counting (two atomic updates,
    /// a reference count and a clock read per request).
    tracked: bool,
}

impl Activity {
    /// A connection that was just accepted (idle from now).
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            tracked: true,
        }
    }

    /// A connection whose server tracks idleness itself: [`Activity::begin`] counts nothing.
    pub fn untracked() -> Self {
        Self {
            tracked: false,
            ..Self::new()
        }
    }

    /// Marks a request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActivityGuard {
        if !self.tracked {
            return ActivityGuard(None);
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(Some(self.clone()))
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
pub struct ActivityGuard(Option<Arc<Activity>>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let Some(a) = &self.0 else {
            return;
        };
        a.last_done_ms
            .store(a.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.inflight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tracked_connection_counts_its_requests() {
        let idle = Duration::from_secs(60);
        let tracked = Arc::new(Activity::new());
        let guard = tracked.begin();
        assert_eq!(tracked.idle_deadline(idle), None, "busy");
        drop(guard);
        assert!(tracked.idle_deadline(idle).is_some());
        let untracked = Arc::new(Activity::untracked());
        let guard = untracked.begin();
        assert_eq!(Arc::strong_count(&untracked), 1, "the guard holds nothing");
        drop(guard);
    }

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
        let id = ClientIdentity::of(cert.der(), "ca", None).unwrap();
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

    /// ingress-nginx's header values are what nginx (OpenSSL) makes of the same certificate:
    /// the names as `openssl x509 -nameopt RFC2253` prints them, the PEM as `openssl x509`
    /// writes it, URL-encoded.
    #[test]
    fn the_nginx_values_are_what_openssl_prints() {
        use std::io::Write;
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        let dn = &mut params.distinguished_name;
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, " ops+dev ");
        dn.push(rcgen::DnType::CommonName, "client #1 <a;b>");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let nginx = crate::model::NginxCertHeaders {
            pass_certificate: true,
        };
        let id = ClientIdentity::of(cert.der(), "ca", Some(nginx)).unwrap();
        let n = id.nginx.as_deref().unwrap();
        let openssl = |args: &[&str]| {
            let mut child = std::process::Command::new("openssl")
                .arg("x509")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("openssl");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(cert.pem().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let subject = openssl(&["-noout", "-subject", "-nameopt", "RFC2253"]);
        let subject = subject.trim().strip_prefix("subject=").unwrap();
        assert_eq!(n.subject_dn.to_str().unwrap(), subject);
        assert_eq!(n.issuer_dn.to_str().unwrap(), subject, "self-signed");
        assert_eq!(
            subject,
            "OU=\\ ops\\+dev\\ ,O=Acme\\, Inc.,C=DE,CN=client #1 \\<a\\;b\\>"
        );
        let pem = openssl(&[]);
        let decoded: String = {
            let raw = n.escaped_cert.as_ref().unwrap().to_str().unwrap();
            let mut out = Vec::new();
            let mut bytes = raw.bytes();
            while let Some(b) = bytes.next() {
                if b == b'%' {
                    let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                        .iter()
                        .map(|&c| c as char)
                        .collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                } else {
                    out.push(b);
                }
            }
            String::from_utf8(out).unwrap()
        };
        assert_eq!(decoded, pem);
        let raw = n.escaped_cert.as_ref().unwrap().to_str().unwrap();
        assert!(raw.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{raw}");
        assert!(
            ClientIdentity::of(cert.der(), "ca", None)
                .unwrap()
                .nginx
                .is_none()
        );
    }
}
