//! ingress-nginx's TLS to the Services (`backend-protocol: HTTPS` or `GRPCS`, and the
//! `proxy-ssl-*` family) → a Backend's `tls`: read once from the annotations, then made the
//! [`UpstreamTls`] of the Ingress's Service backends (the compiler) or written out as
//! `spec.tls` of the Backends `tidegate migrate` writes.
//!
//! As in ingress-nginx, the `proxy-ssl-*` annotations take effect only with
//! `proxy-ssl-secret` (ingress-nginx reads none of them without it) and only matter to
//! Services spoken to over TLS (nginx's `proxy_ssl_*` only apply to `https://` upstreams);
//! elsewhere each is a warning that it has no effect. ingress-nginx does not verify the
//! Services' certificates unless `proxy-ssl-verify: "on"`; neither does Tidegate then
//! (`tls.insecureSkipVerify`), with a warning that says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::fields::{self, Findings};
use super::ingress_translate::{Outcome, get};
use super::route::Env;
use crate::api;
use crate::model::{Diagnostic, Reason, Severity, UpstreamTls};

/// The annotations read here (short names).
pub const NAMES: &[&str] = &[
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-verify-depth",
    "proxy-ssl-protocols",
    "proxy-ssl-ciphers",
];

/// TLS to the Services of an Ingress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxySsl {
    /// `GRPCS`: HTTP/2 over TLS (ALPN h2); `HTTPS`: HTTP/1.1 over TLS.
    pub http2: bool,
    /// `proxy-ssl-verify: "on"`: the certificates are verified with the Secret's `ca.crt`.
    pub verify: bool,
    /// `proxy-ssl-secret`: the Secret (of the Ingress's namespace) with `ca.crt` and,
    /// optionally, the client certificate in `tls.crt` and `tls.key`.
    pub secret: Option<String>,
    /// `proxy-ssl-name`: the server name sent and verified (default: the Service's
    /// `NAME.NAMESPACE.svc`).
    pub name: Option<String>,
}

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// A finding that does not reject the Ingress.
fn warn(f: &mut Findings<'_>, key: &str, message: String) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(f.id(), field(key), Reason::Invalid, message)
    });
}

/// Reads `proxy-ssl-*` into `tls` (set by `backend-protocol: HTTPS` or `GRPCS`, whose key is
/// `protocol_key`; `None`: the Services are spoken to without TLS). Outcomes go to
/// `outcomes`, problems to `f`.
pub fn read(
    a: &BTreeMap<String, String>,
    tls: Option<&mut ProxySsl>,
    protocol_key: Option<&str>,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) {
    let present: Vec<(&str, String, &str)> = NAMES
        .iter()
        .filter_map(|n| get(a, n).map(|(k, v)| (*n, k, v)))
        .collect();
    let Some(tls) = tls else {
        for (_, key, _) in &present {
            warn(
                f,
                key,
                "it has no effect: the Services are spoken to without TLS (set \
                 backend-protocol HTTPS or GRPCS; nginx's proxy_ssl_* matter only to https \
                 upstreams)"
                    .to_owned(),
            );
        }
        return;
    };
    match get(a, "proxy-ssl-secret") {
        None => {
            for (_, key, _) in &present {
                warn(
                    f,
                    key,
                    "it has no effect without proxy-ssl-secret (ingress-nginx reads none of \
                     proxy-ssl-* without it)"
                        .to_owned(),
                );
            }
        }
        Some((key, v)) => {
            secret(&key, v, tls, outcomes, f);
            for (name, key, v) in &present {
                setting(name, key, v.trim(), tls, outcomes, f);
            }
        }
    }
    if !tls.verify {
        let key = get(a, "proxy-ssl-verify")
            .filter(|_| tls.secret.is_some())
            .map(|(k, _)| k)
            .or_else(|| protocol_key.map(str::to_owned))
            .unwrap_or_default();
        warn(
            f,
            &key,
            "the Services' certificates are not verified (as in ingress-nginx, whose \
             proxy-ssl-verify is off by default): the traffic is encrypted, but anyone on the \
             path can pose as the Services; to verify them, set proxy-ssl-verify: \"on\" and \
             proxy-ssl-secret naming a Secret whose ca.crt signs their certificates"
                .to_owned(),
        );
    }
}

/// `proxy-ssl-secret`: `NAMESPACE/NAME` (or `NAME`), a Secret of the Ingress's namespace.
fn secret(
    key: &str,
    v: &str,
    tls: &mut ProxySsl,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) {
    let namespace = f.id().namespace.to_string();
    let name = match v.trim().split_once('/') {
        None => v.trim(),
        Some((ns, name)) if ns == namespace => name,
        Some((ns, _)) => {
            f.not_supported(
                field(key),
                &format!(
                    "proxy-ssl-secret {v:?}: a Secret of another namespace ({ns}) than the \
                     Ingress's (a Backend's tls reads Secrets of its own namespace); copy it \
                     into {namespace}"
                ),
            );
            return;
        }
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        f.invalid(
            field(key),
            format!("{v:?} must be NAMESPACE/NAME of a Secret (a lower-case object name)"),
        );
        return;
    }
    tls.secret = Some(name.to_owned());
    outcomes.insert(
        key.to_owned(),
        Outcome::Approximated(
            "its ca.crt verifies the Services (caSecretRef, with proxy-ssl-verify \"on\"), and \
             its tls.crt and tls.key are the client certificate (clientCertificateRef) when \
             it has them"
                .to_owned(),
        ),
    );
}

/// One of `proxy-ssl-*` other than the Secret, with `proxy-ssl-secret` set.
fn setting(
    name: &str,
    key: &str,
    v: &str,
    tls: &mut ProxySsl,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) {
    let on_off = |f: &mut Findings<'_>| match v {
        "on" => Some(true),
        "off" => Some(false),
        _ => {
            f.invalid(field(key), format!("{v:?} must be \"on\" or \"off\""));
            None
        }
    };
    let outcome = match name {
        "proxy-ssl-verify" => {
            let Some(on) = on_off(f) else { return };
            tls.verify = on;
            Outcome::Carried
        }
        "proxy-ssl-name" => match fields::hostname(v, false) {
            Ok(h) => {
                tls.name = Some(h);
                Outcome::Carried
            }
            Err(e) => {
                f.invalid(field(key), e);
                return;
            }
        },
        "proxy-ssl-server-name" => {
            let Some(on) = on_off(f) else { return };
            let how = "Tidegate always sends the server name (SNI): proxy-ssl-name, else the \
                       Service's NAME.NAMESPACE.svc";
            if on {
                Outcome::Approximated(format!(
                    "{how} (nginx sends proxy-ssl-name, else the upstream's name)"
                ))
            } else {
                let why = format!("{how}, where nginx sends none with \"off\"");
                warn(f, key, why.clone());
                Outcome::Approximated(why)
            }
        }
        "proxy-ssl-verify-depth" => {
            if v.parse::<u32>().is_err() {
                f.invalid(field(key), format!("{v:?} must be a whole number"));
                return;
            }
            let why = "Tidegate verifies a chain of any length up to a CA of the Secret's \
                       ca.crt (nginx stops at this depth)"
                .to_owned();
            warn(f, key, why.clone());
            Outcome::Approximated(why)
        }
        "proxy-ssl-protocols" => match protocols(v) {
            Ok(None) => Outcome::Carried,
            Ok(Some(why)) => {
                warn(f, key, why.clone());
                Outcome::Approximated(why)
            }
            Err(e) => {
                f.invalid(field(key), e);
                return;
            }
        },
        "proxy-ssl-ciphers" => {
            let why = "Tidegate offers its own cipher suites (ECDHE key exchange with \
                       AES-GCM or ChaCha20-Poly1305), not an OpenSSL cipher list"
                .to_owned();
            warn(f, key, why.clone());
            Outcome::Approximated(why)
        }
        _ => return,
    };
    outcomes.insert(key.to_owned(), outcome);
}

/// `proxy-ssl-protocols` (nginx's `proxy_ssl_protocols`: `TLSv1.2 TLSv1.3` and older ones):
/// `None` when it names TLS 1.2 and 1.3 exactly (what Tidegate offers), else how it differs.
fn protocols(v: &str) -> Result<Option<String>, String> {
    const KNOWN: [&str; 6] = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
    let words: Vec<&str> = v.split_whitespace().collect();
    if let Some(bad) = words.iter().find(|w| !KNOWN.contains(w)) {
        return Err(format!("{bad:?} is not one of {}", KNOWN.join(", ")));
    }
    let (tls12, tls13) = (words.contains(&"TLSv1.2"), words.contains(&"TLSv1.3"));
    if !tls12 && !tls13 {
        return Err(format!(
            "{v:?}: Tidegate speaks TLS 1.2 and 1.3 to the Services, and no older version \
             (not supported)"
        ));
    }
    let older = words.iter().any(|w| !matches!(*w, "TLSv1.2" | "TLSv1.3"));
    Ok((older || !tls12 || !tls13).then(|| {
        "Tidegate offers TLS 1.2 and 1.3, whatever the list (older versions are never \
         offered)"
            .to_owned()
    }))
}

impl ProxySsl {
    /// The Backend `tls` (and protocol) `tidegate migrate` writes.
    pub fn backend_tls(&self) -> api::BackendTls {
        let secret = || {
            self.secret
                .as_ref()
                .map(|s| api::LocalObjectRef { name: s.clone() })
        };
        api::BackendTls {
            sni: self.name.clone(),
            ca_secret_ref: if self.verify { secret() } else { None },
            client_certificate_ref: secret(),
            insecure_skip_verify: (!self.verify).then_some(true),
            ..api::BackendTls::default()
        }
    }

    /// The Backend protocol: HTTP/1.1 over TLS, or HTTP/2 over TLS for gRPC.
    pub fn backend_protocol(&self) -> api::BackendProtocol {
        if self.http2 {
            api::BackendProtocol::Http2
        } else {
            api::BackendProtocol::Http1
        }
    }

    /// The TLS settings of the Service backends of an Ingress in `namespace` (the server
    /// name is the caller's: the Service's name unless `name` is set); Secret problems go to
    /// `f`, naming `proxy-ssl-secret`.
    pub fn upstream_tls(
        &self,
        a: &BTreeMap<String, String>,
        namespace: &str,
        env: &Env<'_>,
        f: &mut Findings<'_>,
    ) -> Arc<UpstreamTls> {
        let at = get(a, "proxy-ssl-secret")
            .map(|(k, _)| field(&k))
            .unwrap_or_default();
        let mut ca = None;
        let mut client_certificate = None;
        if let Some(name) = &self.secret {
            let mut certificates = env.certificates.borrow_mut();
            if self.verify {
                ca = Some(match certificates.ca_bundle(namespace, name) {
                    Ok(bundle) => bundle,
                    Err(why) => {
                        // A CA that is set but unusable trusts nothing (never the system's).
                        f.push(Diagnostic::error(
                            f.id(),
                            &at,
                            Reason::InvalidCertificateRef,
                            format!("{why}; until it is fixed no Service certificate is trusted"),
                        ));
                        Arc::new(crate::model::CaBundle::trusting_nothing(&at))
                    }
                });
            }
            let has_pair = env
                .secrets
                .get(&(namespace.to_owned(), name.clone()))
                .is_some_and(|s| s.cert.is_some() && s.key.is_some());
            if has_pair {
                let mut found = Vec::new();
                let index =
                    certificates.certificate_any_type(namespace, name, f.id(), &at, &mut found);
                for d in found {
                    f.push(d);
                }
                client_certificate = index.map(|i| certificates.get(i));
            }
        }
        Arc::new(UpstreamTls {
            server_name: self.name.clone(),
            ca,
            client_certificate,
            insecure_skip_verify: !self.verify,
        })
    }
}

/// The Secret `proxy-ssl-secret` names, when it is in `namespace`: read by reference in
/// Kubernetes mode.
pub fn secret_name<'a>(a: &'a BTreeMap<String, String>, namespace: &str) -> Option<&'a str> {
    let (_, v) = get(a, "proxy-ssl-secret")?;
    match v.trim().split_once('/') {
        None => Some(v.trim()),
        Some((ns, name)) => (ns == namespace).then_some(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ObjectRef};

    const N: &str = "nginx.ingress.kubernetes.io/";

    /// Reads `pairs` with backend-protocol `protocol` (HTTPS or GRPCS) or none.
    fn run(
        protocol: Option<bool>,
        pairs: &[(&str, &str)],
    ) -> (Option<ProxySsl>, BTreeMap<String, Outcome>, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let mut out = Vec::new();
        let a: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("{N}{k}"), (*v).to_owned()))
            .collect();
        let mut tls = protocol.map(|http2| ProxySsl {
            http2,
            ..ProxySsl::default()
        });
        let mut outcomes = BTreeMap::new();
        read(
            &a,
            tls.as_mut(),
            Some("nginx.ingress.kubernetes.io/backend-protocol"),
            &mut outcomes,
            &mut Findings::new(&id, &mut out),
        );
        (tls, outcomes, out)
    }

    #[test]
    fn without_proxy_ssl_verify_the_certificates_are_not_verified_and_a_warning_says_so() {
        let (tls, _, d) = run(Some(false), &[]);
        let tls = tls.unwrap();
        assert!(!tls.verify);
        assert_eq!(tls.backend_tls().insecure_skip_verify, Some(true));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, Severity::Warning);
        assert!(d[0].field.contains("backend-protocol"), "{d:?}");
        assert!(d[0].message.contains("proxy-ssl-verify: \"on\""), "{d:?}");
    }

    #[test]
    fn verify_on_with_the_secret_verifies_with_its_ca_and_presents_its_certificate() {
        let (tls, outcomes, d) = run(
            Some(true),
            &[
                ("proxy-ssl-secret", "shop/upstream-tls"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "api.internal"),
                ("proxy-ssl-protocols", "TLSv1.2 TLSv1.3"),
            ],
        );
        assert!(d.is_empty(), "{d:?}");
        let tls = tls.unwrap();
        let b = tls.backend_tls();
        assert_eq!(b.sni.as_deref(), Some("api.internal"));
        assert_eq!(b.ca_secret_ref.unwrap().name, "upstream-tls");
        assert_eq!(b.client_certificate_ref.unwrap().name, "upstream-tls");
        assert_eq!(b.insecure_skip_verify, None);
        assert_eq!(tls.backend_protocol(), api::BackendProtocol::Http2);
        assert_eq!(outcomes[&format!("{N}proxy-ssl-verify")], Outcome::Carried);
    }

    #[test]
    fn a_secret_of_another_namespace_is_not_supported_yet() {
        let (_, _, d) = run(Some(false), &[("proxy-ssl-secret", "other/upstream-tls")]);
        assert!(
            d[0].is_error() && d[0].message.contains("not supported yet"),
            "{d:?}"
        );
    }

    #[test]
    fn settings_that_differ_are_warnings_and_bad_values_errors() {
        let (_, outcomes, d) = run(
            Some(false),
            &[
                ("proxy-ssl-secret", "upstream-tls"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-ciphers", "HIGH:!aNULL"),
                ("proxy-ssl-verify-depth", "2"),
                ("proxy-ssl-server-name", "off"),
                ("proxy-ssl-protocols", "TLSv1.1 TLSv1.2"),
            ],
        );
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d.iter().all(|d| d.severity == Severity::Warning), "{d:?}");
        assert!(matches!(
            outcomes[&format!("{N}proxy-ssl-ciphers")],
            Outcome::Approximated(_)
        ));
        for (name, v) in [
            ("proxy-ssl-verify", "yes"),
            ("proxy-ssl-protocols", "TLSv1 TLSv1.1"),
            ("proxy-ssl-protocols", "TLSv9"),
            ("proxy-ssl-name", "not a name"),
        ] {
            let (_, _, d) = run(
                Some(false),
                &[("proxy-ssl-secret", "upstream-tls"), (name, v)],
            );
            assert!(d.iter().any(|d| d.is_error()), "{name} {v}: {d:?}");
        }
    }

    #[test]
    fn proxy_ssl_annotations_need_tls_and_the_secret_or_warn() {
        let (_, _, d) = run(None, &[("proxy-ssl-verify", "on")]);
        assert!(
            d.len() == 1 && d[0].message.contains("without TLS"),
            "{d:?}"
        );
        let (tls, _, d) = run(Some(false), &[("proxy-ssl-verify", "on")]);
        assert!(!tls.unwrap().verify);
        assert!(d[0].message.contains("without proxy-ssl-secret"), "{d:?}");
    }
}
