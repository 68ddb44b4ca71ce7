//! Canary Ingresses (`canary: "true"` with `canary-weight`, `canary-weight-total`,
//! `canary-by-header`, `canary-by-header-value`, `canary-by-header-pattern`,
//! `canary-by-cookie`): as in ingress-nginx, a canary Ingress serves nothing of its own; its
//! backend joins the rules of the main Ingress that has the same host and path. The main
//! Ingress's rule becomes a weighted split, and the header and cookie overrides become rules
//! with header matches that the Route precedence ranks ahead of it (header, then cookie, then
//! weight, as ingress-nginx's balancer decides).

use std::collections::BTreeMap;

use super::fields::Findings;
use super::ingress_translate::{Outcome, get};
use crate::api::{HeaderMatch, ValueMatchType};
use crate::controller::objects::{IngressBackendInfo, IngressInfo};
use crate::controller::snapshot::Obj;
use crate::model::{Diagnostic, ObjectRef, Severity};

/// The canary annotations (short names).
pub const NAMES: &[&str] = &[
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
];

/// ingress-nginx's `canary-weight-total` when unset (and the least it counts).
const DEFAULT_TOTAL: u32 = 100;

/// A canary Ingress's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Canary {
    /// Requests in `total` that go to the canary (after the header and cookie).
    pub weight: u32,
    /// `canary-weight-total`.
    pub total: u32,
    /// `canary-by-header`, lower-case.
    pub header: Option<String>,
    /// `canary-by-header-value`: the value that sends to the canary.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`: a pattern found in the value sends to the canary.
    pub header_pattern: Option<String>,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
}

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

fn warn(f: &mut Findings<'_>, key: &str, message: String) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(f.id(), field(key), crate::model::Reason::Invalid, message)
    });
}

/// Reads the canary annotations: `Some` when `canary` is `"true"`. Problems go to `f`.
pub fn read(
    a: &BTreeMap<String, String>,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) -> Option<Canary> {
    let on = match get(a, "canary") {
        None => None,
        Some((key, v)) => match super::ingress_translate::boolean(v) {
            Some(b) => {
                outcomes.insert(key.clone(), Outcome::Carried);
                Some((key, b))
            }
            None => {
                f.invalid(field(&key), format!("{v:?} must be \"true\" or \"false\""));
                return None;
            }
        },
    };
    if on.as_ref().is_none_or(|(_, b)| !b) {
        for name in &NAMES[1..] {
            if let Some((key, _)) = get(a, name) {
                warn(
                    f,
                    &key,
                    "it has no effect without canary: \"true\" (as in ingress-nginx)".into(),
                );
            }
        }
        return None;
    }
    let mut c = Canary {
        total: DEFAULT_TOTAL,
        ..Canary::default()
    };
    let mut number = |name: &str, f: &mut Findings<'_>| -> Option<(String, u32)> {
        let (key, v) = get(a, name)?;
        match v.trim().parse::<u32>() {
            Ok(n) => {
                outcomes.insert(key.clone(), Outcome::Carried);
                Some((key, n))
            }
            Err(_) => {
                f.invalid(field(&key), format!("{v:?} must be a whole number"));
                None
            }
        }
    };
    if let Some((key, total)) = number("canary-weight-total", f) {
        if total < DEFAULT_TOTAL {
            // ingress-nginx's balancer counts a total under 100 as 100.
            warn(
                f,
                &key,
                format!("{total} is under 100: the total is 100, as in ingress-nginx"),
            );
        } else {
            c.total = total;
        }
    }
    if let Some((key, weight)) = number("canary-weight", f) {
        if weight > c.total {
            f.invalid(
                field(&key),
                format!("{weight} is more than the total {}", c.total),
            );
        }
        c.weight = weight.min(c.total);
    }
    headers(a, &mut c, outcomes, f);
    if let Some((key, v)) = get(a, "canary-by-cookie") {
        let v = v.trim();
        if super::canary::is_cookie_name(v) {
            c.cookie = Some(v.to_owned());
            outcomes.insert(key, Outcome::Carried);
        } else {
            f.invalid(field(&key), format!("{v:?} is not a cookie name"));
        }
    }
    Some(c)
}

/// `canary-by-header`, `-value`, `-pattern`.
fn headers(
    a: &BTreeMap<String, String>,
    c: &mut Canary,
    outcomes: &mut BTreeMap<String, Outcome>,
    f: &mut Findings<'_>,
) {
    let value = get(a, "canary-by-header-value");
    let pattern = get(a, "canary-by-header-pattern");
    let Some((key, name)) = get(a, "canary-by-header") else {
        for (key, _) in value.iter().chain(&pattern) {
            warn(f, key, "it has no effect without canary-by-header".into());
        }
        return;
    };
    match super::fields::header_name(name.trim()) {
        Ok(h) => c.header = Some(h.as_str().to_owned()),
        Err(e) => {
            f.invalid(field(&key), e);
            return;
        }
    }
    outcomes.insert(key, Outcome::Carried);
    match (value, pattern) {
        (Some((key, v)), other) => {
            if let Some((pk, _)) = other {
                warn(
                    f,
                    &pk,
                    "it has no effect beside canary-by-header-value (as in ingress-nginx)".into(),
                );
            }
            c.header_value = Some(v.to_owned());
            outcomes.insert(key, Outcome::Carried);
        }
        (None, Some((key, p))) => match regex::Regex::new(p) {
            Ok(_) => {
                c.header_pattern = Some(p.to_owned());
                outcomes.insert(
                    key,
                    Outcome::Approximated(
                        "a Rust regular expression (no look-around or back-references) found \
                         anywhere in the value, where ingress-nginx uses PCRE"
                            .to_owned(),
                    ),
                );
            }
            Err(e) => f.invalid(field(&key), super::fields::regex_error(&e)),
        },
        (None, None) => {}
    }
}

/// Whether `ing` says `canary: "true"`.
fn is_canary(ing: &IngressInfo) -> bool {
    get(&ing.annotations, "canary")
        .is_some_and(|(_, v)| super::ingress_translate::boolean(v) == Some(true))
}

/// A canary Ingress joined to one host and path.
#[derive(Clone, Debug)]
pub struct Joined<'a> {
    /// The canary Ingress.
    pub id: &'a ObjectRef,
    /// Its settings.
    pub canary: Canary,
    /// Its backend for this host and path.
    pub backend: &'a IngressBackendInfo,
}

/// Host (lower-case, none: every host) and path of an Ingress path.
pub type PathKey = (Option<String>, String);

/// The key of a path of `rule`'s host.
pub fn key(host: Option<&str>, path: Option<&str>) -> PathKey {
    (
        host.map(str::to_ascii_lowercase),
        path.unwrap_or("/").to_owned(),
    )
}

/// The canary Ingresses of namespace `ns` among `all` (the ones `ours` accepts, whose
/// annotations are valid), by host and path, in order: the first of each is the one joined,
/// the others are errors on their Ingress.
pub fn index<'a>(
    ns: &str,
    all: &'a BTreeMap<ObjectRef, Obj<IngressInfo>>,
    ours: impl Fn(&IngressInfo) -> bool,
) -> BTreeMap<PathKey, Vec<Joined<'a>>> {
    let mut found: Vec<(&'a Obj<IngressInfo>, Canary)> = Vec::new();
    for (id, obj) in all {
        if *id.namespace != *ns || !is_canary(&obj.spec) {
            continue;
        }
        if !ours(&obj.spec) {
            continue;
        }
        // Its own compile reports these findings; an invalid canary joins nothing.
        let mut sink = Vec::new();
        let mut f = Findings::new(id, &mut sink);
        super::ingress_annotations::check(&obj.spec.annotations, &mut f);
        let t = super::ingress_translate::translate(&obj.spec.annotations, &mut f);
        if let (true, Some(c)) = (f.ok(), t.canary) {
            found.push((obj, c));
        }
    }
    // Oldest first, then by name (the compiler's order).
    found.sort_by(|(a, _), (b, _)| {
        (a.meta.created.unwrap_or(i64::MAX), &a.meta.id)
            .cmp(&(b.meta.created.unwrap_or(i64::MAX), &b.meta.id))
    });
    let mut out: BTreeMap<PathKey, Vec<Joined<'a>>> = BTreeMap::new();
    for (obj, c) in found {
        for rule in &obj.spec.rules {
            for p in &rule.paths {
                out.entry(key(rule.host.as_deref(), p.path.as_deref()))
                    .or_default()
                    .push(Joined {
                        id: &obj.meta.id,
                        canary: c.clone(),
                        backend: &p.backend,
                    });
            }
        }
    }
    out
}

/// Whether `main` is a main (not canary) Ingress with a host and path of `canary`.
pub fn shares_a_path(main: &IngressInfo, canary: &IngressInfo) -> bool {
    canary.rules.iter().any(|r| {
        r.paths
            .iter()
            .any(|p| has_path(main, &key(r.host.as_deref(), p.path.as_deref())))
    })
}

/// Whether `ing` is a main (not canary) Ingress with a path of `key`.
fn has_path(ing: &IngressInfo, k: &PathKey) -> bool {
    !is_canary(ing)
        && ing.rules.iter().any(|r| {
            r.paths
                .iter()
                .any(|p| key(r.host.as_deref(), p.path.as_deref()) == *k)
        })
}

/// The checks of canary Ingress `obj` against the others (`all`, with `ours`): a second canary
/// of one host and path is an error naming the first; a path no main Ingress serves is a
/// warning (nothing is served for it).
pub fn check_joins(
    obj: &Obj<IngressInfo>,
    all: &BTreeMap<ObjectRef, Obj<IngressInfo>>,
    ours: impl Fn(&IngressInfo) -> bool + Copy,
    f: &mut Findings<'_>,
) {
    let id = &obj.meta.id;
    let joined = index(&id.namespace, all, ours);
    if obj.spec.default_backend.is_some() {
        f.not_supported(
            "spec.defaultBackend",
            "a canary of the default backend (give the canary Ingress rules with the main \
             Ingress's hosts and paths)",
        );
    }
    for (ri, rule) in obj.spec.rules.iter().enumerate() {
        for (pi, p) in rule.paths.iter().enumerate() {
            let at = format!("spec.rules[{ri}].http.paths[{pi}]");
            let k = key(rule.host.as_deref(), p.path.as_deref());
            if let Some(first) = joined.get(&k).and_then(|v| v.first())
                && first.id != id
            {
                f.invalid(
                    at,
                    format!(
                        "Ingress {} is already the canary of host {:?} path {:?}: one canary \
                         per host and path",
                        first.id.name,
                        k.0.as_deref().unwrap_or("*"),
                        k.1
                    ),
                );
                continue;
            }
            let main = all.values().any(|o| {
                o.meta.id.namespace == id.namespace && ours(&o.spec) && has_path(&o.spec, &k)
            });
            if !main {
                f.push(Diagnostic {
                    severity: Severity::Warning,
                    ..Diagnostic::error(
                        id,
                        at,
                        crate::model::Reason::Invalid,
                        format!(
                            "no main Ingress in the namespace has host {:?} path {:?}: this \
                             canary path serves nothing (as in ingress-nginx)",
                            k.0.as_deref().unwrap_or("*"),
                            k.1
                        ),
                    )
                });
            }
        }
    }
}

/// The header conditions that send a request to the canary or keep it on the main backend
/// ahead of the weighted split, in ingress-nginx's order: `(header match, to the canary)`.
pub fn overrides(c: &Canary) -> Vec<(HeaderMatch, bool)> {
    let mut out = Vec::new();
    let exact = |name: &str, value: &str| HeaderMatch {
        name: name.to_owned(),
        value: value.to_owned(),
        kind: ValueMatchType::Exact,
    };
    if let Some(h) = &c.header {
        match (&c.header_value, &c.header_pattern) {
            (Some(v), _) => out.push((exact(h, v), true)),
            (None, Some(p)) => out.push((
                HeaderMatch {
                    name: h.clone(),
                    value: format!(".*(?:{p}).*"),
                    kind: ValueMatchType::RegularExpression,
                },
                true,
            )),
            (None, None) => {
                out.push((exact(h, "always"), true));
                out.push((exact(h, "never"), false));
            }
        }
    }
    if let Some(name) = &c.cookie {
        let name = regex::escape(name);
        for (value, to_canary) in [("always", true), ("never", false)] {
            out.push((
                HeaderMatch {
                    name: "cookie".to_owned(),
                    value: format!("(?:.*;)?\\s*{name}={value}\\s*(?:;.*)?"),
                    kind: ValueMatchType::RegularExpression,
                },
                to_canary,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    const N: &str = "nginx.ingress.kubernetes.io/";

    fn run(pairs: &[(&str, &str)]) -> (Option<Canary>, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let mut out = Vec::new();
        let a = pairs
            .iter()
            .map(|(k, v)| (format!("{N}{k}"), (*v).to_owned()))
            .collect();
        let mut outcomes = BTreeMap::new();
        let c = read(&a, &mut outcomes, &mut Findings::new(&id, &mut out));
        (c, out)
    }

    #[test]
    fn canary_settings_are_read_with_ingress_nginx_defaults() {
        let (c, d) = run(&[("canary", "true"), ("canary-weight", "20")]);
        assert!(d.is_empty(), "{d:?}");
        let c = c.unwrap();
        assert_eq!((c.weight, c.total), (20, 100));
        let (c, d) = run(&[
            ("canary", "true"),
            ("canary-weight", "150"),
            ("canary-weight-total", "1000"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let c = c.unwrap();
        assert_eq!((c.weight, c.total), (150, 1000));
        assert_eq!(c.header.as_deref(), Some("x-canary"));
        assert_eq!(overrides(&c).len(), 1);
    }

    #[test]
    fn canary_annotations_without_canary_true_are_warnings() {
        let (c, d) = run(&[("canary-weight", "20")]);
        assert!(c.is_none());
        assert!(d.len() == 1 && !d[0].is_error(), "{d:?}");
        let (c, d) = run(&[("canary", "false"), ("canary-by-header", "x")]);
        assert!(c.is_none() && d.len() == 1 && !d[0].is_error(), "{d:?}");
    }

    #[test]
    fn bad_canary_values_are_errors_naming_the_annotation() {
        let (_, d) = run(&[("canary", "true"), ("canary-weight", "101")]);
        assert!(
            d[0].is_error() && d[0].field.contains("canary-weight"),
            "{d:?}"
        );
        let (_, d) = run(&[
            ("canary", "true"),
            ("canary-by-header", "x"),
            ("canary-by-header-pattern", "(["),
        ]);
        assert!(d[0].is_error(), "{d:?}");
        let (_, d) = run(&[("canary", "true"), ("canary-by-cookie", "a;b")]);
        assert!(d[0].is_error(), "{d:?}");
    }

    #[test]
    fn header_always_and_never_come_before_the_cookie() {
        let (c, _) = run(&[
            ("canary", "true"),
            ("canary-by-header", "x-canary"),
            ("canary-by-cookie", "canary"),
        ]);
        let o = overrides(&c.unwrap());
        let order: Vec<(&str, bool)> = o.iter().map(|(m, c)| (m.name.as_str(), *c)).collect();
        assert_eq!(
            order,
            [
                ("x-canary", true),
                ("x-canary", false),
                ("cookie", true),
                ("cookie", false)
            ]
        );
        let cookie = regex::Regex::new(&format!("^(?:{})$", o[2].0.value)).unwrap();
        assert!(cookie.is_match("canary=always"));
        assert!(cookie.is_match("a=1; canary=always; b=2"));
        assert!(!cookie.is_match("xcanary=always"));
        assert!(!cookie.is_match("canary=alwaysx"));
    }

    #[test]
    fn a_header_pattern_is_found_anywhere_in_the_value() {
        let (c, _) = run(&[
            ("canary", "true"),
            ("canary-by-header", "x-region"),
            ("canary-by-header-pattern", "eu-(west|north)"),
        ]);
        let o = overrides(&c.unwrap());
        let re = regex::Regex::new(&format!("^(?:{})$", o[0].0.value)).unwrap();
        assert!(re.is_match("eu-west-1") && re.is_match("x eu-north") && !re.is_match("us-east"));
    }
}
