//! The transport layer: bytes on the wire. Listeners and client connections, the native
//! HTTP/1.1 codec and client, hyper's clients and servers, request and response bodies,
//! upgraded tunnels, the one error type of a failed exchange with an upstream, the client-address
//! resolver (trusted proxies), the PROXY protocol and the Redis connection of Global rate limits.
//!
//! It reads the upstream layer (an endpoint to connect to, where its idle connections are
//! kept) and knows nothing of routes: requests go up to a [`Handler`].

pub mod body;
pub mod client_ip;
pub mod clients;
pub mod conn;
pub mod error;
pub mod h1;
pub mod idle;
pub mod l4;
pub mod listener;
pub mod proxy_protocol;
#[allow(unsafe_code)] // one of the crate's two unsafe modules: see the module's comment
pub(crate) mod recycle;
pub mod redis;
pub mod sni;
pub mod tls;
pub mod tunnel;
pub mod udp;

pub use self::redis::{Redis, RedisConfig, RedisMetrics, RedisSetupError, Unavailable};
pub use body::{ClientBody, ProxyBody, RequestBody};
pub use client_ip::{ClientIpConfig, ClientIpResolver, ForwardedHeader};
pub use clients::Clients;
pub use conn::{ActivityGuard, ClientIdentity, ConnCtx, ConnLimits};
pub use error::{BoxError, ErrorKind, UpstreamError};
pub use l4::{L4Metrics, L4Proxy};
pub use listener::{Handler, Http1Codec, Server, TlsListener};
pub use tls::TlsAcceptor;
pub use tunnel::Tunnels;
