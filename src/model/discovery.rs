//! Endpoints found at run time: what they are found for (a Service port, a DNS query), and the
//! interface a discovery source writes them through. The live store is the data plane's
//! (`proxy::upstream::Discovery`); sources and the proxy meet only here.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::Endpoint;

/// One port of one Service: the unit endpoints are discovered for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port's name (`""` for a Service's single unnamed port). EndpointSlices name
    /// their ports after the Service's, which is how an endpoint port is found.
    pub port: String,
}

impl ServiceKey {
    /// A key from its parts.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        port: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// The DNS record types a Backend can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum DnsRecordType {
    /// IPv4 addresses, with the Backend's port.
    A,
    /// IPv6 addresses, with the Backend's port.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Targets with their own port, priority and weight.
    #[serde(rename = "SRV")]
    Srv,
}

impl DnsRecordType {
    /// The record type as DNS spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Srv => "SRV",
        }
    }
}

/// One DNS lookup a Backend's endpoints follow, and how it is repeated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsQuery {
    /// The name looked up.
    pub name: String,
    /// The record type.
    #[serde(rename = "type")]
    pub record_type: DnsRecordType,
    /// The endpoints' port (A and AAAA; 0 for SRV, whose records carry it).
    #[serde(skip_serializing_if = "is_zero")]
    pub port: u16,
    /// The shortest time between lookups (a shorter TTL is raised to it).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub refresh_min: Duration,
    /// The longest time between lookups (a longer TTL is cut to it).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub refresh_max: Duration,
    /// How long the last good answer keeps serving while lookups fail.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub max_stale: Duration,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl DnsQuery {
    /// When to look up again after an answer with this TTL: the TTL within
    /// [`refresh_min`, `refresh_max`].
    pub fn next_refresh(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.refresh_min, self.refresh_max.max(self.refresh_min))
    }
}

impl fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.record_type.as_str(), self.name)?;
        if self.port != 0 {
            write!(f, " port {}", self.port)?;
        }
        Ok(())
    }
}

/// What a set of discovered endpoints is found for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DiscoveryKey {
    /// A Service port's EndpointSlices (Kubernetes mode).
    Service(ServiceKey),
    /// A DNS lookup (any mode).
    Dns(DnsQuery),
}

impl fmt::Display for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryKey::Service(k) => write!(f, "Service {k}"),
            DiscoveryKey::Dns(q) => write!(f, "DNS {q}"),
        }
    }
}

impl From<ServiceKey> for DiscoveryKey {
    fn from(k: ServiceKey) -> Self {
        DiscoveryKey::Service(k)
    }
}

/// Where a discovery source (the Kubernetes controller's EndpointSlice index, the DNS resolver)
/// writes the ready endpoints it finds.
pub trait EndpointSink: Send + Sync {
    /// Sets the ready endpoints of `key`; an empty list means none.
    fn set(&self, key: &DiscoveryKey, ready: Vec<Endpoint>);

    /// Says how current the endpoints of `key` are (shown on `/backends`; `None`: current, or
    /// nothing to say).
    fn note(&self, key: &DiscoveryKey, note: Option<String>) {
        let _ = (key, note);
    }
}
