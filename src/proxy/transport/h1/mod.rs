//! The native HTTP/1.1 path: a purpose-built codec for the client side and a pooled client for
//! HTTP/1.1 upstreams, both driven by the task that serves the connection.
//!
//! hyper stays in charge of HTTP/2 (h2c), upgrades (WebSocket), HTTP/1.0, `Expect` and unusual
//! request targets; `--http1-codec hyper` puts every connection back on hyper.

mod client;
pub(crate) mod codec;
mod rewind;
mod server;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

pub use client::{ClientSettings, IdlePool, UpstreamBody, send};
pub use server::{NativeBody, serve};

/// Reads what is available into `buf`, first making room for at least 1 KiB (in steps of
/// `step`). A read that does not fill the room tells the reactor the socket is drained, so the
/// next read waits for the kernel instead of making a syscall that would block.
fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    step: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(step);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}
