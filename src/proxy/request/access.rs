//! The access step of a request whose rule has an [`Access`]: IP lists (on the address the one
//! client-IP resolver finds), then a CORS preflight answered here, then authentication. Rate
//! limits and the route's filters come after (handler.rs).

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::error::{Denied, ProxyError};
use super::service::Service;
use super::{basic_auth, ext_auth, headers, jwt, reason};
use crate::model::{Access, Cors, NameList, Rule};
use crate::proxy::transport::{ClientBody, ConnCtx, ProxyBody};
use crate::proxy::upstream::Router;
use crate::telemetry::metrics::AccessLabels;

/// `mechanism` labels.
mod mechanism {
    pub const IP: &str = "ip";
    pub const CORS: &str = "cors";
    pub const BASIC: &str = "basic";
    pub const JWT: &str = "jwt";
    pub const EXT_AUTHZ: &str = "ext_authz";
    /// Authentication whose Secret does not resolve.
    pub const UNRESOLVED: &str = "unresolved";
}

/// `result` labels.
mod result {
    pub const ALLOWED: &str = "allowed";
    pub const DENIED: &str = "denied";
    pub const PREFLIGHT: &str = "preflight";
    pub const UNKNOWN_ORIGIN: &str = "unknown_origin";
    /// The keys to decide with are not there (a JWKS URI not fetched yet, or stale).
    pub const UNAVAILABLE: &str = "unavailable";
    /// The auth service could not be asked and the failure mode is Open.
    pub const FAILED_OPEN: &str = "failed_open";
}

/// What the access step decided for a request it lets through.
pub enum Passed {
    /// Go on; with the `Origin` to answer CORS headers to, if CORS allows it, and the auth
    /// service's cookies for the client, if any.
    On(Option<HeaderValue>, Option<Box<SetCookies>>),
    /// The gateway answers itself (a CORS preflight, an auth service's refusal), for this
    /// reason.
    Answered(Box<Response<ProxyBody>>, &'static str),
}

/// An allowing auth answer's `Set-Cookie` values (`extAuth.passSetCookie`), for the response.
pub struct SetCookies {
    values: Vec<HeaderValue>,
    always: bool,
}

impl SetCookies {
    /// Adds them to `resp` (a 2xx or 3xx one only, unless `Always`).
    pub fn apply(&self, resp: &mut Response<ProxyBody>) {
        let s = resp.status();
        if self.always || s.is_success() || s.is_redirection() {
            for v in &self.values {
                headers::response_headers(resp).append(header::SET_COOKIE, v.clone());
            }
        }
    }
}

/// Applies `access` (the rule's) to a request.
pub async fn check(
    service: &Service,
    router: &Router,
    rule: &Rule,
    access: &Access,
    conn: &ConnCtx,
    req: &mut Request<ClientBody>,
) -> Result<Passed, ProxyError> {
    let count = |mechanism, result| {
        service
            .telemetry
            .metrics
            .access_decisions
            .get_or_create(&AccessLabels {
                route: rule.label.clone(),
                mechanism,
                result,
            })
            .inc();
    };
    if access.has_ip_lists() {
        let client = service.client_ip.resolve(conn.peer.ip(), req.headers());
        if !access.ip_allowed(client) {
            count(mechanism::IP, result::DENIED);
            return Err(denied(
                StatusCode::FORBIDDEN,
                reason::IP_DENIED,
                HeaderMap::new(),
            ));
        }
        count(mechanism::IP, result::ALLOWED);
    }
    let mut origin = None;
    if let Some(cors) = &access.cors
        && let Some(o) = req.headers().get(header::ORIGIN)
    {
        let allowed = o.to_str().is_ok_and(|o| cors.allows(o));
        if is_preflight(req) {
            count(
                mechanism::CORS,
                if allowed {
                    result::PREFLIGHT
                } else {
                    result::UNKNOWN_ORIGIN
                },
            );
            return Ok(Passed::Answered(
                Box::new(preflight(cors, allowed.then_some(o), req)),
                reason::CORS_PREFLIGHT,
            ));
        }
        if allowed {
            origin = Some(o.clone());
        } else {
            count(mechanism::CORS, result::UNKNOWN_ORIGIN);
        }
    }
    if access.unresolved.is_some() {
        count(mechanism::UNRESOLVED, result::DENIED);
        return Err(denied(
            StatusCode::INTERNAL_SERVER_ERROR,
            reason::UNRESOLVED_AUTHENTICATION,
            HeaderMap::new(),
        ));
    }
    if let Some(basic) = &access.basic {
        if !basic_auth::verify(basic, req.headers()).await {
            count(mechanism::BASIC, result::DENIED);
            let mut headers = HeaderMap::new();
            headers.insert(header::WWW_AUTHENTICATE, basic.challenge.clone());
            if let Some(cors) = &access.cors {
                respond(cors, origin.as_ref(), &mut headers);
            }
            return Err(denied(
                StatusCode::UNAUTHORIZED,
                reason::UNAUTHENTICATED,
                headers,
            ));
        }
        count(mechanism::BASIC, result::ALLOWED);
    }
    if let Some(jwt) = &access.jwt {
        match jwt::verify(jwt, req.headers_mut()) {
            Ok(claims) => {
                req.extensions_mut().insert(claims);
            }
            Err(why) => {
                let unavailable = why == jwt::Refused::KeysUnavailable;
                count(
                    mechanism::JWT,
                    if unavailable {
                        result::UNAVAILABLE
                    } else {
                        result::DENIED
                    },
                );
                let (status, reason, challenge) = match why {
                    jwt::Refused::Missing => (
                        StatusCode::UNAUTHORIZED,
                        reason::UNAUTHENTICATED,
                        jwt.challenge.clone(),
                    ),
                    jwt::Refused::Invalid => (
                        StatusCode::UNAUTHORIZED,
                        reason::UNAUTHENTICATED,
                        with_error(&jwt.challenge, "invalid_token"),
                    ),
                    jwt::Refused::Claims => (
                        StatusCode::FORBIDDEN,
                        reason::FORBIDDEN_CLAIMS,
                        with_error(&jwt.challenge, "insufficient_scope"),
                    ),
                    jwt::Refused::KeysUnavailable => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        reason::JWKS_UNAVAILABLE,
                        jwt.challenge.clone(),
                    ),
                };
                let mut headers = HeaderMap::new();
                headers.insert(header::WWW_AUTHENTICATE, challenge);
                if let Some(cors) = &access.cors {
                    respond(cors, origin.as_ref(), &mut headers);
                }
                return Err(denied(status, reason, headers));
            }
        }
        count(mechanism::JWT, result::ALLOWED);
    }
    let mut set_cookies = None;
    if let Some(ext) = &access.ext_auth {
        let via = ext_auth::Via {
            service,
            router,
            conn,
        };
        match ext_auth::check(via, ext, req).await {
            ext_auth::Outcome::Allowed(cookies) => {
                count(mechanism::EXT_AUTHZ, result::ALLOWED);
                if !cookies.is_empty() {
                    set_cookies = Some(Box::new(SetCookies {
                        values: cookies,
                        always: ext.set_cookie_always == Some(true),
                    }));
                }
            }
            ext_auth::Outcome::Denied(mut resp) => {
                count(mechanism::EXT_AUTHZ, result::DENIED);
                if let Some(cors) = &access.cors {
                    respond(cors, origin.as_ref(), headers::response_headers(&mut resp));
                }
                return Ok(Passed::Answered(resp, reason::EXT_AUTHZ_DENIED));
            }
            ext_auth::Outcome::BodyTooLarge => {
                count(mechanism::EXT_AUTHZ, result::DENIED);
                return Err(denied(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    reason::EXT_AUTHZ_BODY_TOO_LARGE,
                    HeaderMap::new(),
                ));
            }
            ext_auth::Outcome::BodyUnreadable => {
                return Err(ProxyError::BadRequest("the request body could not be read"));
            }
            ext_auth::Outcome::Failed(why) if ext.fail_open => {
                tracing::debug!(route = %rule.label, error = %why, "the auth service could not be asked; failureMode Open lets the request on");
                count(mechanism::EXT_AUTHZ, result::FAILED_OPEN);
            }
            ext_auth::Outcome::Failed(why) => {
                tracing::debug!(route = %rule.label, error = %why, "the auth service could not be asked; failureMode Closed answers 503");
                count(mechanism::EXT_AUTHZ, result::UNAVAILABLE);
                let mut headers = HeaderMap::new();
                if let Some(cors) = &access.cors {
                    respond(cors, origin.as_ref(), &mut headers);
                }
                return Err(denied(
                    StatusCode::SERVICE_UNAVAILABLE,
                    reason::EXT_AUTHZ_UNAVAILABLE,
                    headers,
                ));
            }
        }
    }
    Ok(Passed::On(origin, set_cookies))
}

/// `Bearer realm="…", error="…"` (RFC 6750).
fn with_error(challenge: &HeaderValue, error: &'static str) -> HeaderValue {
    let mut v = challenge.as_bytes().to_vec();
    v.extend_from_slice(b", error=\"");
    v.extend_from_slice(error.as_bytes());
    v.push(b'"');
    HeaderValue::from_bytes(&v).unwrap_or_else(|_| challenge.clone())
}

fn denied(status: StatusCode, reason: &'static str, headers: HeaderMap) -> ProxyError {
    ProxyError::AccessDenied(Box::new(Denied {
        status,
        reason,
        headers,
    }))
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_preflight(req: &Request<ClientBody>) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The gateway's answer to a preflight: 204, with the CORS headers when the origin is allowed
/// (without them the browser refuses the actual request, which is the point).
fn preflight(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    req: &Request<ClientBody>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = headers::response_headers(&mut resp);
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let Some(origin) = origin else {
        return resp;
    };
    allow_origin(cors, origin, h);
    let credentials = cors.allow_credentials;
    // With credentials `*` is a name, not a wildcard (fetch spec): echo what was asked for.
    let echo_or_star = |list: &NameList, asked: Option<&HeaderValue>| match list {
        NameList::Listed(v) => Some(v.clone()),
        NameList::Any if credentials => asked.cloned(),
        NameList::Any => Some(HeaderValue::from_static("*")),
    };
    let asked = req.headers();
    if let Some(v) = cors
        .allow_methods
        .as_ref()
        .and_then(|l| echo_or_star(l, asked.get(header::ACCESS_CONTROL_REQUEST_METHOD)))
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = cors
        .allow_headers
        .as_ref()
        .and_then(|l| echo_or_star(l, asked.get(header::ACCESS_CONTROL_REQUEST_HEADERS)))
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.into());
    resp
}

fn allow_origin(cors: &Cors, origin: &HeaderValue, h: &mut HeaderMap) {
    if cors.answers_star() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    } else {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// The CORS part of the answer to an actual (not preflight) request of a rule with CORS:
/// `Vary: Origin` whenever the answer depends on the origin, and the CORS headers when the
/// request came from an allowed origin.
pub fn respond(cors: &Cors, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
    match origin {
        Some(o) => actual(cors, o, h),
        None if !cors.answers_star() => {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {}
    }
}

/// The CORS headers of an answer to an allowed origin's actual request (the upstream's own
/// `Access-Control-*` headers are replaced: the gateway's policy is the one in force).
fn actual(cors: &Cors, origin: &HeaderValue, h: &mut HeaderMap) {
    allow_origin(cors, origin, h);
    if !cors.answers_star() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    match &cors.expose_headers {
        Some(NameList::Listed(v)) => {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        Some(NameList::Any) => {
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("*"),
            );
        }
        None => {}
    }
}
