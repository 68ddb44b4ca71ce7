//! TLS as the data plane sees it: the certificates it serves, chosen by SNI (exact host, then
//! wildcard, then a default).
//!
//! Plain data: certificates and keys are DER (checked by the compiler: the key matches, the
//! chain parses, the dates hold); the proxy turns them into its TLS library's types when a
//! table is published. Key material is never serialized (`/config` shows where a certificate
//! came from, its names, dates and fingerprint).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use super::ObjectRef;

/// A certificate chain and its private key, as the compiler accepted them.
pub struct Certificate {
    /// Where it came from: `namespace/name` of a Secret, or the certificate file's path. The
    /// `certificate` label of the expiry metric.
    pub source: Arc<str>,
    /// The chain, leaf first (DER).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (DER).
    pub key: PrivateKeyDer<'static>,
    /// DNS names the leaf is valid for (subjectAltName, or the subject CN without one).
    pub names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the leaf, hex: tells two versions of one source apart.
    pub fingerprint: String,
}

impl Certificate {
    /// Whether the leaf is valid for `host` (lower-case; `*.example.com` covers one label).
    /// A Route hostname `*.example.com` is covered by the same wildcard name.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }
}

/// Whether certificate name `name` is valid for `host` (RFC 6125: a wildcard stands for one
/// whole left-most label).
pub fn name_covers(name: &str, host: &str) -> bool {
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
        }
        _ => false,
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("source", &self.source)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
            && self.chain == other.chain
            && self.key.secret_der() == other.key.secret_der()
    }
}

impl Serialize for Certificate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Certificate", 5)?;
        st.serialize_field("source", &*self.source)?;
        st.serialize_field("names", &self.names)?;
        st.serialize_field("notBefore", &super::ser::unix_time(self.not_before))?;
        st.serialize_field("notAfter", &super::ser::unix_time(self.not_after))?;
        st.serialize_field("fingerprint", &self.fingerprint)?;
        st.end()
    }
}

/// Trust anchors that verify a peer: the certificates of a CA bundle (DER).
#[derive(Clone, Debug, PartialEq)]
pub struct CaBundle {
    /// Where it came from: `namespace/name` of a Secret (its `ca.crt`).
    pub source: Arc<str>,
    /// The CA certificates (DER), each checked to parse.
    pub certificates: Vec<CertificateDer<'static>>,
    /// SHA-256 of the bundle's DER, hex: tells two versions of one source apart.
    pub fingerprint: String,
}

impl CaBundle {
    /// A bundle that trusts nothing: what a configured CA that cannot be used stands for, so
    /// that verification fails closed instead of falling back to the system's trust store.
    pub fn trusting_nothing(source: &str) -> Self {
        Self {
            source: source.into(),
            certificates: Vec::new(),
            fingerprint: String::new(),
        }
    }
}

impl Serialize for CaBundle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CaBundle", 3)?;
        st.serialize_field("source", &*self.source)?;
        st.serialize_field("certificates", &self.certificates.len())?;
        st.serialize_field("fingerprint", &self.fingerprint)?;
        st.end()
    }
}

/// TLS from the gateway to a backend's endpoints. The server certificate is verified unless
/// `insecure_skip_verify` is set (a Backend's `tls.insecureSkipVerify`, said in its name).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// The server name sent (SNI) and verified; `None`: each endpoint's host (a DNS name or
    /// an IP address, verified against the certificate's IP addresses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The CA bundle that verifies the endpoints; `None`: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<Arc<CaBundle>>,
    /// The certificate the gateway presents (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Arc<Certificate>>,
    /// Any certificate is accepted (the handshake's signatures are still checked).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// Client certificates (mTLS) on an HTTPS host and its rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientValidation {
    /// The CAs that sign client certificates; `None` when the CA bundle cannot be read: no
    /// certificate verifies, so a required one fails closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<Arc<CaBundle>>,
    /// Whether requests without a valid certificate are refused (`Require`).
    pub required: bool,
    /// ingress-nginx's `ssl-client-*` request headers (an Ingress's `auth-tls-secret`), beside
    /// `x-forwarded-client-cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nginx_headers: Option<NginxCertHeaders>,
}

/// ingress-nginx's client-certificate headers to the upstream: `ssl-client-verify`
/// (`SUCCESS` or `NONE`), `ssl-client-subject-dn` and `ssl-client-issuer-dn` (RFC 2253), and
/// with `pass_certificate` `ssl-client-cert` (the URL-encoded PEM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NginxCertHeaders {
    /// `auth-tls-pass-certificate-to-upstream: "true"`: `ssl-client-cert` too.
    pub pass_certificate: bool,
}

impl ClientValidation {
    /// The fingerprint of the CA bundle that must have verified a connection's certificate.
    pub fn ca_fingerprint(&self) -> Option<&str> {
        self.ca.as_deref().map(|c| c.fingerprint.as_str())
    }
}

/// The TLS settings of one host name the HTTPS listener serves.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsHost {
    /// Lower-case; `*.example.com` for a wildcard.
    pub hostname: String,
    /// Index in [`TlsTable::certificates`].
    pub certificate: usize,
    /// Client certificates asked for on this host (the Route's `spec.tls.clientValidation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<Arc<ClientValidation>>,
    /// The object that set them (a Route or an Ingress).
    pub owner: ObjectRef,
}

/// What the HTTPS listener serves: certificates by host name, and a default for the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsTable {
    /// Every certificate in use.
    pub certificates: Vec<Arc<Certificate>>,
    /// Host names with their certificate, in precedence order (the first claim of a host wins).
    pub hosts: Vec<TlsHost>,
    /// Index of the certificate for names no host claims (`--default-certificate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<usize>,
    #[serde(skip)]
    index: TlsIndex,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct TlsIndex {
    exact: HashMap<Box<str>, usize>,
    /// By the suffix after `*` (`.example.com`).
    wildcard: HashMap<Box<str>, usize>,
}

impl TlsTable {
    /// A table from its parts; the host index is built here.
    pub fn new(
        certificates: Vec<Arc<Certificate>>,
        hosts: Vec<TlsHost>,
        default: Option<usize>,
    ) -> Self {
        let mut index = TlsIndex::default();
        for (i, h) in hosts.iter().enumerate() {
            let map = match h.hostname.strip_prefix('*') {
                Some(suffix) => index.wildcard.entry(suffix.into()),
                None => index.exact.entry(h.hostname.as_str().into()),
            };
            map.or_insert(i);
        }
        Self {
            certificates,
            hosts,
            default,
            index,
        }
    }

    /// Whether the HTTPS listener has anything to serve.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.default.is_none()
    }

    /// The host entry for a server name (lower-case): exact, then the longest wildcard.
    pub fn host(&self, name: &str) -> Option<&TlsHost> {
        if let Some(&i) = self.index.exact.get(name) {
            return self.hosts.get(i);
        }
        if self.index.wildcard.is_empty() {
            return None;
        }
        name.char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .find_map(|(i, _)| self.index.wildcard.get(&name[i..]))
            .and_then(|&i| self.hosts.get(i))
    }

    /// The index of the host entry for a server name (lower-case): exact, then the longest
    /// wildcard.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.exact.get(name) {
            return Some(i);
        }
        if self.index.wildcard.is_empty() {
            return None;
        }
        name.char_indices()
            .filter(|&(i, c)| c == '.' && i > 0)
            .find_map(|(i, _)| self.index.wildcard.get(&name[i..]))
            .copied()
    }

    /// The certificate for a handshake naming `sni` (lower-case, or none): the host's, else the
    /// default certificate; `None`: the handshake fails with `unrecognized_name`.
    pub fn select(&self, sni: Option<&str>) -> Option<usize> {
        match sni.and_then(|n| self.host(n)) {
            Some(h) => Some(h.certificate),
            None => self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_name_covers_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(name_covers("*.example.com", "*.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("Shop.Example.com", "shop.example.com"));
        assert!(!name_covers("shop.example.com", "a.shop.example.com"));
    }

    fn cert(source: &str) -> Arc<Certificate> {
        Arc::new(Certificate {
            source: source.into(),
            chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(Vec::new().into()),
            names: Vec::new(),
            not_before: 0,
            not_after: 0,
            fingerprint: String::new(),
        })
    }

    fn host(name: &str, certificate: usize) -> TlsHost {
        TlsHost {
            hostname: name.into(),
            certificate,
            client_validation: None,
            owner: ObjectRef::new(super::super::Kind::Route, "ns", "r"),
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let t = TlsTable::new(
            vec![cert("exact"), cert("wild"), cert("default")],
            vec![host("a.example.com", 0), host("*.example.com", 1)],
            Some(2),
        );
        let source =
            |sni: Option<&str>| t.select(sni).map(|i| t.certificates[i].source.to_string());
        assert_eq!(source(Some("a.example.com")).as_deref(), Some("exact"));
        assert_eq!(source(Some("b.example.com")).as_deref(), Some("wild"));
        assert_eq!(source(Some("x.b.example.com")).as_deref(), Some("wild"));
        assert_eq!(source(Some("other.test")).as_deref(), Some("default"));
        assert_eq!(source(None).as_deref(), Some("default"));
        let none = TlsTable::new(vec![cert("exact")], vec![host("a.example.com", 0)], None);
        assert!(none.select(Some("other.test")).is_none());
    }
}
