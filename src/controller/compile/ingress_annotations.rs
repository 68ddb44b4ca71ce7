//! ingress-nginx annotations on an Ingress (`nginx.ingress.kubernetes.io/NAME`, also accepted
//! as `tidegate.dev/NAME`): what Tidegate does with each. None is ever ignored in silence:
//! one that injects raw nginx configuration is refused, one Tidegate knows but does not
//! implement yet rejects the Ingress ("not supported yet": serving it without the annotation
//! would serve something else than its author wrote, an authentication left out for one), and
//! one nobody knows is a warning naming it (a typo, or another controller's).

use std::collections::BTreeMap;

use super::fields::Findings;
use super::ingress_canary;
use super::ingress_translate::{MAPPED, boolean};
use crate::model::{Diagnostic, Reason, Severity};

use crate::api::annotations::INGRESS_ANNOTATION_PREFIXES as PREFIXES;

/// Annotations that carry nginx configuration text (the class of CVE-2025-1974).
const REFUSED: [&str; 5] = [
    "configuration-snippet",
    "server-snippet",
    "auth-snippet",
    "stream-snippet",
    "modsecurity-snippet",
];

/// ingress-nginx's other annotations: known, not implemented yet.
const NOT_YET: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "auth-tls-secret",
    "auth-tls-verify-depth",
    "auth-tls-verify-client",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-proxy-set-headers",
    "enable-global-auth",
    "client-body-buffer-size",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "from-to-www-redirect",
    "http2-push-preload",
    "limit-rate",
    "limit-rate-after",
    "preserve-trailing-slash",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-request-buffering",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-http-version",
    "proxy-ssl-secret",
    "proxy-ssl-ciphers",
    "proxy-ssl-name",
    "proxy-ssl-protocols",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-server-name",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-buffer-size",
    "proxy-busy-buffers-size",
    "proxy-max-temp-file-size",
    "enable-rewrite-log",
    "satisfy",
    "service-upstream",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-secure",
    "session-cookie-change-on-failure",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "ssl-passthrough",
    "ssl-ciphers",
    "ssl-prefer-server-ciphers",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "connection-proxy-header",
    "enable-access-log",
    "enable-opentelemetry",
    "opentelemetry-trust-incoming-span",
    "opentelemetry-operation-name",
    "enable-opentracing",
    "opentracing-trust-incoming-span",
    "enable-modsecurity",
    "enable-owasp-core-rules",
    "modsecurity-transaction-id",
    "mirror-request-body",
    "mirror-target",
    "mirror-host",
];

/// Why a much-used annotation is not carried yet, and what to write instead meanwhile.
fn why_not_yet(name: &str) -> &'static str {
    match name {
        "auth-cache-key" | "auth-cache-duration" => {
            ": nginx caches the auth answers by a key of nginx variables; write a Route whose \
             extAuth.cache keys the decisions by request headers"
        }
        "auth-proxy-set-headers" => {
            ": the headers a ConfigMap names are not added to the auth request yet"
        }
        "auth-request-redirect" => {
            ": X-Auth-Request-Redirect is always the request's URI (ingress-nginx's default)"
        }
        n if n.starts_with("affinity") || n.starts_with("session-cookie") => {
            ": Tidegate does not issue session cookies; upstream-hash-by \"$cookie_NAME\" (a \
             Backend's loadBalancer.hashOn.cookie) keeps a cookie the application sets on one \
             endpoint"
        }
        "default-backend" | "custom-http-errors" => {
            ": Tidegate does not send requests elsewhere when a Service has no endpoints or \
             answers an error"
        }
        n if n.starts_with("proxy-ssl-") => {
            ": an Ingress's Services are spoken to without TLS; write a Route to a Backend with \
             tls (sni, caSecretRef, clientCertificateRef)"
        }
        "ssl-passthrough" => {
            ": write a Route with protocol: TLS (passthrough by server name on the HTTPS \
             listener) to a Backend with protocol: TCP"
        }
        _ => "",
    }
}

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// Checks the annotations (full keys, as written on the object) against the catalogue;
/// problems go to `f`. The ones Tidegate carries are read by [`super::ingress_translate`].
pub fn check(annotations: &BTreeMap<String, String>, f: &mut Findings<'_>) {
    // The short names seen, so that one written under both prefixes is caught.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for key in annotations.keys() {
        let Some(name) = PREFIXES.iter().find_map(|p| key.strip_prefix(p)) else {
            continue;
        };
        if let Some(first) = seen.insert(name, key) {
            f.invalid(
                field(key),
                format!("{first} says the same: write it under one prefix"),
            );
            continue;
        }
        match name {
            // Read, and their values checked, by the translation.
            n if MAPPED.contains(&n) || ingress_canary::NAMES.contains(&n) => {}
            n if REFUSED.contains(&n) => f.push(Diagnostic::error(
                f.id(),
                field(key),
                Reason::Refused,
                "refused: Tidegate never runs configuration text taken from an object (snippets \
                 are how CVE-2025-1974 and its kin took over ingress-nginx); express it with \
                 annotations or a Route",
            )),
            n if NOT_YET.contains(&n) => f.not_supported(
                field(key),
                &format!(
                    "the ingress-nginx annotation {n} (the Ingress would be served without it){}",
                    why_not_yet(n)
                ),
            ),
            // Our Service annotations, written on an Ingress by mistake, and typos.
            _ => f.push(Diagnostic {
                severity: Severity::Warning,
                ..Diagnostic::error(
                    f.id(),
                    field(key),
                    Reason::UnknownAnnotation,
                    format!("unknown annotation {key}: it has no effect"),
                )
            }),
        }
    }
}

/// `ssl-redirect`: whether plain-HTTP requests for the `tls` hosts get 308 to https (default
/// yes), for an Ingress already accepted (whose annotations [`check`] checked).
pub fn ssl_redirect(annotations: &BTreeMap<String, String>) -> bool {
    PREFIXES
        .iter()
        .find_map(|p| annotations.get(&format!("{p}ssl-redirect")))
        .and_then(|v| boolean(v))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ObjectRef};

    /// Whether `ssl-redirect` is on, and the findings.
    fn run(pairs: &[(&str, &str)]) -> (bool, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "default", "web");
        let mut out = Vec::new();
        let annotations = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        check(&annotations, &mut Findings::new(&id, &mut out));
        super::super::ingress_translate::translate(&annotations, &mut Findings::new(&id, &mut out));
        (ssl_redirect(&annotations), out)
    }

    #[test]
    fn ssl_redirect_is_read_under_either_prefix() {
        assert!(run(&[]).0);
        let (on, d) = run(&[("nginx.ingress.kubernetes.io/ssl-redirect", "false")]);
        assert!(!on && d.is_empty(), "{d:?}");
        let (on, d) = run(&[("tidegate.dev/ssl-redirect", "false")]);
        assert!(!on && d.is_empty(), "{d:?}");
        let (_, d) = run(&[("nginx.ingress.kubernetes.io/ssl-redirect", "no")]);
        assert!(d[0].is_error() && d[0].message.contains("\"no\""), "{d:?}");
    }

    #[test]
    fn snippets_are_refused_and_unimplemented_annotations_reject_the_ingress() {
        let (_, d) = run(&[(
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "more_set_headers \"x: y\";",
        )]);
        assert_eq!(d.len(), 1);
        assert!(d[0].is_error() && d[0].reason == Reason::Refused, "{d:?}");
        assert!(d[0].message.contains("CVE-2025-1974"), "{d:?}");
        let (_, d) = run(&[("nginx.ingress.kubernetes.io/auth-cache-key", "$remote_user")]);
        assert!(d[0].is_error(), "{d:?}");
        assert!(
            d[0].message.contains("not supported yet") && d[0].message.contains("auth-cache-key"),
            "{d:?}"
        );
        assert_eq!(
            d[0].field,
            "metadata.annotations[nginx.ingress.kubernetes.io/auth-cache-key]"
        );
    }

    #[test]
    fn unknown_annotations_are_warnings_and_others_are_not_read() {
        let (on, d) = run(&[
            ("nginx.ingress.kubernetes.io/ssl-redirct", "false"),
            ("kubernetes.io/ingress.class", "tidegate"),
            ("example.com/owner", "team-a"),
        ]);
        assert!(on);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, Severity::Warning);
        assert!(d[0].message.contains("ssl-redirct"), "{d:?}");
    }

    #[test]
    fn one_annotation_under_both_prefixes_is_an_error() {
        let (_, d) = run(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("tidegate.dev/ssl-redirect", "true"),
        ]);
        assert!(d.len() == 1 && d[0].is_error(), "{d:?}");
    }

    #[test]
    fn the_catalogue_has_no_duplicates() {
        let mut all: Vec<&str> = NOT_YET.iter().chain(&REFUSED).copied().collect();
        all.extend(MAPPED);
        all.extend(ingress_canary::NAMES);
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
