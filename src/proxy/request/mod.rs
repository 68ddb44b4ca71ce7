//! The request layer, the proxy's top: what a request means. Route lookup, filters, direct
//! answers and redirects, forwarding as named steps (prepare → payload → attempts with the
//! retry decider → upgrade), the record of each exchange (metrics, access log), and the one
//! place errors become responses, each with its [`reason`].
//!
//! It reads the layers below: the upstream layer's live state (the [`Router`], endpoints,
//! breakers, limits, rate-limit buckets) and the transport's clients, bodies, client-address
//! resolver and Redis connection. Access policies run here, as steps between the lookup and
//! the route's filters in [`handler`]: IP lists, CORS preflight, authentication and
//! authorization ([`access`]: IP lists, CORS, basic or JWT authentication; external
//! authorization to come), then [`rate_limit`].

// An upstream's response headers may be raw lines beside the response's map: reads and
// changes go through `headers::response_headers` (clippy.toml).
#![deny(clippy::disallowed_methods)]

mod access;
mod basic_auth;
mod error;
mod error_page;
mod exchange;
mod ext_auth;
mod forward;
mod handler;
pub mod headers;
mod jwt;
mod middleware;
mod path;
pub(crate) mod rate_limit;
pub mod reason;
pub mod request_id;
mod service;
mod trace;

pub use error::ProxyError;
pub use forward::keep_timers_on_this_thread;
pub use middleware::Middleware;
pub use service::{ForwardedPorts, RequestSettings, Service};
