//! Step 2: the request body, kept in memory when a retry may have to send it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::model::Retry;
use crate::proxy::transport::{ClientBody, RequestBody};

/// A request body that may be sent more than once.
pub(super) enum Payload {
    /// Small enough to keep: replayable.
    Buffered(Bytes),
    /// Streamed through: one attempt only.
    Streamed(RequestBody),
}

impl Payload {
    /// Under a retry `policy`, the body is read into memory if it fits its `max_body_bytes`;
    /// otherwise (or without a policy) it is streamed, what was read so far first, and the
    /// request gets a single attempt.
    pub(super) async fn read(
        body: ClientBody,
        policy: Option<&Retry>,
        counter: Option<Arc<AtomicU64>>,
    ) -> Payload {
        match policy {
            Some(r) => buffer(body, r.max_body_bytes, counter).await,
            None => Payload::Streamed(RequestBody::new(body, counter)),
        }
    }

    /// Attempts this payload allows under `policy`.
    pub(super) fn attempts(&self, policy: Option<&Retry>) -> u32 {
        match (self, policy) {
            (Payload::Buffered(_), Some(r)) => r.attempts,
            _ => 1,
        }
    }

    /// The body of the next attempt (a streamed body can be taken once).
    pub(super) fn next(&mut self) -> RequestBody {
        match self {
            Payload::Buffered(b) => RequestBody::full(b.clone()),
            Payload::Streamed(_) => {
                match std::mem::replace(self, Payload::Buffered(Bytes::new())) {
                    Payload::Streamed(s) => s,
                    Payload::Buffered(_) => unreachable!("just matched Streamed"),
                }
            }
        }
    }
}

async fn buffer(mut body: ClientBody, limit: usize, counter: Option<Arc<AtomicU64>>) -> Payload {
    if body.size_hint().lower() as usize > limit {
        return Payload::Streamed(RequestBody::new(body, counter));
    }
    let mut kept = BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                if let Some(c) = &counter {
                    c.fetch_add(kept.len() as u64, Ordering::Relaxed);
                }
                return Payload::Buffered(kept.freeze());
            }
            Some(Ok(frame)) => {
                // Trailers on requests are rare; a kept body drops them.
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                    if kept.len() > limit {
                        return Payload::Streamed(RequestBody::chained(
                            kept.freeze(),
                            body,
                            counter,
                        ));
                    }
                }
            }
            // The client broke off its body: send what came, once.
            Some(Err(_)) => {
                return Payload::Streamed(RequestBody::chained(kept.freeze(), body, counter));
            }
        }
    }
}
