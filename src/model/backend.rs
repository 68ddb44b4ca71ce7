//! Backends as the data plane sees them: an identity, a protocol, and where the endpoints come from.

use std::sync::Arc;

use serde::Serialize;

use super::{ObjectRef, ServiceKey};

/// How the gateway talks to a backend's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 cleartext, prior knowledge.
    #[serde(rename = "H2C")]
    H2c,
}

/// One endpoint address, `host:port` (an IP literal or a name resolved when connecting).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Endpoint {
    /// `host:port`, usable as a URI authority (`[::1]:80` for IPv6).
    pub address: Arc<str>,
}

impl Endpoint {
    /// An endpoint from its `host:port` authority.
    pub fn new(address: &str) -> Self {
        Self {
            address: address.into(),
        }
    }
}

/// A compiled Backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The object it came from; runtime state (endpoints, counters) is keyed by it.
    pub id: ObjectRef,
    /// `namespace/name`, for metrics and logs.
    pub label: Arc<str>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Endpoints known at compile time (static ones); empty when `service` is set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// The Service port whose discovered endpoints this backend uses (Kubernetes mode); the
    /// proxy reads them from the [`Discovery`](super::Discovery) store, so they change without
    /// a new table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceKey>,
}
