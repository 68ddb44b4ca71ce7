//! The transport layer: bytes on the wire. Listeners and client connections, the native
//! HTTP/1.1 codec and client, hyper's clients and servers, request and response bodies,
//! upgraded tunnels, and the one error type of a failed exchange with an upstream.
//!
//! It reads the upstream layer (an endpoint to connect to, where its idle connections are
//! kept) and knows nothing of routes: requests go up to a [`Handler`].

pub mod body;
pub mod clients;
pub mod conn;
pub mod error;
pub mod h1;
pub mod listener;
pub mod tunnel;

pub use body::{ClientBody, ProxyBody, RequestBody};
pub use clients::Clients;
pub use conn::{ActivityGuard, ConnCtx, ConnLimits};
pub use error::{BoxError, ErrorKind, UpstreamError};
pub use listener::{Handler, Http1Codec, Server};
pub use tunnel::Tunnels;
