//! The native HTTP/1.1 path: a purpose-built codec for the client side and a pooled client for
//! HTTP/1.1 upstreams, both driven by the task that serves the connection.
//!
//! hyper stays in charge of HTTP/2 (h2c), upgrades (WebSocket), HTTP/1.0, `Expect` and unusual
//! request targets; `--http1-codec hyper` puts every connection back on hyper.

mod client;
pub(crate) mod codec;
mod fill;
mod rewind;
mod server;
#[allow(unsafe_code)] // one of the crate's two unsafe modules: see the module's comment
mod value;

pub use client::{ClientSettings, Head, IdlePool, UpstreamBody, send};
pub use codec::{ExtraHeaders, RawHeaders, discard_request, make_room, put_map};
pub use rewind::Rewind;
pub use server::{ClientReader, Listener, NativeBody, NativeHead, accept, serve};
