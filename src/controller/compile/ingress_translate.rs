//! ingress-nginx annotations → our own API values (`api::RouteRule` filters, access lists,
//! authentication, CORS). One pure translation serves two callers: the compiler, which
//! compiles the values it returns through the Route compiler (so an annotated Ingress and a
//! Route written by hand cannot drift), and `tidegate migrate`, which writes them out as Route
//! YAML. Each annotation it reads leaves one [`Outcome`] (carried, approximated and how), and
//! every problem is a finding naming the annotation.

use std::collections::BTreeMap;

use crate::api::annotations::INGRESS_ANNOTATION_PREFIXES as PREFIXES;
use crate::api::{
    self, BasicAuthentication, Cors, HeaderModifier, HeaderValueSpec, LocalObjectRef, PathMatch,
    PathMatchType, PathModifier, RequestRedirect, RouteFilter, RouteMatch, RouteRule, UrlRewrite,
};
use crate::model::ext_auth::Template;
use crate::model::{Diagnostic, Severity};

use super::fields::{self, Findings};
use crate::controller::objects::{IngressBackendInfo, IngressInfo};

/// The annotations translated here (short names; the canary family is
/// [`super::ingress_canary::NAMES`]); the catalogue leaves them to [`translate`].
pub const MAPPED: &[&str] = &[
    "app-root",
    "auth-always-set-cookie",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-realm",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-type",
    "auth-url",
    "backend-protocol",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "enable-cors",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "global-rate-limit",
    "global-rate-limit-ignored-cidrs",
    "global-rate-limit-key",
    "global-rate-limit-window",
    "limit-burst-multiplier",
    "limit-connections",
    "load-balance",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "permanent-redirect",
    "permanent-redirect-code",
    "proxy-body-size",
    "proxy-next-upstream",
    "proxy-connect-timeout",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "rewrite-target",
    "server-alias",
    "preserve-trailing-slash",
    "ssl-redirect",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-hash-by",
    "upstream-vhost",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
];

/// What became of one annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried as written.
    Carried,
    /// Carried with a difference (said here).
    Approximated(String),
    /// Not carried by `tidegate migrate` (why), though served from the Ingress.
    NotCarried(String),
}

/// ingress-nginx's CORS defaults (its annotation documentation).
const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,\
                            Cache-Control,Content-Type,Range,Authorization";
/// Our longest preflight cache (ingress-nginx's default is 1728000 s; browsers cap far lower).
const CORS_MAX_AGE: u32 = 86_400;

/// An Ingress's annotations, translated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Paths are case-insensitive regular-expression prefixes (`use-regex`, `rewrite-target`).
    pub regex: bool,
    /// `rewrite-target` and `upstream-vhost`.
    pub rewrite: Option<UrlRewrite>,
    /// `permanent-redirect` / `temporal-redirect`: every path answers with it.
    pub redirect: Option<RequestRedirect>,
    /// `x-forwarded-prefix`.
    pub set_headers: Vec<HeaderValueSpec>,
    /// `enable-cors` and `cors-*`.
    pub cors: Option<Cors>,
    /// `whitelist-source-range`.
    pub ip_allow: Vec<String>,
    /// `denylist-source-range`.
    pub ip_deny: Vec<String>,
    /// `auth-type: basic` with `auth-secret` and `auth-realm`.
    pub basic: Option<BasicAuthentication>,
    /// `auth-url` and its family: the auth service asked as ingress-nginx asks it.
    pub ext_auth: Option<api::ExtAuth>,
    /// `app-root`: `/` on the Ingress's hosts answers 302 to it.
    pub app_root: Option<String>,
    /// `server-alias`: more host names for the Ingress's hosts.
    pub aliases: Vec<String>,
    /// `limit-rps`, `limit-rpm` (with `limit-burst-multiplier`): per client address, per
    /// replica, answered 503 as ingress-nginx does. The target is the caller's to set.
    pub rate_limit: Option<api::RateLimitPolicySpec>,
    /// `global-rate-limit` and its family: a sliding window counted in Redis, answered 429 as
    /// ingress-nginx does (a policy apart from `rate_limit`, whose answer is 503).
    pub global_rate_limit: Option<api::RateLimitPolicySpec>,
    /// `backend-protocol: GRPC` or `H2C`: the backends are spoken to over HTTP/2 cleartext.
    pub h2c: bool,
    /// `backend-protocol: HTTPS` or `GRPCS` with `proxy-ssl-*`: TLS to the backends.
    pub proxy_ssl: Option<super::ingress_proxy_ssl::ProxySsl>,
    /// `auth-tls-secret` and `auth-tls-*`: client certificates on the Ingress's HTTPS hosts.
    pub auth_tls: Option<super::ingress_auth_tls::AuthTls>,
    /// `ssl-passthrough: "true"`: the Ingress is TLS passthrough Routes (see
    /// [`super::ingress_passthrough`]), its paths and other annotations unused.
    pub passthrough: bool,
    /// `load-balance`, `upstream-hash-by`: how the Services' endpoints are picked.
    pub load_balancer: Option<api::LoadBalancer>,
    /// `proxy-next-upstream`, `proxy-next-upstream-tries`: the rule's `retry`.
    pub retry: Option<api::RetryPolicy>,
    /// `proxy-body-size`: the rule's `maxRequestBodyBytes` (`None`: no limit).
    pub max_body: Option<u64>,
    /// `proxy-read-timeout`: the rule's `timeouts.backendRequest`.
    pub timeouts: Option<api::RouteTimeouts>,
    /// `proxy-connect-timeout`: the connect timeout of the Ingress's Services.
    pub connect_timeout: Option<std::time::Duration>,
    /// `ssl-redirect` (default on): plain HTTP for the `tls` hosts gets 308 to https.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: plain HTTP for every host of the Ingress gets 308 to https.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`: the https redirect keeps a trailing slash (ingress-nginx
    /// removes one by default).
    pub preserve_trailing_slash: bool,
    /// `from-to-www-redirect`: `www.HOST` answers 308 to `HOST` (or `HOST` to `www.HOST`).
    pub from_to_www: bool,
    /// `canary: "true"` and `canary-*`: the Ingress's backends join the main Ingress's rules
    /// of the same host and path (see [`super::ingress_canary`]).
    pub canary: Option<super::ingress_canary::Canary>,
    /// `default-backend`: the Service (same namespace) the rules' requests go to when their
    /// own Service has no ready endpoint (the rule's `fallbackBackendRef`).
    pub default_backend: Option<String>,
    /// `custom-http-errors`: upstream statuses replaced by the default backend's answer (the
    /// rule's `errorResponses`).
    pub custom_errors: Vec<u16>,
    /// What became of each annotation read, by full key.
    pub outcomes: BTreeMap<String, Outcome>,
}

/// The value of annotation `name` under either prefix, with its full key.
pub(super) fn get<'a>(a: &'a BTreeMap<String, String>, name: &str) -> Option<(String, &'a str)> {
    PREFIXES.iter().find_map(|p| {
        let key = format!("{p}{name}");
        a.get(&key).map(|v| (key, v.as_str()))
    })
}

/// The field of annotation `key`, for messages.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// An annotation's boolean, as ingress-nginx reads it.
pub fn boolean(value: &str) -> Option<bool> {
    match value.trim() {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A comma-separated list, trimmed, empty items dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads the annotations (full keys); problems go to `f`, each naming its annotation.
pub fn translate(a: &BTreeMap<String, String>, f: &mut Findings<'_>) -> Translation {
    let mut t = Translation {
        ssl_redirect: true,
        ..Translation::default()
    };
    let flag = |t: &mut Translation, name: &str, f: &mut Findings<'_>| -> Option<bool> {
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
    t.ssl_redirect = flag(&mut t, "ssl-redirect", f).unwrap_or(true);
    t.force_ssl_redirect = flag(&mut t, "force-ssl-redirect", f).unwrap_or(false);
    t.regex = flag(&mut t, "use-regex", f).unwrap_or(false);
    t.preserve_trailing_slash = flag(&mut t, "preserve-trailing-slash", f).unwrap_or(false);
    t.from_to_www = flag(&mut t, "from-to-www-redirect", f).unwrap_or(false);
    t.canary = super::ingress_canary::read(a, &mut t.outcomes, f);
    rewrites(a, &mut t, f);
    redirects(a, &mut t, f);
    access(a, &mut t, f);
    ext_auth(a, &mut t, f);
    rate_limits(a, &mut t, f);
    limit_connections(a, &mut t, f);
    limit_whitelist(a, &mut t, f);
    global_rate_limit(a, &mut t, f);
    timeouts(a, &mut t, f);
    send_timeout(a, &mut t, f);
    body_size(a, &mut t, f);
    backend_protocol(a, &mut t, f);
    // A canary's are warned about below: its backends take the main Ingress's settings.
    if t.canary.is_none() {
        let protocol_key = get(a, "backend-protocol").map(|(k, _)| k);
        super::ingress_proxy_ssl::read(
            a,
            t.proxy_ssl.as_mut(),
            protocol_key.as_deref(),
            &mut t.outcomes,
            f,
        );
    }
    t.auth_tls = super::ingress_auth_tls::read(a, t.canary.is_some(), &mut t.outcomes, f);
    retries(a, &mut t, f);
    next_upstream_timeout(a, &mut t, f);
    balancing(a, &mut t, f);
    super::ingress_affinity::read(a, &mut t, f);
    error_pages(a, &mut t, f);
    if flag(&mut t, "enable-cors", f) == Some(true) {
        cors(a, &mut t);
    } else {
        for name in MAPPED.iter().filter(|n| n.starts_with("cors-")) {
            if let Some((key, _)) = get(a, name) {
                warn(f, &key, "it has no effect without enable-cors: \"true\"");
            }
        }
    }
    if t.canary.is_some() {
        // As in ingress-nginx, a canary takes the main Ingress's settings.
        for name in MAPPED.iter().chain(super::ingress_proxy_ssl::NAMES) {
            if let Some((key, _)) = get(a, name) {
                let why = if matches!(*name, "load-balance" | "upstream-hash-by") {
                    "it has no effect on a canary Ingress: the canary's endpoints are picked as \
                     the main Ingress says (ingress-nginx would apply it to them)"
                } else {
                    "it has no effect on a canary Ingress: the main Ingress's annotations apply \
                     (as in ingress-nginx)"
                };
                warn(f, &key, why);
                t.outcomes.remove(&key);
            }
        }
    }
    if super::ingress_passthrough::read(a, &mut t.outcomes, f) {
        t.passthrough = true;
        t.outcomes.retain(|k, _| {
            super::ingress_passthrough::NAMES
                .iter()
                .any(|n| k.ends_with(n))
        });
    }
    t
}

/// A finding that does not reject the Ingress.
fn warn(f: &mut Findings<'_>, key: &str, message: &str) {
    f.push(Diagnostic {
        severity: Severity::Warning,
        ..Diagnostic::error(
            f.id(),
            field(key),
            crate::model::Reason::Invalid,
            message.to_owned(),
        )
    });
}

/// `rewrite-target`, `upstream-vhost`, `x-forwarded-prefix`, `app-root`, `server-alias`.
fn rewrites(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let mut rewrite = UrlRewrite::default();
    if let Some((key, v)) = get(a, "rewrite-target") {
        if !v.starts_with('/') {
            f.invalid(field(&key), format!("{v:?} must be a path starting with /"));
        } else {
            // nginx's `rewrite "(?i)PATH" TARGET break` replaces the whole path with TARGET, its
            // $1..$9 the groups of PATH: the path match's groups, as replaceRegexMatch fills
            // (a query in TARGET too, the request's after it).
            rewrite.path = Some(if v.contains('$') || v.contains('?') {
                PathModifier {
                    replace_regex_match: Some(v.to_owned()),
                    ..PathModifier::default()
                }
            } else {
                PathModifier {
                    replace_full_path: Some(v.to_owned()),
                    ..PathModifier::default()
                }
            });
            t.regex = true;
            t.outcomes.insert(key, Outcome::Carried);
        }
    }
    if let Some((key, v)) = get(a, "upstream-vhost") {
        rewrite.hostname = Some(v.trim().to_owned());
        t.outcomes.insert(key, Outcome::Carried);
    }
    if rewrite != UrlRewrite::default() {
        t.rewrite = Some(rewrite);
    }
    if let Some((key, v)) = get(a, "x-forwarded-prefix") {
        t.set_headers.push(HeaderValueSpec {
            name: "X-Forwarded-Prefix".to_owned(),
            value: v.to_owned(),
        });
        t.outcomes.insert(key, Outcome::Carried);
    }
    if let Some((key, v)) = get(a, "app-root") {
        if v.starts_with('/') && v != "/" {
            t.app_root = Some(v.to_owned());
            t.outcomes.insert(key, Outcome::Carried);
        } else {
            f.invalid(
                field(&key),
                format!("{v:?} must be a path starting with / (and not / itself)"),
            );
        }
    }
    if let Some((key, v)) = get(a, "server-alias") {
        t.aliases = list(v);
        t.outcomes.insert(key, Outcome::Carried);
    }
}

/// `permanent-redirect(-code)`, `temporal-redirect(-code)`.
fn redirects(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let permanent = get(a, "permanent-redirect");
    let temporal = get(a, "temporal-redirect");
    for name in ["permanent-redirect-code", "temporal-redirect-code"] {
        let base = name.trim_end_matches("-code");
        if let Some((key, _)) = get(a, name)
            && get(a, base).is_none()
        {
            warn(f, &key, &format!("it has no effect without {base}"));
        }
    }
    let (key, url, code_name, default) = match (permanent, temporal) {
        (Some((k, _)), Some(_)) => {
            f.invalid(
                field(&k),
                "permanent-redirect and temporal-redirect cannot both be set",
            );
            return;
        }
        (Some((k, v)), None) => (k, v, "permanent-redirect-code", 301),
        (None, Some((k, v))) => (k, v, "temporal-redirect-code", 302),
        (None, None) => return,
    };
    let code = match get(a, code_name) {
        None => default,
        Some((ck, v)) => match v.trim().parse::<u16>() {
            Ok(c @ (301 | 302 | 303 | 307 | 308)) => {
                t.outcomes.insert(ck, Outcome::Carried);
                c
            }
            _ => {
                f.invalid(
                    field(&ck),
                    format!("{v:?} must be 301, 302, 303, 307 or 308"),
                );
                return;
            }
        },
    };
    match redirect_to(url.trim(), code) {
        Ok(r) => {
            t.redirect = Some(r);
            // As in ingress-nginx, the redirect answers before anything is forwarded.
            for name in ["rewrite-target", "upstream-vhost", "x-forwarded-prefix"] {
                if let Some((other, _)) = get(a, name) {
                    warn(
                        f,
                        &other,
                        &format!("it has no effect: {key} answers every request"),
                    );
                    t.outcomes.remove(&other);
                }
            }
            t.outcomes.insert(
                key,
                Outcome::Approximated(
                    "the request's query string is kept on the Location (ingress-nginx drops it)"
                        .to_owned(),
                ),
            );
        }
        Err(e) => f.invalid(field(&key), e),
    }
}

/// A redirect to the absolute URL `url`.
fn redirect_to(url: &str, code: u16) -> Result<RequestRedirect, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(format!("{url:?} must be an absolute http or https URL"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?} must be an http or https URL"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "{url:?}: a query in the target is not supported yet"
        ));
    }
    let path = uri.path();
    Ok(RequestRedirect {
        scheme: Some(scheme.to_owned()),
        hostname: Some(host.to_owned()),
        port: uri.port_u16(),
        path: Some(PathModifier {
            replace_full_path: Some(if path.is_empty() { "/" } else { path }.to_owned()),
            ..PathModifier::default()
        }),
        status_code: Some(code),
    })
}

/// ingress-nginx's `limit-burst-multiplier` default and its answer to a limited request.
const BURST_MULTIPLIER: u32 = 5;
const LIMITED_STATUS: u16 = 503;

/// `limit-rps`, `limit-rpm`, `limit-burst-multiplier`.
fn rate_limits(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let number = |name: &str, f: &mut Findings<'_>| -> Option<(String, u32)> {
        let (key, v) = get(a, name)?;
        match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Some((key, n)),
            _ => {
                f.invalid(field(&key), format!("{v:?} must be a whole number above 0"));
                None
            }
        }
    };
    let multiplier = number("limit-burst-multiplier", f);
    let mut limits = Vec::new();
    for (name, per) in [("limit-rps", 1), ("limit-rpm", 60)] {
        let Some((key, rate)) = number(name, f) else {
            continue;
        };
        // nginx's limit_req passes the request that finds the bucket empty plus `burst` more
        // at once (measured against Debian's nginx): one more than the burst it is given.
        let burst = rate
            .saturating_mul(multiplier.as_ref().map_or(BURST_MULTIPLIER, |m| m.1))
            .saturating_add(1);
        limits.push(api::RateLimit {
            name: Some(name.to_owned()),
            key: Some(api::RateLimitKey {
                client_ip: Some(api::Empty {}),
                ..api::RateLimitKey::default()
            }),
            rate,
            per: api::Duration(std::time::Duration::from_secs(per)),
            burst: Some(burst),
            ..api::RateLimit::default()
        });
        t.outcomes.insert(
            key,
            Outcome::Approximated(
                "a token bucket per client address and replica holding rate × \
                 limit-burst-multiplier + 1 requests, as nginx's limit_req burst with nodelay; \
                 limited requests get 503 and RateLimit headers"
                    .to_owned(),
            ),
        );
    }
    match multiplier {
        Some((key, _)) if limits.is_empty() => {
            warn(f, &key, "it has no effect without limit-rps or limit-rpm");
        }
        Some((key, _)) => {
            t.outcomes.insert(key, Outcome::Carried);
        }
        None => {}
    }
    if !limits.is_empty() {
        t.rate_limit = Some(api::RateLimitPolicySpec {
            limits,
            response: Some(api::RateLimitResponse {
                status_code: Some(LIMITED_STATUS),
            }),
            ..api::RateLimitPolicySpec::default()
        });
    }
}

/// `proxy-next-upstream-timeout`: whole seconds (`0`: no limit, nginx's default) after which no
/// new try starts, the one under way going on: the rule's `retry.maxDuration`.
fn next_upstream_timeout(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "proxy-next-upstream-timeout") else {
        return;
    };
    let Ok(secs) = v.trim().parse::<u32>() else {
        f.invalid(
            field(&key),
            format!("{v:?} must be whole seconds (0: no limit)"),
        );
        return;
    };
    match &mut t.retry {
        _ if secs == 0 => {
            t.outcomes.insert(key, Outcome::Carried);
        }
        Some(retry) => {
            retry.max_duration = Some(api::Duration(std::time::Duration::from_secs(u64::from(
                secs,
            ))));
            t.outcomes.insert(key, Outcome::Carried);
        }
        None => warn(
            f,
            &key,
            "it has no effect without proxy-next-upstream or proxy-next-upstream-tries \
             (Tidegate does not retry an Ingress by default)",
        ),
    }
}

/// `limit-connections`: nginx's `limit_conn` on `$binary_remote_addr` (requests in flight per
/// client address, per replica; 503 over it) as a concurrency limit of the Ingress's policy.
fn limit_connections(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "limit-connections") else {
        return;
    };
    let max = match v.trim().parse::<u32>() {
        Ok(n) if (1..=super::rate_limit::MAX_CONCURRENCY).contains(&n) => n,
        _ => {
            f.invalid(
                field(&key),
                format!(
                    "{v:?} must be a whole number from 1 to {}",
                    super::rate_limit::MAX_CONCURRENCY
                ),
            );
            return;
        }
    };
    let policy = t
        .rate_limit
        .get_or_insert_with(|| api::RateLimitPolicySpec {
            response: Some(api::RateLimitResponse {
                status_code: Some(LIMITED_STATUS),
            }),
            ..api::RateLimitPolicySpec::default()
        });
    policy.concurrency.push(api::ConcurrencyLimit {
        name: Some("limit-connections".to_owned()),
        key: Some(api::RateLimitKey {
            client_ip: Some(api::Empty {}),
            ..api::RateLimitKey::default()
        }),
        max,
        ..api::ConcurrencyLimit::default()
    });
    t.outcomes.insert(
        key,
        Outcome::Approximated(
            "a concurrency limit per client address and replica counting requests in flight \
             (from admission to the end of the response body), as nginx's limit_conn counts \
             requests being processed; over it 503"
                .to_owned(),
        ),
    );
}

/// `limit-whitelist`: clients exempt from the Ingress's own limits (`limit-rps`, `limit-rpm`,
/// `limit-connections`), as the limits' `exemptClients`. Not from `global-rate-limit`, which has
/// its own list (as in ingress-nginx).
fn limit_whitelist(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "limit-whitelist") else {
        return;
    };
    let Some(cidrs) = cidr_list(&key, v, f) else {
        return;
    };
    let mut applied = false;
    if let Some(policy) = &mut t.rate_limit {
        for l in policy
            .limits
            .iter_mut()
            .filter(|l| LOCAL_LIMITS.contains(&l.name.as_deref().unwrap_or("")))
        {
            l.exempt_clients = cidrs.clone();
            applied = true;
        }
        for c in &mut policy.concurrency {
            c.exempt_clients = cidrs.clone();
            applied = true;
        }
    }
    if applied {
        t.outcomes.insert(key, Outcome::Carried);
    } else {
        warn(
            f,
            &key,
            "it has no effect without limit-rps, limit-rpm or limit-connections",
        );
    }
}

/// ingress-nginx's `global-rate-limit-status-code` default.
const GLOBAL_LIMITED_STATUS: u16 = 429;

/// `global-rate-limit`, `global-rate-limit-window`, `global-rate-limit-key`,
/// `global-rate-limit-ignored-cidrs`: ingress-nginx's lua-resty-global-throttle (a sliding
/// window shared by the replicas through memcached, all paths of the Ingress counted together,
/// failing open) as a `scope: Global` SlidingWindow limit in Redis.
fn global_rate_limit(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let limit = get(a, "global-rate-limit");
    let window = get(a, "global-rate-limit-window");
    let (Some((limit_key, limit)), Some((window_key, window))) = (&limit, &window) else {
        // ingress-nginx needs both: either alone does nothing there, and here.
        for name in [
            "global-rate-limit",
            "global-rate-limit-window",
            "global-rate-limit-key",
            "global-rate-limit-ignored-cidrs",
        ] {
            if let Some((key, _)) = get(a, name) {
                warn(
                    f,
                    &key,
                    "it has no effect without both global-rate-limit and global-rate-limit-window",
                );
            }
        }
        return;
    };
    let rate = match limit.trim().parse::<u32>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            f.invalid(
                field(limit_key),
                format!("{limit:?} must be a whole number above 0"),
            );
            None
        }
    };
    let per = match go_duration(window) {
        // ingress-nginx keeps whole seconds of the window.
        Some(d) if (1..=86_400).contains(&d.as_secs()) => Some(d.as_secs()),
        Some(_) => {
            f.invalid(
                field(window_key),
                format!("{window:?} must be from 1s to 24h"),
            );
            None
        }
        None => {
            f.invalid(
                field(window_key),
                format!("{window:?} is not a duration (e.g. 1m, 30s, 1h30m)"),
            );
            None
        }
    };
    let key = match get(a, "global-rate-limit-key") {
        None => Some(api::RateLimitKey {
            client_ip: Some(api::Empty {}),
            ..api::RateLimitKey::default()
        }),
        Some((key, v)) => match throttle_key(v) {
            Ok(k) => {
                t.outcomes.insert(key, Outcome::Carried);
                Some(k)
            }
            Err(why) => {
                f.not_supported(field(&key), &why);
                None
            }
        },
    };
    let exempt = match get(a, "global-rate-limit-ignored-cidrs") {
        None => Some(Vec::new()),
        Some((key, v)) => {
            let cidrs = cidr_list(&key, v, f);
            if cidrs.is_some() {
                t.outcomes.insert(key, Outcome::Carried);
            }
            cidrs
        }
    };
    let (Some(rate), Some(per), Some(key), Some(exempt)) = (rate, per, key, exempt) else {
        return;
    };
    t.outcomes.insert(
        limit_key.clone(),
        Outcome::Approximated(
            "a Global SlidingWindow limit in Redis (tidegate run --redis-url) where ingress-nginx \
             counts in memcached; limited requests get 429 and RateLimit headers"
                .to_owned(),
        ),
    );
    t.outcomes.insert(window_key.clone(), Outcome::Carried);
    t.global_rate_limit = Some(api::RateLimitPolicySpec {
        limits: vec![api::RateLimit {
            name: Some("global-rate-limit".to_owned()),
            key: Some(key),
            algorithm: Some(api::RateLimitAlgorithm::SlidingWindow),
            rate,
            per: api::Duration(std::time::Duration::from_secs(per)),
            scope: Some(api::RateLimitScope::Global),
            exempt_clients: exempt,
            ..api::RateLimit::default()
        }],
        response: Some(api::RateLimitResponse {
            status_code: Some(GLOBAL_LIMITED_STATUS),
        }),
        ..api::RateLimitPolicySpec::default()
    });
}

/// A Go duration (`1m`, `30s`, `1h30m`, `1.5s`, `500ms`), as ingress-nginx reads
/// `global-rate-limit-window`.
fn go_duration(v: &str) -> Option<std::time::Duration> {
    let mut rest = v.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit..];
        total += number * scale;
    }
    (total.is_finite() && total < 1e9).then(|| std::time::Duration::from_secs_f64(total))
}

/// `global-rate-limit-key`: nginx variables (`$remote_addr`, `${http_x_api_client}`) and text
/// between them. The client address and one request header can be keyed on; text is the same
/// for every request, so it changes no bucket. As in ingress-nginx, a key that comes out
/// empty (its header missing) counts by the client address.
fn throttle_key(v: &str) -> Result<api::RateLimitKey, String> {
    let mut key = api::RateLimitKey::default();
    let mut rest = v.trim();
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{v:?}: an unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        rest = after;
        if name == "remote_addr" || name == "binary_remote_addr" {
            key.client_ip = Some(api::Empty {});
        } else if let Some(h) = name.strip_prefix("http_") {
            let h = h.replace('_', "-");
            if fields::header_name(&h).is_err() {
                return Err(format!(
                    "global-rate-limit-key {v:?}: ${name} names no header"
                ));
            }
            match &key.header {
                Some(first) if *first != h => {
                    return Err(format!(
                        "global-rate-limit-key {v:?} with two headers ({first}, {h}): one \
                         header and $remote_addr can be keyed on"
                    ));
                }
                _ => key.header = Some(h),
            }
        } else {
            return Err(format!(
                "global-rate-limit-key {v:?} with ${name}: $remote_addr and $http_NAME can be \
                 keyed on"
            ));
        }
    }
    match (&key.client_ip, &key.header) {
        // ingress-nginx's default for an empty key.
        (None, None) if v.trim().is_empty() => {
            key.client_ip = Some(api::Empty {});
            Ok(key)
        }
        // Text alone: the same key for every request.
        (None, None) => {
            key.none = Some(api::Empty {});
            Ok(key)
        }
        (Some(_), Some(_)) => {
            key.missing_header = Some(api::MissingHeader::SharedBucket);
            Ok(key)
        }
        (None, Some(_)) => {
            key.missing_header = Some(api::MissingHeader::ClientIp);
            Ok(key)
        }
        (Some(_), None) => Ok(key),
    }
}

/// The limits `limit-whitelist` exempts clients from (by name).
const LOCAL_LIMITS: [&str; 3] = ["limit-rps", "limit-rpm", "limit-connections"];

/// A comma-separated list of CIDRs or addresses, each checked; `None` (and a finding) when one
/// is not.
fn cidr_list(key: &str, v: &str, f: &mut Findings<'_>) -> Option<Vec<String>> {
    let items = list(v);
    for item in &items {
        if let Err(e) = item.parse::<crate::model::Cidr>() {
            f.invalid(field(key), e.to_string());
            return None;
        }
    }
    if items.is_empty() {
        f.invalid(field(key), "list one or more CIDRs or addresses");
        return None;
    }
    Some(items)
}

/// `default-backend` and `custom-http-errors`. Without `default-backend`, ingress-nginx asks
/// the controller's own default backend for the error pages; Tidegate has none, so
/// `custom-http-errors` needs the annotation.
fn error_pages(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    if let Some((key, v)) = get(a, "default-backend") {
        let name = v.trim();
        if is_dns_label(name) {
            t.default_backend = Some(name.to_owned());
            t.outcomes.insert(
                key,
                Outcome::Approximated(
                    "the rule's fallbackBackendRef (kind Service): requests go there when the \
                     rule's Service has no ready endpoint, none healthy or every one ejected. \
                     Served from the Ingress it takes the Service's first port, as \
                     ingress-nginx; migrated, a Service with several ports needs port set"
                        .to_owned(),
                ),
            );
        } else {
            f.invalid(
                field(&key),
                format!("{v:?} must name a Service of the Ingress's namespace"),
            );
        }
    }
    let Some((key, v)) = get(a, "custom-http-errors") else {
        return;
    };
    let mut codes = Vec::new();
    for code in list(v) {
        match code.parse::<u16>() {
            Ok(c) if (400..=599).contains(&c) => {
                if !codes.contains(&c) {
                    codes.push(c);
                }
            }
            _ => {
                f.invalid(
                    field(&key),
                    format!("{code:?} is not an error status (400-599)"),
                );
                return;
            }
        }
    }
    if codes.is_empty() {
        f.invalid(field(&key), "list error statuses, e.g. \"404,503\"");
        return;
    }
    if t.default_backend.is_none() {
        f.not_supported(
            field(&key),
            "custom-http-errors without default-backend (ingress-nginx then asks the \
             controller's own default backend, and Tidegate has none): name the error-page \
             Service with the default-backend annotation",
        );
        return;
    }
    t.custom_errors = codes;
    t.outcomes.insert(
        key,
        Outcome::Approximated(
            "the rule's errorResponses, asking the default-backend Service GET / (HEAD / for \
             HEAD) with X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, \
             X-Service-Name, X-Service-Port, X-Request-ID, X-Forwarded-For, Host and Accept \
             (nginx repeats the client's method and other headers); its status, headers and \
             body are sent; if it cannot answer, the upstream's own answer is"
                .to_owned(),
        ),
    );
}

/// A DNS-1035 label, as a Service name is.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `backend-protocol`: HTTP (the default), GRPC and H2C (HTTP/2 cleartext), HTTPS and GRPCS
/// (HTTP/1.1 and HTTP/2 over TLS, with `proxy-ssl-*`: see [`super::ingress_proxy_ssl`]).
fn backend_protocol(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "backend-protocol") else {
        return;
    };
    let outcome = match v.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Outcome::Carried,
        "H2C" => {
            t.h2c = true;
            Outcome::Carried
        }
        "GRPC" => {
            t.h2c = true;
            Outcome::Approximated(
                "HTTP/2 cleartext to the backend (a Backend with protocol H2C), as nginx's \
                 grpc_pass grpc://; requests that are not gRPC are forwarded over it too"
                    .to_owned(),
            )
        }
        p @ ("HTTPS" | "GRPCS") => {
            let http2 = p == "GRPCS";
            t.proxy_ssl = Some(super::ingress_proxy_ssl::ProxySsl {
                http2,
                ..Default::default()
            });
            Outcome::Approximated(if http2 {
                "HTTP/2 over TLS to the backend (a Backend with protocol HTTP2 and tls), as \
                 nginx's grpc_pass grpcs://; requests that are not gRPC are forwarded over it \
                 too; the server name (SNI) is sent"
                    .to_owned()
            } else {
                "HTTP/1.1 over TLS to the backend (a Backend with tls); the server name (SNI) \
                 is sent"
                    .to_owned()
            })
        }
        "AUTO_HTTP" | "FCGI" => {
            f.not_supported(field(&key), &format!("backend-protocol {v}"));
            return;
        }
        _ => {
            f.invalid(
                field(&key),
                format!("{v:?} must be HTTP, HTTPS, GRPC, GRPCS, H2C, AUTO_HTTP or FCGI"),
            );
            return;
        }
    };
    t.outcomes.insert(key, outcome);
}

/// `upstream-hash-by` (one nginx variable: the client address, a header, a cookie or a query
/// parameter) and `load-balance` (`round_robin`, `ewma`), as a Backend's `loadBalancer`.
fn balancing(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let hash = get(a, "upstream-hash-by");
    if let Some((key, v)) = &hash {
        let v = v.trim();
        let mut on = api::HashOn::default();
        if v == "$remote_addr" || v == "$binary_remote_addr" {
            on.source_ip = Some(api::Empty {});
        } else if let Some(h) = v.strip_prefix("$http_") {
            match fields::header_name(&h.replace('_', "-")) {
                Ok(h) => on.header = Some(h.as_str().to_owned()),
                Err(e) => {
                    f.invalid(field(key), e);
                    return;
                }
            }
        } else if let Some(c) = v.strip_prefix("$cookie_").filter(|c| !c.is_empty()) {
            on.cookie = Some(c.to_owned());
        } else if let Some(q) = v.strip_prefix("$arg_").filter(|q| !q.is_empty()) {
            on.query_param = Some(q.to_owned());
        } else {
            f.not_supported(
                field(key),
                &format!(
                    "upstream-hash-by {v:?}: one of $remote_addr, $http_NAME, $cookie_NAME or \
                     $arg_NAME is carried (a Backend's loadBalancer.hashOn); for others write a \
                     Route to a Backend"
                ),
            );
            return;
        }
        t.load_balancer = Some(api::LoadBalancer {
            algorithm: api::LbAlgorithm::ConsistentHash,
            hash_on: Some(on),
            session_persistence: None,
        });
        t.outcomes.insert(
            key.clone(),
            Outcome::Approximated(
                "Maglev consistent hashing of the value (a missing one: the client address); \
                 requests with one value stay on one endpoint as with ingress-nginx's chash, \
                 though not on the same endpoint it would pick"
                    .to_owned(),
            ),
        );
    }
    let Some((key, v)) = get(a, "load-balance") else {
        return;
    };
    if hash.is_some() {
        warn(
            f,
            &key,
            "it has no effect beside upstream-hash-by (as in ingress-nginx)",
        );
        return;
    }
    match v.trim() {
        "round_robin" => {
            t.outcomes.insert(key, Outcome::Carried);
        }
        "ewma" => {
            t.load_balancer = Some(api::LoadBalancer {
                algorithm: api::LbAlgorithm::LeastRequest,
                hash_on: None,
                session_persistence: None,
            });
            t.outcomes.insert(
                key,
                Outcome::Approximated(
                    "LeastRequest: the less loaded of two endpoints by requests in flight, where \
                     ewma weighs them by their recent latency"
                        .to_owned(),
                ),
            );
        }
        other => f.invalid(
            field(&key),
            format!("{other:?} must be round_robin or ewma"),
        ),
    }
}

/// ingress-nginx's `proxy-next-upstream` and `proxy-next-upstream-tries` defaults.
const NEXT_UPSTREAM: &str = "error timeout";
const NEXT_UPSTREAM_TRIES: u32 = 3;

/// `proxy-next-upstream` (when to try another endpoint) and `proxy-next-upstream-tries` (how
/// many tries in all), with ingress-nginx's defaults for the one unset.
fn retries(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let when = get(a, "proxy-next-upstream");
    let tries = get(a, "proxy-next-upstream-tries");
    if when.is_none() && tries.is_none() {
        return;
    }
    let (max_tries, tries_outcome) = match &tries {
        None => (NEXT_UPSTREAM_TRIES, None),
        Some((key, v)) => match v.trim().parse::<u32>() {
            Ok(0) => (
                crate::api::limits::RETRY_ATTEMPTS.1,
                Some(Outcome::Approximated(
                    "0 (no limit in nginx) is 10 tries, the most a Route retries".to_owned(),
                )),
            ),
            Ok(n) if n > crate::api::limits::RETRY_ATTEMPTS.1 => (
                crate::api::limits::RETRY_ATTEMPTS.1,
                Some(Outcome::Approximated(format!(
                    "{n} is 10 tries, the most a Route retries"
                ))),
            ),
            Ok(n) => (n, Some(Outcome::Carried)),
            Err(_) => {
                f.invalid(
                    field(key),
                    format!("{v:?} must be a whole number of tries (0: no limit)"),
                );
                return;
            }
        },
    };
    let (when_key, words) = match &when {
        Some((key, v)) => (Some(key.clone()), *v),
        None => (None, NEXT_UPSTREAM),
    };
    let mut on: Vec<String> = Vec::new();
    let mut non_idempotent = false;
    let mut off = false;
    for word in words.split_whitespace() {
        let conditions: &[&str] = match word {
            "error" | "timeout" => &["connect-failure", "reset"],
            "http_500" => &["500"],
            "http_502" => &["502"],
            "http_503" => &["503"],
            "http_504" => &["504"],
            "http_403" => &["403"],
            "http_404" => &["404"],
            "http_429" => &["429"],
            "non_idempotent" => {
                non_idempotent = true;
                &[]
            }
            "off" => {
                off = true;
                &[]
            }
            other => {
                let key = when_key.clone().unwrap_or_default();
                f.not_supported(
                    field(&key),
                    &format!("proxy-next-upstream {other:?} (error, timeout, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent and off are)"),
                );
                return;
            }
        };
        for c in conditions {
            if !on.iter().any(|o| o == c) {
                on.push((*c).to_owned());
            }
        }
    }
    if !off && max_tries > 1 && !on.is_empty() {
        t.retry = Some(api::RetryPolicy {
            attempts: Some(max_tries),
            on,
            non_idempotent: non_idempotent.then_some(true),
            ..api::RetryPolicy::default()
        });
    }
    if let Some(key) = when_key {
        t.outcomes.insert(
            key,
            Outcome::Approximated(
                "the rule's retry: error and timeout are connect-failure and reset (a backend \
                 that times out after the request was sent is not tried again), http_NNN the \
                 status; each try picks an endpoint again (usually another, maybe the same), \
                 within the retry budget (20% of requests + 10)"
                    .to_owned(),
            ),
        );
    }
    if let (Some((key, _)), Some(outcome)) = (tries, tries_outcome) {
        t.outcomes.insert(key, outcome);
    }
}

/// Annotation `name` as whole seconds above 0 (as ingress-nginx reads its timeouts), with its
/// full key; `None` when it is not set, or not such a number (then a finding).
pub(super) fn whole_seconds(
    a: &BTreeMap<String, String>,
    name: &str,
    f: &mut Findings<'_>,
) -> Option<(String, u64)> {
    let (key, v) = get(a, name)?;
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some((key, n)),
        _ => {
            f.invalid(
                field(&key),
                format!("{v:?} must be a whole number of seconds above 0"),
            );
            None
        }
    }
}

/// `proxy-read-timeout` (whole seconds, as ingress-nginx reads it).
fn timeouts(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let seconds = |name: &str, f: &mut Findings<'_>| whole_seconds(a, name, f);
    if let Some((key, secs)) = seconds("proxy-connect-timeout", f) {
        t.connect_timeout = Some(std::time::Duration::from_secs(secs));
        t.outcomes.insert(
            key,
            Outcome::Approximated(
                "the connect timeout of the Ingress's Services (a Backend's \
                 connection.connectTimeout); a connect that times out is answered 502 \
                 (connect_failed), where nginx answers 504"
                    .to_owned(),
            ),
        );
    }
    let Some((key, secs)) = seconds("proxy-read-timeout", f) else {
        return;
    };
    t.timeouts = Some(api::RouteTimeouts {
        backend_request: Some(api::Duration(std::time::Duration::from_secs(secs))),
        ..api::RouteTimeouts::default()
    });
    t.outcomes.insert(
        key,
        Outcome::Approximated(
            "timeouts.backendRequest: the wait for each attempt's response headers (504 after \
             it), where nginx's limit is between two reads of the response, its body included"
                .to_owned(),
        ),
    );
}

/// `proxy-send-timeout`: nginx's limit between two writes of the request to the backend.
/// Tidegate has no such limit; sending is bounded by the attempt's timeout to the response
/// headers instead. Accepted as an approximation, with a warning saying so.
fn send_timeout(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "proxy-send-timeout") else {
        return;
    };
    if !matches!(v.trim().parse::<u64>(), Ok(n) if n > 0) {
        f.invalid(
            field(&key),
            format!("{v:?} must be a whole number of seconds above 0"),
        );
        return;
    }
    let why = "Tidegate has no limit between two writes to the backend; sending \
               the request is bounded by each attempt's timeout to the response headers \
               (proxy-read-timeout, else --default-request-timeout, 60 s), after which a \
               backend that stopped reading gets the request cut (504)";
    warn(f, &key, &format!("approximated: {why}"));
    t.outcomes
        .insert(key, Outcome::Approximated(why.to_owned()));
}

/// `proxy-body-size`: nginx's `client_max_body_size` (bytes, or a number with `k`, `m` or `g`;
/// `0`: no limit) → the rule's `maxRequestBodyBytes`.
fn body_size(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((key, v)) = get(a, "proxy-body-size") else {
        return;
    };
    match nginx_size(v.trim()) {
        Some(n) => {
            t.max_body = (n > 0).then_some(n);
            t.outcomes.insert(key, Outcome::Carried);
        }
        None => f.invalid(
            field(&key),
            format!(
                "{v:?} must be a size as nginx writes it: bytes, or a number with k, m or g \
                 (\"8m\"); 0 for no limit"
            ),
        ),
    }
}

/// An nginx size (`ngx_parse_offset`): digits, then optionally `k`, `m` or `g` (either case).
fn nginx_size(v: &str) -> Option<u64> {
    let (digits, unit) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// `whitelist-source-range`, `denylist-source-range`, `auth-type` basic.
fn access(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    if let Some((key, v)) = get(a, "whitelist-source-range") {
        t.ip_allow = list(v);
        t.outcomes.insert(key, Outcome::Carried);
    }
    if let Some((key, v)) = get(a, "denylist-source-range") {
        t.ip_deny = list(v);
        t.outcomes.insert(key, Outcome::Carried);
    }
    let Some((type_key, kind)) = get(a, "auth-type") else {
        for name in ["auth-secret", "auth-realm", "auth-secret-type"] {
            if let Some((key, _)) = get(a, name) {
                warn(f, &key, "it has no effect without auth-type");
            }
        }
        return;
    };
    if kind.trim() != "basic" {
        f.not_supported(
            field(&type_key),
            &format!("auth-type {kind:?} (only basic)"),
        );
        return;
    }
    if let Some((key, v)) = get(a, "auth-secret-type") {
        if v.trim() == "auth-file" {
            t.outcomes.insert(key, Outcome::Carried);
        } else {
            f.not_supported(
                field(&key),
                &format!("auth-secret-type {v:?} (only auth-file)"),
            );
            return;
        }
    }
    let Some((secret_key, secret)) = get(a, "auth-secret") else {
        f.invalid(field(&type_key), "auth-type basic needs auth-secret");
        return;
    };
    let Some(name) = auth_secret(a, &f.id().namespace) else {
        f.not_supported(
            field(&secret_key),
            &format!("{secret:?}: a Secret in another namespace than the Ingress's"),
        );
        return;
    };
    let realm = get(a, "auth-realm").map(|(key, v)| {
        t.outcomes.insert(key, Outcome::Carried);
        v.to_owned()
    });
    t.basic = Some(BasicAuthentication {
        secret_ref: LocalObjectRef {
            name: name.to_owned(),
        },
        realm,
    });
    t.outcomes.insert(type_key, Outcome::Carried);
    t.outcomes.insert(secret_key, Outcome::Carried);
}

/// The `auth-url` family's members other than `auth-url` itself that are carried.
const AUTH_URL_FAMILY: [&str; 9] = [
    "auth-always-set-cookie",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
];

/// How long the auth service may take: nginx's auth location has the location's
/// proxy_read_timeout (60s by default), and 60s is also extAuth's most.
const AUTH_URL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `auth-url` with `auth-method`, `auth-signin` (and its `-redirect-param`),
/// `auth-response-headers`, `auth-keepalive*` → `authentication.extAuth` asking as
/// ingress-nginx's `auth_request` does: the URL as written (nginx variables expanded), GET,
/// every request header, 401 and 403 passed back and any other non-2xx a 500.
fn ext_auth(a: &BTreeMap<String, String>, t: &mut Translation, f: &mut Findings<'_>) {
    let Some((url_key, url)) = get(a, "auth-url") else {
        for name in AUTH_URL_FAMILY {
            if let Some((key, _)) = get(a, name) {
                warn(f, &key, "it has no effect without auth-url");
            }
        }
        return;
    };
    let url = url.trim();
    let before = f.ok();
    if let Err(e) = Template::parse(url) {
        f.invalid(field(&url_key), e);
    }
    let method = auth_method(a, t, f);
    let signin_url = auth_signin(a, t, f);
    let response_headers = auth_response_headers(a, t, f);
    let always_set_cookie =
        get(a, "auth-always-set-cookie").and_then(|(key, v)| match boolean(v) {
            Some(b) => {
                t.outcomes.insert(key, Outcome::Carried);
                Some(b)
            }
            None => {
                f.invalid(field(&key), format!("{v:?} must be \"true\" or \"false\""));
                None
            }
        });
    auth_keepalive(a, t);
    if !before || !f.ok() {
        return;
    }
    t.outcomes.insert(
        url_key,
        Outcome::Approximated(
            "extAuth with appendPath: false, forwardAllHeaders, denyStatuses [401, 403], \
             passSetCookie, timeout 60s; an auth service that cannot be asked gives 503 \
             (nginx: 500)"
                .to_owned(),
        ),
    );
    t.ext_auth = Some(api::ExtAuth {
        url: Some(url.to_owned()),
        append_path: Some(false),
        method: Some(method.unwrap_or_else(|| "GET".to_owned())),
        forward_all_headers: Some(true),
        deny_statuses: vec![401, 403],
        allowed_upstream_headers: response_headers,
        signin_url,
        // nginx's `add_header Set-Cookie $auth_cookie` (`always` with auth-always-set-cookie).
        pass_set_cookie: Some(if always_set_cookie == Some(true) {
            api::PassSetCookie::Always
        } else {
            api::PassSetCookie::Success
        }),
        timeout: Some(api::Duration(AUTH_URL_TIMEOUT)),
        ..api::ExtAuth::default()
    });
}

/// `auth-method`: one of the methods ingress-nginx accepts.
fn auth_method(
    a: &BTreeMap<String, String>,
    t: &mut Translation,
    f: &mut Findings<'_>,
) -> Option<String> {
    get(a, "auth-method").and_then(|(key, v)| {
        let m = v.trim();
        const METHODS: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
        ];
        if METHODS.contains(&m) {
            t.outcomes.insert(key, Outcome::Carried);
            Some(m.to_owned())
        } else {
            f.invalid(
                field(&key),
                format!("{v:?} must be one of {}", METHODS.join(", ")),
            );
            None
        }
    })
}

/// `auth-signin` (with `auth-signin-redirect-param`): the signin URL with where to come back.
fn auth_signin(
    a: &BTreeMap<String, String>,
    t: &mut Translation,
    f: &mut Findings<'_>,
) -> Option<String> {
    let param = match get(a, "auth-signin-redirect-param") {
        Some((key, v)) => {
            let v = v.trim();
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            {
                f.invalid(
                    field(&key),
                    format!("{v:?} must be a plain query parameter name"),
                );
            }
            t.outcomes.insert(key, Outcome::Carried);
            v.to_owned()
        }
        None => "rd".to_owned(),
    };
    let signin_url = get(a, "auth-signin").and_then(|(key, v)| {
        let v = v.trim();
        match Template::parse(v) {
            Ok(_) => {
                t.outcomes.insert(key, Outcome::Carried);
                Some(signin_url(v, &param))
            }
            Err(e) => {
                f.invalid(field(&key), e);
                None
            }
        }
    });
    if let Some((key, _)) = get(a, "auth-signin-redirect-param")
        && signin_url.is_none()
    {
        warn(f, &key, "it has no effect without auth-signin");
        t.outcomes.remove(&key);
    }
    signin_url
}

/// `auth-response-headers`: a comma-separated list of header names.
fn auth_response_headers(
    a: &BTreeMap<String, String>,
    t: &mut Translation,
    f: &mut Findings<'_>,
) -> Vec<String> {
    let mut response_headers = Vec::new();
    if let Some((key, v)) = get(a, "auth-response-headers") {
        response_headers = list(v);
        if let Some(bad) = response_headers.iter().find(|h| {
            !h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            f.invalid(field(&key), format!("{bad:?} is not a header name"));
        }
        t.outcomes.insert(key, Outcome::Carried);
    }
    response_headers
}

/// `auth-keepalive*`: nothing to carry (the client pools by itself), said in the outcomes.
fn auth_keepalive(a: &BTreeMap<String, String>, t: &mut Translation) {
    for name in AUTH_URL_FAMILY
        .iter()
        .filter(|n| n.starts_with("auth-keepalive"))
    {
        if let Some((key, _)) = get(a, name) {
            t.outcomes.insert(
                key,
                Outcome::Approximated(
                    "Tidegate's client keeps connections to an auth service alive and pools \
                     them by itself"
                        .to_owned(),
                ),
            );
        }
    }
}

/// `auth-signin` with where to come back appended as ingress-nginx's template does: `?rd=…`
/// (or `&rd=…`; `param` for `rd`) unless the URL already sets it.
fn signin_url(signin: &str, param: &str) -> String {
    let back = "$scheme://$http_host$escaped_request_uri";
    match signin.split_once('?') {
        None => format!("{signin}?{param}={back}"),
        Some((_, "")) => format!("{signin}{param}={back}"),
        Some((_, q))
            if q.split('&').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, v)| k == param && !v.is_empty())
            }) =>
        {
            signin.to_owned()
        }
        Some(_) => format!("{signin}&{param}={back}"),
    }
}

/// The Secret the `auth-secret` annotation names, when it is in `namespace` (`NAME` or
/// `NAMESPACE/NAME`): read by reference in Kubernetes mode.
pub fn auth_secret<'a>(a: &'a BTreeMap<String, String>, namespace: &str) -> Option<&'a str> {
    let (_, v) = get(a, "auth-secret")?;
    match v.trim().split_once('/') {
        None => Some(v.trim()),
        Some((ns, name)) => (ns == namespace).then_some(name),
    }
}

/// `cors-*` (with `enable-cors: "true"`), ingress-nginx's defaults for the unset ones.
fn cors(a: &BTreeMap<String, String>, t: &mut Translation) {
    let mut read = |name: &str, default: &str| -> String {
        match get(a, name) {
            Some((key, v)) => {
                t.outcomes.insert(key, Outcome::Carried);
                v.to_owned()
            }
            None => default.to_owned(),
        }
    };
    let origins = list(&read("cors-allow-origin", "*"));
    let methods = list(&read("cors-allow-methods", CORS_METHODS))
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    let headers = list(&read("cors-allow-headers", CORS_HEADERS));
    let expose = list(&read("cors-expose-headers", ""));
    let credentials = boolean(&read("cors-allow-credentials", "true")).unwrap_or(true);
    let max_age = read("cors-max-age", "1728000")
        .trim()
        .parse::<u32>()
        .unwrap_or(1_728_000);
    if max_age > CORS_MAX_AGE {
        let key = get(a, "cors-max-age")
            .map_or_else(|| format!("{}enable-cors", PREFIXES[0]), |(k, _)| k);
        t.outcomes.insert(
            key,
            Outcome::Approximated(format!(
                "Access-Control-Max-Age {max_age} is sent as {CORS_MAX_AGE} (our longest)"
            )),
        );
    }
    t.cors = Some(Cors {
        allow_origins: origins,
        allow_credentials: Some(credentials),
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: expose,
        max_age: Some(max_age.clamp(1, CORS_MAX_AGE)),
    });
}

/// One rule of an Ingress as a Route rule: a path of a host (or the `defaultBackend`, or
/// `app-root`'s `/`), with the backends it forwards to.
#[derive(Clone, Debug)]
pub struct Planned<'a> {
    /// The host and its `server-alias`es (none: every host).
    pub hostnames: Vec<String>,
    /// The rule, without backendRefs.
    pub rule: RouteRule,
    /// Where it forwards (none: it answers itself).
    pub backends: Vec<PlannedBackend<'a>>,
    /// Its field, for messages.
    pub at: String,
}

/// A backend of a planned rule.
#[derive(Clone, Debug)]
pub struct PlannedBackend<'a> {
    /// The Ingress backend.
    pub backend: &'a IngressBackendInfo,
    /// Its share of a canary split (none: the only backend).
    pub weight: Option<u32>,
    /// The canary Ingress it comes from (none: the Ingress planned).
    pub canary: Option<&'a crate::model::ObjectRef>,
}

/// Canary Ingresses by host and path (see [`super::ingress_canary::index`]).
pub type Canaries<'a> =
    BTreeMap<super::ingress_canary::PathKey, Vec<super::ingress_canary::Joined<'a>>>;

/// The rules of Ingress `ing` (whose annotations gave `t`), in order, with the canaries joined
/// to its paths; problems go to `f`.
pub fn plan<'a>(
    ing: &'a IngressInfo,
    t: &Translation,
    canaries: &Canaries<'a>,
    f: &mut Findings<'_>,
) -> Vec<Planned<'a>> {
    let mut out = Vec::new();
    let mut host_sets: Vec<Vec<String>> = Vec::new();
    for (ri, rule) in ing.rules.iter().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let hostnames = match &rule.host {
            None => Vec::new(),
            Some(h) => match fields::hostname(h, true) {
                // server-alias: the Ingress's hosts answer to the aliases too.
                Ok(h) => std::iter::once(h)
                    .chain(t.aliases.iter().cloned())
                    .collect(),
                Err(e) => {
                    f.invalid(format!("{at}.host"), e);
                    continue;
                }
            },
        };
        for (pi, p) in rule.paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{pi}]");
            let value = p.path.as_deref().unwrap_or("/");
            // A regex path is checked as a pattern by the Route compiler.
            if !(t.regex && p.path_type != "Exact")
                && let Err(e) = fields::plain_path(value)
            {
                f.invalid(format!("{pat}.path"), e);
                continue;
            }
            if !matches!(
                p.path_type.as_str(),
                "Exact" | "Prefix" | "ImplementationSpecific"
            ) {
                f.invalid(
                    format!("{pat}.pathType"),
                    format!(
                        "{:?} must be Prefix, Exact or ImplementationSpecific",
                        p.path_type
                    ),
                );
                continue;
            }
            // ImplementationSpecific: ours is a segment-aware prefix, like Prefix.
            let rule = t.rule(t.path(&p.path_type, value));
            if let Some((key, e)) = t.rewrite_groups_missing(&ing.annotations, &rule) {
                f.invalid(field(&key), format!("{e} (for {pat}.path)"));
                continue;
            }
            // A redirect answers itself: the backend is not used.
            if t.redirect.is_some() {
                out.push(Planned {
                    hostnames: hostnames.clone(),
                    rule,
                    backends: Vec::new(),
                    at: pat,
                });
                continue;
            }
            let key = super::ingress_canary::key(rule_host(ing, ri), p.path.as_deref());
            let canary = canaries.get(&key).and_then(|v| v.first());
            for (rule, backends) in with_canary(rule, &p.backend, canary) {
                out.push(Planned {
                    hostnames: hostnames.clone(),
                    rule,
                    backends,
                    at: pat.clone(),
                });
            }
        }
        if !host_sets.contains(&hostnames) {
            host_sets.push(hostnames);
        }
    }
    if let Some(b) = &ing.default_backend {
        out.push(Planned {
            hostnames: Vec::new(),
            rule: t.rule(t.path("Prefix", "/")),
            backends: if t.redirect.is_none() {
                vec![PlannedBackend {
                    backend: b,
                    weight: None,
                    canary: None,
                }]
            } else {
                Vec::new()
            },
            at: "spec.defaultBackend".to_owned(),
        });
        if host_sets.is_empty() {
            host_sets.push(Vec::new());
        }
    }
    if t.from_to_www {
        for hostnames in &host_sets {
            let Some(host) = hostnames.first().filter(|h| !h.starts_with('*')) else {
                continue;
            };
            out.push(Planned {
                hostnames: vec![www_twin(host)],
                rule: www_redirect_rule(host),
                backends: Vec::new(),
                at: FROM_TO_WWW_AT.to_owned(),
            });
        }
    }
    if let Some(rule) = t.app_root_rule() {
        for hostnames in host_sets {
            out.push(Planned {
                hostnames,
                rule: rule.clone(),
                backends: Vec::new(),
                at: "metadata.annotations".to_owned(),
            });
        }
    }
    out
}

/// The `at` of the rules `from-to-www-redirect` adds: the caller leaves out those whose host
/// another Ingress serves (ingress-nginx then leaves the redirect out).
pub const FROM_TO_WWW_AT: &str = "metadata.annotations[from-to-www-redirect]";

/// The hosts the Ingresses `all` other than `id` name (for `from-to-www-redirect`).
pub fn hosts_of_others<'a>(
    id: &crate::model::ObjectRef,
    all: impl IntoIterator<Item = &'a crate::controller::snapshot::Obj<IngressInfo>>,
) -> std::collections::BTreeSet<String> {
    all.into_iter()
        .filter(|o| &o.meta.id != id)
        .flat_map(|o| o.spec.rules.iter().filter_map(|r| r.host.as_deref()))
        .filter_map(|h| fields::hostname(h, true).ok())
        .collect()
}

/// `www.HOST` for `HOST`, `HOST` for `www.HOST`.
pub fn www_twin(host: &str) -> String {
    match host.strip_prefix("www.") {
        Some(bare) => bare.to_owned(),
        None => format!("www.{host}"),
    }
}

/// Every path of the twin host answers 308 to the same URL on `host` (ingress-nginx's
/// `return 308 $scheme://HOST$request_uri` server).
fn www_redirect_rule(host: &str) -> RouteRule {
    RouteRule {
        matches: vec![RouteMatch {
            path: Some(PathMatch {
                kind: PathMatchType::PathPrefix,
                value: "/".to_owned(),
            }),
            ..RouteMatch::default()
        }],
        filters: vec![RouteFilter {
            request_redirect: Some(RequestRedirect {
                hostname: Some(host.to_owned()),
                status_code: Some(308),
                ..RequestRedirect::default()
            }),
            ..RouteFilter::default()
        }],
        ..RouteRule::default()
    }
}

fn rule_host(ing: &IngressInfo, ri: usize) -> Option<&str> {
    ing.rules.get(ri).and_then(|r| r.host.as_deref())
}

/// The rules of one path forwarding to `main`, with `canary` joined: its header and cookie
/// overrides first (each a copy of `rule` with one header match more), then the weighted split.
fn with_canary<'a>(
    rule: RouteRule,
    main: &'a IngressBackendInfo,
    canary: Option<&super::ingress_canary::Joined<'a>>,
) -> Vec<(RouteRule, Vec<PlannedBackend<'a>>)> {
    let only = |backend: &'a IngressBackendInfo, from| {
        vec![PlannedBackend {
            backend,
            weight: None,
            canary: from,
        }]
    };
    let Some(j) = canary else {
        return vec![(rule, only(main, None))];
    };
    let mut out = Vec::new();
    for (header, to_canary) in super::ingress_canary::overrides(&j.canary) {
        let mut r = rule.clone();
        for m in &mut r.matches {
            m.headers.push(header.clone());
        }
        let backends = if to_canary {
            only(j.backend, Some(j.id))
        } else {
            only(main, None)
        };
        out.push((r, backends));
    }
    let (w, total) = (j.canary.weight, j.canary.total);
    let split = match w {
        0 => only(main, None),
        w if w >= total => only(j.backend, Some(j.id)),
        w => vec![
            PlannedBackend {
                backend: main,
                weight: Some(total - w),
                canary: None,
            },
            PlannedBackend {
                backend: j.backend,
                weight: Some(w),
                canary: Some(j.id),
            },
        ],
    };
    out.push((rule, split));
    out
}

impl Planned<'_> {
    /// The field of its backend, for messages.
    pub fn backend_at(&self) -> String {
        if self.at == "spec.defaultBackend" {
            self.at.clone()
        } else {
            format!("{}.backend", self.at)
        }
    }
}

impl Translation {
    /// An Ingress path as a match: ingress-nginx's regex paths are case-insensitive prefixes.
    pub fn path(&self, path_type: &str, value: &str) -> PathMatch {
        let kind = match path_type {
            "Exact" => PathMatchType::Exact,
            _ if self.regex => {
                return PathMatch {
                    kind: PathMatchType::RegularExpression,
                    value: format!("(?i)(?:{value}).*"),
                };
            }
            _ => PathMatchType::PathPrefix,
        };
        PathMatch {
            kind,
            value: value.to_owned(),
        }
    }

    /// The Route rule one Ingress path becomes (its backends are the caller's).
    pub fn rule(&self, path: PathMatch) -> RouteRule {
        let mut filters = Vec::new();
        if let Some(r) = &self.redirect {
            filters.push(RouteFilter {
                request_redirect: Some(r.clone()),
                ..RouteFilter::default()
            });
        } else {
            if let Some(rw) = &self.rewrite {
                filters.push(RouteFilter {
                    url_rewrite: Some(rw.clone()),
                    ..RouteFilter::default()
                });
            }
            if !self.set_headers.is_empty() {
                filters.push(RouteFilter {
                    request_header_modifier: Some(HeaderModifier {
                        set: self.set_headers.clone(),
                        ..HeaderModifier::default()
                    }),
                    ..RouteFilter::default()
                });
            }
        }
        if let Some(c) = &self.cors {
            filters.push(RouteFilter {
                cors: Some(c.clone()),
                ..RouteFilter::default()
            });
        }
        RouteRule {
            matches: vec![RouteMatch {
                path: Some(path),
                ..RouteMatch::default()
            }],
            filters,
            ip_allow: self.ip_allow.clone(),
            ip_deny: self.ip_deny.clone(),
            authentication: (self.basic.is_some() || self.ext_auth.is_some()).then(|| {
                Box::new(api::Authentication {
                    basic: self.basic.clone(),
                    ext_auth: self.ext_auth.clone(),
                    ..api::Authentication::default()
                })
            }),
            timeouts: self.timeouts.clone(),
            retry: self.retry.clone().map(Box::new),
            max_request_body_bytes: self.max_body,
            // A redirect answers itself: nothing is forwarded.
            fallback_backend_ref: match &self.default_backend {
                Some(name) if self.redirect.is_none() => Some(self.service_ref(name)),
                _ => None,
            },
            error_responses: match &self.default_backend {
                Some(name) if self.redirect.is_none() && !self.custom_errors.is_empty() => {
                    Some(api::ErrorResponses {
                        statuses: self.custom_errors.clone(),
                        backend_ref: self.service_ref(name),
                    })
                }
                _ => None,
            },
            ..RouteRule::default()
        }
    }

    /// `default-backend`'s Service (its port is the caller's to set: ingress-nginx takes the
    /// first).
    fn service_ref(&self, name: &str) -> api::LocalBackendRef {
        api::LocalBackendRef {
            name: name.to_owned(),
            kind: Some("Service".to_owned()),
            port: None,
        }
    }

    /// rewrite-target with groups on a path that does not have them: the annotation's key and
    /// why. (Checked here so the message names the annotation, not the Route value.)
    fn rewrite_groups_missing(
        &self,
        a: &BTreeMap<String, String>,
        rule: &RouteRule,
    ) -> Option<(String, String)> {
        let rw = self.rewrite.as_ref()?.path.as_ref()?;
        let template = rw.replace_regex_match.as_deref()?;
        let (key, _) = get(a, "rewrite-target")?;
        let path = rule.matches.first()?.path.as_ref()?;
        if path.kind != PathMatchType::RegularExpression {
            return Some((
                key,
                format!("{template:?} needs a regular-expression path, not an Exact one"),
            ));
        }
        // A pattern that does not compile is the Route compiler's to report.
        let pattern = crate::model::Pattern::new(&path.value).ok()?;
        let m = crate::model::RequestMatch {
            path: crate::model::PathMatcher::RegularExpression(pattern),
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        };
        let e = super::route::regex_template(template, std::slice::from_ref(&m)).err()?;
        Some((key, e))
    }

    /// `app-root`: the rule that sends `/` to it, if set.
    pub fn app_root_rule(&self) -> Option<RouteRule> {
        let root = self.app_root.as_ref()?;
        let mut rule = self.rule(PathMatch {
            kind: PathMatchType::Exact,
            value: "/".to_owned(),
        });
        rule.fallback_backend_ref = None;
        rule.error_responses = None;
        rule.filters = vec![RouteFilter {
            request_redirect: Some(RequestRedirect {
                path: Some(PathModifier {
                    replace_full_path: Some(root.clone()),
                    ..PathModifier::default()
                }),
                status_code: Some(302),
                ..RequestRedirect::default()
            }),
            ..RouteFilter::default()
        }];
        Some(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ObjectRef};

    fn run(pairs: &[(&str, &str)]) -> (Translation, Vec<Diagnostic>) {
        let id = ObjectRef::new(Kind::Ingress, "shop", "web");
        let mut out = Vec::new();
        let a = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let t = translate(&a, &mut Findings::new(&id, &mut out));
        (t, out)
    }

    const N: &str = "nginx.ingress.kubernetes.io/";

    #[test]
    fn rewrite_target_turns_paths_into_case_insensitive_regex_prefixes() {
        let (t, d) = run(&[(&format!("{N}rewrite-target"), "/")]);
        assert!(d.is_empty() && t.regex, "{d:?}");
        let p = t.path("Prefix", "/foo");
        assert_eq!(p.kind, PathMatchType::RegularExpression);
        let re = regex::Regex::new(&format!("^(?:{})$", p.value)).unwrap();
        assert!(re.is_match("/FOO/bar") && re.is_match("/foobar") && !re.is_match("/x/foo"));
        // Exact stays exact, as in ingress-nginx (`location =`).
        assert_eq!(t.path("Exact", "/foo").kind, PathMatchType::Exact);
        let rule = t.rule(t.path("Prefix", "/foo"));
        let rw = rule.filters[0].url_rewrite.as_ref().unwrap();
        assert_eq!(
            rw.path.as_ref().unwrap().replace_full_path.as_deref(),
            Some("/")
        );
    }

    #[test]
    fn capture_groups_become_a_regex_rewrite_of_the_path_groups() {
        let (t, d) = run(&[(&format!("{N}rewrite-target"), "/$2")]);
        assert!(d.is_empty() && t.regex, "{d:?}");
        let rule = t.rule(t.path("ImplementationSpecific", "/something(/|$)(.*)"));
        let p = rule.filters[0].url_rewrite.as_ref().unwrap().path.as_ref();
        assert_eq!(p.unwrap().replace_regex_match.as_deref(), Some("/$2"));
        // The path's groups keep their numbers in the match's pattern.
        let re = regex::Regex::new(&format!(
            "^(?:{})$",
            rule.matches[0].path.as_ref().unwrap().value
        ))
        .unwrap();
        assert_eq!(&re.captures("/SOMETHING/new/x").unwrap()[2], "new/x");
    }

    #[test]
    fn a_query_in_rewrite_target_is_a_regex_rewrite_too() {
        for v in ["/$1?a=1", "/index.php?q=1"] {
            let (t, d) = run(&[(&format!("{N}rewrite-target"), v)]);
            assert!(d.is_empty(), "{d:?}");
            let p = t.rewrite.unwrap().path.unwrap();
            assert_eq!(p.replace_regex_match.as_deref(), Some(v));
        }
    }

    #[test]
    fn next_upstream_becomes_a_retry_with_ingress_nginx_defaults_for_the_unset_one() {
        let (t, d) = run(&[(&format!("{N}proxy-next-upstream-tries"), "4")]);
        assert!(d.is_empty(), "{d:?}");
        let r = t.retry.unwrap();
        assert_eq!(r.attempts, Some(4));
        assert_eq!(r.on, ["connect-failure", "reset"]);
        let (t, _) = run(&[(&format!("{N}proxy-next-upstream"), "timeout http_504 error")]);
        assert_eq!(t.retry.unwrap().on, ["connect-failure", "reset", "504"]);
        for (name, v) in [
            ("proxy-next-upstream", "off"),
            ("proxy-next-upstream-tries", "1"),
        ] {
            let (t, d) = run(&[(&format!("{N}{name}"), v)]);
            assert!(t.retry.is_none() && d.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn cors_gets_ingress_nginx_defaults_and_a_long_max_age_is_approximated() {
        let (t, d) = run(&[("tidegate.dev/enable-cors", "true")]);
        assert!(d.is_empty(), "{d:?}");
        let c = t.cors.unwrap();
        assert_eq!(c.allow_origins, ["*"]);
        assert_eq!(c.allow_methods.len(), 6);
        assert_eq!(c.allow_credentials, Some(true));
        assert_eq!(c.max_age, Some(CORS_MAX_AGE));
        assert!(matches!(
            t.outcomes.get(&format!("{N}enable-cors")),
            Some(Outcome::Approximated(_))
        ));
    }

    #[test]
    fn basic_auth_reads_a_secret_of_the_same_namespace_only() {
        let (t, d) = run(&[
            (&format!("{N}auth-type"), "basic"),
            (&format!("{N}auth-secret"), "shop/users"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(t.basic.unwrap().secret_ref.name, "users");
        let (t, d) = run(&[
            (&format!("{N}auth-type"), "basic"),
            (&format!("{N}auth-secret"), "other/users"),
        ]);
        assert!(
            t.basic.is_none() && d[0].message.contains("another namespace"),
            "{d:?}"
        );
    }

    #[test]
    fn auth_url_asks_as_nginx_auth_request_does() {
        let (t, d) = run(&[
            (&format!("{N}auth-url"), "https://$host/oauth2/auth"),
            (&format!("{N}auth-signin"), "https://$host/oauth2/start"),
            (
                &format!("{N}auth-response-headers"),
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
            (&format!("{N}auth-keepalive"), "10"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let e = t.ext_auth.clone().unwrap();
        assert_eq!(e.url.as_deref(), Some("https://$host/oauth2/auth"));
        assert_eq!(
            (e.append_path, e.method.as_deref(), e.forward_all_headers),
            (Some(false), Some("GET"), Some(true))
        );
        assert_eq!(e.deny_statuses, vec![401, 403]);
        assert_eq!(e.pass_set_cookie, Some(api::PassSetCookie::Success));
        assert_eq!(
            e.signin_url.as_deref(),
            Some("https://$host/oauth2/start?rd=$scheme://$http_host$escaped_request_uri")
        );
        assert_eq!(
            e.allowed_upstream_headers,
            vec!["X-Auth-Request-User", "X-Auth-Request-Email"]
        );
        let rule = t.rule(t.path("Prefix", "/"));
        assert_eq!(rule.authentication.unwrap().ext_auth, Some(e));
        assert!(matches!(
            t.outcomes[&format!("{N}auth-keepalive")],
            Outcome::Approximated(_)
        ));
    }

    #[test]
    fn default_backend_and_custom_http_errors_become_the_fallback_and_error_responses() {
        let (t, d) = run(&[
            (&format!("{N}default-backend"), "error-pages"),
            (&format!("{N}custom-http-errors"), "503, 404,404"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let rule = t.rule(t.path("Prefix", "/"));
        let fallback = rule.fallback_backend_ref.clone().unwrap();
        assert_eq!(
            (fallback.name.as_str(), fallback.kind.as_deref()),
            ("error-pages", Some("Service"))
        );
        let errors = rule.error_responses.unwrap();
        assert_eq!(errors.statuses, [503, 404]);
        assert_eq!(errors.backend_ref, fallback);
        // default-backend alone: the fallback only.
        let (t, d) = run(&[(&format!("{N}default-backend"), "spare")]);
        assert!(d.is_empty(), "{d:?}");
        let rule = t.rule(t.path("Prefix", "/"));
        assert!(rule.fallback_backend_ref.is_some() && rule.error_responses.is_none());
        // A redirect answers itself: neither.
        let (t, _) = run(&[
            (&format!("{N}default-backend"), "spare"),
            (&format!("{N}permanent-redirect"), "https://example.com/"),
        ]);
        assert!(t.rule(t.path("Prefix", "/")).fallback_backend_ref.is_none());
    }

    #[test]
    fn custom_http_errors_needs_default_backend_and_error_statuses() {
        let (_, d) = run(&[(&format!("{N}custom-http-errors"), "404")]);
        assert!(d[0].is_error(), "{d:?}");
        assert!(
            d[0].message.contains("not supported yet") && d[0].message.contains("default-backend"),
            "{d:?}"
        );
        for v in ["200", "404,abc", "600", ""] {
            let (_, d) = run(&[
                (&format!("{N}default-backend"), "pages"),
                (&format!("{N}custom-http-errors"), v),
            ]);
            assert!(d.len() == 1 && d[0].is_error(), "{v}: {d:?}");
        }
        for v in ["Pages", "pages.shop", "ns/pages", ""] {
            let (_, d) = run(&[(&format!("{N}default-backend"), v)]);
            assert!(d.len() == 1 && d[0].is_error(), "{v}: {d:?}");
        }
    }

    #[test]
    fn proxy_body_size_reads_nginx_sizes() {
        for (v, want) in [
            ("8m", Some(8 << 20)),
            ("1K", Some(1024)),
            ("1g", Some(1 << 30)),
            ("512", Some(512)),
            ("0", None),
        ] {
            let (t, d) = run(&[(&format!("{N}proxy-body-size"), v)]);
            assert!(d.is_empty(), "{v}: {d:?}");
            assert_eq!(t.max_body, want, "{v}");
            assert_eq!(t.rule(t.path("Prefix", "/")).max_request_body_bytes, want);
        }
        for v in ["8mb", "m", "-1", "1.5m", ""] {
            let (t, d) = run(&[(&format!("{N}proxy-body-size"), v)]);
            assert!(t.max_body.is_none() && d[0].is_error(), "{v}: {d:?}");
        }
    }

    #[test]
    fn auth_signin_gets_its_redirect_parameter_unless_it_has_one() {
        let back = "$scheme://$http_host$escaped_request_uri";
        assert_eq!(
            signin_url("https://a/s", "rd"),
            format!("https://a/s?rd={back}")
        );
        assert_eq!(
            signin_url("https://a/s?x=1", "next"),
            format!("https://a/s?x=1&next={back}")
        );
        assert_eq!(
            signin_url("https://a/s?rd=$escaped_request_uri", "rd"),
            "https://a/s?rd=$escaped_request_uri"
        );
    }

    #[test]
    fn auth_url_variables_and_methods_are_checked() {
        let (t, d) = run(&[(&format!("{N}auth-url"), "http://auth/$cookie_session")]);
        assert!(t.ext_auth.is_none());
        assert!(
            d[0].message.contains("unknown variable $cookie_session"),
            "{d:?}"
        );
        assert!(d[0].field.contains("auth-url"), "{d:?}");
        let (t, d) = run(&[
            (&format!("{N}auth-url"), "http://auth/"),
            (&format!("{N}auth-method"), "FETCH"),
        ]);
        assert!(
            t.ext_auth.is_none() && d[0].field.contains("auth-method"),
            "{d:?}"
        );
        let (t, d) = run(&[
            (&format!("{N}auth-url"), "http://auth/"),
            (&format!("{N}auth-always-set-cookie"), "true"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            t.ext_auth.unwrap().pass_set_cookie,
            Some(api::PassSetCookie::Always)
        );
        let (_, d) = run(&[(&format!("{N}auth-signin"), "http://login/")]);
        assert!(
            d[0].severity == Severity::Warning && d[0].message.contains("without auth-url"),
            "{d:?}"
        );
    }

    #[test]
    fn a_redirect_answers_every_path_and_makes_rewrites_moot() {
        let (t, d) = run(&[
            (
                &format!("{N}temporal-redirect"),
                "https://www.example.com:8443/new",
            ),
            (&format!("{N}rewrite-target"), "/"),
        ]);
        let r = t.redirect.as_ref().unwrap();
        assert_eq!((r.port, r.status_code), (Some(8443), Some(302)));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].severity, Severity::Warning);
        let rule = t.rule(t.path("Prefix", "/"));
        assert_eq!(rule.filters.len(), 1);
        assert!(rule.filters[0].request_redirect.is_some());
    }

    #[test]
    fn limit_whitelist_exempts_clients_from_the_local_limits_only() {
        let (t, d) = run(&[
            (&format!("{N}limit-rps"), "5"),
            (&format!("{N}limit-whitelist"), "10.0.0.0/8, 192.0.2.7"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let limits = &t.rate_limit.unwrap().limits;
        assert_eq!(limits[0].exempt_clients, ["10.0.0.0/8", "192.0.2.7"]);
        let (_, d) = run(&[
            (&format!("{N}limit-rps"), "5"),
            (&format!("{N}limit-whitelist"), "10.0.0.0/8,example.com"),
        ]);
        assert!(
            d[0].is_error() && d[0].message.contains("example.com"),
            "{d:?}"
        );
        let (_, d) = run(&[(&format!("{N}limit-whitelist"), "10.0.0.0/8")]);
        assert!(
            d[0].severity == Severity::Warning && d[0].message.contains("no effect"),
            "{d:?}"
        );
    }

    #[test]
    fn global_rate_limit_keys_and_windows_read_as_ingress_nginx_reads_them() {
        let secs = |v: &str| go_duration(v).map(|d| d.as_secs_f64());
        assert_eq!(secs("1m"), Some(60.0));
        assert_eq!(secs("1h30m"), Some(5400.0));
        assert_eq!(secs("1.5s"), Some(1.5));
        assert_eq!(secs("500ms"), Some(0.5));
        assert_eq!(secs("1d"), None);
        assert_eq!(secs("60"), None);
        let k = throttle_key("$remote_addr").unwrap();
        assert!(k.client_ip.is_some() && k.header.is_none());
        let k = throttle_key("$http_x_api_client").unwrap();
        assert_eq!(k.header.as_deref(), Some("x-api-client"));
        assert_eq!(k.missing_header, Some(api::MissingHeader::ClientIp));
        let k = throttle_key("${remote_addr}-${http_x_api_client}").unwrap();
        assert!(k.client_ip.is_some());
        assert_eq!(k.missing_header, Some(api::MissingHeader::SharedBucket));
        assert!(throttle_key("everyone").unwrap().none.is_some());
        assert!(throttle_key("").unwrap().client_ip.is_some());
        for bad in ["$request_uri", "$http_a$http_b", "${remote_addr"] {
            assert!(throttle_key(bad).is_err(), "{bad}");
        }
        let (t, d) = run(&[
            (&format!("{N}global-rate-limit"), "10"),
            (&format!("{N}global-rate-limit-window"), "90s"),
        ]);
        assert!(d.is_empty(), "{d:?}");
        let l = &t.global_rate_limit.unwrap().limits[0];
        assert_eq!((l.rate, l.per.0.as_secs()), (10, 90));
        assert_eq!(l.scope, Some(api::RateLimitScope::Global));
    }
}
