//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer in front writes
//! at the start of a connection to say whose connection it is, and the header Tidegate writes to
//! Backends that ask for one.
//!
//! Only peers in `--proxy-protocol-from` are read; from them the header is required (a listed
//! peer that sends none is refused, not served as itself). The version is told by its signature.
//! A header is read without reading past it (the bytes after it belong to TLS or HTTP), within a
//! size bound ([`MAX_V2_PAYLOAD`]) and the caller's timeout. v1 `UNKNOWN`, v2 `LOCAL` (the load
//! balancer's own health checks) and v2 addresses of families other than IPv4/IPv6 keep the
//! socket's addresses. v2 TLVs are checked for framing and skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use crate::model::Cidr;
use crate::telemetry::metrics::ProxyProtocolLabels;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// Largest v2 payload (addresses and TLVs) accepted; the format allows 65535, load balancers
/// send well under 1 KiB.
pub const MAX_V2_PAYLOAD: usize = 4096;
/// Bytes peeked at once for the common case of a header that arrived whole.
const PEEK: usize = 512;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection from `source` to `destination`.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A connection whose addresses the header does not give (v1 `UNKNOWN`, v2 `LOCAL`, v2
    /// UNIX or unspecified families): the socket's addresses stand.
    Local,
}

/// The result of parsing the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole header of `len` bytes.
    Complete(Header, usize),
    /// Not enough bytes: at least this many are needed in all (never more than the header).
    Partial(usize),
    /// Not a valid header; the reason, for logs and metrics.
    Invalid(Invalid),
}

/// Why a header was refused (the `reason` label of `tidegate_proxy_protocol_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Neither signature.
    Missing,
    /// A v1 header that does not parse.
    BadV1,
    /// A v2 header that does not parse (version, command, family, lengths, TLVs).
    BadV2,
    /// Longer than the bound.
    TooLarge,
    /// Not read within the timeout, or the connection ended first.
    Timeout,
}

impl Invalid {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Missing => "missing",
            Invalid::BadV1 => "malformed_v1",
            Invalid::BadV2 => "malformed_v2",
            Invalid::TooLarge => "too_large",
            Invalid::Timeout => "timeout",
        }
    }
}

/// Parses the header at the start of `buf`; bytes after it are not looked at.
pub fn parse(buf: &[u8]) -> Parse {
    // The first bytes decide the version; a prefix of either signature is partial.
    let v2 = V2_SIGNATURE.len().min(buf.len());
    let v1 = V1_PREFIX.len().min(buf.len());
    if buf[..v2] == V2_SIGNATURE[..v2] {
        if buf.len() < 16 {
            return Parse::Partial(16);
        }
        return parse_v2(buf);
    }
    if buf[..v1] == V1_PREFIX[..v1] {
        if buf.len() < V1_PREFIX.len() {
            return Parse::Partial(V1_PREFIX.len());
        }
        return parse_v1(buf);
    }
    Parse::Invalid(Invalid::Missing)
}

fn parse_v1(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parse::Invalid(Invalid::TooLarge)
        } else if window.contains(&b'\n') {
            Parse::Invalid(Invalid::BadV1)
        } else {
            Parse::Partial(buf.len() + 1)
        };
    };
    let len = cr + 2;
    let bad = Parse::Invalid(Invalid::BadV1);
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..cr]) else {
        return bad;
    };
    // Single spaces between fields, as the specification writes them.
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        // The rest of an UNKNOWN line is ignored by definition.
        ["UNKNOWN", ..] => Parse::Complete(Header::Local, len),
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *family == "TCP6";
            let (Some(src), Some(dst), Some(sport), Some(dport)) = (
                v1_address(src, v6),
                v1_address(dst, v6),
                v1_port(sport),
                v1_port(dport),
            ) else {
                return bad;
            };
            Parse::Complete(
                Header::Proxied {
                    source: SocketAddr::new(src, sport),
                    destination: SocketAddr::new(dst, dport),
                },
                len,
            )
        }
        _ => bad,
    }
}

fn v1_address(raw: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        raw.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        raw.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// A decimal port: digits only (no sign), no leading zero.
fn v1_port(raw: &str) -> Option<u16> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits || (raw.len() > 1 && raw.starts_with('0')) {
        return None;
    }
    raw.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parse {
    let bad = Parse::Invalid(Invalid::BadV2);
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return bad;
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > MAX_V2_PAYLOAD {
        return Parse::Invalid(Invalid::TooLarge);
    }
    let len = 16 + payload;
    let Some(body) = buf.get(16..len) else {
        return Parse::Partial(len);
    };
    // LOCAL (the load balancer speaking for itself) and AF_UNSPEC: the specification has the
    // receiver discard the whole block, family included.
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if command == 0 || family == 0 {
        return Parse::Complete(Header::Local, len);
    }
    if family > 3 || transport > 2 {
        return bad;
    }
    let addresses = match family {
        1 => 12,
        2 => 36,
        _ => 216,
    };
    let Some(tlvs) = body.get(addresses..) else {
        return bad;
    };
    if !tlvs_well_formed(tlvs) {
        return bad;
    }
    let header = match family {
        1 => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        2 => {
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UNIX sockets carry no address a client IP can come from.
        _ => Header::Local,
    };
    Parse::Complete(header, len)
}

/// Whether `tlvs` is a sequence of whole type-length-value records.
fn tlvs_well_formed(mut tlvs: &[u8]) -> bool {
    while !tlvs.is_empty() {
        let Some(head) = tlvs.get(..3) else {
            return false;
        };
        let n = usize::from(u16::from_be_bytes([head[1], head[2]]));
        let Some(rest) = tlvs.get(3 + n..) else {
            return false;
        };
        tlvs = rest;
    }
    true
}

/// Reads the header at the start of `stream`, and not a byte more. The caller bounds the time.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, Invalid> {
    read_from(stream, Vec::new()).await
}

/// [`read`] with the first bytes of the header already in `buf`.
async fn read_from<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> Result<Header, Invalid> {
    let mut need = buf.len().max(1);
    loop {
        if buf.len() < need {
            let have = buf.len();
            buf.resize(need, 0);
            if stream.read_exact(&mut buf[have..]).await.is_err() {
                return Err(Invalid::Timeout);
            }
        }
        match parse(&buf) {
            Parse::Complete(header, _) => return Ok(header),
            Parse::Partial(n) => need = n,
            Parse::Invalid(why) => return Err(why),
        }
    }
}

/// [`read`] for a socket: a header that arrived whole (the usual case) is taken with one peek
/// and one read; otherwise it is read in the exact pieces its format announces.
pub async fn read_tcp(stream: &mut TcpStream) -> Result<Header, Invalid> {
    let mut peeked = [0u8; PEEK];
    let n = stream
        .peek(&mut peeked)
        .await
        .map_err(|_| Invalid::Timeout)?;
    if n == 0 {
        return Err(Invalid::Timeout);
    }
    match parse(&peeked[..n]) {
        Parse::Complete(header, len) => {
            let mut sink = [0u8; PEEK];
            stream
                .read_exact(&mut sink[..len])
                .await
                .map_err(|_| Invalid::Timeout)?;
            Ok(header)
        }
        Parse::Invalid(why) => Err(why),
        Parse::Partial(_) => read(stream).await,
    }
}

/// Who a connection is from, as the rest of the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client: the socket peer, or the source a PROXY header gave.
    pub client: SocketAddr,
    /// The address the client connected to, when a PROXY header gave it (else the socket's
    /// local address, asked for only when needed).
    pub destination: Option<SocketAddr>,
}

impl Origin {
    /// A connection taken as it is.
    pub fn direct(peer: SocketAddr) -> Self {
        Self {
            client: peer,
            destination: None,
        }
    }
}

/// The PROXY protocol side of the listeners: which peers must start with a header, and how
/// long they have to send it.
#[derive(Clone, Default)]
pub struct ProxyProtocolFrom {
    from: Arc<[Cidr]>,
    timeout: Duration,
    rejected: Family<ProxyProtocolLabels, Counter>,
}

impl ProxyProtocolFrom {
    /// Headers required from peers in `from`, within `timeout`; refusals counted in `rejected`.
    pub fn new(
        from: Vec<Cidr>,
        timeout: Duration,
        rejected: Family<ProxyProtocolLabels, Counter>,
    ) -> Self {
        Self {
            from: from.into(),
            timeout,
            rejected,
        }
    }

    /// Who a new connection from `peer` on `listener` (`http`, `https`, `l4`) is from; `None`
    /// when a listed peer sent no valid header in time (counted and logged; the caller closes
    /// the connection). Other peers are taken as they are, whatever they send.
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        listener: &'static str,
    ) -> Option<Origin> {
        if !self.expects_header(peer) {
            return Some(Origin::direct(peer));
        }
        // Boxed: reading the header needs ~1.4 KiB of state, which every connection's task
        // would otherwise carry for its whole life.
        Box::pin(self.read_header(stream, peer, listener)).await
    }

    /// Whether `peer` must start with a PROXY protocol header.
    pub fn expects_header(&self, peer: SocketAddr) -> bool {
        !self.from.is_empty()
            && self
                .from
                .iter()
                .any(|c| c.contains(peer.ip().to_canonical()))
    }

    async fn read_header(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        listener: &'static str,
    ) -> Option<Origin> {
        let read = tokio::time::timeout(self.timeout, read_tcp(stream)).await;
        match read.unwrap_or(Err(Invalid::Timeout)) {
            Ok(Header::Proxied {
                source,
                destination,
            }) => Some(Origin {
                client: source,
                destination: Some(destination),
            }),
            Ok(Header::Local) => Some(Origin::direct(peer)),
            Err(why) => {
                tracing::info!(%peer, listener, reason = why.as_str(), "connection refused: no valid PROXY protocol header");
                self.rejected
                    .get_or_create(&ProxyProtocolLabels {
                        listener,
                        reason: why.as_str(),
                    })
                    .inc();
                None
            }
        }
    }
}

/// The transport a v2 header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Stream,
    /// UDP.
    Datagram,
}

/// Both addresses in one family: IPv4 when both are (or map to) IPv4, else both as IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canon(source), canon(destination));
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(s), v6(d))
}

/// A v1 header for a TCP connection from `source` to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header (no TLVs) for a connection or datagram flow from `source` to
/// `destination`.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, transport: Transport) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let transport = match transport {
        Transport::Stream => 1,
        Transport::Datagram => 2,
    };
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x10 | transport);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.push(0x20 | transport);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(si).octets());
            out.extend_from_slice(&v6(di).octets());
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> Header {
        Header::Proxied {
            source: sa(src),
            destination: sa(dst),
        }
    }

    /// A v2 header with `cmd`, `fam` and `payload`.
    fn v2(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 198.51.100.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Parse::Complete(proxied("198.51.100.7:56324", "10.0.0.1:443"), 44)
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n";
        assert_eq!(
            parse(h),
            Parse::Complete(proxied("[2001:db8::7]:1", "[2001:db8::1]:65535"), h.len())
        );
    }

    #[test]
    fn v1_unknown_keeps_the_socket_addresses() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parse::Complete(Header::Local, 15)
        );
        let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(h), Parse::Complete(Header::Local, h.len()));
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 198.51.100.7 10.0.0.1 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 198.51.100.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 +80 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 080 443\r\n",
            b"PROXY TCP4  198.51.100.7 10.0.0.1 80 443\r\n",
            b"PROXY UDP4 198.51.100.7 10.0.0.1 80 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 80 443\n",
            b"PROXY \xff\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parse::Invalid(Invalid::BadV1),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v1_truncated_and_oversized() {
        let whole = b"PROXY TCP4 198.51.100.7 10.0.0.1 56324 443\r\n";
        for cut in 0..whole.len() {
            assert!(
                matches!(parse(&whole[..cut]), Parse::Partial(n) if n > cut && n <= whole.len()),
                "cut at {cut}: {:?}",
                parse(&whole[..cut])
            );
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_MAX, b'1');
        assert_eq!(parse(&long), Parse::Invalid(Invalid::TooLarge));
    }

    #[test]
    fn v2_ipv4_with_tlvs() {
        let mut p = vec![198, 51, 100, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
        // An ALPN TLV and a NOOP TLV: skipped.
        p.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]);
        let mut h = v2(1, 0x11, &p);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01"); // TLS after it: not read
        assert_eq!(
            parse(&h),
            Parse::Complete(proxied("198.51.100.7:56324", "10.0.0.1:443"), len)
        );
    }

    #[test]
    fn v2_ipv6_unix_and_local() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut p = src.octets().to_vec();
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0, 80, 1, 187]);
        let h = v2(1, 0x21, &p);
        assert_eq!(
            parse(&h),
            Parse::Complete(proxied("[2001:db8::7]:80", "[2001:db8::1]:443"), 52)
        );
        // UNIX sockets: no client IP; the socket's address stands.
        let h = v2(1, 0x31, &[b'/'; 216]);
        assert_eq!(parse(&h), Parse::Complete(Header::Local, 232));
        // LOCAL (the load balancer's health check), with or without an address block.
        assert_eq!(parse(&v2(0, 0x00, &[])), Parse::Complete(Header::Local, 16));
        let h = v2(0, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        assert_eq!(parse(&h), Parse::Complete(Header::Local, 28));
        // LOCAL's block is discarded unread, whatever it holds.
        let h = v2(0, 0x4f, &[0xff, 0xff, 0xff]);
        assert_eq!(parse(&h), Parse::Complete(Header::Local, 19));
        // AF_UNSPEC with PROXY: no addresses; its block is discarded too.
        assert_eq!(parse(&v2(1, 0x00, &[])), Parse::Complete(Header::Local, 16));
        assert_eq!(
            parse(&v2(1, 0x00, &[9, 9])),
            Parse::Complete(Header::Local, 18)
        );
    }

    #[test]
    fn v2_malformed_truncated_and_oversized() {
        let ok = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for cut in 0..ok.len() {
            assert!(
                matches!(parse(&ok[..cut]), Parse::Partial(n) if n > cut && n <= ok.len()),
                "cut at {cut}"
            );
        }
        let mut version1 = ok.clone();
        version1[12] = 0x11;
        let mut command2 = ok.clone();
        command2[12] = 0x22;
        let mut family4 = ok.clone();
        family4[13] = 0x41;
        let mut transport3 = ok.clone();
        transport3[13] = 0x13;
        for bad in [
            version1,
            command2,
            family4,
            transport3,
            // An IPv4 block too short for its addresses.
            v2(1, 0x11, &[1, 2, 3, 4]),
            // A TLV longer than what is left.
            v2(
                1,
                0x11,
                &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01, 0x00, 0x09, b'x'],
            ),
            // Half a TLV header.
            v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01]),
        ] {
            assert_eq!(parse(&bad), Parse::Invalid(Invalid::BadV2), "{bad:?}");
        }
        let mut huge = ok[..14].to_vec();
        huge.extend_from_slice(&((MAX_V2_PAYLOAD + 1) as u16).to_be_bytes());
        assert_eq!(parse(&huge), Parse::Invalid(Invalid::TooLarge));
    }

    #[test]
    fn garbage_and_other_protocols_are_missing_headers() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"\r\n\r\n\0\r\nQUIZ\n\x21\x11\0\0",
            b"proxy TCP4",
            b"\0",
        ] {
            assert_eq!(parse(bad), Parse::Invalid(Invalid::Missing), "{bad:?}");
        }
    }

    #[test]
    fn encoded_headers_parse_back() {
        let (c4, g4) = (sa("198.51.100.7:56324"), sa("10.0.0.1:443"));
        let (c6, g6) = (sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2"));
        assert_eq!(
            encode_v1(c4, g4),
            b"PROXY TCP4 198.51.100.7 10.0.0.1 56324 443\r\n"
        );
        for (s, d) in [(c4, g4), (c6, g6)] {
            let h = encode_v1(s, d);
            assert_eq!(parse(&h), Parse::Complete(proxied_sa(s, d), h.len()));
            let h = encode_v2(s, d, Transport::Stream);
            assert_eq!(parse(&h), Parse::Complete(proxied_sa(s, d), h.len()));
            assert_eq!(h[13] & 0x0f, 1);
        }
        // Mixed families are written as IPv6 (IPv4-mapped); mapped IPv4 pairs as IPv4.
        let h = encode_v1(c4, g6);
        assert!(h.starts_with(b"PROXY TCP6 ::ffff:198.51.100.7 2001:db8::1 "));
        let mapped = sa("[::ffff:10.0.0.1]:443");
        assert!(encode_v1(c4, mapped).starts_with(b"PROXY TCP4 198.51.100.7 10.0.0.1 "));
        // The datagram flavour UDP Routes use.
        let h = encode_v2(c4, g4, Transport::Datagram);
        assert_eq!(h[13], 0x12);
        assert_eq!(parse(&h), Parse::Complete(proxied_sa(c4, g4), 28));
    }

    fn proxied_sa(source: SocketAddr, destination: SocketAddr) -> Header {
        Header::Proxied {
            source,
            destination,
        }
    }

    #[tokio::test]
    async fn read_takes_the_header_and_not_a_byte_more() {
        let mut h = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        h.extend_from_slice(b"after");
        let (mut w, mut r) = tokio::io::duplex(64);
        // Written in small pieces: the reader waits for each.
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in h.chunks(5) {
                w.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            w
        });
        let header = read(&mut r).await.unwrap();
        assert_eq!(header, proxied("1.2.3.4:1", "5.6.7.8:2"));
        let _w = writer.await.unwrap();
        let mut rest = [0u8; 5];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"after");

        let (mut w, mut r) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut w, b"PROXY UNKNOWN\r\nX")
            .await
            .unwrap();
        assert_eq!(read(&mut r).await, Ok(Header::Local));
        let mut rest = [0u8; 1];
        r.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"X");
        // A peer that closes in the middle.
        let (mut w, mut r) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut w, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        drop(w);
        assert_eq!(read(&mut r).await, Err(Invalid::Timeout));
    }

    #[tokio::test]
    async fn read_tcp_in_one_piece_and_in_many() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for pieces in [1, 7] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut h = encode_v1(sa("198.51.100.7:5"), sa("10.0.0.1:6"));
            h.extend_from_slice(b"rest");
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let size = h.len().div_ceil(pieces);
                for chunk in h.chunks(size) {
                    c.write_all(chunk).await.unwrap();
                    c.flush().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                c
            });
            let header = read_tcp(&mut s).await.unwrap();
            assert_eq!(header, proxied("198.51.100.7:5", "10.0.0.1:6"));
            let _c = writer.await.unwrap();
            let mut rest = [0u8; 4];
            s.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"rest", "{pieces} pieces");
        }
    }
}
