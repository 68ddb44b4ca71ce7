//! The connection to Redis that Global rate limits count in.
//!
//! One multiplexed connection is shared by every request (calls are pipelined on it, so it is
//! a pool in itself). Each call has a short timeout. The first failure (a timeout, a broken
//! connection) marks Redis unavailable: from then on calls fail at once, without waiting,
//! while one background task reconnects with backoff (connect, authenticate, load the
//! scripts) and puts the new connection in place. So while Redis is away no request waits for
//! it, and when it is back limiting resumes by itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{Script, ScriptInvocation};
use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, watch};

use crate::telemetry::metrics::KindLabels;

/// Calls in flight beyond which a call fails at once instead of queueing.
const MAX_IN_FLIGHT: usize = 4096;
/// First and longest wait between reconnection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));
/// Longest time to connect, authenticate and load the scripts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is and how long a call may take.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// A PEM file of CA certificates to trust for `rediss://` (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Limit of one call (a rate-limit decision).
    pub timeout: Duration,
}

/// Why Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL is not a Redis URL.
    #[error("--redis-url is not a valid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The CA file cannot be read.
    #[error("--redis-ca-file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Why a call got no answer; each is a `kind` of `tidegate_redis_errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Not connected (Redis was found unavailable and is being reconnected to).
    #[error("not connected to Redis")]
    Disconnected,
    /// No answer within the timeout.
    #[error("Redis did not answer in time")]
    Timeout,
    /// The connection failed.
    #[error("the connection to Redis failed")]
    Connection,
    /// Redis answered with an error.
    #[error("Redis answered with an error")]
    Response,
    /// Too many calls in flight.
    #[error("too many Redis calls in flight")]
    Overloaded,
}

impl Unavailable {
    /// The `kind` label.
    pub fn kind(self) -> &'static str {
        match self {
            Unavailable::Disconnected => "disconnected",
            Unavailable::Timeout => "timeout",
            Unavailable::Connection => "connection",
            Unavailable::Response => "response",
            Unavailable::Overloaded => "overloaded",
        }
    }
}

/// The metrics the connection keeps.
#[derive(Clone)]
pub struct RedisMetrics {
    /// Failed or skipped calls, by kind.
    pub errors: Family<KindLabels, Counter>,
    /// Time of each call.
    pub duration: Histogram,
    /// 1 while connected.
    pub connected: Gauge,
}

struct Inner {
    client: redis::Client,
    /// The connection; `None` while Redis is unavailable.
    conn: ArcSwapOption<MultiplexedConnection>,
    reconnect: Notify,
    connected: watch::Sender<bool>,
    timeout: Duration,
    in_flight: AtomicUsize,
    scripts: Vec<Script>,
    metrics: RedisMetrics,
    /// `host:port`, for logs (the URL may hold a password).
    addr: String,
}

/// A shared connection to Redis, kept up by a background task (stopped when this is dropped).
pub struct Redis {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Redis {
    /// Checks `config` and starts connecting in the background; `scripts` are loaded on every
    /// new connection. Must run inside a tokio runtime.
    pub fn start(
        config: &RedisConfig,
        scripts: Vec<Script>,
        metrics: RedisMetrics,
    ) -> Result<Self, RedisSetupError> {
        let client = match &config.ca_file {
            None => redis::Client::open(config.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| RedisSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                redis::Client::build_with_tls(
                    config.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(RedisSetupError::Url)?;
        let addr = client.get_connection_info().addr().to_string();
        let inner = Arc::new(Inner {
            client,
            conn: ArcSwapOption::empty(),
            reconnect: Notify::new(),
            connected: watch::Sender::new(false),
            timeout: config.timeout,
            in_flight: AtomicUsize::new(0),
            scripts,
            metrics,
            addr,
        });
        let task = tokio::spawn(keep_connected(inner.clone()));
        Ok(Self { inner, task })
    }

    /// Waits until connected, for at most `within`; returns whether it is.
    pub async fn ready(&self, within: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        tokio::time::timeout(within, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs `invocation` (EVALSHA; on NOSCRIPT the script is loaded again and the call
    /// repeated), within the timeout; fails at once while Redis is unavailable.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let result = self.call(invocation).await;
        if let Err(e) = &result {
            self.inner
                .metrics
                .errors
                .get_or_create(&KindLabels { kind: e.kind() })
                .inc();
        }
        result
    }

    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let inner = &self.inner;
        let Some(shared) = inner.conn.load_full() else {
            return Err(Unavailable::Disconnected);
        };
        let _slot = InFlight::take(&inner.in_flight).ok_or(Unavailable::Overloaded)?;
        let mut conn = MultiplexedConnection::clone(&shared);
        let started = Instant::now();
        let outcome = tokio::time::timeout(inner.timeout, invocation.invoke_async(&mut conn)).await;
        inner
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Err(_) => {
                inner.mark_down(&shared, "timeout");
                Err(Unavailable::Timeout)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout() => {
                inner.mark_down(&shared, "connection failed");
                Err(Unavailable::Connection)
            }
            Ok(Err(e)) => {
                tracing::warn!(redis = %inner.addr, error = %e, "Redis answered with an error");
                Err(Unavailable::Response)
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inner {
    /// Takes `seen` out of service (unless another call already did) and wakes the task that
    /// reconnects.
    fn mark_down(&self, seen: &Arc<MultiplexedConnection>, why: &str) {
        let previous = self.conn.compare_and_swap(&Some(seen.clone()), None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, seen)) {
            tracing::warn!(redis = %self.addr, why, "Redis unavailable; Global rate limits follow their failureMode until it is back");
            self.metrics.connected.set(0);
            self.connected.send_replace(false);
            self.reconnect.notify_one();
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for script in &self.scripts {
            script.load_async(&mut conn).await?;
        }
        Ok(conn)
    }
}

/// Connects, and reconnects each time a call finds Redis unavailable.
async fn keep_connected(inner: Arc<Inner>) {
    let mut backoff = BACKOFF.0;
    let mut failures = 0u32;
    loop {
        if inner.conn.load().is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, inner.connect()).await {
                Ok(Ok(conn)) => {
                    inner.conn.store(Some(Arc::new(conn)));
                    inner.metrics.connected.set(1);
                    inner.connected.send_replace(true);
                    tracing::info!(redis = %inner.addr, "connected to Redis");
                    backoff = BACKOFF.0;
                    failures = 0;
                }
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    // Every failure is in the metrics; the log says it now and then.
                    inner
                        .metrics
                        .errors
                        .get_or_create(&KindLabels {
                            kind: Unavailable::Connection.kind(),
                        })
                        .inc();
                    if failures.is_power_of_two() || failures == 0 {
                        tracing::warn!(redis = %inner.addr, %error, attempts = failures + 1, "cannot connect to Redis; retrying");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            }
        }
        inner.reconnect.notified().await;
    }
}

/// A counted call in flight.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn take(count: &'a AtomicUsize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(count))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
