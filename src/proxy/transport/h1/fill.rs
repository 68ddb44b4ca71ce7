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

/// Buffers kept per thread for connections between requests: an idle keep-alive connection
/// holds none, and without these each request would allocate its read and write buffers
/// afresh (and the read buffer's shared count when the head is cut from it). All are of one
/// size, the server's [`step`](poll_fill).
const SPARE_BUFFERS: usize = crate::proxy::transport::recycle::KEPT_PER_THREAD;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of at least `size` bytes for a connection that has something to read or write: a
/// spare one if the thread has one.
pub(super) fn take_buffer(size: usize) -> BytesMut {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Keeps `buf` for [`take_buffer`] once its connection is idle: cleared, and only if it has
/// room for `size` bytes (reclaiming its whole allocation when nothing else refers to it) and
/// the thread does not keep enough already.
pub(super) fn give_back(mut buf: BytesMut, size: usize) {
    buf.clear();
    if !buf.try_reclaim(size) {
        return;
    }
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_kept_only_with_its_room_and_never_under_bytes_cut_from_it() {
        let mut buf = take_buffer(64);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(18).freeze();
        // Shared with `head` and short of 64 bytes of room: dropped, not kept.
        give_back(buf, 64);
        let mut next = take_buffer(64);
        assert!(next.capacity() >= 64);
        next.extend_from_slice(&[b'x'; 64]);
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n\r\n");
        // Unshared: kept whole, and handed out again.
        drop(head);
        give_back(next, 64);
        let again = take_buffer(64);
        assert!(again.is_empty() && again.capacity() >= 64);
    }
}
