//! Header handling between client and upstream: hop-by-hop removal, forwarding headers, host.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version, header};

use super::request_id::{RequestId, X_REQUEST_ID, value_of};
use super::trace::{TRACEPARENT, TraceId};
use crate::proxy::transport::ProxyBody;
use crate::proxy::transport::h1::{self, ExtraHeaders};
use crate::telemetry::access_log::IpText;

/// A response's headers, to read or change. The native HTTP/1.1 client keeps an upstream's
/// header lines raw when it can (`transport::h1::RawHeaders`): the response's map holds only
/// what the gateway adds then, and the client's writer copies the lines after it. Here they
/// are put into the map first, so what the request layer sees is every header. These
/// functions, and the hand-over to hyper's writer (`Handler::headers_into_map` in
/// `handler.rs`), are the only places in the request layer allowed `Response::headers`,
/// `headers_mut` and `into_parts` (clippy's `disallowed_methods`, denied in
/// `request/mod.rs`): a look at the map alone would miss the raw lines.
#[allow(clippy::disallowed_methods)]
pub fn response_headers(resp: &mut Response<ProxyBody>) -> &mut HeaderMap {
    if let Some(raw) = resp.body_mut().take_raw_headers() {
        raw.into_map(resp.headers_mut());
    }
    resp.headers_mut()
}

/// Sets `name` on the response, replacing the upstream's: the raw lines are put into the map
/// only when they may hold that name (the request id set on every response usually is not).
#[allow(clippy::disallowed_methods)]
pub fn set_response_header(resp: &mut Response<ProxyBody>, name: HeaderName, value: HeaderValue) {
    let raw_may_have = resp.body().raw_headers().is_some_and(|r| r.may_have(&name));
    let headers = if raw_may_have {
        response_headers(resp)
    } else {
        let headers = resp.headers_mut();
        h1::make_room(headers, 1);
        headers
    };
    headers.insert(name, value);
}

/// Sets the request id on the response as [`set_response_header`] does, or returns it for the
/// writer to send beside the map when the response cannot hold `X-Request-ID` already: its map
/// is empty (on the native path it usually is: an upstream's headers stay raw lines) and its
/// raw lines do not name it. Inserting a name the map hashes byte by byte cost ~230
/// instructions per request (`bench/callgrind.sh`).
#[allow(clippy::disallowed_methods)]
pub fn set_request_id_or_beside(
    resp: &mut Response<ProxyBody>,
    id: RequestId,
) -> Option<RequestId> {
    let raw_may_have = resp
        .body()
        .raw_headers()
        .is_some_and(|r| r.may_have(&X_REQUEST_ID));
    if resp.headers().is_empty() && !raw_may_have {
        return Some(id);
    }
    set_response_header(resp, X_REQUEST_ID.clone(), id.into_value());
    None
}

/// Removes the response's hop-by-hop headers ([`strip_hop_by_hop`]) without putting raw lines
/// into the map: the native client keeps lines raw only when none of them is one (it cuts the
/// framing ones out, and builds the map when it meets any other: `raw_lines_hold_no_hop_by_hop`
/// below holds the two lists together).
#[allow(clippy::disallowed_methods)]
pub fn strip_response_hop_by_hop(resp: &mut Response<ProxyBody>) {
    strip_hop_by_hop(resp.headers_mut());
}

/// A response's parts, every header in the map.
#[allow(clippy::disallowed_methods)]
pub fn response_into_parts(mut resp: Response<ProxyBody>) -> (http::response::Parts, ProxyBody) {
    response_headers(&mut resp);
    resp.into_parts()
}

/// The size of the per-thread chunks [`made_value`] cuts values from.
const VALUE_CHUNK: usize = 4096;

thread_local! {
    /// The chunk values are cut from, and the one used up before it.
    static VALUE_BYTES: RefCell<[BytesMut; 2]> = RefCell::new([BytesMut::new(), BytesMut::new()]);
}

/// A header value the proxy makes and puts in a map (a request id), written by
/// `fill` (at most `max_len` bytes) into a per-thread chunk and cut from it. A value of its own
/// would cost two allocations per request: its bytes, and the shared count its first clone
/// adds; cut from a chunk, they share one allocation per chunk of 4 KiB. When the chunk is used
/// up, the one used up before it is written again from its start if every value cut from it is
/// gone (the usual case: its requests are over), so that steady traffic allocates none;
/// otherwise a chunk is left to the values still using it, freed with the last of them.
/// `None` if the bytes are not a valid header value.
pub(crate) fn made_value(max_len: usize, fill: impl FnOnce(&mut BytesMut)) -> Option<HeaderValue> {
    VALUE_BYTES.with(|chunks| {
        let [chunk, before] = &mut *chunks.borrow_mut();
        if chunk.capacity() < max_len {
            let size = VALUE_CHUNK.max(max_len);
            if !before.try_reclaim(size) {
                *before = BytesMut::with_capacity(size);
            }
            std::mem::swap(chunk, before);
        }
        fill(chunk);
        HeaderValue::from_maybe_shared(chunk.split().freeze()).ok()
    })
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus legacy ones).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What [`hop_by_hop_index`] says for `TE`.
const TE_INDEX: usize = HOP_BY_HOP.len();
/// What [`hop_by_hop_index`] says for `X-Forwarded-Client-Cert`.
const XFCC_INDEX: usize = TE_INDEX + 1;
/// What [`hop_by_hop_index`] says for the first of the names [`Seen`] notes (`Seen`'s bits
/// follow from there).
const SEEN_INDEX: usize = XFCC_INDEX + 1;

/// `name`'s position in [`HOP_BY_HOP`], [`TE_INDEX`] for `TE`, [`XFCC_INDEX`], or
/// [`SEEN_INDEX`] plus a [`Seen`] bit's position. One match on the name's text: comparing it
/// with each `HeaderName` in turn cost ~80 instructions per header.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        "te" => TE_INDEX,
        "x-forwarded-client-cert" => XFCC_INDEX,
        "x-forwarded-for" => SEEN_INDEX,
        "x-forwarded-proto" => SEEN_INDEX + 1,
        "x-forwarded-port" => SEEN_INDEX + 2,
        "x-forwarded-host" => SEEN_INDEX + 3,
        "traceparent" => SEEN_INDEX + 4,
        _ => return None,
    })
}

/// Which of the request headers the proxy sets itself a map holds, noted by
/// [`strip_hop_by_hop`]'s pass over the names, so that a client's copy is looked up (and taken
/// out) only when there is one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(u8);

impl Seen {
    /// `X-Forwarded-For`.
    pub const FORWARDED_FOR: Seen = Seen(1);
    /// `X-Forwarded-Proto`.
    pub const FORWARDED_PROTO: Seen = Seen(1 << 1);
    /// `X-Forwarded-Port`.
    pub const FORWARDED_PORT: Seen = Seen(1 << 2);
    /// `X-Forwarded-Host`.
    pub const FORWARDED_HOST: Seen = Seen(1 << 3);
    /// `traceparent`.
    pub const TRACEPARENT: Seen = Seen(1 << 4);
    /// `Connection` (the names it listed were removed too).
    pub const CONNECTION: Seen = Seen(1 << 7);

    /// Whether the map held `name` (one of the constants).
    pub fn has(self, name: Seen) -> bool {
        self.0 & name.0 != 0
    }
}

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// `X-Forwarded-Client-Cert`: the identity of a client certificate the gateway verified. Only
/// the gateway sets it: a copy from anyone else is removed with the hop-by-hop headers.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Removes hop-by-hop headers, including those the `Connection` header names, and
/// [`X_FORWARDED_CLIENT_CERT`]. `TE: trailers` is kept (gRPC needs it end to end). Returns
/// which of the headers the proxy sets on a forwarded request were in the map ([`Seen`]; a
/// name listed in `Connection` may have gone since).
///
/// One pass finds which are present (usually none, or `Connection` alone): removing absent
/// names would hash each of them for nothing, on every request and every response.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Seen {
    let mut present = 0u16;
    let mut te = false;
    let mut xfcc = false;
    let mut seen = 0u8;
    for name in headers.keys() {
        match hop_by_hop_index(name) {
            Some(TE_INDEX) => te = true,
            Some(XFCC_INDEX) => xfcc = true,
            Some(i) if i >= SEEN_INDEX => seen |= 1 << (i - SEEN_INDEX),
            Some(i) => present |= 1 << i,
            None => {}
        }
    }
    if xfcc {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if present & 1 != 0 {
        seen |= Seen::CONNECTION.0;
        // Names listed in Connection are hop-by-hop too (values are cheap to clone: shared).
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        for value in first.iter().chain(&more) {
            for token in value.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                if !token.is_empty() {
                    headers.remove(token);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if te
        && !headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    Seen(seen)
}

/// The identity header of the connection's client certificate, when `v`'s CA verified it.
pub fn verified_client_cert<'c>(
    v: &crate::model::ClientValidation,
    conn: &'c crate::proxy::transport::ConnCtx,
) -> Option<&'c HeaderValue> {
    verified_identity(v, conn).map(|c| &c.header)
}

/// The connection's client certificate, when `v`'s CA verified it.
pub fn verified_identity<'c>(
    v: &crate::model::ClientValidation,
    conn: &'c crate::proxy::transport::ConnCtx,
) -> Option<&'c crate::proxy::transport::ClientIdentity> {
    conn.client_cert
        .as_deref()
        .filter(|c| v.ca_fingerprint() == Some(&*c.ca_fingerprint))
}

/// ingress-nginx's client-certificate headers (an Ingress's `auth-tls-secret`).
static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
static SSL_CLIENT_ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
static SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// Sets ingress-nginx's `ssl-client-*` headers for `identity` (the connection's verified
/// certificate, if any), as its template does for a host with `auth-tls-secret`: `SUCCESS`
/// and the names (and the PEM when asked), or `NONE` alone. A client's own copies are
/// removed first.
pub fn set_nginx_client_cert(
    h: &mut HeaderMap,
    n: crate::model::NginxCertHeaders,
    identity: Option<&crate::proxy::transport::ClientIdentity>,
) {
    for name in [
        &SSL_CLIENT_VERIFY,
        &SSL_CLIENT_SUBJECT_DN,
        &SSL_CLIENT_ISSUER_DN,
        &SSL_CLIENT_CERT,
    ] {
        h.remove(name);
    }
    match identity.and_then(|i| i.nginx.as_deref()) {
        Some(id) => {
            h.insert(
                SSL_CLIENT_VERIFY.clone(),
                HeaderValue::from_static("SUCCESS"),
            );
            h.insert(SSL_CLIENT_SUBJECT_DN.clone(), id.subject_dn.clone());
            h.insert(SSL_CLIENT_ISSUER_DN.clone(), id.issuer_dn.clone());
            if let (true, Some(pem)) = (n.pass_certificate, &id.escaped_cert) {
                h.insert(SSL_CLIENT_CERT.clone(), pem.clone());
            }
        }
        None => {
            h.insert(SSL_CLIENT_VERIFY.clone(), HeaderValue::from_static("NONE"));
        }
    }
}

/// The protocol a client asks to switch to (`Connection: upgrade` + `Upgrade: x`), HTTP/1.1 only.
pub fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: nearly every request has none, and one lookup tells.
    let protocol = req.headers().get(header::UPGRADE)?;
    let wants = req.headers().get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    wants.then(|| protocol.clone())
}

/// Restores the two headers an upgrade needs after hop-by-hop removal.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The headers the proxy sets on every request it forwards (`X-Forwarded-For`, `-Proto`,
/// `-Port`, `-Host`, `traceparent`), kept beside the request's map instead of inserted in it:
/// the native HTTP/1.1 client writes them after the map's headers ([`ExtraHeaders`]), and the
/// other clients get them inserted ([`Added::insert_into`]). Inserting five names the map
/// hashes byte by byte cost about 1,500 instructions per request (`bench/callgrind.sh`); the
/// values the proxy makes (the client's address, the trace context) are kept as bytes, not
/// made `HeaderValue`s, whose constructor checks every byte again (another ~400).
#[derive(Debug, Clone)]
pub struct Added {
    /// The client's own non-empty `X-Forwarded-For`, which the client's address follows.
    forwarded_for: Option<HeaderValue>,
    client: IpText,
    scheme: &'static str,
    port: HeaderValue,
    host: Option<HeaderValue>,
    traceparent: Option<[u8; TRACEPARENT_LEN]>,
    /// The request id, when it is not in the request's map (see `Record::unsent_request_id`).
    request_id: Option<[u8; 32]>,
}

/// The length of a version-00 `traceparent`.
pub(crate) const TRACEPARENT_LEN: usize = 55;

impl Added {
    /// Sets the trace context (`traceparent`) sent upstream: a version-00 value, only
    /// lower-case hex digits and dashes.
    pub(crate) fn set_traceparent(&mut self, value: [u8; TRACEPARENT_LEN]) {
        self.traceparent = Some(value);
    }

    /// The trace id of the `traceparent` sent upstream (kept there only: a copy beside it
    /// made the prepared request 280 bytes, and one over 256 costs `memcpy` twice as much).
    pub(crate) fn trace_id(&self) -> Option<TraceId> {
        self.traceparent.as_ref().map(TraceId::of_traceparent)
    }

    /// Sets the request id sent upstream, one the request's map does not hold.
    pub(crate) fn set_request_id(&mut self, id: Option<[u8; 32]>) {
        self.request_id = id;
    }

    /// Inserts the headers into `headers` (for a client that takes only a map).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        let client = self.client.as_bytes();
        let forwarded_for = match &self.forwarded_for {
            Some(prev) => HeaderValue::from_bytes(&[prev.as_bytes(), b", ", client].concat()),
            None => HeaderValue::from_bytes(client),
        };
        if let Ok(v) = forwarded_for {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.scheme),
        );
        headers.insert(X_FORWARDED_PORT.clone(), self.port.clone());
        if let Some(h) = &self.host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        if let Some(Ok(v)) = self.traceparent.map(|t| HeaderValue::from_bytes(&t)) {
            headers.insert(TRACEPARENT.clone(), v);
        }
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID.clone(), value_of(id));
        }
    }
}

impl ExtraHeaders for Added {
    fn each(&self, mut f: impl FnMut(&HeaderName, &[&[u8]])) {
        let client = self.client.as_bytes();
        match &self.forwarded_for {
            Some(prev) => f(&X_FORWARDED_FOR, &[prev.as_bytes(), b", ", client]),
            None => f(&X_FORWARDED_FOR, &[client]),
        }
        f(&X_FORWARDED_PROTO, &[self.scheme.as_bytes()]);
        f(&X_FORWARDED_PORT, &[self.port.as_bytes()]);
        if let Some(h) = &self.host {
            f(&X_FORWARDED_HOST, &[h.as_bytes()]);
        }
        if let Some(t) = &self.traceparent {
            f(&TRACEPARENT, &[t]);
        }
        if let Some(id) = &self.request_id {
            f(&X_REQUEST_ID, &[id]);
        }
    }
}

/// Takes a client's forwarding headers out of `headers` (`seen` says which it holds) and
/// returns the ones to send instead: the client appended to `X-Forwarded-For`, the scheme as
/// `X-Forwarded-Proto`, the port the client reached (the listener's public port) as
/// `X-Forwarded-Port`, and the client's `Host` as `X-Forwarded-Host`.
pub fn forwarded(
    headers: &mut HeaderMap,
    seen: Seen,
    client: IpAddr,
    scheme: &'static str,
    port: &HeaderValue,
    host: Option<&HeaderValue>,
) -> Added {
    let forwarded_for = seen
        .has(Seen::FORWARDED_FOR)
        .then(|| headers.remove(&X_FORWARDED_FOR))
        .flatten()
        .filter(|prev| !prev.as_bytes().trim_ascii().is_empty());
    for (bit, name) in [
        (Seen::FORWARDED_PROTO, &X_FORWARDED_PROTO),
        (Seen::FORWARDED_PORT, &X_FORWARDED_PORT),
        (Seen::FORWARDED_HOST, &X_FORWARDED_HOST),
    ] {
        if seen.has(bit) {
            headers.remove(name);
        }
    }
    Added {
        forwarded_for,
        client: IpText::new(client.to_canonical()),
        scheme,
        port: port.clone(),
        host: host.cloned(),
        traceparent: None,
        request_id: None,
    }
}

/// The host a request is for, lower-cased and without port, plus the port if one was given.
/// HTTP/2 puts it in the `:authority` (the URI); HTTP/1.1 in `Host`.
pub fn request_host<B>(req: &Request<B>) -> Option<(Cow<'_, str>, Option<u16>)> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    split_host(raw)
}

/// The `Host`/`:authority` value as sent (for `X-Forwarded-Host` and the upstream `Host`).
pub fn host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

fn split_host(raw: &str) -> Option<(Cow<'_, str>, Option<u16>)> {
    // One pass from the end finds where a userinfo ends (the last '@') and the last ':' after
    // it: two `rsplit_once` searches cost ~200 instructions on every request for a Host of a
    // few bytes.
    let mut start = 0;
    let mut colon = None;
    for (i, &b) in raw.as_bytes().iter().enumerate().rev() {
        if b == b'@' {
            start = i + 1;
            break;
        }
        if b == b':' && colon.is_none() {
            colon = Some(i);
        }
    }
    let raw = &raw[start..];
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let port = raw[end + 1..].strip_prefix(':');
        (&raw[..=end], port)
    } else {
        match colon.map(|c| c - start) {
            Some(c) => (&raw[..c], Some(&raw[c + 1..])),
            None => (raw, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `strip_response_hop_by_hop` relies on: no name it removes is ever in raw lines,
    /// whatever its case, nor a name `Connection` lists; framing lines are cut out.
    #[test]
    fn raw_lines_hold_no_hop_by_hop() {
        use crate::proxy::transport::h1::codec::parse_response;
        let raw_of = |head: &str| {
            let parsed = parse_response(&mut BytesMut::from(head.as_bytes()), false);
            parsed.unwrap().unwrap().raw
        };
        let names = HOP_BY_HOP.iter().map(HeaderName::as_str);
        for name in names.chain(["te", "x-forwarded-client-cert"]) {
            for spelled in [name.to_owned(), name.to_ascii_uppercase()] {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nServer: s\r\n{spelled}: v\r\nContent-Length: 0\r\n\r\n"
                );
                match raw_of(&head) {
                    None => {}
                    // Cut out: only the framing ones may be.
                    Some(raw) => assert_eq!(raw.lines(), b"Server: s\r\n", "{spelled}"),
                }
            }
        }
        let listed = "HTTP/1.1 200 OK\r\nConnection: x-listed\r\nX-Listed: 1\r\n\r\n";
        assert!(raw_of(listed).is_none());
        let head = "HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive\r\n\
                    Keep-Alive: timeout=5\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok";
        assert_eq!(raw_of(head).unwrap().lines(), b"Server: s\r\nX-A: b\r\n");
    }

    #[test]
    fn made_values_cut_from_shared_chunks_stay_intact() {
        let first = made_value(5, |b| b.extend_from_slice(b"alpha")).unwrap();
        // 16 KiB of values: several chunks, each value alive while later ones are cut.
        let many: Vec<HeaderValue> = (0..2000)
            .map(|i| made_value(8, |b| b.extend_from_slice(format!("{i:08}").as_bytes())).unwrap())
            .collect();
        assert_eq!(first, "alpha");
        for (i, v) in many.iter().enumerate() {
            assert_eq!(v, &format!("{i:08}")[..]);
        }
        // Longer than a chunk, and invalid bytes.
        let long = "x".repeat(VALUE_CHUNK + 10);
        let v = made_value(long.len(), |b| b.extend_from_slice(long.as_bytes())).unwrap();
        assert_eq!(v, &long[..]);
        assert!(made_value(3, |b| b.extend_from_slice(b"a\nb")).is_none());
        assert_eq!(many[1999], "00001999");
    }

    #[test]
    fn a_chunk_whose_values_are_gone_is_written_again() {
        std::thread::spawn(|| {
            let first = made_value(8, |b| b.extend_from_slice(b"00000000")).unwrap();
            let start = first.as_bytes().as_ptr();
            drop(first);
            // Values made and dropped one by one: the chunk comes back to its start.
            let again = (0..3 * VALUE_CHUNK / 8).any(|_| {
                let v = made_value(8, |b| b.extend_from_slice(b"11111111")).unwrap();
                v.as_bytes().as_ptr() == start
            });
            assert!(again, "the chunk was replaced, not reused");
            // A value still alive keeps its chunk from being written again.
            let kept = made_value(8, |b| b.extend_from_slice(b"22222222")).unwrap();
            for _ in 0..3 * VALUE_CHUNK / 8 {
                made_value(8, |b| b.extend_from_slice(b"33333333")).unwrap();
            }
            assert_eq!(kept, "22222222");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn hop_by_hop_index_matches_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::TE), Some(TE_INDEX));
        assert_eq!(hop_by_hop_index(&X_FORWARDED_CLIENT_CERT), Some(XFCC_INDEX));
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        assert_eq!(
            hop_by_hop_index(&HeaderName::from_static("x-upgrade")),
            None
        );
    }

    #[test]
    fn host_is_lowercased_and_port_split() {
        assert_eq!(
            split_host("Shop.Example.com:8080"),
            Some(("shop.example.com".into(), Some(8080)))
        );
        assert_eq!(split_host("a.test"), Some(("a.test".into(), None)));
        assert_eq!(split_host("a.test."), Some(("a.test".into(), None)));
        assert_eq!(split_host("[::1]:80"), Some(("[::1]".into(), Some(80))));
        assert_eq!(split_host("a.test:x"), None);
        assert_eq!(split_host(""), None);
        assert_eq!(split_host("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(split_host("[::1"), None);
        assert_eq!(
            split_host("u:p@A.test:81"),
            Some(("a.test".into(), Some(81)))
        );
        assert_eq!(split_host("u@[::1]:82"), Some(("[::1]".into(), Some(82))));
        assert_eq!(split_host("x@y@b.test"), Some(("b.test".into(), None)));
        assert_eq!(split_host("a.test:"), None);
        assert_eq!(split_host(":80"), None);
        assert_eq!(split_host("u:1@"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_connection_listed_ones_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(
            X_FORWARDED_CLIENT_CERT.clone(),
            HeaderValue::from_static("Hash=0"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        let mut grpc = HeaderMap::new();
        grpc.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut grpc);
        assert!(grpc.contains_key(header::TE));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.1"),
        );
        h.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("10.0.0.2"),
        );
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("ftp"));
        h.insert(X_FORWARDED_HOST.clone(), HeaderValue::from_static("evil"));
        h.insert(TRACEPARENT.clone(), HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let seen = strip_hop_by_hop(&mut h);
        assert!(seen.has(Seen::TRACEPARENT) && !seen.has(Seen::FORWARDED_PORT));
        let added = forwarded(
            &mut h,
            seen,
            "127.0.0.1".parse().unwrap(),
            "http",
            &HeaderValue::from_static("8080"),
            Some(&HeaderValue::from_static("a.test")),
        );
        // The client's forwarding headers are gone from the map (the first X-Forwarded-For
        // is carried on); the proxy's are beside it, in order.
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-kept") && h.contains_key(&TRACEPARENT));
        assert_eq!(
            written(&added),
            [
                "x-forwarded-for: 10.0.0.1, 127.0.0.1",
                "x-forwarded-proto: http",
                "x-forwarded-port: 8080",
                "x-forwarded-host: a.test",
            ]
        );
        added.insert_into(&mut h);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);

        // Without a Host, a client's X-Forwarded-Host is still removed and none is added.
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_HOST.clone(), HeaderValue::from_static("evil"));
        let seen = strip_hop_by_hop(&mut h);
        let added = forwarded(
            &mut h,
            seen,
            "::1".parse().unwrap(),
            "https",
            &HeaderValue::from_static("443"),
            None,
        );
        assert!(h.is_empty());
        assert_eq!(
            written(&added),
            [
                "x-forwarded-for: ::1",
                "x-forwarded-proto: https",
                "x-forwarded-port: 443",
            ]
        );
        // A client's IPv4-mapped address is sent as the IPv4 address.
        let added = forwarded(
            &mut h,
            seen,
            "::ffff:10.1.2.3".parse().unwrap(),
            "http",
            &HeaderValue::from_static("80"),
            None,
        );
        assert_eq!(written(&added)[0], "x-forwarded-for: 10.1.2.3");
    }

    /// The headers `added` writes (`name: value`, each value's parts joined); a map's
    /// clients get the same ones inserted.
    fn written(added: &Added) -> Vec<String> {
        let mut got = Vec::new();
        added.each(|name, parts| {
            let value = String::from_utf8(parts.concat()).unwrap();
            got.push(format!("{name}: {value}"));
        });
        let mut map = HeaderMap::new();
        added.insert_into(&mut map);
        let inserted: Vec<String> = map
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(inserted, got);
        got
    }
}
