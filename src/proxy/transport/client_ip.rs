//! Who the client is: the socket peer, unless that peer is a trusted proxy, in which case the
//! address it recorded in `X-Forwarded-For` (or RFC 7239 `Forwarded`) — and so on, for up to
//! the configured number of trusted hops.
//!
//! One resolver for every access policy that needs the client's address (rate-limit keys, IP
//! lists); a PROXY-protocol listener feeds it the address the PROXY header carried instead of
//! the socket peer. Nothing is parsed when no trusted proxy is configured or the peer is not
//! one of them: a client that is not a trusted proxy cannot choose its address by sending
//! these headers.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, header};

use crate::model::Cidr;

/// `X-Forwarded-For`.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header trusted proxies record the client in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[default]
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1, ...`.
    #[value(name = "forwarded")]
    Forwarded,
}

/// Which peers are trusted to say who the client is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Proxies whose forwarding header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// How many trusted proxies deep to look (1: the peer's own record of its client).
    pub hops: u32,
    /// The header they write (only that one is read: a proxy that appends to one header
    /// passes the other through as the client sent it).
    pub header: ForwardedHeader,
}

/// Finds the client address of a request.
#[derive(Clone, Debug, Default)]
pub struct ClientIpResolver {
    trusted: Box<[Cidr]>,
    hops: u32,
    header: ForwardedHeader,
}

impl ClientIpResolver {
    /// A resolver for `config`.
    pub fn new(config: &ClientIpConfig) -> Self {
        Self {
            trusted: config.trusted_proxies.clone().into(),
            hops: config.hops,
            header: config.header,
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || self.hops == 0 || !self.trusted(peer) {
            return peer;
        }
        match self.header {
            ForwardedHeader::XForwardedFor => {
                let entries = headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter()
                    .rev()
                    .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
                self.walk(peer, entries.map(parse_xff_entry))
            }
            ForwardedHeader::Forwarded => {
                let entries = headers
                    .get_all(header::FORWARDED)
                    .iter()
                    .rev()
                    .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
                self.walk(peer, entries.map(parse_forwarded_element))
            }
        }
    }

    /// From the peer leftwards through the recorded addresses, while the current one is a
    /// trusted proxy and hops are left; an entry that is not an address stops the walk.
    fn walk(&self, peer: IpAddr, entries: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut client = peer;
        for (hop, entry) in entries.enumerate() {
            if hop as u32 >= self.hops || !self.trusted(client) {
                break;
            }
            match entry {
                Some(ip) => client = ip.to_canonical(),
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_xff_entry(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.60;proto=http`,
/// `for="[2001:db8::1]:4711"`); `None` for `unknown`, an obfuscated name or no `for`.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    parse_xff_entry(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(trusted: &[&str], hops: u32, header: ForwardedHeader) -> ClientIpResolver {
        ClientIpResolver::new(&ClientIpConfig {
            trusted_proxies: trusted.iter().map(|c| c.parse().unwrap()).collect(),
            hops,
            header,
        })
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_sends() {
        let r = ClientIpResolver::default();
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(r.resolve(ip("10.0.0.9"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address() {
        let r = resolver(&["10.0.0.0/8"], 2, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 10.0.0.1")]);
        assert_eq!(r.resolve(ip("203.0.113.7"), &h), ip("203.0.113.7"));
    }

    #[test]
    fn a_trusted_peer_names_the_client_one_hop_deep() {
        let r = resolver(&["10.0.0.0/8"], 1, ForwardedHeader::XForwardedFor);
        // What the client wrote itself (1.1.1.1) is left of what the proxy appended.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("198.51.100.4"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("198.51.100.4"));
    }

    #[test]
    fn more_hops_go_deeper_only_through_trusted_proxies() {
        let r = resolver(&["10.0.0.0/8"], 3, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.1.1")]);
        // peer 10.0.0.2 → 10.1.1.1 (trusted) → 198.51.100.4 (not trusted: the client).
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("198.51.100.4"));
        let r = resolver(&["10.0.0.0/8"], 1, ForwardedHeader::XForwardedFor);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn a_garbled_entry_stops_at_the_last_trusted_address() {
        let r = resolver(&["10.0.0.0/8"], 2, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, nonsense")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        let h = headers(&[]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn ports_and_brackets_are_understood() {
        let r = resolver(&["10.0.0.0/8"], 1, ForwardedHeader::XForwardedFor);
        for (entry, want) in [
            ("198.51.100.4:5000", "198.51.100.4"),
            ("[2001:db8::1]:80", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
            ("::ffff:198.51.100.4", "198.51.100.4"),
        ] {
            let h = headers(&[("x-forwarded-for", entry)]);
            assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip(want), "{entry}");
        }
    }

    #[test]
    fn forwarded_is_read_only_when_configured() {
        let h = headers(&[
            (
                "forwarded",
                "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https",
            ),
            ("x-forwarded-for", "203.0.113.1"),
        ]);
        let fwd = resolver(&["10.0.0.0/8"], 1, ForwardedHeader::Forwarded);
        assert_eq!(fwd.resolve(ip("10.0.0.2"), &h), ip("2001:db8::7"));
        let xff = resolver(&["10.0.0.0/8"], 1, ForwardedHeader::XForwardedFor);
        assert_eq!(xff.resolve(ip("10.0.0.2"), &h), ip("203.0.113.1"));
        for hidden in ["for=unknown", "for=_gateway", "proto=http"] {
            let h = headers(&[("forwarded", hidden)]);
            assert_eq!(fwd.resolve(ip("10.0.0.2"), &h), ip("10.0.0.2"), "{hidden}");
        }
        let h = headers(&[("forwarded", "For=198.51.100.9")]);
        assert_eq!(fwd.resolve(ip("10.0.0.2"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_matched_as_ipv4() {
        let r = resolver(&["127.0.0.0/8"], 1, ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "198.51.100.4")]);
        assert_eq!(r.resolve(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.4"));
    }
}
