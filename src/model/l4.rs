//! L4 Routes: a gateway port whose connections go straight to backends, bytes copied both ways.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::ObjectRef;
use super::table::{Action, Target, WeightedBackend};

/// The PROXY protocol version written to a Backend at the start of each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// The transport of an L4 port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum L4Protocol {
    /// A TCP stream.
    Tcp,
    /// UDP datagrams.
    Udp,
    /// TLS passed through unterminated, routed by the ClientHello's server name on the HTTPS
    /// listener.
    Tls,
}

impl L4Protocol {
    /// `tcp` or `udp`, as `--l4-ports` and metric labels write it.
    pub fn as_str(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
            L4Protocol::Tls => "tls",
        }
    }
}

/// One L4 port the gateway may open (`--l4-ports`): `[HOST:]PORT/tcp` or `[HOST:]PORT/udp`.
/// It is only bound while a Route uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L4Listener {
    /// Where it binds (`0.0.0.0` when the entry names only a port).
    pub addr: SocketAddr,
    /// Its transport.
    pub protocol: L4Protocol,
}

impl fmt::Display for L4Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol.as_str())
    }
}

impl FromStr for L4Listener {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{raw:?} is not [HOST:]PORT/tcp or [HOST:]PORT/udp: {why}");
        let (at, proto) = raw.rsplit_once('/').ok_or_else(|| bad("no /tcp or /udp"))?;
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => L4Protocol::Tcp,
            "udp" => L4Protocol::Udp,
            _ => return Err(bad("the protocol must be tcp or udp")),
        };
        let addr = match at.parse::<u16>() {
            Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
            Err(_) => at
                .parse::<SocketAddr>()
                .map_err(|_| bad("not a port nor HOST:PORT with an IP address"))?,
        };
        if addr.port() == 0 {
            return Err(bad("the port must be 1-65535"));
        }
        Ok(Self { addr, protocol })
    }
}

/// A TCP (or, later, UDP) Route compiled: the port it owns and where its connections go.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Route {
    /// The Route.
    pub route: ObjectRef,
    /// `namespace/name`, for metrics and logs.
    pub label: Arc<str>,
    /// Its transport.
    pub protocol: L4Protocol,
    /// The gateway port (one of `--l4-ports`) it listens on; for TLS passthrough the HTTPS
    /// listener's (0 when not known, as in `tidegate validate`).
    pub port: u16,
    /// TLS passthrough: the server names (exact, or `*.` wildcards) it takes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The weighted backends; one is chosen per connection.
    pub backends: Vec<WeightedBackend>,
    /// One cycle of the weighted order.
    #[serde(skip)]
    pub schedule: Arc<[Target]>,
    /// A connection with no bytes either way for this long is closed.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub idle_timeout: Duration,
    /// At most this many connections at once (more are refused: accepted, then closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// When its endpoint leaves its backend (or the Route goes away), an established
    /// connection may go on for this long before it is closed.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub drain_timeout: Duration,
    /// Creation time of the Route (the oldest Route keeps a contested port).
    #[serde(skip)]
    pub created: Option<i64>,
}

impl L4Route {
    /// Default of `tcp.idleTimeout`.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Default of `tcp.drainTimeout`.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

    /// Sets `backends` and the weighted schedule that splits connections among them.
    pub fn with_backends(mut self, backends: Vec<WeightedBackend>) -> Self {
        if let Action::Forward { backends, schedule } = Action::forward(backends) {
            self.backends = backends;
            self.schedule = schedule;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4_listeners_parse_with_and_without_a_host() {
        let l: L4Listener = "6379/tcp".parse().unwrap();
        assert_eq!(l.addr, "0.0.0.0:6379".parse().unwrap());
        assert_eq!(l.protocol, L4Protocol::Tcp);
        let l: L4Listener = "127.0.0.1:5353/UDP".parse().unwrap();
        assert_eq!(l.addr, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(l.protocol, L4Protocol::Udp);
        let l: L4Listener = "[::1]:7000/tcp".parse().unwrap();
        assert_eq!(l.to_string(), "[::1]:7000/tcp");
        for bad in [
            "6379",
            "6379/sctp",
            "0/tcp",
            "host:6379/tcp",
            "70000/tcp",
            "/tcp",
        ] {
            let e = bad.parse::<L4Listener>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
