//! HTTP/1.1 framing: request and response heads, chunked bodies, and head serialization.
//!
//! Parsing is security-critical for a proxy: a message that two HTTP implementations frame
//! differently lets a client smuggle a request past the proxy. Heads are tokenized by
//! `httparse` (the parser hyper uses) and then held to RFC 9112's framing rules strictly:
//! `Content-Length` with `Transfer-Encoding`, a repeated or non-numeric `Content-Length`, a
//! transfer coding other than one `chunked`, obs-fold, a repeated `Host`, and malformed chunk
//! lines are all rejected. What this codec does not handle itself (HTTP/1.0, upgrades,
//! `Expect`, non-origin-form targets) is reported as [`Parsed::Handoff`] and served by hyper.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::proxy::transport::recycle::{Recycled, Slot};

/// Most header lines a head may have.
pub const MAX_HEADERS: usize = 100;
const _: () = assert!(
    MAX_HEADERS <= 128,
    "parse_response keeps a bit per header in a u128"
);

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A request head the native path serves.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    /// The head has an `X-Request-ID` line.
    pub request_id: bool,
}

/// The result of parsing what a buffer holds so far.
#[derive(Debug)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Partial,
    /// A head (split off the buffer).
    Done(T),
    /// A valid request the native codec leaves to hyper (see the module docs).
    Handoff,
}

/// Why a head was refused; the connection answers with the status and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    TooLarge,
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

impl Reject {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Reject::Malformed(_) => StatusCode::BAD_REQUEST,
            Reject::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// Where a header's name and value lie in the head (offsets, so the buffer can be frozen and
/// values shared without copying).
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Room for a head's spans: inline for the usual number of headers, on the heap for more
/// (room for [`MAX_HEADERS`] on the stack was 1.6 KB zeroed on every parse).
// The inline variant is the point: it lives on the stack for one parse.
#[allow(clippy::large_enum_variant)]
enum Spans {
    Inline([Span; INLINE_SPANS]),
    Heap(Vec<Span>),
}

const INLINE_SPANS: usize = 32;

impl Spans {
    fn new(n: usize) -> Self {
        if n <= INLINE_SPANS {
            Spans::Inline([Span::default(); INLINE_SPANS])
        } else {
            Spans::Heap(vec![Span::default(); n])
        }
    }
}

impl std::ops::Deref for Spans {
    type Target = [Span];
    fn deref(&self) -> &[Span] {
        match self {
            Spans::Inline(a) => a,
            Spans::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Spans {
    fn deref_mut(&mut self) -> &mut [Span] {
        match self {
            Spans::Inline(a) => a,
            Spans::Heap(v) => v,
        }
    }
}

fn span_of(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// Comma-separated list elements of a header value, trimmed, empty ones skipped.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A `Content-Length` value: ASCII digits only (no sign, no list, no whitespace inside).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Parses a request head at the start of `buf`. On `Done`, the caller splits the head off.
pub fn parse_request(buf: &mut BytesMut) -> Result<Parsed<Recycled<RequestHead>>, Reject> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Err(httparse::Error::Version) => return Err(Reject::Malformed("unsupported HTTP version")),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            return Err(Reject::Malformed("invalid header line"));
        }
        Err(_) => return Err(Reject::Malformed("invalid request line")),
    };
    if req.version != Some(1) {
        return Ok(Parsed::Handoff);
    }
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    if method == "CONNECT" || !path.starts_with('/') {
        return Ok(Parsed::Handoff);
    }
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| Reject::Malformed("invalid method"))?;
    let path_span = span_of(buf, path.as_bytes());

    let mut spans = Spans::new(req.headers.len());
    let mut length = None;
    let mut chunked = false;
    let mut codings = 0;
    let mut hosts = 0;
    let mut close = false;
    let mut request_id = false;
    for (h, span) in req.headers.iter().zip(spans.iter_mut()) {
        let name = h.name.as_bytes();
        let value = h.value;
        *span = Span {
            name: span_of(buf, name),
            value: span_of(buf, value),
        };
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Reject::Malformed("more than one Content-Length"));
            }
            length =
                Some(content_length(value).ok_or(Reject::Malformed("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in list(value) {
                codings += 1;
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(Reject::UnsupportedCoding);
                }
                chunked = true;
            }
            if codings == 0 {
                return Err(Reject::Malformed("empty Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Ok(Parsed::Handoff);
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            return Ok(Parsed::Handoff);
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            request_id = true;
        }
    }
    let count = req.headers.len();
    if codings > 1 {
        return Err(Reject::Malformed("chunked applied more than once"));
    }
    if chunked && length.is_some() {
        return Err(Reject::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    match hosts {
        0 => return Err(Reject::Malformed("missing Host header")),
        1 => {}
        _ => return Err(Reject::Malformed("more than one Host header")),
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0) | None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };

    let head = buf.split_to(len).freeze();
    let slice = |(a, b): (u32, u32)| head.slice(a as usize..b as usize);
    let uri = Uri::from_maybe_shared(slice(path_span))
        .map_err(|_| Reject::Malformed("invalid request target"))?;
    let headers = header_map(&head, &spans[..count])?;
    // Made where it is kept: returned and then moved into its block, the head's 232 bytes were
    // copied twice.
    let slot = Slot::new();
    Ok(Parsed::Done(slot.write(RequestHead {
        method,
        uri,
        headers,
        framing,
        close,
        request_id,
    })))
}

/// Room for the headers the proxy adds (request id, trace context, forwarding headers): a map
/// that has to grow rehashes everything.
const ADDED_HEADERS: usize = 8;

/// Room for the headers the proxy adds to a response's map beyond those asked for (a request
/// id, a `Date`): fewer than to a request's. A response's map is usually a spare that was a
/// request's, and an HTTP/2 request's map is the `h2` crate's, made with room for six headers
/// when its client sends few (h2load, gRPC clients): asking for eight more than needed grew it
/// on every request, one more allocation and rehash (~1,500 instructions, `LOAD=h2c-64
/// bench/callgrind.sh`), for room most responses never use.
const RESPONSE_ADDED_HEADERS: usize = 2;

/// Header maps kept per thread for the next heads: a map costs two allocations (its index and
/// its entries), and each request parses two (its own and its response's). Maps come back
/// through [`give_back_map`] once their head is written out.
const SPARE_MAPS: usize = crate::proxy::transport::recycle::KEPT_PER_THREAD;
/// A map grown larger than this (room for this many headers) is not kept.
const SPARE_MAP_ROOM: usize = 64;

thread_local! {
    static MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty map with room for `n` headers: a spare one when the thread has one.
fn take_map(n: usize) -> HeaderMap {
    match MAPS.with(|m| m.borrow_mut().pop()) {
        Some(mut map) => {
            map.reserve(n);
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// Keeps `map` (emptied: it holds no bytes of the head it came from) for the next head parsed
/// on this thread, unless it grew large or the thread keeps enough.
pub fn give_back_map(mut map: HeaderMap) {
    if map.capacity() == 0 {
        return discard_map(map);
    }
    if map.capacity() > SPARE_MAP_ROOM {
        return;
    }
    map.clear();
    MAPS.with(|m| {
        let mut maps = m.borrow_mut();
        if maps.len() < SPARE_MAPS {
            maps.push(map);
        }
    });
}

/// Drops `map`, skipping its drop glue when it holds no memory: every take of a map out of an
/// `http` type leaves an empty one behind, several a request, and dropping an empty map costs
/// ~60 instructions (its index, entries and extra values are each looked at).
#[inline]
pub fn discard_map(map: HeaderMap) {
    // No room means nothing allocated: no index (a map's index is allocated before any entry),
    // hence no entries and no extra values. Forgetting it frees nothing that was held.
    if map.capacity() == 0 {
        std::mem::forget(map);
    }
}

/// `*slot = map`, where `slot` is usually a new request's or response's empty map (see
/// [`discard_map`]).
#[inline]
pub fn put_map(slot: &mut HeaderMap, map: HeaderMap) {
    discard_map(std::mem::replace(slot, map));
}

/// Makes room in `map` for `n` more headers: a map that has none yet (a response whose
/// headers stay raw lines has no map until something is put in it) becomes one of the
/// thread's spare maps.
pub fn make_room(map: &mut HeaderMap, n: usize) {
    if map.capacity() == 0 {
        put_map(map, take_map(n + RESPONSE_ADDED_HEADERS));
    } else {
        map.reserve(n);
    }
}

/// Drops `req`, whose map was usually taken out (see [`discard_map`]); `blank` is a body that
/// holds no memory. (Taken apart in place: `into_parts` would copy the request, 304 bytes.)
#[inline(always)]
pub fn discard_request<B>(req: http::Request<B>, blank: B) {
    let mut req = std::mem::ManuallyDrop::new(req);
    // Each part that may hold memory is taken out and dropped, leaving one that holds none
    // (the version holds none): nothing is left to free in what is not dropped.
    discard_map(std::mem::take(req.headers_mut()));
    drop(std::mem::take(req.uri_mut()));
    drop(std::mem::take(req.method_mut()));
    drop(std::mem::take(req.extensions_mut()));
    drop(std::mem::replace(req.body_mut(), blank));
}

/// Gives back a written response head's map (see [`give_back_map`]) and drops the rest of it
/// (see [`discard_request`]).
pub fn give_back_head(parts: http::response::Parts) {
    let mut parts = std::mem::ManuallyDrop::new(parts);
    give_back_map(std::mem::take(&mut parts.headers));
    drop(std::mem::take(&mut parts.extensions));
}

/// Header names kept per thread, two places for each hash of a spelling: a name that is not
/// one of the standard ones (`x-tenant`, `sec-fetch-mode`) costs an allocation each time
/// `HeaderName::from_bytes` makes it, and clients send the same few, spelled the same way, on
/// every request. A kept name is found by its spelling byte for byte, which is cheaper than
/// what `from_bytes` does for a standard name.
const KNOWN_NAMES: usize = 128;
/// Longer names are made each time rather than kept (a client could send large ones).
const KNOWN_NAME_LEN: usize = 40;

/// A header name and the spelling it was made from.
struct Known {
    len: u8,
    spelling: [u8; KNOWN_NAME_LEN],
    name: HeaderName,
}

type KnownNames = [Option<Known>; KNOWN_NAMES];

thread_local! {
    static NAMES: std::cell::RefCell<KnownNames> =
        const { std::cell::RefCell::new([const { None }; KNOWN_NAMES]) };
}

/// Where `raw` (a header name as sent) would be kept in [`NAMES`]: an even index, its pair's
/// other place one above.
#[inline]
fn name_slot(raw: &[u8]) -> usize {
    let (first, last, mid) = match raw {
        [] => return 0,
        [first, .., last] => (*first, *last, raw[raw.len() / 2]),
        [only] => (*only, *only, *only),
    };
    let h = raw
        .len()
        .wrapping_mul(0x9E37)
        .wrapping_add(usize::from(first).wrapping_mul(0x85EB))
        .wrapping_add(usize::from(last).wrapping_mul(0xC2B3))
        .wrapping_add(usize::from(mid).wrapping_mul(0x27D5));
    (h >> 3) & (KNOWN_NAMES - 2)
}

/// The header name `raw` spells: the one kept by the thread when it was spelled so before,
/// otherwise made (and kept).
#[inline]
fn header_name(known: &mut KnownNames, raw: &[u8]) -> Result<HeaderName, Reject> {
    let at = name_slot(raw);
    for k in known[at..at + 2].iter().flatten() {
        if k.spelling[..usize::from(k.len)] == *raw {
            return Ok(k.name.clone());
        }
    }
    let name = HeaderName::from_bytes(raw).map_err(|_| Reject::Malformed("invalid header name"))?;
    if raw.len() <= KNOWN_NAME_LEN {
        let mut spelling = [0; KNOWN_NAME_LEN];
        spelling[..raw.len()].copy_from_slice(raw);
        // The first place when free, else the second (the first keeps the name that came first).
        let free = if known[at].is_none() { at } else { at + 1 };
        known[free] = Some(Known {
            len: raw.len() as u8,
            spelling,
            name: name.clone(),
        });
    }
    Ok(name)
}

fn header_map(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, Reject> {
    let mut headers = take_map(spans.len() + ADDED_HEADERS);
    NAMES.with(|known| {
        let known = &mut *known.borrow_mut();
        for s in spans {
            let name = header_name(known, &head[s.name.0 as usize..s.name.1 as usize])?;
            let value = super::value::parsed(head.slice(s.value.0 as usize..s.value.1 as usize));
            headers.append(name, value);
        }
        Ok(())
    })?;
    Ok(headers)
}

/// A response's header lines kept as the upstream wrote them, for a response whose headers
/// nothing but the client's writer needs: building a `HeaderMap` of them (hashing each name,
/// sharing each value) and writing it out again cost ~300 instructions a header, copying the
/// lines costs a few. Kept only when every line was written plainly — `name: value` with one
/// space, no empty value, CRLF — and none is hop-by-hop but the framing ones
/// (`Content-Length`, `Transfer-Encoding`, `Connection` with only `keep-alive` or `close`,
/// `Keep-Alive`), which are taken out of the lines (the writer frames the body itself). Any
/// other response has its map built as before. [`RawHeaders::into_map`] builds the map when
/// something wants to read or change the headers after all.
#[derive(Debug, Clone)]
pub struct RawHeaders {
    /// `name: value\r\n` lines, bytes `httparse` accepted, unchanged: those written to the
    /// client, then the `Content-Length` line, if any (the writer frames the body itself, but a
    /// map built from the lines has it, as one built from the head would).
    lines: Bytes,
    /// How many bytes of `lines` are written to the client.
    kept: u32,
    /// A bit per name held ([`name_bit`]): a name whose bit is clear is not among the lines;
    /// and [`DATE_BIT`]. (The response body carries this through the request's layers: each
    /// byte is copied several times per request.)
    names: u32,
}

/// The bit of [`RawHeaders::names`] that says the lines include a `Date`.
const DATE_BIT: u32 = 1 << 31;

/// The bit of [`RawHeaders::names`] a header name sets, from its length and its first and
/// last characters without case. The factors keep `x-request-id` (set on every response)
/// apart from thirty common response headers (`server`, `date`, `content-type`, `set-cookie`,
/// `cache-control`, `etag`, `vary`, `location`, ...), which spread over 23 of the 31 bits.
#[inline]
fn name_bit(name: &[u8]) -> u32 {
    let h = match name {
        [first, .., last] => {
            name.len() * 30 + usize::from(first | 0x20) + usize::from(last | 0x20) * 2
        }
        _ => name.len(),
    };
    1 << (h % 31)
}

impl RawHeaders {
    /// The lines to write, each `name: value\r\n` (no framing header among them).
    pub fn lines(&self) -> &[u8] {
        &self.lines[..self.kept as usize]
    }

    /// The lines include a `Date`.
    pub fn has_date(&self) -> bool {
        self.names & DATE_BIT != 0
    }

    /// Whether a line may have this name: `false` means none has.
    pub fn may_have(&self, name: &HeaderName) -> bool {
        self.names & name_bit(name.as_str().as_bytes()) != 0
    }

    /// Appends the lines' headers to `map`, in their order.
    pub fn into_map(self, map: &mut HeaderMap) {
        let lines = self.lines;
        make_room(map, lines.iter().filter(|&&b| b == b'\n').count());
        NAMES.with(|known| {
            let known = &mut *known.borrow_mut();
            let mut at = 0;
            // Every line is `name: value\r\n` (checked when kept): a name holds no `:` and a
            // value no CR.
            while let Some(colon) = lines[at..].iter().position(|&b| b == b':')
                && let Some(cr) = lines[at + colon..].iter().position(|&b| b == b'\r')
                && cr >= 2
                && let Ok(name) = header_name(known, &lines[at..at + colon])
            {
                let value = at + colon + 2..at + colon + cr;
                map.append(name, super::value::parsed(lines.slice(value)));
                at += colon + cr + 2;
            }
        });
    }
}

/// What the response parser does with a header, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Length,
    Coding,
    Connection,
    KeepAlive,
    Date,
    /// Hop-by-hop but not framing, or never passed on (`X-Forwarded-Client-Cert`): a
    /// response carrying one has its map built (the request layer removes them).
    Unforwardable,
    Other,
}

/// `name`'s [`Role`], each name compared once (by length first).
#[inline]
fn response_role(name: &[u8]) -> Role {
    let is = |lit: &[u8]| token_is(name, lit);
    match name.len() {
        14 if is(b"content-length") => Role::Length,
        17 if is(b"transfer-encoding") => Role::Coding,
        10 if is(b"connection") => Role::Connection,
        10 if is(b"keep-alive") => Role::KeepAlive,
        4 if is(b"date") => Role::Date,
        2 if is(b"te") => Role::Unforwardable,
        7 if is(b"trailer") || is(b"upgrade") => Role::Unforwardable,
        16 if is(b"proxy-connection") => Role::Unforwardable,
        18 if is(b"proxy-authenticate") => Role::Unforwardable,
        19 if is(b"proxy-authorization") => Role::Unforwardable,
        23 if is(b"x-forwarded-client-cert") => Role::Unforwardable,
        _ => Role::Other,
    }
}

/// Whether `name`, a token (`httparse` accepts no other name) or a header value (which
/// holds no CR), is `lit` (lower-case letters and `-`) in any case, eight bytes at a time:
/// OR-ing 0x20 into a byte lower-cases a letter, keeps `-`, and turns no other byte into
/// either but CR (which would become `-`). A byte-by-byte `eq_ignore_ascii_case` of
/// `content-length` was ~110 instructions.
#[inline]
fn token_is(name: &[u8], lit: &[u8]) -> bool {
    if name.len() != lit.len() {
        return false;
    }
    if name.len() < 8 {
        return name.eq_ignore_ascii_case(lit);
    }
    let word = |s: &[u8], at: usize| {
        let bytes: [u8; 8] = s[at..at + 8].try_into().expect("eight bytes");
        u64::from_le_bytes(bytes) | 0x2020_2020_2020_2020
    };
    let last = name.len() - 8;
    (0..last)
        .step_by(8)
        .chain([last])
        .all(|at| word(name, at) == word(lit, at))
}

/// Most lines taken out of kept raw lines (more: the map is built).
const MAX_CUTS: usize = 4;

/// A response head from an upstream.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The headers, unless `raw` holds them (then this map is empty).
    pub headers: HeaderMap,
    /// The header lines as the upstream wrote them, when it wrote them plainly (see
    /// [`RawHeaders`]).
    pub raw: Option<RawHeaders>,
    pub framing: Framing,
    /// The connection can carry another request after this response.
    pub reusable: bool,
}

/// Parses a response head at the start of `buf` (1xx interim responses other than 101 are
/// consumed and skipped). `head_request`: the request was HEAD, so no body follows.
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, &'static str> {
    loop {
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("invalid response head"),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| "invalid status code")?;
        if status.is_informational() && code != 101 {
            buf.advance(len);
            continue;
        }
        let mut length: Option<u64> = None;
        let mut last_coding_chunked = None;
        let mut close = resp.version != Some(1);
        // The connection's own headers, a bit per index: left out of a map built from the
        // head (`MAX_HEADERS` bits fit).
        let mut own_headers = 0u128;
        // Whether the lines can be kept raw, where they are, and which come out.
        let mut plain = !head_request && !matches!(code, 101 | 204 | 304);
        let mut cuts = [(0u32, 0u32); MAX_CUTS];
        let mut cut_count = 0;
        let mut lines: Option<(u32, u32)> = None;
        let mut length_line: Option<(u32, u32)> = None;
        let mut names = 0u32;
        for (i, h) in resp.headers.iter().enumerate() {
            let name = h.name.as_bytes();
            let line = plain.then(|| plain_line(buf, name, h.value)).flatten();
            match (line, lines) {
                (Some(l), None) => lines = Some(l),
                (Some(l), Some((start, end))) if l.0 == end => lines = Some((start, l.1)),
                _ => plain = false,
            }
            // `Connection: keep-alive` (or `close`) and `Keep-Alive` are this connection's
            // business, and the request layer would remove them (hop-by-hop): they are left
            // out of the map here, which spares it a lookup per name. A `Connection` naming
            // other headers is kept for the request layer, which removes those too.
            let role = response_role(name);
            let mut own = false;
            match role {
                Role::Length => {
                    let n = content_length(h.value).ok_or("invalid Content-Length")?;
                    if length.is_some_and(|l| l != n) {
                        return Err("conflicting Content-Length");
                    }
                    length = Some(n);
                }
                Role::Coding => {
                    if let Some(last) = list(h.value).last() {
                        last_coding_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
                    }
                }
                // What servers write (nginx: `Connection: keep-alive`), in one comparison.
                Role::Connection if token_is(h.value, b"keep-alive") => {
                    own = true;
                    if resp.version == Some(0) {
                        close = false;
                    }
                }
                Role::Connection => {
                    own = true;
                    for token in list(h.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            if resp.version == Some(0) {
                                close = false;
                            }
                        } else {
                            own = false;
                        }
                    }
                }
                Role::KeepAlive => own = true,
                Role::Date | Role::Unforwardable | Role::Other => {}
            }
            if plain {
                // Framing lines are cut out of the raw lines; a `Connection` naming other
                // headers, or another hop-by-hop one, has the map built.
                let cut = match role {
                    Role::Length | Role::Coding | Role::KeepAlive => true,
                    Role::Connection => {
                        plain = own;
                        own
                    }
                    Role::Unforwardable => {
                        plain = false;
                        false
                    }
                    Role::Date => {
                        names |= DATE_BIT | name_bit(name);
                        false
                    }
                    Role::Other => {
                        names |= name_bit(name);
                        false
                    }
                };
                if cut {
                    if cut_count == MAX_CUTS {
                        plain = false;
                    } else if let Some(l) = line {
                        cuts[cut_count] = l;
                        cut_count += 1;
                    }
                }
                if role == Role::Length {
                    // Kept after the lines, for a map built from them (one only).
                    plain &= length_line.is_none()
                        && line.is_some_and(|(a, b)| (b - a) as usize <= MAX_LENGTH_LINE);
                    length_line = line;
                    names |= name_bit(name);
                }
            }
            if own {
                own_headers |= 1 << i;
            }
        }
        let bodiless = head_request || code == 204 || code == 304 || code == 101;
        let framing = match (bodiless, last_coding_chunked, length) {
            (true, _, _) => Framing::None,
            (false, Some(true), _) => Framing::Chunked,
            (false, Some(false), _) => Framing::Close,
            (false, None, Some(0)) => Framing::None,
            (false, None, Some(n)) => Framing::Length(n),
            (false, None, None) => Framing::Close,
        };
        // The lines end where the head does (its blank line follows them).
        let lines = lines.filter(|&(_, end)| plain && end as usize + 2 == len);
        let (headers, raw) = match lines {
            Some((start, end)) => {
                let (start, end) = (start as usize, end as usize);
                let mut head = buf.split_to(len);
                let (kept, all) = cut_lines(&mut head, start, end, &cuts[..cut_count], length_line);
                let raw = RawHeaders {
                    lines: head.freeze().slice(start..all),
                    kept: (kept - start) as u32,
                    names,
                };
                // No map until the request layer puts a header in it (`make_room`): the
                // request id goes beside it, and most responses get nothing else.
                (HeaderMap::new(), Some(raw))
            }
            None => {
                // Found only now, for the heads that need them (most are kept raw).
                let mut spans = Spans::new(resp.headers.len());
                let mut count = 0;
                for (i, h) in resp.headers.iter().enumerate() {
                    if own_headers & (1 << i) == 0 {
                        spans[count] = Span {
                            name: span_of(buf, h.name.as_bytes()),
                            value: span_of(buf, h.value),
                        };
                        count += 1;
                    }
                }
                let head = buf.split_to(len).freeze();
                let headers = header_map(&head, &spans[..count]).map_err(|_| "invalid header")?;
                (headers, None)
            }
        };
        return Ok(Some(ResponseHead {
            status,
            headers,
            raw,
            // After 101 the connection speaks another protocol: never back to the pool.
            reusable: !close && framing != Framing::Close && code != 101,
            framing,
        }));
    }
}

/// Where the header line of `name` and `value` lies in `buf`, when it is written plainly:
/// `name: value\r\n`, one space, a non-empty value.
#[inline]
fn plain_line(buf: &[u8], name: &[u8], value: &[u8]) -> Option<(u32, u32)> {
    let (start, name_end) = span_of(buf, name);
    let (value_start, value_end) = span_of(buf, value);
    let (name_end, value_end) = (name_end as usize, value_end as usize);
    let plain = value_start as usize == name_end + 2
        && value_end > name_end + 2
        && buf.get(name_end..name_end + 2) == Some(b": ")
        && buf.get(value_end..value_end + 2) == Some(b"\r\n");
    plain.then_some((start, value_end as u32 + 2))
}

/// Takes the `cuts` (whole lines, in order) out of `head[start..end]` by moving what follows
/// each forward, then puts the `Content-Length` line (one of the cuts) after what is left;
/// returns where the kept lines end and where that line does. Usually nothing moves: servers
/// write the framing lines last (nginx: `Content-Length`, then `Connection`).
fn cut_lines(
    head: &mut [u8],
    start: usize,
    end: usize,
    cuts: &[(u32, u32)],
    length: Option<(u32, u32)>,
) -> (usize, usize) {
    let cut: usize = cuts.iter().map(|&(from, to)| (to - from) as usize).sum();
    let kept = end - cut;
    let length = length.map(|(from, to)| (from as usize, to as usize));
    // The length line is moved over only when kept lines follow it; then it waits here (a
    // longer one is not kept raw: `parse_response`).
    let mut saved = [0u8; MAX_LENGTH_LINE];
    let saved_len = match length {
        Some((from, to)) if from < kept => {
            saved[..to - from].copy_from_slice(&head[from..to]);
            to - from
        }
        _ => 0,
    };
    let (mut write, mut read) = (start, start);
    for &(from, to) in cuts.iter().chain([&(end as u32, end as u32)]) {
        let from = from as usize;
        if write != read && from > read {
            head.copy_within(read..from, write);
        }
        write += from - read;
        read = to as usize;
    }
    match length {
        Some((from, to)) if saved_len == 0 => {
            if from != kept {
                head.copy_within(from..to, kept);
            }
            (kept, kept + (to - from))
        }
        Some(_) => {
            head[kept..kept + saved_len].copy_from_slice(&saved[..saved_len]);
            (kept, kept + saved_len)
        }
        None => (kept, kept),
    }
}

/// The longest `Content-Length` line kept raw.
const MAX_LENGTH_LINE: usize = 64;

/// What a chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// The last chunk and the trailer section were read (trailers are dropped).
    End,
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeLws,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Longest chunk extension or trailer section accepted.
const MAX_CHUNK_META: usize = 16 * 1024;

/// An incremental, strict decoder of `Transfer-Encoding: chunked` (RFC 9112 §7.1): hex sizes
/// only (no sign, no `0x`, no overflow), CRLF line ends, whitespace only before an extension.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u32,
    meta: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: 0,
            meta: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Consumes from `buf` and returns the next piece, or `None` when `buf` ran out first.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        loop {
            if self.state == State::Done {
                return Ok(Some(Chunk::End));
            }
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(self.size) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Some(Chunk::Data(buf.split_to(n).freeze())));
            }
            let Some(&b) = buf.first() else {
                return Ok(None);
            };
            buf.advance(1);
            self.state = match (self.state, b) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    self.digits += 1;
                    if self.digits > 16 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = (self.size << 4) | u64::from(d);
                    State::Size
                }
                (State::Size, _) if self.digits == 0 => {
                    return Err(ChunkError("missing chunk size"));
                }
                (State::Size | State::SizeLws, b' ' | b'\t') => State::SizeLws,
                (State::Size | State::SizeLws, b';') => State::Ext,
                (State::Size | State::SizeLws, b'\r') => State::SizeLf,
                (State::Size | State::SizeLws, _) => {
                    return Err(ChunkError("invalid chunk size line"));
                }
                (State::Ext, b'\r') => State::SizeLf,
                (State::Ext, b'\n') => return Err(ChunkError("bare LF in chunk extension")),
                (State::Ext, b) if b != b'\t' && (b < 0x20 || b == 0x7f) => {
                    return Err(ChunkError("control character in chunk extension"));
                }
                (State::Ext, _) => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    State::Ext
                }
                (State::SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::SizeLf, _) => return Err(ChunkError("expected LF after chunk size")),
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataCr, _) => return Err(ChunkError("expected CRLF after chunk data")),
                (State::DataLf, b'\n') => State::Size,
                (State::DataLf, _) => return Err(ChunkError("expected LF after chunk data")),
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::Trailer, b'\n') => {
                    return Err(ChunkError("bare LF in trailer section"));
                }
                (State::Trailer, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::Trailer, _) => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(ChunkError("trailer section too long"));
                    }
                    State::Trailer
                }
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::TrailerLf, _) => return Err(ChunkError("expected LF in trailer section")),
                (State::EndLf, b'\n') => State::Done,
                (State::EndLf, _) => return Err(ChunkError("expected LF after last chunk")),
                (State::Data | State::Done, _) => unreachable!("handled above"),
            };
        }
    }
}

/// Reads one message body out of a connection's read buffer, by its framing: the one decoder
/// of both request bodies (client side) and response bodies (upstream side).
#[derive(Debug)]
pub enum BodyDecoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the connection closes (see [`BodyDecoder::is_close_delimited`]).
    Close,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::default()),
            Framing::Close => BodyDecoder::Close,
        }
    }

    /// The whole body was read.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// The body ends when the connection does (an EOF is its end, not an error).
    pub fn is_close_delimited(&self) -> bool {
        matches!(self, BodyDecoder::Close)
    }

    /// Bytes still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Done => Some(0),
            BodyDecoder::Length(n) => Some(*n),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`, or `None` when `buf` ran out first.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        let piece = match self {
            BodyDecoder::Done => return Ok(Some(Chunk::End)),
            _ if buf.is_empty() => return Ok(None),
            BodyDecoder::Length(left) => {
                let n = (buf.len() as u64).min(*left) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyDecoder::Done;
                }
                Chunk::Data(buf.split_to(n).freeze())
            }
            BodyDecoder::Chunked(d) => match d.decode(buf)? {
                None => return Ok(None),
                Some(Chunk::End) => {
                    *self = BodyDecoder::Done;
                    Chunk::End
                }
                Some(data) => data,
            },
            BodyDecoder::Close => Chunk::Data(buf.split().freeze()),
        };
        Ok(Some(piece))
    }
}

/// Appends `n` in decimal.
fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Which of the headers a writer may add itself [`put_headers`] saw.
#[derive(Default)]
struct Seen {
    content_length: bool,
    date: bool,
}

/// Appends the header lines of `headers` except the framing ones the writer sets itself
/// (`Content-Length` too unless `keep_length`). Noting what it passes spares the writer a
/// lookup by name for each header it may add.
fn put_headers(out: &mut BytesMut, headers: &HeaderMap, keep_length: bool) -> Seen {
    let mut seen = Seen::default();
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            seen.content_length = true;
            if !keep_length {
                continue;
            }
        } else if name == header::DATE {
            seen.date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    seen
}

fn put_framing(out: &mut BytesMut, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
}

/// Headers a request's writer adds after its map's (the proxy's forwarding and trace
/// headers, kept out of the map: inserting them would hash each name). Each is given as its
/// name and the parts of its value, written one after another, so a value made of pieces (a
/// client's `X-Forwarded-For`, `", "`, its address) is not put together first. The parts
/// are valid header value bytes.
pub trait ExtraHeaders {
    /// Calls `f` with each header, in the order they are written.
    fn each(&self, f: impl FnMut(&HeaderName, &[&[u8]]));
}

impl ExtraHeaders for [(&HeaderName, HeaderValue)] {
    fn each(&self, mut f: impl FnMut(&HeaderName, &[&[u8]])) {
        for (name, value) in self {
            f(name, &[value.as_bytes()]);
        }
    }
}

impl<E: ExtraHeaders + ?Sized> ExtraHeaders for Option<&E> {
    fn each(&self, f: impl FnMut(&HeaderName, &[&[u8]])) {
        if let Some(extra) = self {
            extra.each(f);
        }
    }
}

/// Appends a request head: `host` (given when `headers` holds none), `headers`, then `extra`
/// (headers the proxy adds, kept out of the map). `framing` decides
/// `Content-Length`/`Transfer-Encoding`.
pub fn put_request_head<E: ExtraHeaders + ?Sized>(
    out: &mut BytesMut,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    extra: &E,
    host: Option<&str>,
    framing: Framing,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = put_headers(out, headers, false);
    extra.each(|name, parts| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        for part in parts {
            out.extend_from_slice(part);
        }
        out.extend_from_slice(b"\r\n");
    });
    match framing {
        // A body-carrying method with an empty body says so explicitly.
        Framing::None if matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        f => put_framing(out, f),
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response body is written to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// Headers only; `Content-Length` as the handler set it (HEAD, 304) or this length.
    Bodiless(Option<u64>),
    /// A body with this framing.
    Body(Framing),
}

/// Appends a response head: `headers`, `extra` (a header the gateway adds, kept out of the
/// map), then `raw` lines. `date` is asked only when the response has no `Date` of its own
/// (an upstream's usually has: the clock is not read then).
#[allow(clippy::too_many_arguments)]
pub fn put_response_head<D: AsRef<[u8]>>(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    extra: Option<(&HeaderName, &[u8])>,
    raw: Option<&RawHeaders>,
    framing: ResponseFraming,
    close: bool,
    date: impl FnOnce() -> D,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_length = status == StatusCode::NO_CONTENT || status.is_informational();
    let seen = match framing {
        ResponseFraming::Bodiless(computed) => {
            // The handler's `Content-Length` is kept (it is the length a GET would have had);
            // without one, the body's known length is written.
            let seen = put_headers(out, headers, !no_length);
            if let (false, false, Some(n)) = (seen.content_length, no_length, computed) {
                put_framing(out, Framing::Length(n));
            }
            seen
        }
        ResponseFraming::Body(f) => {
            let seen = put_headers(out, headers, false);
            put_framing(out, f);
            seen
        }
    };
    if let Some((name, value)) = extra {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    // Raw lines hold no framing header (they were taken out when the lines were kept).
    if let Some(raw) = raw {
        out.extend_from_slice(raw.lines());
    }
    if !seen.date && !raw.is_some_and(RawHeaders::has_date) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date().as_ref());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    put_chunk_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line (the data and its CRLF follow).
pub fn put_chunk_size(out: &mut BytesMut, mut n: usize) {
    let mut size = [0u8; 16];
    let mut i = size.len();
    loop {
        i -= 1;
        size[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&size[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// A header value whose bytes count their own drop.
    fn counted(drops: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> HeaderValue {
        struct Owner(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl AsRef<[u8]> for Owner {
            fn as_ref(&self) -> &[u8] {
                b"v"
            }
        }
        impl Drop for Owner {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        HeaderValue::from_maybe_shared(Bytes::from_owner(Owner(drops.clone()))).unwrap()
    }

    #[test]
    fn a_discarded_map_or_request_drops_what_it_holds() {
        use std::sync::atomic::Ordering::SeqCst;
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut map = HeaderMap::new();
        map.insert("x-a", counted(&drops));
        discard_map(map);
        assert_eq!(drops.load(SeqCst), 1, "a map holding values is dropped");
        // A map replaced by `put_map`, full or empty.
        let mut slot = HeaderMap::new();
        let mut full = HeaderMap::new();
        full.insert("x-b", counted(&drops));
        put_map(&mut slot, full);
        assert_eq!(slot.len(), 1);
        put_map(&mut slot, HeaderMap::new());
        assert_eq!(drops.load(SeqCst), 2);
        // A request with its map, and one whose map was taken out.
        let mut req = http::Request::new(counted(&drops));
        req.headers_mut().insert("x-c", counted(&drops));
        discard_request(req, HeaderValue::from_static(""));
        assert_eq!(drops.load(SeqCst), 4, "its body and its header");
        let mut req = http::Request::new(());
        req.headers_mut().insert("x-d", counted(&drops));
        let taken = std::mem::take(req.headers_mut());
        discard_request(req, ());
        assert_eq!(drops.load(SeqCst), 4);
        drop(taken);
        assert_eq!(drops.load(SeqCst), 5);
        // A written response's head: its map kept by the thread, emptied.
        let mut resp = http::Response::new(());
        resp.headers_mut().insert("x-e", counted(&drops));
        give_back_head(resp.into_parts().0);
        assert_eq!(drops.load(SeqCst), 6);
    }

    #[test]
    fn a_kept_header_name_is_the_name_made_from_its_spelling() {
        let mut known: KnownNames = [const { None }; KNOWN_NAMES];
        for raw in [
            "X-Tenant",
            "x-tenant",
            "X-TENANT",
            "Content-Type",
            "content-type",
            "Host",
        ] {
            let name = header_name(&mut known, raw.as_bytes()).unwrap();
            assert_eq!(
                name,
                HeaderName::from_bytes(raw.as_bytes()).unwrap(),
                "{raw}"
            );
        }
        // Kept under the spelling's place, and handed out again.
        let at = name_slot(b"X-TENANT");
        assert!(
            known[at..at + 2]
                .iter()
                .flatten()
                .any(|k| k.name == "x-tenant" && k.spelling[..usize::from(k.len)] == *b"X-TENANT")
        );
        assert_eq!(header_name(&mut known, b"X-TENANT").unwrap(), "x-tenant");
        // A name equal to a kept one but for a byte that is not a letter is not that name.
        assert_eq!(header_name(&mut known, b"x_tenant").unwrap(), "x_tenant");
        assert!(header_name(&mut known, b"x tenant").is_err());
        // Long names are not kept.
        let long = "x-".repeat(KNOWN_NAME_LEN);
        header_name(&mut known, long.as_bytes()).unwrap();
        assert!(known.iter().flatten().all(|k| k.name.as_str() != long));
    }

    #[test]
    fn a_map_given_back_serves_the_next_head_empty() {
        let Parsed::Done(first) = req("GET / HTTP/1.1\r\nHost: a\r\nX-Old: 1\r\n\r\n").unwrap()
        else {
            panic!("a complete head");
        };
        let room = first.headers.capacity();
        give_back_map(first.into_inner().headers);
        let Parsed::Done(next) = req("GET / HTTP/1.1\r\nHost: b\r\n\r\n").unwrap() else {
            panic!("a complete head");
        };
        assert_eq!(next.headers.len(), 1);
        assert_eq!(next.headers["host"], "b");
        assert!(next.headers.get("x-old").is_none());
        assert!(next.headers.capacity() >= room.min(1 + ADDED_HEADERS));
        // A map grown past the limit is not kept.
        let mut big = HeaderMap::with_capacity(4 * SPARE_MAP_ROOM);
        big.insert("x", HeaderValue::from_static("1"));
        give_back_map(big);
        assert!(take_map(1).capacity() <= SPARE_MAP_ROOM.max(16));
    }

    fn req(raw: &str) -> Result<Parsed<Recycled<RequestHead>>, Reject> {
        parse_request(&mut BytesMut::from(raw))
    }

    fn done(raw: &str) -> RequestHead {
        match req(raw) {
            Ok(Parsed::Done(h)) => h.into_inner(),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn rejected(raw: &str) -> Reject {
        match req(raw) {
            Err(e) => e,
            other => panic!("{raw:?} should be rejected: {other:?}"),
        }
    }

    #[test]
    fn a_simple_request_parses_and_leaves_the_rest() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nNEXT");
        let Ok(Parsed::Done(h)) = parse_request(&mut buf) else {
            panic!()
        };
        assert_eq!(&buf[..], b"NEXT");
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/a");
        assert_eq!(h.uri.query(), Some("b=1"));
        assert_eq!(h.headers["x-a"], "1");
        assert_eq!(h.framing, Framing::None);
        assert!(!h.close);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            req("GET / HTTP/1.1\r\nHost: x\r\n"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(req("GE"), Ok(Parsed::Partial)));
    }

    #[test]
    fn framing_comes_from_length_or_chunked() {
        let h = done("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(12));
        let h = done("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.framing, Framing::None);
        let h = done("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = done("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(h.close);
    }

    #[test]
    fn smuggling_shapes_are_rejected() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        ];
        for raw in cases {
            rejected(raw);
        }
        for raw in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        ] {
            assert_eq!(rejected(raw), Reject::UnsupportedCoding, "{raw:?}");
        }
    }

    #[test]
    fn what_the_native_codec_leaves_to_hyper() {
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(matches!(req(raw), Ok(Parsed::Handoff)), "{raw:?}");
        }
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = "GET / HTTP/1.1\r\nHost: x\r\n".to_owned();
        for i in 0..MAX_HEADERS {
            raw.push_str(&format!("X-{i}: 1\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(rejected(&raw), Reject::TooLarge);
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool), ChunkError> {
        // Feed byte by byte: framing must not depend on how reads split the stream.
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(c) = d.decode(&mut buf)? {
                match c {
                    Chunk::Data(data) => out.extend_from_slice(&data),
                    Chunk::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let (out, end) =
            decode_all(b"5\r\nhello\r\n6;name=v\r\n world\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!(out, b"hello world");
        assert!(end);
        let (out, end) = decode_all(b"A \r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(out, b"0123456789");
        assert!(end);
        let (_, end) = decode_all(b"5\r\nhel").unwrap();
        assert!(!end);
    }

    #[test]
    fn the_body_decoder_stops_at_the_framing_boundary() {
        let mut buf = BytesMut::from("helloNEXT");
        let mut d = BodyDecoder::new(Framing::Length(5));
        assert_eq!(d.remaining(), Some(5));
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(Chunk::Data(Bytes::from("hello"))))
        );
        assert!(d.is_done());
        assert_eq!(d.decode(&mut buf), Ok(Some(Chunk::End)));
        assert_eq!(&buf[..], b"NEXT");
        let mut buf = BytesMut::from("3\r\nabc\r\n0\r\n\r\nNEXT");
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(Chunk::Data(Bytes::from("abc"))))
        );
        assert_eq!(d.decode(&mut buf), Ok(Some(Chunk::End)));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT");
        let mut d = BodyDecoder::new(Framing::Close);
        assert_eq!(d.decode(&mut BytesMut::new()), Ok(None));
        assert!(d.is_close_delimited());
    }

    #[test]
    fn bad_chunk_lines_are_rejected() {
        for bad in [
            &b"-5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Every header of a parsed response: its map, with the raw lines put into it.
    fn every_header(r: ResponseHead) -> HeaderMap {
        let mut all = r.headers;
        if let Some(raw) = r.raw {
            raw.into_map(&mut all);
        }
        all
    }

    fn parsed_response(head: &str, head_request: bool) -> ResponseHead {
        parse_response(&mut BytesMut::from(head), head_request)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_plainly_written_response_keeps_its_lines_raw() {
        let head = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 21:00:00 GMT\r\n\
                    Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\
                    Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
        let r = parsed_response(head, false);
        assert!(r.headers.is_empty());
        let raw = r.raw.clone().unwrap();
        // The framing lines are out; the others as written, in order.
        assert_eq!(
            raw.lines(),
            b"Server: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 21:00:00 GMT\r\n\
              Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        );
        assert!(raw.has_date());
        for name in [
            "server",
            "date",
            "content-type",
            "set-cookie",
            "content-length",
        ] {
            assert!(raw.may_have(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!raw.may_have(&HeaderName::from_static("x-request-id")));
        let common = "server date content-type content-length set-cookie cache-control etag \
            last-modified accept-ranges vary expires location x-powered-by content-encoding \
            strict-transport-security x-frame-options x-content-type-options pragma x-cache age \
            access-control-allow-origin via link content-security-policy x-xss-protection \
            content-language content-disposition referrer-policy alt-svc keep-alive";
        let id = name_bit(b"x-request-id");
        for name in common.split_whitespace() {
            assert_ne!(name_bit(name.as_bytes()), id, "{name}");
        }
        // The map built from them is the one built from the head, Content-Length included.
        let all = every_header(r);
        let pairs: Vec<_> = all
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("server", "nginx/1.22.1"),
                ("date", "Wed, 02 Dec 2026 21:00:00 GMT"),
                ("content-type", "text/plain"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("content-length", "100"),
            ]
        );
        // Written after the map's headers; the upstream's Date stands.
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("r1"));
        let mut out = BytesMut::new();
        let r = parsed_response(head, false);
        let framing = ResponseFraming::Body(r.framing);
        put_response_head(
            &mut out,
            r.status,
            &map,
            None,
            r.raw.as_ref(),
            framing,
            false,
            || b"D",
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 200 OK\r\nx-request-id: r1\r\ncontent-length: 100\r\n\
             Server: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 21:00:00 GMT\r\n\
             Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
        );
    }

    /// `token_is` agrees with `eq_ignore_ascii_case` for every token character in every
    /// place of every name the parser looks for.
    #[test]
    fn token_is_agrees_with_eq_ignore_ascii_case() {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        let names: [&[u8]; 12] = [
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"keep-alive",
            b"date",
            b"te",
            b"trailer",
            b"upgrade",
            b"proxy-connection",
            b"proxy-authenticate",
            b"proxy-authorization",
            b"x-forwarded-client-cert",
        ];
        for lit in names {
            for at in 0..lit.len() {
                for b in (0..=255u8).filter(|&b| tchar(b)) {
                    let mut name = lit.to_vec();
                    name[at] = b;
                    assert_eq!(
                        token_is(&name, lit),
                        name.eq_ignore_ascii_case(lit),
                        "{:?} against {:?}",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(lit)
                    );
                }
            }
            assert!(token_is(&lit.to_ascii_uppercase(), lit));
        }
    }

    #[test]
    fn other_responses_have_their_map_built() {
        let framed = "Content-Length: 0\r\n\r\n";
        for (head, head_request) in [
            ("HTTP/1.1 200 OK\r\nServer:s\r\n", false),
            ("HTTP/1.1 200 OK\r\nServer:  s\r\n", false),
            ("HTTP/1.1 200 OK\r\nServer: s \r\n", false),
            ("HTTP/1.1 200 OK\r\nServer:\ts\r\n", false),
            ("HTTP/1.1 200 OK\r\nServer: s\n", false),
            ("HTTP/1.1 200 OK\r\nX-Empty: \r\n", false),
            ("HTTP/1.1 200 OK\r\nServer: s\r\n", true),
            ("HTTP/1.1 204 No Content\r\nServer: s\r\n", false),
            ("HTTP/1.1 304 Not Modified\r\nServer: s\r\n", false),
            (
                "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 0\r\n",
                false,
            ),
            ("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n", false),
        ] {
            let r = parsed_response(&format!("{head}{framed}"), head_request);
            assert!(r.raw.is_none(), "{head:?}");
            assert!(!r.headers.is_empty(), "{head:?}");
        }
        let mut long = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..5 {
            long.push_str(&format!("Connection: keep-alive\r\nX-{i}: v\r\n"));
        }
        assert!(parsed_response(&format!("{long}\r\n"), false).raw.is_none());
    }

    #[test]
    fn responses_frame_by_status_method_and_headers() {
        let parse = |raw: &str, head: bool| {
            parse_response(&mut BytesMut::from(raw), head)
                .unwrap()
                .unwrap()
        };
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false);
        assert_eq!((r.framing, r.reusable), (Framing::Length(3), true));
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
        assert_eq!(r.framing, Framing::None);
        let r = parse("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(r.framing, Framing::None);
        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.reusable), (Framing::Close, false));
        let r = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert!(!r.reusable);
        // The connection's own headers are left out; a `Connection` naming another header is
        // kept for the request layer to remove both.
        let r = parse(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        let reusable = r.reusable;
        let all = every_header(r);
        let names: Vec<_> = all.keys().map(HeaderName::as_str).collect();
        assert_eq!((names, reusable), (vec!["x-a", "content-length"], true));
        let r = parse(
            "HTTP/1.1 200 OK\r\nConnection: close, x-a\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        let reusable = r.reusable;
        let all = every_header(r);
        let names: Vec<_> = all.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            (names, reusable),
            (vec!["connection", "x-a", "content-length"], false)
        );
        // HTTP/1.0 closes unless it asks to keep the connection.
        let r = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!r.reusable);
        let r = parse(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(r.reusable && !every_header(r).contains_key(header::CONNECTION));
        let r = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(r.status, StatusCode::CREATED);
        assert!(
            parse_response(
                &mut BytesMut::from(
                    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                ),
                false
            )
            .is_err()
        );
    }

    #[test]
    fn heads_serialize_with_one_framing_header() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut out = BytesMut::new();
        put_request_head(
            &mut out,
            &Method::POST,
            "/p?q",
            &h,
            &[(&header::VIA, HeaderValue::from_static("1.1 t"))][..],
            Some("up:80"),
            Framing::Length(5),
        );
        assert_eq!(
            &out[..],
            b"POST /p?q HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\nvia: 1.1 t\r\ncontent-length: 5\r\n\r\n"
        );
        let mut out = BytesMut::new();
        put_response_head(
            &mut out,
            StatusCode::OK,
            &h,
            Some((&header::VIA, &b"1.1 t"[..])),
            None,
            ResponseFraming::Body(Framing::Chunked),
            true,
            || b"D",
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\nvia: 1.1 t\r\ndate: D\r\nconnection: close\r\n\r\n"
        );
        let mut out = BytesMut::new();
        put_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
    }

    /// Decodes `wire` fed in two reads split at `at`; returns the body, whether it ended, and
    /// the bytes after its end (left in the buffer, then those not read yet).
    fn decode_split(wire: &[u8], at: usize) -> Result<(Vec<u8>, bool, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let (mut out, mut buf) = (Vec::new(), BytesMut::new());
        let parts = [&wire[..at], &wire[at..]];
        for (i, part) in parts.iter().enumerate() {
            buf.extend_from_slice(part);
            while let Some(c) = d.decode(&mut buf)? {
                match c {
                    Chunk::Data(data) => out.extend_from_slice(&data),
                    Chunk::End => {
                        let mut left = buf.to_vec();
                        parts[i + 1..]
                            .iter()
                            .for_each(|p| left.extend_from_slice(p));
                        return Ok((out, true, left));
                    }
                }
            }
        }
        Ok((out, false, buf.to_vec()))
    }

    proptest::proptest! {
        /// Whatever the chunk sizes, and wherever the reads split the stream, a chunked body
        /// decodes to what was encoded and the decoder stops exactly at its end.
        #[test]
        fn chunked_bodies_round_trip_at_every_split(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            sizes in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let mut wire = BytesMut::new();
            let (mut rest, mut i) = (&body[..], 0);
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                put_chunk(&mut wire, &rest[..n]);
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(LAST_CHUNK);
            wire.extend_from_slice(b"NEXT");
            for at in 0..=wire.len() {
                let (out, ended, left) = decode_split(&wire, at).unwrap();
                proptest::prop_assert_eq!(&out, &body, "split at {}", at);
                proptest::prop_assert!(ended);
                proptest::prop_assert_eq!(&left[..], b"NEXT");
            }
        }

        /// No input makes the parsers or decoders panic: they answer, ask for more, or refuse.
        #[test]
        fn no_input_makes_the_codec_panic(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let _ = parse_request(&mut BytesMut::from(&input[..]));
            let _ = parse_response(&mut BytesMut::from(&input[..]), false);
            let _ = parse_response(&mut BytesMut::from(&input[..]), true);
            let _ = decode_all(&input);
            let _ = decode_split(&input, input.len() / 2);
            let mut d = BodyDecoder::new(Framing::Length(input.len() as u64 / 2));
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(Chunk::Data(_))) = d.decode(&mut buf) {}
        }

        /// Raw lines or not, a response's headers are the ones it was sent with (but the
        /// connection's own), and what is written to the client parses back to them.
        #[test]
        fn raw_lines_and_the_map_agree(
            lines in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Server", "date", "X-A", "Set-Cookie", "content-type", "Keep-Alive",
                    ]),
                    proptest::sample::select(vec![": ", ":", ":  ", ": \t"]),
                    "[!-~]{1,12}",
                    proptest::sample::select(vec!["\r\n", "\n", "  \r\n"]),
                ),
                0..8,
            ),
            length in proptest::option::of((0u64..1000, 0usize..9)),
            keep_alive in proptest::option::of(0usize..9),
            plain in proptest::bool::ANY,
        ) {
            let mut written = Vec::new();
            let mut expected = Vec::new();
            for (name, sep, value, end) in &lines {
                // Half the heads are written plainly throughout (kept raw, cuts anywhere).
                let (sep, end) = if plain { (": ", "\r\n") } else { (*sep, *end) };
                written.push(format!("{name}{sep}{value}{end}"));
                if !name.eq_ignore_ascii_case("keep-alive") {
                    expected.push((name.to_ascii_lowercase(), value.clone()));
                }
            }
            // The framing lines anywhere among the others.
            if let Some((n, at)) = length {
                written.insert(at.min(written.len()), format!("Content-Length: {n}\r\n"));
                expected.push(("content-length".to_owned(), n.to_string()));
            }
            if let Some(at) = keep_alive {
                written.insert(at.min(written.len()), "Connection: keep-alive\r\n".to_owned());
            }
            let head = format!("HTTP/1.1 200 OK\r\n{}\r\n", written.concat());
            let r = parsed_response(&head, false);
            let (status, framing, raw) = (r.status, r.framing, r.raw.clone());
            let map_of = |all: &HeaderMap| {
                let mut got: Vec<_> = all
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                    .collect();
                got.sort();
                got
            };
            expected.sort();
            let all = every_header(r);
            proptest::prop_assert_eq!(&map_of(&all), &expected);
            // Written and parsed back: the same headers, but framing ones the writer set.
            let mut out = BytesMut::new();
            let mut map = all.clone();
            if raw.is_some() {
                map.clear();
            }
            let f = ResponseFraming::Body(framing);
            put_response_head(&mut out, status, &map, None, raw.as_ref(), f, false, || b"D");
            let back = parsed_response(std::str::from_utf8(&out).unwrap(), false);
            let mut back = every_header(back);
            back.remove(header::CONTENT_LENGTH);
            if !all.contains_key(header::DATE) {
                back.remove(header::DATE);
            }
            let mut sent = all;
            sent.remove(header::CONTENT_LENGTH);
            proptest::prop_assert_eq!(map_of(&back), map_of(&sent));
        }

        /// A request head is incomplete at every proper prefix and parses whole, with the
        /// same method, target and headers, once its last byte arrives.
        #[test]
        fn request_heads_parse_only_when_whole(
            path in "/[a-z0-9/._~-]{0,40}",
            names in proptest::collection::vec("x-[a-z]{1,10}", 0..6),
            value in "[ -~]{0,30}",
        ) {
            let mut raw = format!("GET {path} HTTP/1.1\r\nhost: example\r\n");
            for n in &names {
                raw.push_str(&format!("{n}: {}\r\n", value.trim()));
            }
            raw.push_str("\r\n");
            for end in 0..raw.len() {
                let r = parse_request(&mut BytesMut::from(&raw[..end]));
                proptest::prop_assert!(matches!(r, Ok(Parsed::Partial)), "prefix {}: {:?}", end, r);
            }
            let head = done(&raw);
            proptest::prop_assert_eq!(head.method, http::Method::GET);
            proptest::prop_assert_eq!(head.uri.path(), path.as_str());
            for n in &names {
                proptest::prop_assert!(head.headers.contains_key(n.as_str()));
            }
        }
    }
}
