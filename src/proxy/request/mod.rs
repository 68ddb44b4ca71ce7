//! The request layer, the proxy's top: what a request means. Route lookup, filters, direct
//! answers and redirects, forwarding as named steps (prepare → payload → attempts with the
//! retry decider → upgrade), the record of each exchange (metrics, access log), and the one
//! place errors become responses, each with its [`reason`].
//!
//! It reads the layers below: the upstream layer's live state (the [`Router`], endpoints,
//! breakers, limits) and the transport's clients and bodies. Access policies (IP lists, CORS,
//! authentication, authorization, rate limits) belong here, as steps before the route's
//! filters in [`handler`].

mod error;
mod exchange;
mod forward;
mod handler;
pub mod headers;
mod middleware;
mod path;
pub mod reason;
pub mod request_id;
mod service;
mod trace;

pub use error::ProxyError;
pub use middleware::Middleware;
pub use service::{RequestSettings, Service};
