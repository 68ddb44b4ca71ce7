//! Request/response middleware for programs that embed the gateway: a hook that sees every
//! request's head before routing (and may answer it) and every response's head before it is
//! sent. A gateway without middleware pays one branch per request.

use bytes::Bytes;
use http::{request, response};

/// Code run on every request and response of an embedded gateway (see
/// [`GatewayBuilder::middleware`](crate::GatewayBuilder::middleware)).
pub trait Middleware: Send + Sync + 'static {
    /// Sees the request head before routing, and may change it (headers, URI). Returning a
    /// response answers the request without routing it (its `reason` is `middleware`).
    fn on_request(&self, req: &mut request::Parts) -> Option<http::Response<Bytes>> {
        let _ = req;
        None
    }

    /// Sees the head of every response before it is sent, the gateway's own answers included.
    fn on_response(&self, resp: &mut response::Parts) {
        let _ = resp;
    }
}
