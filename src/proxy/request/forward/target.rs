//! Where a request goes: the rule that matched and the backend it picked.

use tokio::time::Instant;

use crate::model::{PathMatcher, Picked, Rule};
use crate::proxy::request::service::Service;
use crate::proxy::transport::ConnCtx;
use crate::proxy::upstream::Router;

/// The request's destination, and what every step reads.
pub(crate) struct Target<'a> {
    pub service: &'a Service,
    pub router: &'a Router,
    pub conn: &'a ConnCtx,
    pub rule: &'a Rule,
    /// The backend, and the backendRef whose filters run (after the rule's request filters,
    /// before its response filters).
    pub picked: Picked<'a>,
    /// The path condition that matched (rewrites read its prefix or groups).
    pub matched: &'a PathMatcher,
    pub started: Instant,
}
