//! JWKS URIs: one background task per distinct URI (and settings) that the published tables
//! name, fetching through the gateway's own upstream clients into the [`JwksCell`](crate::model::jwt::JwksCell) every rule
//! naming that URI reads. Off the request path: a request only reads the cell, and a token
//! with an unknown `kid` only asks for a refetch.
//!
//! The schedule ([`follow`]):
//! - the first fetch at once; after a good one the next is due after the response's
//!   `Cache-Control: max-age` (5m without one) within `[refresh.min, refresh.max]`;
//! - a failed fetch is retried after 1s, doubling up to the cooldown; the keys already
//!   fetched keep serving until `maxStale` past their due time, then the cell is emptied
//!   (tokens get 503 `jwks_unavailable`, as before the first good fetch);
//! - an unknown `kid` brings the next fetch forward, to no earlier than `refetchCooldown`
//!   after the last one: a flood of random kids costs the issuer one fetch per cooldown.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Limited};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::RoutingTable;
use crate::model::jwt::{JwtKey, JwtKeys, Keys, RemoteJwks};
use crate::proxy::request::Service;
use crate::proxy::transport::{Clients, RequestBody};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{JwksFetchLabels, JwksLabels};

/// The refresh when the response has no `max-age` (then bounded like one).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// The largest JWKS document read.
pub const MAX_DOCUMENT: usize = 1 << 20;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry after a failed fetch (doubling up to the cooldown).
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What a fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// A 200 answer: its body and its `Cache-Control` `max-age`.
    Document {
        /// The body.
        body: Bytes,
        /// `max-age`, if the answer had one (`no-cache`/`no-store`: 0).
        max_age: Option<Duration>,
    },
    /// A failure: the `result` label and what went wrong.
    Failed(&'static str, String),
}

/// Fetches one JWKS URI.
pub type Fetch =
    Arc<dyn Fn(Arc<RemoteJwks>) -> Pin<Box<dyn Future<Output = Fetched> + Send>> + Send + Sync>;

/// A fetcher through the proxy's upstream clients (hyper's HTTP/1.1 client for `http`, the
/// TLS client of the URI's CA settings for `https`).
pub(crate) fn fetcher(service: Arc<Service>) -> Fetch {
    Arc::new(move |jwks| {
        let service = service.clone();
        Box::pin(async move {
            match tokio::time::timeout(FETCH_TIMEOUT, fetch(&service.clients, &jwks)).await {
                Ok(f) => f,
                Err(_) => Fetched::Failed("unreachable", "timed out".into()),
            }
        })
    })
}

async fn fetch(clients: &Clients, jwks: &RemoteJwks) -> Fetched {
    let uri: http::Uri = match jwks.uri.parse() {
        Ok(u) => u,
        Err(e) => return Fetched::Failed("unreachable", e.to_string()),
    };
    let Some(authority) = uri.authority() else {
        return Fetched::Failed("unreachable", "no host".into());
    };
    let req = Request::get(uri.clone())
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json, application/jwk-set+json")
        .header(header::USER_AGENT, "tidegate")
        .body(RequestBody::full(Bytes::new()));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Fetched::Failed("unreachable", e.to_string()),
    };
    let resp = match clients.send(jwks.tls.as_ref(), req).await {
        Ok(r) => r,
        Err(e) => return Fetched::Failed("unreachable", e),
    };
    if resp.status() != http::StatusCode::OK {
        return Fetched::Failed("http_error", format!("status {}", resp.status()));
    }
    let max_age = max_age(resp.headers().get(header::CACHE_CONTROL));
    match Limited::new(resp.into_body(), MAX_DOCUMENT).collect().await {
        Ok(b) => Fetched::Document {
            body: b.to_bytes(),
            max_age,
        },
        Err(e) => Fetched::Failed("unreachable", format!("reading the body: {e}")),
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache` and `no-store` are 0.
pub fn max_age(v: Option<&HeaderValue>) -> Option<Duration> {
    let v = v?.to_str().ok()?;
    let mut age = None;
    for d in v.split(',').map(str::trim) {
        let (name, value) = d.split_once('=').unwrap_or((d, ""));
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// Runs one task per distinct JWKS URI (and settings) the tables name, until `stop`. Tasks no
/// table needs any more stop; those whose settings stay keep running across reloads (a reload
/// fetches nothing).
pub async fn run(
    fetch: Fetch,
    mut tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let mut running: BTreeMap<String, CancellationToken> = BTreeMap::new();
    loop {
        let mut wanted: BTreeMap<String, Arc<RemoteJwks>> = BTreeMap::new();
        if let Some(t) = tables.borrow_and_update().as_ref() {
            for rule in &t.rules {
                if let Some(Keys::Remote(r)) = rule
                    .access
                    .as_ref()
                    .and_then(|a| a.jwt.as_ref())
                    .map(|j| &j.keys)
                {
                    wanted.entry(r.task_key()).or_insert_with(|| r.clone());
                }
            }
        }
        running.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.cancel();
            }
            keep
        });
        for (key, jwks) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = stop.child_token();
            running.insert(key, task.clone());
            tokio::spawn(follow(jwks, fetch.clone(), telemetry.clone(), task));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = tables.changed() => if changed.is_err() { return },
        }
    }
}

/// Keeps `jwks.cell` filled until `stop` (the schedule is in the module's documentation).
pub async fn follow(
    jwks: Arc<RemoteJwks>,
    fetch: Fetch,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let uri: Arc<str> = jwks.uri.as_str().into();
    let metrics = &telemetry.metrics;
    let stale = metrics
        .jwks_stale
        .get_or_create(&JwksLabels { uri: uri.clone() })
        .clone();
    // When the keys in the cell were due for a refresh (a cell shared with an earlier task:
    // now, so that a failing first fetch serves them for maxStale).
    let mut due = Instant::now();
    let mut last_attempt: Option<Instant> = None;
    let mut retry = FIRST_RETRY;
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                stale.set(0);
                return;
            }
            _ = tokio::time::sleep_until(next) => {}
            _ = jwks.cell.refetch_asked() => {
                let earliest = last_attempt.map_or(Instant::now(), |t| t + jwks.refetch_cooldown);
                next = next.min(earliest.max(Instant::now()));
                continue;
            }
        }
        let now = Instant::now();
        last_attempt = Some(now);
        let result = match fetch(jwks.clone()).await {
            Fetched::Document { body, max_age } => match parse(&jwks.uri, &body) {
                Ok(keys) => {
                    let changed = jwks.cell.keys().is_none_or(|k| k.jwks != keys.jwks);
                    if changed {
                        tracing::info!(uri = %uri, keys = keys.keys.len(), "JWKS fetched");
                        jwks.cell.set(Some(Arc::new(keys)));
                    }
                    stale.set(0);
                    let refresh = max_age
                        .unwrap_or(DEFAULT_REFRESH)
                        .clamp(jwks.min_refresh, jwks.max_refresh);
                    due = now + refresh;
                    next = due;
                    retry = FIRST_RETRY;
                    Ok(())
                }
                Err(e) => Err(("invalid", e)),
            },
            Fetched::Failed(result, e) => Err((result, e)),
        };
        let label = match result {
            Ok(()) => "ok",
            Err((label, why)) => {
                let have = jwks.cell.keys().is_some();
                if have && now >= due + jwks.max_stale {
                    tracing::warn!(uri = %uri, error = %why, "JWKS fetch failed; the keys are stale past maxStale and no longer verify tokens (503)");
                    jwks.cell.set(None);
                    stale.set(0);
                } else if have {
                    tracing::warn!(uri = %uri, error = %why, "JWKS fetch failed; the last fetched keys keep serving");
                    stale.set(i64::from(now >= due));
                } else {
                    tracing::warn!(uri = %uri, error = %why, "JWKS fetch failed; tokens of routes using it get 503 until one succeeds");
                }
                next = now + retry;
                retry = (retry * 2).min(jwks.refetch_cooldown.max(FIRST_RETRY));
                label
            }
        };
        metrics
            .jwks_fetches
            .get_or_create(&JwksFetchLabels {
                uri: uri.clone(),
                result: label,
            })
            .inc();
    }
}

/// The keys of a fetched document.
fn parse(uri: &str, body: &[u8]) -> Result<JwtKeys, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
    let keys: Vec<JwtKey> = crate::model::jwt::parse_jwks(text)?;
    Ok(JwtKeys {
        source: uri.to_owned(),
        jwks: text.to_owned(),
        keys,
    })
}

#[cfg(test)]
mod tests;
