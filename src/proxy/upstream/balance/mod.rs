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
pub mod sticky;
mod weighted;

pub use hash::{hash_bytes, stable_hash};
pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use sticky::StickyIndex;
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

/// The endpoints a selector picks among, read in place (no per-pick copy).
pub trait EndpointList {
    /// How many there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The weight of endpoint `i`.
    fn weight(&self, i: usize) -> u32;
    /// Requests in flight to endpoint `i`.
    fn in_flight(&self, i: usize) -> u32;
}

impl EndpointList for Vec<Endpoint> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn weight(&self, i: usize) -> u32 {
        self[i].weight
    }
    fn in_flight(&self, _: usize) -> u32 {
        0
    }
}

/// Picks one endpoint for a request.
pub trait Selector: Send + Sync + 'static {
    /// The index in `endpoints` to use, among those for which `usable` is true; `None` when
    /// none is usable.
    fn pick(
        &self,
        endpoints: &dyn EndpointList,
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

    pub fn ctx(hash: Option<u64>) -> PickContext {
        PickContext {
            client: "127.0.0.1".parse().unwrap(),
            hash,
        }
    }

    /// How often each endpoint is picked over `rounds` picks.
    #[allow(clippy::ptr_arg)] // a Vec is what implements EndpointList
    pub fn counts(
        s: &dyn Selector,
        eps: &Vec<Endpoint>,
        rounds: usize,
        usable: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut c = vec![0; eps.len()];
        for i in 0..rounds {
            if let Some(p) = s.pick(eps, &ctx(Some(stable_hash(&i.to_le_bytes()))), usable) {
                c[p] += 1;
            }
        }
        c
    }
}
