//! Endpoint selection within one backend.
//!
//! Load balancing is split as in Pingora: discovery gives the endpoint set, health decides which
//! endpoints may take new requests, and a [`Selector`] (one file per algorithm) picks among
//! those. A selector is built once per endpoint set (see [`build`]) and never on the request
//! path; availability changes (health, ejection, slow start) are asked through `usable` at pick
//! time, so they need no rebuild.

mod hash;
mod least_request;
mod maglev;
pub(crate) mod random;
mod round_robin;
mod weighted;

pub use hash::{hash_bytes, stable_hash};
pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::WeightedRoundRobin;

use std::net::IpAddr;

use crate::model::{Endpoint, LoadBalancing};

/// What a selector may look at besides the endpoints.
#[derive(Clone, Copy, Debug)]
pub struct PickContext {
    /// The client's address.
    pub client: IpAddr,
    /// The request's hash key (ConsistentHash/IPHash), already hashed.
    pub hash: Option<u64>,
}

/// The per-endpoint facts a selector may use.
pub trait EndpointView {
    /// The endpoint.
    fn endpoint(&self) -> &Endpoint;
    /// Requests in flight to it.
    fn in_flight(&self) -> u32;
}

impl EndpointView for Endpoint {
    fn endpoint(&self) -> &Endpoint {
        self
    }
    fn in_flight(&self) -> u32 {
        0
    }
}

/// Picks one endpoint for a request.
pub trait Selector: Send + Sync + 'static {
    /// The index in `endpoints` to use, among those for which `usable` is true; `None` when
    /// none is usable.
    fn pick(
        &self,
        endpoints: &[&dyn EndpointView],
        ctx: &PickContext,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// The selector for `policy` over `endpoints` (called when the endpoint set changes).
pub fn build(policy: &LoadBalancing, endpoints: &[Endpoint]) -> Box<dyn Selector> {
    match policy {
        LoadBalancing::RoundRobin => Box::new(RoundRobin::default()),
        LoadBalancing::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(endpoints)),
        LoadBalancing::LeastRequest => Box::new(LeastRequest),
        LoadBalancing::Random => Box::new(Random),
        LoadBalancing::ConsistentHash(_) | LoadBalancing::IpHash => {
            Box::new(Maglev::new(endpoints))
        }
    }
}

/// The first usable index from `start`, walking forward through `n` indexes.
pub(crate) fn first_usable(
    start: usize,
    n: usize,
    usable: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint::new(&format!("10.0.0.{}:80", i + 1)))
            .collect()
    }

    pub fn views(eps: &[Endpoint]) -> Vec<&dyn EndpointView> {
        eps.iter().map(|e| e as &dyn EndpointView).collect()
    }

    pub fn ctx(hash: Option<u64>) -> PickContext {
        PickContext {
            client: "127.0.0.1".parse().unwrap(),
            hash,
        }
    }

    /// How often each endpoint is picked over `rounds` picks.
    pub fn counts(
        s: &dyn Selector,
        eps: &[Endpoint],
        rounds: usize,
        usable: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let v = views(eps);
        let mut c = vec![0; eps.len()];
        for i in 0..rounds {
            if let Some(p) = s.pick(&v, &ctx(Some(stable_hash(&i.to_le_bytes()))), usable) {
                c[p] += 1;
            }
        }
        c
    }
}
