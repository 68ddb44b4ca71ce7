//! The `tidegate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tidegate::Gateway;
use tidegate::api::Duration;
use tidegate::controller::compile::DefaultCertificate;
use tidegate::controller::file::{FileSource, Mode};
use tidegate::controller::{CompileOptions, compile};
use tidegate::model::{Cidr, L4Listener, Severity};
use tidegate::proxy::{
    ClientIpConfig, ForwardedHeader, Http1Codec, ProxyConfig, RedisConfig, UpstreamSettings,
};
use tidegate::telemetry::{AccessLogConfig, AccessLogFormat, LogFormat, init_logging};

/// Tidegate: a Kubernetes ingress controller and API gateway.
#[derive(Parser, Debug)]
#[command(name = "tidegate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Run(Box<RunArgs>),
    /// Compile a configuration and print every problem; exit 1 if any object is rejected.
    Validate(ValidateArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds(CrdsArgs),
    /// Write Ingresses (ingress-nginx annotations included) as Routes and Backends that behave
    /// the same; the report (what became of each annotation) goes to stderr.
    Migrate(MigrateArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A YAML file or a directory of YAML files (standalone mode). Without it: Kubernetes mode
    /// (in-cluster configuration, or KUBECONFIG).
    #[arg(long, env = "TIDEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address for user traffic (HTTP/1.1 and h2c).
    #[arg(long, env = "TIDEGATE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Address for HTTPS (TLS 1.2/1.3; HTTP/1.1 and HTTP/2 by ALPN), or `off`.
    #[arg(long, env = "TIDEGATE_HTTPS_ADDR", default_value = "0.0.0.0:8443", value_parser = listen_addr)]
    https_addr: ListenAddr,
    /// The port clients reach --https-addr on, when it differs (e.g. a Service's port 443 in
    /// front of the pod's 8443): HTTPS redirects point there.
    #[arg(long, env = "TIDEGATE_HTTPS_PUBLIC_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    https_public_port: Option<u16>,
    /// The certificate served to TLS clients whose server name no Route or Ingress claims:
    /// NAMESPACE/NAME of a kubernetes.io/tls Secret (standalone: a Secret document in
    /// --config), or CERT_FILE,KEY_FILE (PEM). Without it such handshakes fail with
    /// `unrecognized_name`.
    #[arg(long, env = "TIDEGATE_DEFAULT_CERTIFICATE", value_parser = default_certificate)]
    default_certificate: Option<DefaultCertificate>,
    /// Address of the admin server (/healthz, /readyz, /config).
    #[arg(long, env = "TIDEGATE_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin_addr: SocketAddr,
    /// Log line format.
    #[arg(long, env = "TIDEGATE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Access log on stdout: one line per request.
    #[arg(long, env = "TIDEGATE_ACCESS_LOG", value_enum, default_value = "json")]
    access_log: AccessLogFormat,
    /// Include the query string in the access log's path (off: queries often carry secrets).
    #[arg(long, env = "TIDEGATE_ACCESS_LOG_INCLUDE_QUERY")]
    access_log_include_query: bool,
    /// Log level filter (RUST_LOG syntax; RUST_LOG itself wins when set).
    #[arg(long, env = "TIDEGATE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Changes within this long of the last compile are gathered into one (the first change
    /// after a quiet period, and a file its writer closed, are applied at once).
    #[arg(long, env = "TIDEGATE_DEBOUNCE", default_value = "50ms")]
    debounce: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests and WebSockets may take to finish.
    #[arg(long, env = "TIDEGATE_DRAIN_TIMEOUT", default_value = "30s")]
    drain_timeout: Duration,
    /// On SIGTERM, how long to keep accepting and serving with /readyz answering 503 before the
    /// drain starts (so endpoints and load balancers stop sending first).
    #[arg(long, env = "TIDEGATE_SHUTDOWN_DELAY", default_value = "0s")]
    shutdown_delay: Duration,
    /// A client must send its whole request head within this time.
    #[arg(long, env = "TIDEGATE_HEADER_READ_TIMEOUT", default_value = "10s")]
    header_read_timeout: Duration,
    /// A client connection with no request in flight is closed after this.
    #[arg(long, env = "TIDEGATE_IDLE_TIMEOUT", default_value = "60s")]
    idle_timeout: Duration,
    /// A request body whose next bytes take longer than this to arrive is cut and the request
    /// answered 408 (0s: no limit).
    #[arg(long, env = "TIDEGATE_BODY_READ_TIMEOUT", default_value = "60s")]
    body_read_timeout: Duration,
    /// Largest request head (request line plus headers), in bytes.
    #[arg(long, env = "TIDEGATE_MAX_HEADER_BYTES", default_value_t = 65536)]
    max_header_bytes: usize,
    /// Limit of one TCP connect to an upstream.
    #[arg(long, env = "TIDEGATE_CONNECT_TIMEOUT", default_value = "5s")]
    connect_timeout: Duration,
    /// Time to an upstream's response headers when a rule sets no timeouts (0s: no limit).
    #[arg(long, env = "TIDEGATE_DEFAULT_REQUEST_TIMEOUT", default_value = "60s")]
    default_request_timeout: Duration,
    /// Idle upstream connections are closed after this.
    #[arg(long, env = "TIDEGATE_UPSTREAM_IDLE_TIMEOUT", default_value = "90s")]
    upstream_idle_timeout: Duration,
    /// Serve Routes of this ingress class (and Routes that name none).
    #[arg(long, env = "TIDEGATE_INGRESS_CLASS", default_value = tidegate::api::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// Kubernetes mode: watch only this namespace (default: every namespace).
    #[arg(long, env = "TIDEGATE_NAMESPACE")]
    namespace: Option<String>,
    /// Kubernetes mode: also serve Ingresses of this ingress class, whatever its controller,
    /// without writing their status (side by side with ingress-nginx). Repeatable.
    #[arg(
        long = "watch-ingress-class",
        env = "TIDEGATE_WATCH_INGRESS_CLASSES",
        value_delimiter = ','
    )]
    watch_ingress_class: Vec<String>,
    /// Kubernetes mode: serve Ingresses whose IngressClass has this spec.controller.
    #[arg(long, env = "TIDEGATE_CONTROLLER_NAME", default_value = tidegate::api::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// Kubernetes mode: only the holder of a Lease writes status and Events (every replica
    /// serves). `false`: this replica always writes.
    #[arg(long, env = "TIDEGATE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Kubernetes mode: the Lease's name (in POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, env = "TIDEGATE_ELECTION_ID", default_value = "tidegate-leader")]
    election_id: String,
    /// Kubernetes mode: NAMESPACE/NAME of the Service whose load balancer addresses are
    /// written to the status of our Ingresses.
    #[arg(long, env = "TIDEGATE_PUBLISH_SERVICE")]
    publish_service: Option<String>,
    /// Kubernetes mode: addresses (IPs or host names, comma-separated) written to the status of
    /// our Ingresses.
    #[arg(long, env = "TIDEGATE_PUBLISH_ADDRESS", value_delimiter = ',')]
    publish_address: Vec<String>,
    /// Runtime worker threads (default: one per available CPU). 1 runs a single-threaded runtime.
    #[arg(long, env = "TIDEGATE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// The port clients reach --http-addr on, when it differs (e.g. a Service's port 80 in front
    /// of the pod's 8080): redirects that name neither scheme nor port point there.
    #[arg(long, env = "TIDEGATE_HTTP_PUBLIC_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    http_public_port: Option<u16>,
    /// HTTP/1.1 implementation: `native` (tidegate's codec and upstream client; hyper still
    /// serves HTTP/2, upgrades, HTTP/1.0 and Expect) or `hyper` (hyper for everything).
    #[arg(
        long,
        env = "TIDEGATE_HTTP1_CODEC",
        value_enum,
        default_value = "native"
    )]
    http1_codec: Http1Codec,
    /// Proxies (comma-separated CIDRs or addresses) whose forwarding header is believed about
    /// the client's address (rate-limit keys); from any other peer the socket address is used.
    #[arg(long, env = "TIDEGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<Cidr>,
    /// How many trusted proxies deep to look for the client (1: the address the trusted peer
    /// recorded).
    #[arg(long, env = "TIDEGATE_TRUSTED_PROXY_HOPS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    trusted_proxy_hops: u32,
    /// The header trusted proxies record the client in (only that one is read).
    #[arg(
        long,
        env = "TIDEGATE_CLIENT_IP_HEADER",
        value_enum,
        default_value = "x-forwarded-for"
    )]
    client_ip_header: ForwardedHeader,
    /// The DNS server Backends with `spec.dns` ask (IP:PORT; UDP, TCP when an answer is
    /// truncated or UDP fails). Without it: the system's resolvers (/etc/resolv.conf).
    #[arg(long, env = "TIDEGATE_DNS_SERVER")]
    dns_server: Option<SocketAddr>,
    /// The L4 ports TCP and UDP Routes may use, comma-separated `[HOST:]PORT/tcp` or
    /// `[HOST:]PORT/udp` (HOST defaults to 0.0.0.0). Each is bound only while a Route names it.
    #[arg(long, env = "TIDEGATE_L4_PORTS", value_delimiter = ',')]
    l4_ports: Vec<L4Listener>,
    /// Load balancers (comma-separated CIDRs or addresses) whose connections to the HTTP, HTTPS
    /// and L4 listeners must start with a PROXY protocol header (v1 or v2, within
    /// --header-read-timeout); the client it names is the client everywhere. From any other
    /// peer no header is read.
    #[arg(long, env = "TIDEGATE_PROXY_PROTOCOL_FROM", value_delimiter = ',')]
    proxy_protocol_from: Vec<Cidr>,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Args, Debug)]
struct RedisArgs {
    /// Redis for Global rate limits: redis://[user:password@]host:port[/db], or rediss:// for
    /// TLS. Without it, a policy with a Global limit is rejected.
    #[arg(long, env = "TIDEGATE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// rediss:// only: a PEM file of CA certificates to trust instead of the system's.
    #[arg(long, env = "TIDEGATE_REDIS_CA_FILE")]
    redis_ca_file: Option<PathBuf>,
    /// Longest wait for Redis per request; past it, Global limits follow their failureMode.
    #[arg(long, env = "TIDEGATE_REDIS_TIMEOUT", default_value = "50ms")]
    redis_timeout: Duration,
}

impl RedisArgs {
    fn config(&self) -> Result<Option<RedisConfig>, String> {
        let Some(url) = self.redis_url.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if self.redis_timeout.0.is_zero() {
            return Err("--redis-timeout must be greater than zero".into());
        }
        Ok(Some(RedisConfig {
            url,
            ca_file: self.redis_ca_file.clone(),
            timeout: self.redis_timeout.0,
        }))
    }
}

#[derive(Args, Debug)]
struct ValidateArgs {
    /// A YAML file or a directory of YAML files.
    #[arg(long, env = "TIDEGATE_CONFIG")]
    config: PathBuf,
    /// Check Routes of this ingress class (and Routes that name none).
    #[arg(long, env = "TIDEGATE_INGRESS_CLASS", default_value = tidegate::api::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// Judge the files as the controller would in a cluster: also read Services, EndpointSlices,
    /// Ingresses, IngressClasses and Secrets, ignore other kinds. On by itself when the files
    /// hold any of those kinds.
    #[arg(long, env = "TIDEGATE_KUBERNETES")]
    kubernetes: bool,
    /// With --kubernetes: IngressClasses whose spec.controller is this are ours.
    #[arg(long, env = "TIDEGATE_CONTROLLER_NAME", default_value = tidegate::api::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// With --kubernetes: check Ingresses of this ingress class too (see `run`). Repeatable.
    #[arg(
        long = "watch-ingress-class",
        env = "TIDEGATE_WATCH_INGRESS_CLASSES",
        value_delimiter = ','
    )]
    watch_ingress_class: Vec<String>,
    /// Check as for a gateway with this Redis (only whether one is set matters: Global rate
    /// limits need it). Nothing is connected to.
    #[arg(long, env = "TIDEGATE_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Check as for a gateway with these L4 ports (see `run --l4-ports`).
    #[arg(long, env = "TIDEGATE_L4_PORTS", value_delimiter = ',')]
    l4_ports: Vec<L4Listener>,
}

#[derive(Args, Debug)]
struct MigrateArgs {
    /// YAML files of Ingresses (`kubectl get ingress -A -o yaml` output too); none or `-`:
    /// standard input.
    #[arg(conflicts_with = "from_cluster")]
    files: Vec<PathBuf>,
    /// Read the Ingresses from the cluster (in-cluster configuration, or KUBECONFIG), not
    /// from files.
    #[arg(long)]
    from_cluster: bool,
    /// With --from-cluster: only this namespace (default: all).
    #[arg(long, short = 'n', requires = "from_cluster")]
    namespace: Option<String>,
    /// With --from-cluster, repeatable or comma-separated: the classes migrated (an Ingress
    /// without a class counts as the default IngressClass's).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nginx",
        requires = "from_cluster"
    )]
    ingress_class: Vec<String>,
}

#[derive(Args, Debug)]
struct CrdsArgs {
    /// Leave out the CEL validation rules (x-kubernetes-validations), for Kubernetes ≤ 1.24.
    #[arg(long, env = "TIDEGATE_WITHOUT_CEL")]
    without_cel: bool,
}

/// A listen address, or `off`.
#[derive(Clone, Copy, Debug)]
struct ListenAddr(Option<SocketAddr>);

fn listen_addr(raw: &str) -> Result<ListenAddr, String> {
    if raw == "off" {
        return Ok(ListenAddr(None));
    }
    raw.parse()
        .map(|a| ListenAddr(Some(a)))
        .map_err(|e| format!("{raw:?} is not HOST:PORT or off: {e}"))
}

fn default_certificate(raw: &str) -> Result<DefaultCertificate, String> {
    if let Some((cert, key)) = raw.split_once(',') {
        if cert.is_empty() || key.is_empty() {
            return Err(format!("{raw:?} must be CERT_FILE,KEY_FILE"));
        }
        return Ok(DefaultCertificate::Files {
            cert: cert.into(),
            key: key.into(),
        });
    }
    match raw.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(DefaultCertificate::Secret {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!(
            "{raw:?} must be NAMESPACE/NAME (a Secret) or CERT_FILE,KEY_FILE"
        )),
    }
}

fn main() -> ExitCode {
    one_malloc_arena();
    // One crypto provider for the whole process: the HTTPS listener and kube's client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Validate(args) => validate(args),
        Command::Migrate(args) => migrate(args),
        Command::Crds(args) => match tidegate::api::crds_yaml(!args.without_cel) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tidegate: cannot render CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("tidegate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// glibc's malloc gives threads arenas of their own (up to eight per core) and keeps what is
/// freed in an arena for that arena alone. The compiler's work for each change is freed on
/// whichever thread ran it, so every worker thread came to hold its own high-water mark: at
/// 10,000 Routes, 72.5 MiB of RSS serving them against 58.4 MiB with one arena
/// (`bench/kube_propagation.sh`, README "Performance"). The price is contention: a change at
/// 10,000 Routes compiles ~5 ms slower. The request path allocates next to nothing, and what it
/// does is served from each thread's cache first: instructions per request are unchanged
/// (`bench/callgrind.sh`). `MALLOC_ARENA_MAX` set in the environment is left to rule.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
        // exists, so no allocation races with it.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn migrate(args: MigrateArgs) -> ExitCode {
    if args.from_cluster {
        return migrate_from_cluster(&args);
    }
    let mut inputs = Vec::new();
    let stdin = [PathBuf::from("-")];
    let files = if args.files.is_empty() {
        &stdin[..]
    } else {
        &args.files[..]
    };
    for path in files {
        let read = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        };
        match read {
            Ok(text) if path.as_os_str() == "-" => inputs.push(("<stdin>".to_owned(), text)),
            Ok(text) => inputs.push((path.display().to_string(), text)),
            Err(e) => {
                eprintln!("tidegate: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    migrated(tidegate::controller::migrate::migrate(&inputs))
}

/// Prints a migration; its exit status.
fn migrated(m: tidegate::controller::migrate::Migration) -> ExitCode {
    print!("{}", m.yaml);
    eprint!("{}", m.report);
    if m.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `migrate --from-cluster`: exit 2 when the cluster cannot be read.
#[cfg(feature = "kubernetes")]
fn migrate_from_cluster(args: &MigrateArgs) -> ExitCode {
    use tidegate::controller::migrate;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidegate: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let read = rt.block_on(migrate::from_cluster(
        args.namespace.as_deref(),
        &args.ingress_class,
    ));
    match read {
        Ok((ingresses, left_out)) => migrated(migrate::migrate_ingresses(&ingresses, &left_out)),
        Err(e) => {
            eprintln!("tidegate: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(not(feature = "kubernetes"))]
fn migrate_from_cluster(_: &MigrateArgs) -> ExitCode {
    eprintln!("tidegate: --from-cluster needs a build with the kubernetes feature");
    ExitCode::from(2)
}

fn validate(args: ValidateArgs) -> ExitCode {
    let load = |mode| {
        let mut source = FileSource::with_mode(&args.config, mode);
        source.load().map(|snap| (snap, source))
    };
    let mode = if args.kubernetes {
        Mode::Kubernetes
    } else {
        Mode::Standalone
    };
    let loaded = match load(mode) {
        Ok((_, source)) if mode == Mode::Standalone && source.saw_kubernetes_kinds() => {
            eprintln!(
                "tidegate: the files hold Kubernetes objects (Services, Ingresses, …): validating as in a cluster (--kubernetes)"
            );
            load(Mode::Kubernetes).map(|l| (l, Mode::Kubernetes))
        }
        other => other.map(|l| (l, mode)),
    };
    let ((snap, source), mode) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = CompileOptions {
        ingress_class: args.ingress_class,
        global_rate_limits: args.redis_url.is_some_and(|u| !u.is_empty()),
        controller_name: args.controller_name,
        discovery: mode == Mode::Kubernetes,
        l4_ports: args.l4_ports,
        watch_ingress_classes: args.watch_ingress_class,
        ..CompileOptions::default()
    };
    // The files the objects name (CA bundles, client certificates) are checked too.
    let mut snap = snap;
    tidegate::controller::files::fill(&opts, &mut snap);
    let table = compile(&snap, &opts).table;
    for d in &table.diagnostics {
        println!("{d}");
    }
    let mut rejected: Vec<_> = table
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    rejected.dedup_by(|a, b| a.object == b.object && a.file == b.file);
    let counts = source.counts();
    let mut kinds = vec!["Route", "Backend", "RateLimitPolicy"];
    if mode == Mode::Standalone && counts.contains_key("Secret") {
        kinds.push("Secret");
    }
    if mode == Mode::Kubernetes {
        kinds.extend([
            "Service",
            "EndpointSlice",
            "Ingress",
            "IngressClass",
            "Secret",
        ]);
    }
    let read: Vec<String> = kinds
        .iter()
        .map(|k| format!("{} {k}(s)", counts.get(k).unwrap_or(&0)))
        .collect();
    let ignored = table
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Ignored && d.object.is_none())
        .count();
    let ignored = if ignored > 0 {
        format!(", {ignored} other document(s) ignored")
    } else {
        String::new()
    };
    eprintln!(
        "{} read{ignored}; {} rule(s) compiled; {} object(s) or file(s) rejected",
        read.join(", "),
        table.rules.len(),
        rejected.len()
    );
    if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format, &args.log_level);
    let kube = match kube_options(&args) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match args.worker_threads {
        Some(0) => {
            eprintln!("tidegate: --worker-threads must be at least 1");
            return ExitCode::from(2);
        }
        Some(1) => {
            // This thread runs the one runtime from here on: it may keep timers for it.
            tidegate::proxy::keep_timers_on_this_thread();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .on_thread_start(tidegate::proxy::keep_timers_on_this_thread)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .on_thread_start(tidegate::proxy::keep_timers_on_this_thread)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let redis = match args.redis.config() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidegate: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let nonzero = |d: Duration| (!d.0.is_zero()).then_some(d.0);
        let proxy = ProxyConfig {
            header_read_timeout: args.header_read_timeout.0,
            idle_timeout: args.idle_timeout.0,
            max_header_bytes: args.max_header_bytes,
            body_read_timeout: nonzero(args.body_read_timeout),
            default_request_timeout: nonzero(args.default_request_timeout),
            upstream: UpstreamSettings {
                connect_timeout: args.connect_timeout.0,
                pool_idle_timeout: args.upstream_idle_timeout.0,
                ..UpstreamSettings::default()
            },
            http1_codec: args.http1_codec,
            http_port: args.http_public_port,
            client_ip: ClientIpConfig {
                trusted_proxies: args.trusted_proxies.clone(),
                hops: args.trusted_proxy_hops,
                header: args.client_ip_header,
            },
            redis,
            https_port: args.https_public_port,
            l4_ports: Vec::new(),
            proxy_protocol_from: args.proxy_protocol_from.clone(),
        };
        let mut builder = Gateway::builder();
        if let Some(source) = args.default_certificate.clone() {
            builder = builder.default_certificate(source);
        }
        builder = match (args.config.clone(), kube) {
            (Some(config), _) => builder.config_path(config),
            #[cfg(feature = "kubernetes")]
            (None, Some(kube)) => builder.kubernetes(kube),
            #[cfg(not(feature = "kubernetes"))]
            (None, Some(never)) => match never {},
            (None, None) => builder,
        };
        let gateway = builder
            .debounce(args.debounce.0)
            .controller_name(args.controller_name.clone())
            .watch_ingress_classes(args.watch_ingress_class.clone())
            .http_addr(args.http_addr)
            .https_addr(args.https_addr.0)
            .admin_addr(Some(args.admin_addr))
            .ingress_class(args.ingress_class)
            .dns_server(args.dns_server)
            .proxy_config(proxy)
            .l4_ports(args.l4_ports.clone())
            .access_log(AccessLogConfig {
                format: args.access_log,
                include_query: args.access_log_include_query,
            })
            .start()
            .await;
        let gateway = match gateway {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("tidegate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let admin = gateway
            .admin_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let https = gateway
            .https_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Handlers first: a SIGTERM right after the "serving" line must not kill the process.
        let Some(mut signals) = Signals::install() else {
            tracing::error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        tracing::info!(http = %gateway.http_addr(), https = %https, admin = %admin, "serving");
        let signal = signals.wait(&gateway).await;
        if signal == Stop::Term && !args.shutdown_delay.0.is_zero() {
            gateway.begin_shutdown();
            tracing::info!(delay = %args.shutdown_delay, "shutting down: not ready, still serving");
            // A second SIGTERM or SIGINT cuts the delay short.
            tokio::select! {
                () = tokio::time::sleep(args.shutdown_delay.0) => {}
                _ = signals.wait(&gateway) => {}
            }
        }
        tracing::info!(timeout = %args.drain_timeout, "draining");
        let finished = gateway.shutdown(args.drain_timeout.0).await;
        tracing::info!(finished, "stopped");
        ExitCode::SUCCESS
    })
}

/// Without the `kubernetes` feature there is no Kubernetes mode: `--config` is required.
#[cfg(not(feature = "kubernetes"))]
fn kube_options(args: &RunArgs) -> Result<Option<std::convert::Infallible>, String> {
    match args.config {
        Some(_) => Ok(None),
        None => Err(
            "this build has no Kubernetes mode (built without the `kubernetes` \
                     feature): give --config DIR"
                .into(),
        ),
    }
}

/// The Kubernetes-mode settings, when no `--config` is given.
#[cfg(feature = "kubernetes")]
fn kube_options(args: &RunArgs) -> Result<Option<tidegate::controller::kube::KubeOptions>, String> {
    use tidegate::controller::kube::{KubeOptions, leader::LeaseConfig};
    use tidegate::model::{Kind, ObjectRef};
    if args.config.is_some() {
        return Ok(None);
    }
    let publish_service = match args.publish_service.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => match raw.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Some(ObjectRef::new(Kind::Service, ns, name))
            }
            _ => return Err(format!("--publish-service {raw:?} must be NAMESPACE/NAME")),
        },
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // The downward API gives a pod its name and namespace; elsewhere host name and pid do.
    let identity = env("POD_NAME").unwrap_or_else(|| {
        let host = env("HOSTNAME")
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "tidegate".to_owned());
        format!("{host}-{}", std::process::id())
    });
    Ok(Some(KubeOptions {
        namespace: args.namespace.clone().filter(|n| !n.is_empty()),
        leader_elect: args.leader_elect,
        lease: LeaseConfig {
            namespace: env("POD_NAMESPACE").or_else(|| args.namespace.clone()),
            name: args.election_id.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(15),
            retry: std::time::Duration::from_secs(2),
        },
        publish_service,
        publish_addresses: args
            .publish_address
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        debounce: std::time::Duration::from_millis(50),
    }))
}

/// The signal that asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Term,
    Int,
}

/// The signals the process answers to.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Replaces the default action of SIGTERM, SIGINT and SIGHUP (for the rest of the process).
    fn install() -> Option<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Self {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }

    /// Returns on SIGTERM or SIGINT; reloads on SIGHUP.
    async fn wait(&mut self, gateway: &Gateway) -> Stop {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Stop::Term,
                _ = self.int.recv() => return Stop::Int,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    gateway.reload();
                }
            }
        }
    }
}
