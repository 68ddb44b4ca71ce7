//! ingress-nginx's cookie session affinity (`affinity: cookie`, `affinity-mode`,
//! `affinity-canary-behavior`, `session-cookie-*`) → a Backend's
//! `loadBalancer.sessionPersistence`, with ingress-nginx's defaults: the cookie
//! `INGRESSCOOKIE`, its Path the Ingress path, `HttpOnly`, `Secure` over https, a session
//! cookie unless `session-cookie-max-age`/`-expires` say otherwise, and retries kept on the
//! session's endpoint unless `session-cookie-change-on-failure`.

use std::collections::BTreeMap;

use super::fields::Findings;
use super::ingress_translate::{Outcome, Translation, boolean, get, whole_seconds};
use crate::api;
use crate::model::{Diagnostic, Reason, Severity};

/// The annotations read here (short names); the catalogue leaves them to [`read`].
pub const NAMES: &[&str] = &[
    "affinity",
    "affinity-mode",
    "affinity-canary-behavior",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-secure",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-change-on-failure",
    "session-cookie-hash",
];

/// ingress-nginx's cookie name.
const DEFAULT_NAME: &str = "INGRESSCOOKIE";

fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// A finding that does not reject the Ingress.
fn warn(f: &mut Findings<'_>, key: &str, message: &str) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(f.id(), field(key), Reason::Invalid, message.to_owned())
    });
}

/// Reads the affinity annotations into `t.load_balancer.sessionPersistence` (after
/// `load-balance` and `upstream-hash-by`, which it overrides as in ingress-nginx).
pub fn read(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    if let Some((key, _)) = get(a, "session-cookie-hash") {
        warn(
            f,
            &key,
            "it has no effect: ingress-nginx no longer reads it (its cookie values are opaque \
             keys); Tidegate's value is a hash of the endpoint's address",
        );
    }
    if t.canary.is_some() {
        canary(a, t, f);
        return;
    }
    if let Some((key, _)) = get(a, "affinity-canary-behavior") {
        warn(
            f,
            &key,
            "it has no effect on an Ingress that is not a canary (ingress-nginx reads it on the \
             canary Ingress)",
        );
    }
    let Some((key, v)) = get(a, "affinity") else {
        for name in NAMES.iter().filter(|n| n.starts_with("session-cookie-")) {
            if let Some((key, _)) = get(a, name)
                && *name != "session-cookie-hash"
            {
                warn(f, &key, "it has no effect without affinity: \"cookie\"");
            }
        }
        if let Some((key, _)) = get(a, "affinity-mode") {
            warn(f, &key, "it has no effect without affinity: \"cookie\"");
        }
        return;
    };
    if v.trim() != "cookie" {
        f.invalid(field(&key), format!("{v:?} must be cookie (the only type)"));
        return;
    }
    let before = f.ok();
    let mut outcome = Outcome::Carried;
    let mut s = api::SessionPersistence {
        cookie_name: Some(DEFAULT_NAME.to_owned()),
        ..api::SessionPersistence::default()
    };
    mode(a, t, f);
    cookie_name_path_domain(a, &mut s, t, f, &mut outcome);
    lifetime(a, &mut s, t, f);
    flags(a, &mut s, t, f);
    if !before || !f.ok() {
        return;
    }
    // ingress-nginx's sticky balancers replace load-balance and upstream-hash-by.
    for name in ["load-balance", "upstream-hash-by"] {
        if let Some((other, _)) = get(a, name) {
            warn(
                f,
                &other,
                "it has no effect beside affinity: \"cookie\" (as in ingress-nginx)",
            );
            t.outcomes.remove(&other);
        }
    }
    t.load_balancer = Some(api::LoadBalancer {
        session_persistence: Some(s),
        ..api::LoadBalancer::default()
    });
    t.outcomes.insert(key, outcome);
}

/// On a canary Ingress the main Ingress's affinity applies (ingress-nginx's default canary
/// behavior, `sticky`, copies it to the canary's endpoints), and a client keeps the side of
/// the split that holds its session.
fn canary(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    for name in NAMES.iter().filter(|n| **n != "session-cookie-hash") {
        let Some((key, v)) = get(a, name) else {
            continue;
        };
        match (*name, v.trim()) {
            ("affinity-canary-behavior", "sticky") => {
                t.outcomes.insert(key, Outcome::Carried);
            }
            ("affinity-canary-behavior", "legacy") => {
                t.outcomes.insert(
                    key,
                    Outcome::Approximated(
                        "as sticky: the canary's endpoints keep sessions as the main Ingress's \
                         affinity says, and a client whose session the canary (or the main \
                         backend) holds stays there; legacy lets the split ignore sessions"
                            .to_owned(),
                    ),
                );
            }
            ("affinity-canary-behavior", _) => {
                f.invalid(field(&key), format!("{v:?} must be sticky or legacy"));
            }
            _ => warn(
                f,
                &key,
                "it has no effect on a canary Ingress: the canary's endpoints keep sessions as \
                 the main Ingress's affinity says (ingress-nginx's default canary behavior)",
            ),
        }
    }
}

/// `affinity-mode`: what the cookie keeps when the endpoints change.
fn mode(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "affinity-mode") else {
        return;
    };
    let outcome = match v.trim() {
        "persistent" => Outcome::Carried,
        "balanced" => Outcome::Approximated(
            "the cookie names its endpoint, as in persistent mode: more endpoints do not take \
             existing sessions (balanced mode moves some of them to new endpoints); a session \
             whose endpoint goes gets another endpoint and a new cookie"
                .to_owned(),
        ),
        _ => {
            f.invalid(field(&key), format!("{v:?} must be balanced or persistent"));
            return;
        }
    };
    t.outcomes.insert(key, outcome);
}

/// `session-cookie-name`, `-path`, `-domain`.
fn cookie_name_path_domain(
    a: &BTreeMap<String, String>,
    s: &mut api::SessionPersistence,
    t: &mut Translation,
    f: &mut Findings<'_>,
    affinity: &mut Outcome,
) {
    if let Some((key, v)) = get(a, "session-cookie-name") {
        let v = v.trim();
        if v.is_empty() || super::fields::header_name(v).is_err() {
            f.invalid(field(&key), format!("{v:?} is not a cookie name"));
        }
        s.cookie_name = Some(v.to_owned());
        t.outcomes.insert(key, Outcome::Carried);
    }
    match get(a, "session-cookie-path") {
        Some((key, v)) => {
            let v = v.trim();
            if !(v.starts_with('/') && v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')) {
                f.invalid(
                    field(&key),
                    format!("{v:?} must be a path starting with / (not a pattern)"),
                );
            }
            s.path = Some(v.to_owned());
            t.outcomes.insert(key, Outcome::Carried);
        }
        // Regex paths (use-regex, rewrite-target) are no cookie paths: ingress-nginx warns and
        // writes the pattern; the cookie gets Path=/ here.
        None if t.regex => {
            *affinity = Outcome::Approximated(
                "with regular-expression paths and no session-cookie-path the cookie's Path is \
                 / (ingress-nginx writes the path's pattern, and asks for session-cookie-path)"
                    .to_owned(),
            );
        }
        None => {}
    }
    if let Some((key, v)) = get(a, "session-cookie-domain") {
        let v = v.trim();
        if let Err(e) = super::fields::hostname(v.strip_prefix('.').unwrap_or(v), false) {
            f.invalid(field(&key), e);
        }
        s.domain = Some(v.to_owned());
        t.outcomes.insert(key, Outcome::Carried);
    }
}

/// `session-cookie-max-age` and `session-cookie-expires` (whole seconds): `maxAge`, which
/// sends both `Max-Age` and `Expires`.
fn lifetime(
    a: &BTreeMap<String, String>,
    s: &mut api::SessionPersistence,
    t: &mut Translation,
    f: &mut Findings<'_>,
) {
    let seconds = |name: &str, f: &mut Findings<'_>| whole_seconds(a, name, f);
    let max_age = seconds("session-cookie-max-age", f);
    let expires = seconds("session-cookie-expires", f);
    let secs = max_age.as_ref().or(expires.as_ref()).map(|(_, n)| *n);
    s.max_age = secs.map(|n| api::Duration(std::time::Duration::from_secs(n)));
    if let Some((key, _)) = max_age {
        t.outcomes.insert(key, Outcome::Carried);
    }
    if let Some((key, n)) = expires {
        let outcome = match secs {
            Some(m) if m == n && get(a, "session-cookie-max-age").is_some() => Outcome::Carried,
            Some(m) if get(a, "session-cookie-max-age").is_some() => {
                Outcome::Approximated(format!(
                    "Expires is now + {m}s, session-cookie-max-age's (browsers go by Max-Age \
                     when both are set)"
                ))
            }
            _ => Outcome::Approximated(
                "Max-Age is sent too, with the same number of seconds".to_owned(),
            ),
        };
        t.outcomes.insert(key, outcome);
    }
}

/// `session-cookie-secure`, `-samesite`, `-conditional-samesite-none`, `-change-on-failure`.
fn flags(
    a: &BTreeMap<String, String>,
    s: &mut api::SessionPersistence,
    t: &mut Translation,
    f: &mut Findings<'_>,
) {
    let flag = |name: &str, t: &mut Translation, f: &mut Findings<'_>| -> Option<bool> {
        let (key, v) = get(a, name)?;
        match boolean(v) {
            Some(b) => {
                t.outcomes.insert(key, Outcome::Carried);
                Some(b)
            }
            None => {
                f.invalid(field(&key), format!("{v:?} must be \"true\" or \"false\""));
                None
            }
        }
    };
    // "false" is ingress-nginx's default too: Secure over https only.
    s.secure = flag("session-cookie-secure", t, f)
        .unwrap_or(false)
        .then_some(true);
    s.change_on_failure = flag("session-cookie-change-on-failure", t, f);
    if let Some((key, v)) = get(a, "session-cookie-samesite") {
        s.same_site = match v.trim().to_ascii_lowercase().as_str() {
            "none" => Some(api::SameSite::None),
            "lax" => Some(api::SameSite::Lax),
            "strict" => Some(api::SameSite::Strict),
            _ => {
                f.invalid(field(&key), format!("{v:?} must be None, Lax or Strict"));
                None
            }
        };
        t.outcomes.insert(key, Outcome::Carried);
    }
    s.conditional_same_site_none = flag("session-cookie-conditional-samesite-none", t, f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ObjectRef};

    const N: &str = "nginx.ingress.kubernetes.io/";

    fn run(pairs: &[(&str, &str)]) -> (Translation, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let mut out = Vec::new();
        let a = pairs
            .iter()
            .map(|(k, v)| (format!("{N}{k}"), (*v).to_owned()))
            .collect();
        let t = super::super::ingress_translate::translate(&a, &mut Findings::new(&id, &mut out));
        (t, out)
    }

    fn session(t: &Translation) -> &api::SessionPersistence {
        t.load_balancer
            .as_ref()
            .and_then(|lb| lb.session_persistence.as_ref())
            .expect("a session cookie")
    }

    #[test]
    fn affinity_cookie_gets_ingress_nginx_defaults() {
        let (t, d) = run(&[("affinity", "cookie")]);
        assert!(d.is_empty(), "{d:?}");
        let s = session(&t);
        assert_eq!(s.cookie_name.as_deref(), Some("INGRESSCOOKIE"));
        assert_eq!(
            (
                &s.path,
                &s.max_age,
                s.secure,
                s.http_only,
                s.change_on_failure
            ),
            (&None, &None, None, None, None)
        );
        assert_eq!(t.outcomes[&format!("{N}affinity")], Outcome::Carried);
    }

    #[test]
    fn the_documented_example_is_carried() {
        let (t, d) = run(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "SSNONE"),
            ("session-cookie-secure", "true"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-change-on-failure", "true"),
            ("session-cookie-path", "/app"),
            ("session-cookie-domain", ".example.com"),
            ("affinity-mode", "persistent"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let s = session(&t);
        assert_eq!(s.cookie_name.as_deref(), Some("SSNONE"));
        assert_eq!(s.max_age.as_ref().map(|d| d.0.as_secs()), Some(172_800));
        assert_eq!(
            (s.secure, s.same_site, s.change_on_failure),
            (Some(true), Some(api::SameSite::None), Some(true))
        );
        assert_eq!(s.conditional_same_site_none, Some(true));
        assert_eq!(
            (s.path.as_deref(), s.domain.as_deref()),
            (Some("/app"), Some(".example.com"))
        );
        assert!(t.outcomes.values().all(|o| *o == Outcome::Carried), "{t:?}");
    }

    #[test]
    fn balanced_mode_and_expires_alone_are_approximated() {
        let (t, d) = run(&[
            ("affinity", "cookie"),
            ("affinity-mode", "balanced"),
            ("session-cookie-expires", "60"),
            ("session-cookie-secure", "false"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            session(&t).max_age.as_ref().map(|d| d.0.as_secs()),
            Some(60)
        );
        assert_eq!(session(&t).secure, None, "false: Secure over https only");
        for name in ["affinity-mode", "session-cookie-expires"] {
            assert!(
                matches!(t.outcomes[&format!("{N}{name}")], Outcome::Approximated(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn affinity_overrides_hashing_and_regex_paths_want_a_cookie_path() {
        let (t, d) = run(&[
            ("affinity", "cookie"),
            ("upstream-hash-by", "$remote_addr"),
            ("use-regex", "true"),
        ]);
        assert!(d.len() == 1 && d[0].severity == Severity::Warning, "{d:?}");
        assert!(d[0].field.contains("upstream-hash-by"));
        let lb = t.load_balancer.as_ref().unwrap();
        assert_eq!(lb.algorithm, api::LbAlgorithm::RoundRobin);
        assert!(lb.hash_on.is_none());
        assert!(matches!(
            t.outcomes[&format!("{N}affinity")],
            Outcome::Approximated(_)
        ));
    }

    #[test]
    fn bad_values_reject_and_settings_without_affinity_warn() {
        for (name, v) in [
            ("affinity", "ip"),
            ("affinity-mode", "sometimes"),
            ("session-cookie-name", "a b"),
            ("session-cookie-path", "/a;b"),
            ("session-cookie-max-age", "0"),
            ("session-cookie-samesite", "Loose"),
            ("session-cookie-secure", "yes"),
        ] {
            let (t, d) = run(&[("affinity", "cookie"), (name, v)]);
            let name_field = format!("{N}{name}]");
            assert!(
                d.iter()
                    .any(|d| d.is_error() && d.field.ends_with(&name_field)),
                "{name}={v}: {d:?}"
            );
            assert!(t.load_balancer.is_none(), "{name}={v}");
        }
        let (t, d) = run(&[
            ("session-cookie-name", "route"),
            ("session-cookie-hash", "sha1"),
        ]);
        assert!(t.load_balancer.is_none());
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|d| d.severity == Severity::Warning), "{d:?}");
    }

    #[test]
    fn on_a_canary_the_main_ingress_affinity_applies() {
        let (t, d) = run(&[
            ("canary", "true"),
            ("canary-weight", "10"),
            ("affinity", "cookie"),
            ("affinity-canary-behavior", "sticky"),
        ]);
        assert!(t.load_balancer.is_none());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].severity == Severity::Warning && d[0].field.contains("affinity]"));
        assert_eq!(
            t.outcomes[&format!("{N}affinity-canary-behavior")],
            Outcome::Carried
        );
    }
}
