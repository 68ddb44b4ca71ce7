//! ingress-nginx annotations on an Ingress (`nginx.ingress.kubernetes.io/NAME`, also accepted
//! as `tidegate.dev/NAME`): what Tidegate does with each. None is ever ignored in silence:
//! one that injects raw nginx configuration is refused, one Tidegate knows but does not
//! implement yet rejects the Ingress ("not supported yet": serving it without the annotation
//! would serve something else than its author wrote, an authentication left out for one), and
//! one nobody knows is a warning naming it (a typo, or another controller's).

use std::collections::BTreeMap;

use super::fields::Findings;
use super::ingress_affinity;
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
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-proxy-set-headers",
    "custom-headers",
    "limit-rate",
    "limit-rate-after",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "satisfy",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "enable-modsecurity",
    "enable-owasp-core-rules",
    "modsecurity-transaction-id",
    "mirror-request-body",
    "mirror-target",
    "mirror-host",
];

/// Annotations that tune nginx itself (its buffers, logs, ciphers, tracing module): what they
/// set has no counterpart in Tidegate and changes nothing the Ingress routes, so the Ingress is
/// served without them, each a warning saying in short what Tidegate does instead (short: the
/// warnings of one Ingress share one Event of 1 KiB) — unless its value says what Tidegate
/// does anyway. (name, values that match Tidegate, what Tidegate does; the README's table
/// says more.)
pub const TUNING: &[(&str, &[&str], &str)] = &[
    (
        "client-body-buffer-size",
        &[],
        "request bodies are streamed",
    ),
    (
        "proxy-request-buffering",
        &["off"],
        "request bodies are streamed",
    ),
    ("proxy-buffering", &["off"], "responses are streamed"),
    ("proxy-buffers-number", &[], "responses are streamed"),
    ("proxy-buffer-size", &[], "responses are streamed"),
    ("proxy-busy-buffers-size", &[], "responses are streamed"),
    (
        "proxy-max-temp-file-size",
        &[],
        "nothing is buffered to disk",
    ),
    (
        "proxy-http-version",
        &["1.1"],
        "backends get HTTP/1.1 (or HTTP/2 per backend-protocol)",
    ),
    ("enable-rewrite-log", &["false"], "there is no rewrite log"),
    (
        "service-upstream",
        &["false"],
        "the gateway balances over the endpoints itself",
    ),
    ("ssl-ciphers", &[], "the listener offers rustls's suites"),
    (
        "ssl-prefer-server-ciphers",
        &[],
        "the listener offers rustls's suites",
    ),
    (
        "connection-proxy-header",
        &["keep-alive"],
        "backend connections are pooled",
    ),
    (
        "enable-access-log",
        &["true"],
        "the access log is the gateway's (--access-log)",
    ),
    (
        "enable-opentelemetry",
        &[],
        "traceparent is passed on for every request",
    ),
    (
        "opentelemetry-trust-incoming-span",
        &["true"],
        "an incoming traceparent is continued",
    ),
    (
        "opentelemetry-operation-name",
        &[],
        "there are no per-Ingress spans",
    ),
    (
        "enable-opentracing",
        &[],
        "traceparent is passed on for every request",
    ),
    (
        "opentracing-trust-incoming-span",
        &["true"],
        "an incoming traceparent is continued",
    ),
    (
        "http2-push-preload",
        &["false"],
        "HTTP/2 server push is never sent",
    ),
    (
        "enable-global-auth",
        &["false"],
        "there is no global-auth-url to apply",
    ),
];

/// What Tidegate does instead of tuning annotation `name` set to `value`: `None` when it is not
/// one, `Some(None)` when the value says what Tidegate does anyway.
fn tuning(name: &str, value: &str) -> Option<Option<&'static str>> {
    let (_, same, what) = TUNING.iter().find(|(n, _, _)| *n == name)?;
    Some((!same.contains(&value.trim())).then_some(*what))
}

/// The migration outcome of each tuning annotation in `annotations` (see [`TUNING`]).
pub fn tuning_outcomes(
    annotations: &BTreeMap<String, String>,
    outcomes: &mut BTreeMap<String, super::ingress_translate::Outcome>,
) {
    use super::ingress_translate::Outcome;
    for (key, value) in annotations {
        let Some(name) = PREFIXES.iter().find_map(|p| key.strip_prefix(p)) else {
            continue;
        };
        if let Some(instead) = tuning(name, value) {
            let outcome = match instead {
                None => Outcome::Carried,
                Some(what) => Outcome::NotCarried(format!("no counterpart: {what}")),
            };
            outcomes.insert(key.clone(), outcome);
        }
    }
}

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
            n if MAPPED.contains(&n)
                || ingress_canary::NAMES.contains(&n)
                || ingress_affinity::NAMES.contains(&n) => {}
            n if super::ingress_proxy_ssl::NAMES.contains(&n)
                || super::ingress_passthrough::NAMES.contains(&n)
                || super::ingress_auth_tls::NAMES.contains(&n) => {}
            n if let Some(instead) = tuning(n, &annotations[key]) => {
                if let Some(what) = instead {
                    f.push(Diagnostic {
                        severity: Severity::Warning,
                        ..Diagnostic::error(
                            f.id(),
                            field(key),
                            Reason::Invalid,
                            format!(
                                "{:?} has no effect in Tidegate: {what}",
                                annotations[key].trim()
                            ),
                        )
                    })
                }
            }
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
    fn tuning_annotations_serve_with_a_warning_unless_they_say_what_tidegate_does() {
        let (_, d) = run(&[
            ("nginx.ingress.kubernetes.io/proxy-buffer-size", "16k"),
            ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off"),
            ("tidegate.dev/proxy-http-version", "1.0"),
        ]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.severity == Severity::Warning), "{d:?}");
        assert_eq!(
            d[0].message,
            "\"16k\" has no effect in Tidegate: responses are streamed"
        );
        assert_eq!(
            d[1].field,
            "metadata.annotations[tidegate.dev/proxy-http-version]"
        );
        let mut outcomes = BTreeMap::new();
        let a = [
            ("nginx.ingress.kubernetes.io/proxy-buffering", "on"),
            ("nginx.ingress.kubernetes.io/proxy-buffering-x", "on"),
            ("nginx.ingress.kubernetes.io/enable-access-log", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        tuning_outcomes(&a, &mut outcomes);
        use super::super::ingress_translate::Outcome;
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(matches!(
            &outcomes["nginx.ingress.kubernetes.io/proxy-buffering"],
            Outcome::NotCarried(why) if why.contains("streamed")
        ));
        assert_eq!(
            outcomes["nginx.ingress.kubernetes.io/enable-access-log"],
            Outcome::Carried
        );
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
        all.extend(super::super::ingress_proxy_ssl::NAMES);
        all.extend(super::super::ingress_passthrough::NAMES);
        all.extend(TUNING.iter().map(|(n, _, _)| *n));
        all.extend(super::super::ingress_auth_tls::NAMES);
        all.extend(ingress_affinity::NAMES);
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
