//! ingress-nginx's client certificates (`auth-tls-secret` and the `auth-tls-*` family) → the
//! client validation of the Ingress's HTTPS hosts: read once from the annotations here, made
//! the hosts' [`ClientValidation`](crate::model::ClientValidation) with the certificates
//! (compile/tls.rs), or written out as a Route's `spec.tls.clientValidation` by
//! `tidegate migrate`.
//!
//! As in ingress-nginx, nothing of the family is read without `auth-tls-secret`; its
//! `ca.crt` verifies the clients' certificates, `auth-tls-verify-client` says whether one is
//! required, and the upstream gets ingress-nginx's `ssl-client-*` headers (beside Tidegate's
//! `x-forwarded-client-cert`).

use std::collections::BTreeMap;

use super::fields::Findings;
use super::ingress_translate::{Outcome, boolean, get};
use crate::model::{Diagnostic, ObjectRef, Reason, Severity};

/// The annotations read here (short names).
pub const NAMES: &[&str] = &[
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
];

/// Client certificates on an Ingress's HTTPS hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthTls {
    /// The annotation's full key (either prefix), for messages.
    pub key: String,
    /// The Secret (of the Ingress's namespace) whose `ca.crt` signs the clients' certificates.
    pub secret: String,
    /// `auth-tls-verify-client: on` (the default): a request without a valid certificate is
    /// refused; `optional`: it passes (and its upstream sees `ssl-client-verify: NONE`).
    pub required: bool,
    /// `auth-tls-pass-certificate-to-upstream: "true"`: the PEM in `ssl-client-cert`.
    pub pass_certificate: bool,
}

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// A finding that does not reject the Ingress.
fn warn(f: &mut Findings<'_>, key: &str, message: &str) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(f.id(), field(key), Reason::Invalid, message)
    });
}

/// The Secret `auth-tls-secret` names (`NAMESPACE/NAME` or `NAME`), when it is one of
/// `namespace` (what Kubernetes mode fetches for the Ingress).
pub fn secret_name<'a>(a: &'a BTreeMap<String, String>, namespace: &str) -> Option<&'a str> {
    let (_, v) = get(a, "auth-tls-secret")?;
    match v.trim().split_once('/') {
        None => Some(v.trim()),
        Some((ns, name)) if ns == namespace => Some(name),
        Some(_) => None,
    }
}

/// The settings of an accepted Ingress (whose annotations [`read`] already checked).
pub fn settings(a: &BTreeMap<String, String>, id: &ObjectRef) -> Option<AuthTls> {
    let mut scratch = Vec::new();
    read(
        a,
        false,
        &mut BTreeMap::new(),
        &mut Findings::new(id, &mut scratch),
    )
}

/// Reads `auth-tls-*` (outcomes to `outcomes`, problems to `f`); `canary`: the Ingress is a
/// canary, on which they have no effect (as in ingress-nginx: the main Ingress's hosts'
/// settings apply).
pub fn read(
    a: &BTreeMap<String, String>,
    canary: bool,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) -> Option<AuthTls> {
    let present: Vec<(&str, String, &str)> = NAMES
        .iter()
        .filter_map(|n| get(a, n).map(|(k, v)| (*n, k, v.trim())))
        .collect();
    if canary {
        for (_, key, _) in &present {
            warn(
                f,
                key,
                "it has no effect on a canary Ingress: the main Ingress's hosts ask for client \
                 certificates or not (as in ingress-nginx)",
            );
        }
        return None;
    }
    let Some((secret_key, secret_value)) = get(a, "auth-tls-secret") else {
        for (_, key, _) in &present {
            warn(
                f,
                key,
                "it has no effect without auth-tls-secret (ingress-nginx reads none of \
                 auth-tls-* without it)",
            );
        }
        return None;
    };
    let namespace = f.id().namespace.to_string();
    let secret = match secret_value.trim().split_once('/') {
        None => secret_value.trim(),
        Some((ns, name)) if ns == namespace => name,
        Some((ns, _)) => {
            f.not_supported(
                field(&secret_key),
                &format!(
                    "auth-tls-secret {secret_value:?}: a Secret of another namespace ({ns}) than \
                     the Ingress's (ingress-nginx refuses it too unless \
                     allow-cross-namespace-resources); copy it into {namespace}"
                ),
            );
            return None;
        }
    };
    let valid = !secret.is_empty()
        && secret.len() <= 253
        && secret
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        f.invalid(
            field(&secret_key),
            format!(
                "{secret_value:?} must be NAMESPACE/NAME of a Secret (a lower-case object name)"
            ),
        );
        return None;
    }
    let mut tls = AuthTls {
        key: secret_key.clone(),
        secret: secret.to_owned(),
        required: true,
        pass_certificate: false,
    };
    outcomes.insert(
        secret_key,
        Outcome::Approximated(
            "its ca.crt verifies client certificates (spec.tls.clientValidation.caSecretRef); \
             a client without a valid one fails the TLS handshake, where nginx answers 400"
                .to_owned(),
        ),
    );
    for (name, key, v) in present {
        let outcome = match name {
            "auth-tls-secret" => continue,
            "auth-tls-verify-client" => match v {
                "on" => Outcome::Carried,
                "optional" => {
                    tls.required = false;
                    Outcome::Carried
                }
                "off" => {
                    // nginx then asks for no certificate; the Secret has no effect.
                    warn(
                        f,
                        &key,
                        "\"off\": no client certificate is asked for, so auth-tls-secret has no \
                         effect",
                    );
                    outcomes.clear();
                    return None;
                }
                "optional_no_ca" => {
                    f.not_supported(
                        field(&key),
                        "auth-tls-verify-client \"optional_no_ca\" (a certificate accepted \
                         without verifying it); use \"optional\" with a ca.crt that signs the \
                         clients",
                    );
                    return None;
                }
                _ => {
                    f.invalid(
                        field(&key),
                        format!(
                            "{v:?} must be \"on\", \"off\", \"optional\" or \"optional_no_ca\""
                        ),
                    );
                    return None;
                }
            },
            "auth-tls-verify-depth" => match v.parse::<u32>() {
                Ok(_) => {
                    warn(
                        f,
                        &key,
                        "approximated: a chain of any length to a CA of ca.crt verifies",
                    );
                    Outcome::Approximated(
                        "a chain of any length to a CA of ca.crt verifies".to_owned(),
                    )
                }
                Err(_) => {
                    f.invalid(field(&key), format!("{v:?} must be a whole number"));
                    return None;
                }
            },
            "auth-tls-pass-certificate-to-upstream" => match boolean(v) {
                Some(b) => {
                    tls.pass_certificate = b;
                    Outcome::Carried
                }
                None => {
                    f.invalid(field(&key), format!("{v:?} must be \"true\" or \"false\""));
                    return None;
                }
            },
            "auth-tls-error-page" => {
                f.not_supported(
                    field(&key),
                    "auth-tls-error-page (a redirect for a missing or invalid certificate): such \
                     a client fails the TLS handshake before any page can be sent",
                );
                return None;
            }
            _ => {
                // auth-tls-match-cn
                f.not_supported(
                    field(&key),
                    "auth-tls-match-cn (a pattern the certificate's subject must match); \
                     Tidegate refuses nothing by subject yet (the upstream sees it in \
                     ssl-client-subject-dn and x-forwarded-client-cert)",
                );
                return None;
            }
        };
        outcomes.insert(key, outcome);
    }
    Some(tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    const N: &str = "nginx.ingress.kubernetes.io/";

    fn run(pairs: &[(&str, &str)]) -> (Option<AuthTls>, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let a = pairs
            .iter()
            .map(|(k, v)| (format!("{N}{k}"), (*v).to_owned()))
            .collect();
        let mut out = Vec::new();
        let t = read(
            &a,
            false,
            &mut BTreeMap::new(),
            &mut Findings::new(&id, &mut out),
        );
        (t, out)
    }

    #[test]
    fn the_secret_turns_validation_on_and_the_others_shape_it() {
        let (t, d) = run(&[("auth-tls-secret", "shop/client-ca")]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            t,
            Some(AuthTls {
                key: format!("{N}auth-tls-secret"),
                secret: "client-ca".into(),
                required: true,
                pass_certificate: false
            })
        );
        let (t, d) = run(&[
            ("auth-tls-secret", "client-ca"),
            ("auth-tls-verify-client", "optional"),
            ("auth-tls-pass-certificate-to-upstream", "true"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let t = t.unwrap();
        assert!(!t.required && t.pass_certificate);
        let (t, d) = run(&[
            ("auth-tls-secret", "client-ca"),
            ("auth-tls-verify-depth", "2"),
        ]);
        assert!(t.is_some() && d.len() == 1 && !d[0].is_error(), "{d:?}");
    }

    #[test]
    fn what_cannot_be_honoured_rejects_the_ingress() {
        for pairs in [
            &[("auth-tls-secret", "other/client-ca")][..],
            &[("auth-tls-secret", "Client_CA")],
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
            ],
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "maybe"),
            ],
            &[("auth-tls-secret", "ca"), ("auth-tls-match-cn", "CN=admin")],
            &[
                ("auth-tls-secret", "ca"),
                ("auth-tls-error-page", "/denied"),
            ],
        ] {
            let (t, d) = run(pairs);
            assert!(
                t.is_none() && d.iter().any(Diagnostic::is_error),
                "{pairs:?}: {d:?}"
            );
            assert!(d[0].field.contains("auth-tls-"), "{d:?}");
        }
    }

    #[test]
    fn without_the_secret_or_with_verification_off_nothing_is_asked() {
        let (t, d) = run(&[("auth-tls-verify-client", "on")]);
        assert!(t.is_none() && d.len() == 1 && !d[0].is_error(), "{d:?}");
        assert!(d[0].message.contains("without auth-tls-secret"), "{d:?}");
        let (t, d) = run(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")]);
        assert!(t.is_none() && d.len() == 1 && !d[0].is_error(), "{d:?}");
    }
}
