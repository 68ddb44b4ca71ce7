//! The upstream layer, the proxy's lowest: runtime state of backends. Endpoint sets and their
//! health, balancers, circuit breakers, connection limits, retry budgets, the weighted-split
//! counters, and the [`Router`] that links a routing table to all of it.
//!
//! State is keyed by backend identity and outlives routing tables: a reload links the new table
//! to the same entries, so health, ejections, breaker state and counters survive it. An entry is
//! updated in place only where its configuration changed. Nothing here speaks HTTP on the wire:
//! the transport layer keeps its connection pools on [`EndpointState`] through an attachment it
//! alone names.

mod backend;
pub mod balance;
mod breaker;
mod budget;
mod custom;
mod discovery;
mod endpoint;
mod health;
mod limits;
pub mod rate_limit;
mod registry;
mod router;
mod settings;
mod view;

pub use backend::{BackendState, NoEndpoint, Outcomes};
pub use breaker::{Admission, Breaker, Rejected};
pub use budget::RetryBudget;
pub use custom::{CheckFuture, Custom, HealthCheck, SelectorFactory};
pub use discovery::{Discovery, EndpointSet};
pub use endpoint::{Attachment, Clock, EndpointState, InFlight};
pub(crate) use health::{StatusFuture, TlsProbeClient, TlsProbes};
pub use limits::{Limiter, Overloaded};
pub use registry::Registry;
pub use router::Router;
pub use settings::UpstreamSettings;
pub use view::BackendView;
