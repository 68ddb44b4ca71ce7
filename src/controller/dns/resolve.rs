//! Lookups through hickory-resolver: a [`DnsQuery`] becomes endpoints and a TTL, an empty
//! answer, or a failure of a named kind.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};

use crate::model::{DnsQuery, DnsRecordType, Endpoint};

/// How long one lookup (every attempt and the TCP fallback) may take before it counts as a
/// timeout.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// What one lookup found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Records: the endpoints they name, and the smallest TTL among them.
    Answer {
        /// The endpoints (SRV: each target address with the record's port, weight, priority).
        endpoints: Vec<Endpoint>,
        /// The records' smallest TTL.
        ttl: Duration,
    },
    /// The name exists but has no records of the type (NOERROR with no answer): the truth,
    /// not an outage.
    Empty {
        /// The negative TTL from the SOA, when the server sent one.
        ttl: Option<Duration>,
    },
    /// No usable answer: the last good one may keep serving.
    Failed(Failure),
}

/// Why a lookup gave no usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The name does not exist.
    NxDomain,
    /// The server failed (SERVFAIL).
    ServFail,
    /// No answer in time.
    Timeout,
    /// Anything else: refused, unreachable, a malformed answer, no resolver.
    Error,
}

impl Failure {
    /// The `result` label of `tidegate_dns_resolutions`, and the word in notes.
    pub fn label(self) -> &'static str {
        match self {
            Failure::NxDomain => "nxdomain",
            Failure::ServFail => "servfail",
            Failure::Timeout => "timeout",
            Failure::Error => "error",
        }
    }
}

/// Looks up a [`DnsQuery`]. A trait so that the scheduling can be tested on paused time.
pub trait Resolve: Send + Sync + 'static {
    /// One lookup.
    fn resolve<'a>(&'a self, query: &'a DnsQuery) -> BoxFuture<'a, Outcome>;
}

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(#[source] NetError);

/// The real resolver: the system's configuration (`/etc/resolv.conf`), or one server.
pub struct Hickory {
    inner: TokioResolver,
}

impl Hickory {
    /// A resolver asking `server` (UDP, with TCP when an answer is truncated or UDP fails), or
    /// the servers of the system's configuration when `None`.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolverSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(ResolverSetupError)?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        // Every refresh asks the server: the refresh bounds, not a cache, decide how often.
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 1;
        opts.try_tcp_on_error = true;
        let inner = builder.build().map_err(ResolverSetupError)?;
        Ok(Self { inner })
    }

    async fn lookup(&self, query: &DnsQuery) -> Outcome {
        let record_type = match query.record_type {
            DnsRecordType::A => RecordType::A,
            DnsRecordType::Aaaa => RecordType::AAAA,
            DnsRecordType::Srv => RecordType::SRV,
        };
        let lookup = match self.inner.lookup(query.name.as_str(), record_type).await {
            Ok(l) => l,
            Err(e) => return classify(&e),
        };
        let answers: Vec<&Record> = lookup
            .answers()
            .iter()
            .filter(|r| r.record_type() == record_type)
            .collect();
        let ttl = answers.iter().map(|r| r.ttl).min();
        let Some(ttl) = ttl else {
            return Outcome::Empty { ttl: None };
        };
        let mut endpoints = Vec::new();
        for r in &answers {
            match &r.data {
                RData::A(a) => endpoints.push(endpoint(IpAddr::V4(a.0), query.port, 1, 0)),
                RData::AAAA(a) => endpoints.push(endpoint(IpAddr::V6(a.0), query.port, 1, 0)),
                RData::SRV(srv) => {
                    // The server usually sends the targets' addresses along; else ask.
                    let mut ips: Vec<IpAddr> = lookup
                        .additionals()
                        .iter()
                        .filter(|a| a.name == srv.target)
                        .filter_map(|a| match &a.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        })
                        .collect();
                    if ips.is_empty() {
                        match self.inner.lookup_ip(srv.target.clone()).await {
                            Ok(found) => ips.extend(found.iter()),
                            Err(e) => return classify(&e),
                        }
                    }
                    // Weight 0 means "no preference" (RFC 2782): the smallest share we have.
                    let weight = u32::from(srv.weight.max(1));
                    for ip in ips {
                        endpoints.push(endpoint(ip, srv.port, weight, srv.priority));
                    }
                }
                _ => {}
            }
        }
        endpoints.sort();
        endpoints.dedup_by(|a, b| a.address == b.address);
        Outcome::Answer {
            endpoints,
            ttl: Duration::from_secs(u64::from(ttl)),
        }
    }
}

impl Resolve for Hickory {
    fn resolve<'a>(&'a self, query: &'a DnsQuery) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup(query)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed(Failure::Timeout),
            }
        })
    }
}

fn endpoint(ip: IpAddr, port: u16, weight: u32, priority: u16) -> Endpoint {
    Endpoint {
        weight,
        priority,
        ..Endpoint::new(&SocketAddr::new(ip, port).to_string())
    }
}

/// A resolver error as an outcome: NODATA is an (empty) answer, the rest are failures.
fn classify(e: &NetError) -> Outcome {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Outcome::Failed(Failure::NxDomain)
        }
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Outcome::Empty {
            ttl: nr.negative_ttl.map(|t| Duration::from_secs(u64::from(t))),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Outcome::Failed(Failure::ServFail)
        }
        NetError::Timeout => Outcome::Failed(Failure::Timeout),
        _ => Outcome::Failed(Failure::Error),
    }
}
