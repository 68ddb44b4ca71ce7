//! The size limits of [`crate::api::limits`] (list lengths and string lengths), checked on what
//! files and the apiserver hand over. The CRD schema carries the same bounds (`maxItems`,
//! `maxLength`), so `kubectl apply` refuses what `tidegate validate` refuses. Lengths count
//! characters, as the apiserver does.

use crate::api::limits::*;
use crate::api::{BackendSpec, HeaderModifier, PathModifier, RouteSpec};

use std::fmt::Display;

use super::fields::{Findings, Item};

/// `field` is a path, written only when the limit is exceeded (see [`Item`]). The check is
/// inlined and the report is not: a Route is checked against dozens of limits.
#[inline]
fn items(f: &mut Findings<'_>, field: impl Display, len: usize, max: usize) {
    if len > max {
        too_many(f, &field, len, max);
    }
}

#[cold]
fn too_many(f: &mut Findings<'_>, field: &dyn Display, len: usize, max: usize) {
    f.invalid(
        field.to_string(),
        format!("{len} entries is more than the {max} allowed"),
    );
}

#[inline]
fn chars(f: &mut Findings<'_>, field: impl Display, s: &str, max: usize) {
    // A string of at most `max` bytes has at most `max` characters: no count needed.
    if s.len() > max {
        too_long(f, &field, s, max);
    }
}

#[cold]
fn too_long(f: &mut Findings<'_>, field: &dyn Display, s: &str, max: usize) {
    let len = s.chars().count();
    if len > max {
        f.invalid(
            field.to_string(),
            format!("{len} characters is more than the {max} allowed"),
        );
    }
}

/// A match's name/value conditions (headers or query parameters) under `parent.field`.
fn name_values<'a>(
    f: &mut Findings<'_>,
    parent: &dyn Display,
    field: &'static str,
    list: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) {
    items(f, Sub(parent, field), list.len(), MAX_LIST);
    for (index, (name, value)) in list.enumerate() {
        let at = &Item {
            parent,
            field,
            index,
        };
        chars(f, Sub(at, "name"), name, MAX_NAME_LEN);
        chars(f, Sub(at, "value"), value, MAX_VALUE_LEN);
    }
}

/// `{parent}.{field}`, written only when a limit is exceeded.
struct Sub<'a>(&'a dyn Display, &'static str);

impl Display for Sub<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A Route's lists and strings.
pub fn route(spec: &RouteSpec, f: &mut Findings<'_>) {
    items(f, "spec.hostnames", spec.hostnames.len(), MAX_HOSTNAMES);
    items(f, "spec.rules", spec.rules.len(), MAX_RULES);
    items(f, "spec.backendRefs", spec.backend_refs.len(), MAX_LIST);
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = &Item {
            parent: &"spec",
            field: "rules",
            index: i,
        };
        items(f, Sub(at, "matches"), rule.matches.len(), MAX_LIST);
        items(f, Sub(at, "filters"), rule.filters.len(), MAX_LIST);
        items(f, Sub(at, "backendRefs"), rule.backend_refs.len(), MAX_LIST);
        for (j, m) in rule.matches.iter().enumerate() {
            let at = &Item {
                parent: at,
                field: "matches",
                index: j,
            };
            if let Some(p) = &m.path {
                chars(f, Sub(at, "path.value"), &p.value, MAX_PATH_LEN);
            }
            let headers = m.headers.iter().map(|h| (&*h.name, &*h.value));
            name_values(f, at, "headers", headers);
            let params = m.query_params.iter().map(|q| (&*q.name, &*q.value));
            name_values(f, at, "queryParams", params);
        }
        for (j, filter) in rule.filters.iter().enumerate() {
            let at = &Item {
                parent: at,
                field: "filters",
                index: j,
            };
            if let Some(m) = &filter.request_header_modifier {
                header_modifier(m, &Sub(at, "requestHeaderModifier"), f);
            }
            if let Some(m) = &filter.response_header_modifier {
                header_modifier(m, &Sub(at, "responseHeaderModifier"), f);
            }
            if let Some(p) = filter.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
                path_modifier(p, &Sub(at, "urlRewrite.path"), f);
            }
            if let Some(p) = filter
                .request_redirect
                .as_ref()
                .and_then(|r| r.path.as_ref())
            {
                path_modifier(p, &Sub(at, "requestRedirect.path"), f);
            }
        }
        if let Some(r) = &rule.retry {
            items(f, Sub(at, "retry.on"), r.on.len(), MAX_LIST);
        }
    }
}

fn header_modifier(m: &HeaderModifier, at: &dyn Display, f: &mut Findings<'_>) {
    for (list, name) in [(&m.set, "set"), (&m.add, "add")] {
        items(f, Sub(at, name), list.len(), MAX_LIST);
        for (i, h) in list.iter().enumerate() {
            let at = &Item {
                parent: at,
                field: name,
                index: i,
            };
            chars(f, Sub(at, "name"), &h.name, MAX_NAME_LEN);
            chars(f, Sub(at, "value"), &h.value, MAX_VALUE_LEN);
        }
    }
    items(f, Sub(at, "remove"), m.remove.len(), MAX_LIST);
    for (i, name) in m.remove.iter().enumerate() {
        let at = Item {
            parent: at,
            field: "remove",
            index: i,
        };
        chars(f, at, name, MAX_NAME_LEN);
    }
}

fn path_modifier(p: &PathModifier, at: &dyn Display, f: &mut Findings<'_>) {
    if let Some(v) = &p.replace_prefix_match {
        chars(f, Sub(at, "replacePrefixMatch"), v, MAX_PATH_LEN);
    }
    if let Some(v) = &p.replace_full_path {
        chars(f, Sub(at, "replaceFullPath"), v, MAX_PATH_LEN);
    }
    if let Some(v) = &p.replace_regex_match {
        chars(f, Sub(at, "replaceRegexMatch"), v, MAX_PATH_LEN);
    }
}

/// A Backend's lists and strings.
pub fn backend(spec: &BackendSpec, f: &mut Findings<'_>) {
    items(f, "spec.endpoints", spec.endpoints.len(), MAX_ENDPOINTS);
    let hash_header = spec
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.hash_on.as_ref())
        .and_then(|h| h.header.as_ref());
    if let Some(h) = hash_header {
        chars(f, "spec.loadBalancer.hashOn.header", h, MAX_NAME_LEN);
    }
    let checks = spec.health_check.as_ref();
    if let Some(http) = checks
        .and_then(|c| c.active.as_ref())
        .and_then(|a| a.http.as_ref())
    {
        let at = "spec.healthCheck.active.http";
        chars(f, format!("{at}.path"), &http.path, MAX_PATH_LEN);
        items(
            f,
            format!("{at}.expectedStatuses"),
            http.expected_statuses.len(),
            MAX_LIST,
        );
    }
    if let Some(p) = checks.and_then(|c| c.passive.as_ref()) {
        items(
            f,
            "spec.healthCheck.passive.failureStatuses",
            p.failure_statuses.len(),
            MAX_LIST,
        );
    }
}
