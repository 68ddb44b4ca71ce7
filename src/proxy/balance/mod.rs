//! Endpoint selection within one backend.
//!
//! A [`Selector`] picks among the endpoints that may take new traffic. Its state lives in the
//! backend's runtime entry, so it survives route reloads.

mod round_robin;

pub use round_robin::RoundRobin;

use std::net::IpAddr;

use crate::model::Endpoint;

/// What a selector may look at besides the endpoints.
#[derive(Clone, Copy, Debug)]
pub struct PickContext {
    /// The client's address.
    pub client: IpAddr,
}

/// Picks one endpoint for a request.
pub trait Selector: Send + Sync + 'static {
    /// The index in `endpoints` to use, or `None` when there is none to pick.
    fn pick(&self, endpoints: &[Endpoint], ctx: &PickContext) -> Option<usize>;
}
