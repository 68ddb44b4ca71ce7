//! Forwarding a request to a backend, as named steps:
//!
//! 1. [`prepare`]: the rule's request filters, the forwarding headers, the upstream path;
//! 2. [`payload`]: the body, kept in memory when a retry may need to send it again (read by
//!    the first step of [`attempt`]);
//! 3. [`attempt`]: admit (breaker, connection limit) → pick an endpoint → send → record the
//!    outcome (passive health, breaker), repeated while [`retry`] says so;
//! 4. [`upgrade`]: hand a switched connection to a tunnel.
//!
//! [`subrequest`] runs the same attempt steps for a request the gateway makes itself to a
//! backend (an auth service's).

mod attempt;
mod payload;
mod prepare;
pub(crate) mod retry;
mod target;
mod timer;
mod upgrade;

use http::{Request, Response};

use super::error::ProxyError;
use super::exchange::Exchange;
use super::headers;
use crate::model::UpstreamProtocol;
use crate::proxy::transport::{ClientBody, ProxyBody};
pub(crate) use attempt::{Subrequest, subrequest};
pub(crate) use prepare::request_hash;
pub(crate) use target::Target;
pub use timer::keep_timers_on_this_thread;

/// Sends `req` to the target's backend and writes the response to send the client into
/// `out`, where the attempt that received it wrote it (see [`attempt::run`]); returns it
/// there. The request is made ready in place and its headers and body are taken from it for
/// the attempts (`req` keeps its method and URI).
pub(crate) async fn forward<'o>(
    t: Target<'_>,
    req: &mut Request<ClientBody>,
    normalized: Option<String>,
    ex: &mut Exchange,
    out: &'o mut Option<Response<ProxyBody>>,
) -> Result<&'o mut Response<ProxyBody>, ProxyError> {
    let cfg = &t.router.table.backends[t.picked.backend];
    ex.backend = cfg.label.clone();
    ex.series = t.router.backends[t.picked.backend].series(&t.rule.label);
    // One lookup per request spared: a request the native server read asks for no upgrade.
    let upgrade = if req.body().read_natively() {
        None
    } else {
        headers::upgrade_protocol(req)
    };
    if upgrade.is_some() && cfg.protocol != UpstreamProtocol::Http1 {
        return Err(ProxyError::UpgradeUnsupported("the backend speaks HTTP/2"));
    }
    // Borrowed where it was returned: moved out of its `Result`, its 264 bytes were copied
    // twice.
    let (unsent_id, made) = (ex.unsent_request_id(), ex.made_id());
    let prepared = prepare::prepare(&t, req, normalized, upgrade, unsent_id, made);
    let prepared = match prepared {
        Ok(ref prepared) => prepared,
        Err(e) => return Err(e),
    };
    ex.trace_id = prepared.added.trace_id();
    let client_upgrade = prepared
        .upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut *req));
    let policy = retry::policy(
        t.rule.retry.as_deref(),
        req.method(),
        prepared.upgrade.is_some(),
    );
    // The attempts take the headers and the body; the rest stays in the request, borrowed
    // (the whole request swapped out for an empty one was a 304-byte copy, twice, and a
    // second request to drop).
    let headers = std::mem::take(req.headers_mut());
    let body = std::mem::replace(req.body_mut(), ClientBody::empty());
    // The plan borrows what it can (and the attempts borrow the plan): each value moved into
    // a step is copied, and the forwarding headers are 240 bytes.
    let mut plan = attempt::Plan {
        t: &t,
        method: req.method(),
        headers: Some(headers),
        added: &prepared.added,
        path_and_query: prepare::sent_path_and_query(prepared.path_and_query.as_ref(), req.uri()),
        hash: prepared.hash,
        native: prepared.upgrade.is_none(),
        has_host: prepared.has_host,
        policy,
    };
    // One future holds the request from here on (the payload is read inside): a request's
    // state is not kept twice across awaits.
    let upstream_upgrade = attempt::run(&mut plan, body, ex, out).await?;
    let Some(resp) = out else {
        unreachable!("attempts that succeeded wrote their answer");
    };
    upgrade::finish(t.service, resp, client_upgrade, upstream_upgrade)?;
    for m in &t.picked.backend_ref.filters().response {
        m.apply(headers::response_headers(resp));
    }
    Ok(resp)
}
