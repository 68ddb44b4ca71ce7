//! Endpoints found at run time: the Service port they are found for, and the interface a
//! discovery source writes them through. The live store is the data plane's
//! (`proxy::upstream::Discovery`); sources and the proxy meet only here.

use std::fmt;

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

/// Where a discovery source (the Kubernetes controller's EndpointSlice index) writes the ready
/// endpoints of a Service port.
pub trait EndpointSink: Send + Sync {
    /// Sets the ready endpoints of `key`; an empty list means none.
    fn set(&self, key: &ServiceKey, ready: Vec<Endpoint>);
}
