//! Step 1: the request as the upstream will see it. The rule's request filters (header edits
//! in place; rewrites into the path and host sent upstream), hop-by-hop headers out, the
//! forwarding headers and trace context to send beside the request's own, and the balancer's
//! hash key.

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Uri, header};

use super::target::Target;
use crate::model::{HashKey, LoadBalancing, RequestFilter, query_pairs};
use crate::proxy::request::error::ProxyError;
use crate::proxy::request::headers;
use crate::proxy::request::request_id::{self, X_REQUEST_ID};
use crate::proxy::request::trace::{self, TraceId};
use crate::proxy::transport::{ClientBody, ConnCtx};
use crate::proxy::upstream::balance::stable_hash;

/// What the attempts need to know about a request made ready to go upstream (in place).
pub(super) struct Prepared {
    /// The forwarding headers and trace context, sent after the request's own.
    pub added: headers::Added,
    /// Path and query sent upstream when a rewrite changed them (`None`: the request's own,
    /// borrowed from its URI rather than cloned, a reference count taken and dropped per
    /// request: 24 instructions on the native path, `bench/callgrind.sh`).
    pub path_and_query: Option<PathAndQuery>,
    /// The balancer's key for this request, when the backend hashes.
    pub hash: Option<u64>,
    /// The protocol the client asks to switch to, if any.
    pub upgrade: Option<HeaderValue>,
    /// Whether the request's map holds a `Host`.
    pub has_host: bool,
}

/// Makes `req` ready to go upstream; `request_id`: the id made for it, when it is not in its
/// map (see `Record::unsent_request_id`); `made`: the id made for it, in its map or not (the
/// trace id of a trace started for it).
pub(super) fn prepare(
    t: &Target<'_>,
    req: &mut Request<ClientBody>,
    normalized: Option<String>,
    upgrade: Option<HeaderValue>,
    request_id: Option<[u8; 32]>,
    made: Option<[u8; 32]>,
) -> Result<Prepared, ProxyError> {
    let state = &t.router.backends[t.picked.backend];
    let original_host = headers::host_value(req);
    let host_from_map = req.uri().authority().is_none();
    let mut edited = false;
    let mut new_path = normalized;
    let mut new_host = None;
    let ref_filters = &t.picked.backend_ref.filters().request;
    let hashing = state.hashing();
    // Header filters and a hash key read the map whole: the id is in it for them.
    let request_id = match request_id {
        Some(id)
            if !t.rule.request_filters.is_empty()
                || !ref_filters.is_empty()
                || hashing.is_some() =>
        {
            req.headers_mut()
                .insert(X_REQUEST_ID.clone(), request_id::value_of(&id));
            None
        }
        id => id,
    };
    for filter in t.rule.request_filters.iter().chain(ref_filters) {
        match filter {
            RequestFilter::RequestHeaderModifier(m) => {
                m.apply(req.headers_mut());
                edited = true;
            }
            RequestFilter::UrlRewrite(rw) => {
                if let Some(h) = &rw.hostname {
                    new_host = Some(h.clone());
                }
                if let Some(p) = &rw.path {
                    let current = new_path.as_deref().unwrap_or(req.uri().path());
                    new_path = Some(p.apply(current, t.matched, req.uri().query()));
                }
            }
        }
    }
    let path_and_query = path_and_query(req.uri(), new_path.as_deref())?;
    let hash = hashing.and_then(|lb| request_hash(&lb, req, t.conn));

    let h = req.headers_mut();
    let seen = headers::strip_hop_by_hop(h);
    if let Some(v) = &t.rule.client_validation {
        let identity = headers::verified_identity(v, t.conn);
        if let Some(identity) = identity {
            h.insert(
                headers::X_FORWARDED_CLIENT_CERT.clone(),
                identity.header.clone(),
            );
        }
        if let Some(n) = v.nginx_headers {
            headers::set_nginx_client_cert(h, n, identity);
        }
    }
    let port = match t.conn.scheme {
        "https" => &t.service.forwarded_ports.https,
        _ => &t.service.forwarded_ports.http,
    };
    let mut added = headers::forwarded(
        h,
        seen,
        t.conn.peer.ip(),
        t.conn.scheme,
        port,
        original_host.as_ref(),
    );
    // The client's `Host` is where it was unless the names `Connection` lists (removed with
    // the hop-by-hop headers) took it out, or a header filter did (the compiler refuses one
    // naming `Host`; a rule built in code might not): a lookup only then.
    let host_kept = host_from_map && !edited && !seen.has(headers::Seen::CONNECTION);
    let has_host = match (new_host, original_host) {
        (Some(host), _) => {
            h.insert(header::HOST, host);
            true
        }
        (None, Some(_)) if host_kept => true,
        (None, Some(host)) => {
            if !h.contains_key(header::HOST) {
                h.insert(header::HOST, host);
            }
            true
        }
        (None, None) => h.contains_key(header::HOST),
    };
    if let Some(proto) = &upgrade {
        headers::set_upgrade(h, proto.clone());
    }
    trace::propagate(h, seen, &mut added, made.map(TraceId::of_id));
    added.set_request_id(request_id);
    Ok(Prepared {
        added,
        path_and_query,
        hash,
        upgrade,
        has_host,
    })
}

/// The key a hash-based balancer uses for this request.
pub(crate) fn request_hash<B>(lb: &LoadBalancing, req: &Request<B>, conn: &ConnCtx) -> Option<u64> {
    let ip_hash = || match conn.peer.ip().to_canonical() {
        std::net::IpAddr::V4(a) => stable_hash(&a.octets()),
        std::net::IpAddr::V6(a) => stable_hash(&a.octets()),
    };
    let key = match lb {
        LoadBalancing::IpHash => return Some(ip_hash()),
        LoadBalancing::ConsistentHash(k) => k,
        _ => return None,
    };
    let found = match key {
        HashKey::SourceIp => None,
        HashKey::Header(name) => req.headers().get(name).map(|v| stable_hash(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| stable_hash(v.as_bytes())),
        HashKey::QueryParam(name) => req.uri().query().and_then(|q| {
            query_pairs(q)
                .find(|(k, _)| k == name.as_str())
                .map(|(_, v)| stable_hash(v.as_bytes()))
        }),
    };
    Some(found.unwrap_or_else(ip_hash))
}

/// The path and query a rewrite made (`None` when none did: see [`sent_path_and_query`]).
fn path_and_query(
    original: &Uri,
    new_path: Option<&str>,
) -> Result<Option<PathAndQuery>, ProxyError> {
    let bad = |_| ProxyError::BadRequest("the rewritten URL is invalid");
    // Only replaceRegexMatch writes a `?`: its result carries the whole query.
    let query = original
        .query()
        .filter(|_| !new_path.is_some_and(|p| p.contains('?')));
    match (new_path, query) {
        (None, _) => Ok(None),
        (Some(p), Some(q)) => PathAndQuery::try_from(format!("{p}?{q}"))
            .map(Some)
            .map_err(bad),
        (Some(p), None) => PathAndQuery::try_from(p).map(Some).map_err(bad),
    }
}

/// What goes upstream as the path and query: the rewritten one, or the request's own (`/`
/// for a request whose URI has none, an authority-form `CONNECT` or `OPTIONS *`).
pub(super) fn sent_path_and_query<'a>(
    rewritten: Option<&'a PathAndQuery>,
    original: &'a Uri,
) -> &'a PathAndQuery {
    static SLASH: std::sync::LazyLock<PathAndQuery> =
        std::sync::LazyLock::new(|| PathAndQuery::from_static("/"));
    rewritten.or(original.path_and_query()).unwrap_or(&SLASH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewritten_path_keeps_the_query() {
        let orig: Uri = "/api/x?q=1".parse().unwrap();
        let sent = |new: Option<&str>| {
            let rewritten = path_and_query(&orig, new).unwrap();
            sent_path_and_query(rewritten.as_ref(), &orig).to_string()
        };
        assert_eq!(sent(None), "/api/x?q=1");
        assert_eq!(sent(Some("/x")), "/x?q=1");
        let authority: Uri = "example.com:443".parse().unwrap();
        assert_eq!(sent_path_and_query(None, &authority).as_str(), "/");
    }
}
