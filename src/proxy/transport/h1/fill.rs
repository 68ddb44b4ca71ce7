//! Reading into a connection's buffer, the same way on both sides of the native path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// Reads what is available into `buf`, first making room for at least 1 KiB (in steps of
/// `step`). A read that does not fill the room tells the reactor the socket is drained, so the
/// next read waits for the kernel instead of making a syscall that would block.
pub(super) fn poll_fill<R: AsyncRead + Unpin>(
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
