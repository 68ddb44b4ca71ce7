//! Settings of connections to upstreams: the gateway's defaults, overridden per backend.

use std::time::Duration;

/// Settings of the upstream clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamSettings {
    /// Limit of one TCP connect.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
        }
    }
}
