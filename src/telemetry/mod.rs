//! Logging, metrics and the access log.

pub mod access_log;
pub mod metrics;
pub mod sources;

use tracing_subscriber::EnvFilter;

pub use access_log::{AccessLog, AccessLogConfig, AccessLogFormat};
pub use metrics::Metrics;
pub use sources::SourceHealth;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter` (e.g. `info`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Metrics and access log, shared by the proxy, the controller and the admin server.
pub struct Telemetry {
    /// Every metric.
    pub metrics: Metrics,
    /// The access log (maybe off).
    pub access_log: AccessLog,
    /// Whether the configuration sources are current (`/config`'s `Synced` condition).
    pub sources: SourceHealth,
}

impl Telemetry {
    /// Metrics, and an access log writing to stdout.
    pub fn new(access_log: &AccessLogConfig) -> Self {
        Self::with_output(access_log, Box::new(std::io::stdout()))
    }

    /// Metrics, and an access log writing to `out`.
    pub fn with_output(access_log: &AccessLogConfig, out: Box<dyn std::io::Write + Send>) -> Self {
        let metrics = Metrics::new();
        let access_log = AccessLog::start(access_log, out, metrics.access_log_dropped.clone());
        let sources = SourceHealth::new(metrics.config_stale_since.clone());
        Self {
            metrics,
            access_log,
            sources,
        }
    }
}
