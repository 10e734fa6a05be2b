//! `goheap agent`: the node daemon.
//!
//! Every `--interval` the [`collector::Collector`] scans `/proc`, tracks each Go process (keyed by pid
//! and start time), reads its memory-profile buckets incrementally ([`tracker::IncrementalReader`]),
//! turns per-bucket counter deltas into Prometheus counters ([`metrics`]) and optionally delta pprof
//! files ([`output`]). A small HTTP server ([`http`]) serves `/metrics`, `/processes`, `/targets`,
//! `/healthz` and `/debug/pprof/{heap,allocs}` on the same listener, every per-process output under
//! one label set ([`labels`]); profiles are built on blocking threads so the
//! cycle loop never waits for them.

pub mod collector;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod output;
pub mod pool;
pub mod profiles;
pub mod push;
pub mod tracker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the agent treats processes whose heap profiling is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfilerMode {
    /// Do not read Go processes at all (metrics and profiles empty).
    Disabled,
    /// Read processes passively; never write to them (default).
    Enabled,
    /// Like enabled, and write 524288 into runtime.MemProfileRate when it is 0, at an address proven by a symbol table.
    Force,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of `goheap agent`; each is also settable by environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Address to serve /metrics, /healthz, /processes, /targets and /debug/pprof/ on, written as
    /// Go programs take it: HOST:PORT with an IP, [IPv6] or a host name (resolved; its first IPv4
    /// address, else its first), or :PORT for every address.
    #[arg(long, env = "GOHEAP_LISTEN", default_value = "0.0.0.0:9465", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Time between collection cycles, 100ms to 24h (e.g. 30s, 2s, 1m; a bare number is seconds).
    #[arg(long, env = "GOHEAP_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// disabled | enabled | force (force writes runtime.MemProfileRate when the target has it at 0).
    #[arg(
        long = "go-heap-profiler",
        env = "GO_HEAP_PROFILER",
        value_enum,
        default_value = "enabled"
    )]
    pub mode: ProfilerMode,
    /// Write one delta pprof per process per cycle into this directory.
    #[arg(long, env = "GOHEAP_OUTPUT_DIR")]
    pub output_dir: Option<PathBuf>,
    /// Oldest files in --output-dir are deleted to keep it under this many bytes.
    #[arg(long, env = "GOHEAP_OUTPUT_RETAIN_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub output_retain_bytes: u64,
    /// Time one process's bucket walk may take per cycle; a longer list is read over several cycles
    /// (e.g. 500ms, 0 to read at least one bucket a cycle).
    #[arg(long, env = "GOHEAP_READ_BUDGET", default_value = "500ms", value_parser = parse_budget)]
    pub read_budget: Duration,
    /// Also export container_go_goroutines{state} and the container_go_gc_* series: each cycle
    /// reads every goroutine header and the GC globals of each process (about 4 more read
    /// syscalls per process per cycle, and the binary's pclntab is mapped).
    #[arg(long, env = "GOHEAP_GOROUTINE_METRICS")]
    pub goroutine_metrics: bool,
    /// Byte budget of the symbol tables kept for profile requests (least recently used out; a
    /// binary's table is loaded when one of its profiles is first requested, e.g. 64MiB, 0 = none).
    #[arg(long, env = "GOHEAP_SYMBOL_CACHE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub symbol_cache_bytes: u64,
    /// Node name reported in /processes and as the `node` label (set from the downward API in Kubernetes).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// host:port that /targets gives scrapers for this agent (in Kubernetes the pod IP and port);
    /// default: the Host header of the /targets request, else the listen address.
    #[arg(long, env = "GOHEAP_ADVERTISE_ADDRESS", value_parser = parse_advertise)]
    pub advertise_address: Option<String>,
    /// The kubelet's log root, read (directory listings only) for pod, namespace and container
    /// names: its containers/ and pods/ entries; missing directories mean no names ("" = off).
    #[arg(long, env = "GOHEAP_KUBELET_LOG_DIR", default_value = "/var/log")]
    pub kubelet_log_dir: PathBuf,
    /// Log format.
    #[arg(long, env = "GOHEAP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Push every interval's profiles to a sink: pyroscope+http://HOST:4040[/PREFIX] (Pyroscope
    /// /ingest), pyroscope+connect+http://HOST:4040[/PREFIX] (Pyroscope's Connect
    /// push.v1.PusherService/Push), otlp+http://HOST:4318[/PREFIX] (OTLP profiles, HTTP/protobuf)
    /// or otlp+grpc://HOST:4317 (OTLP over gRPC); over TLS as pyroscope+https://,
    /// pyroscope+connect+https://, otlp+https:// and otlp+grpcs:// (certificate and host name
    /// always verified against the system's CAs or --push-ca-file). Repeatable; each sink has its
    /// own queue and thread. Credentials never go in the URL (see --push-*-file).
    #[arg(long = "push", value_name = "URL", value_parser = push::parse_sink)]
    pub push: Vec<push::SinkSpec>,
    /// Most process profiles one sink's queue holds; beyond it the oldest is dropped and counted.
    #[arg(long, env = "GOHEAP_PUSH_QUEUE_ITEMS", default_value_t = 256)]
    pub push_queue_items: usize,
    /// Most bytes (encoded profiles) one sink's queue holds, e.g. 64MiB; oldest dropped beyond.
    #[arg(long, env = "GOHEAP_PUSH_QUEUE_BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub push_queue_bytes: u64,
    /// Time one push request may take (connect, send, answer), e.g. 10s.
    #[arg(long, env = "GOHEAP_PUSH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub push_timeout: Duration,
    /// Attempts per profile on network errors, timeouts, 5xx, 408 and 429 (exponential backoff
    /// with full jitter from 500ms, capped at 30s); other 4xx are not retried.
    #[arg(long, env = "GOHEAP_PUSH_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub push_max_attempts: u32,
    /// File holding `user:password` for HTTP basic auth to every sink (or GOHEAP_PUSH_BASIC_AUTH).
    #[arg(long, env = "GOHEAP_PUSH_BASIC_AUTH_FILE")]
    pub push_basic_auth_file: Option<PathBuf>,
    /// File holding a bearer token for every sink (or GOHEAP_PUSH_BEARER_TOKEN).
    #[arg(long, env = "GOHEAP_PUSH_BEARER_TOKEN_FILE")]
    pub push_bearer_token_file: Option<PathBuf>,
    /// File holding the tenant sent as X-Scope-OrgID (or GOHEAP_PUSH_TENANT).
    #[arg(long, env = "GOHEAP_PUSH_TENANT_FILE")]
    pub push_tenant_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted by the TLS push sinks, instead of the system's
    /// bundle (e.g. a private CA mounted from a Secret).
    #[arg(long, env = "GOHEAP_PUSH_CA_FILE")]
    pub push_ca_file: Option<PathBuf>,
}

/// Parses `--advertise-address`: `host:port` (a DNS name, IPv4 or `[IPv6]`), at most 255 bytes.
pub fn parse_advertise(s: &str) -> Result<String, String> {
    let s = s.trim();
    if http::valid_host_port(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid advertise address {s:?}: expected host:port (e.g. 10.1.2.3:9465)"
        ))
    }
}

/// Parses a walk budget: a duration from 0 to 60s.
pub fn parse_budget(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if s == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 500ms, 2s)"))?
    };
    if d > Duration::from_secs(60) {
        return Err(format!("read budget {s:?} out of range (0 to 60s)"));
    }
    Ok(d)
}

/// Parses a byte size: a bare number of bytes, or with a unit `KiB`, `MiB`, `GiB` (also `K`, `M`, `G`
/// and `KB`/`MB`/`GB`, all binary).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (use e.g. 64MiB, 512KiB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a listen address as Go's `net.Listen("tcp", addr)` takes it: `HOST:PORT` where HOST is
/// an IPv4 address, a bracketed IPv6 address (`[::1]:9465`), a host name (resolved with the system
/// resolver; like Go, one address is used: the first IPv4 one, else the first), or empty (`:9465`:
/// every address — `[::]`, which on Linux also accepts IPv4, or `0.0.0.0` where IPv6 is off).
/// PORT is a number from 0 to 65535 (0: any free port).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
    let bad = |why: &str| {
        format!("invalid listen address {s:?}: {why} (e.g. :9465, 0.0.0.0:9465, localhost:9465, [::1]:9465)")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    if host.is_empty() {
        let v6 = std::path::Path::new("/proc/net/if_inet6").exists();
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        return Ok(SocketAddr::new(ip, port));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| bad("not an IPv6 address between [ ]"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    if host.contains(':') {
        return Err(bad("put an IPv6 address in brackets, like [::1]:9465"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::new(IpAddr::V4(ip), port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve host {host:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| bad(&format!("host {host:?} has no address")))
}

/// Parses an interval: `30s`, `2s`, `500ms`, `1m`, `1h`, or a bare number of seconds; 100ms to 24h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // A bare number means seconds.
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e} (use e.g. 30s, 500ms, 1m)"))?,
    };
    if d < Duration::from_millis(100) || d > Duration::from_secs(86400) {
        return Err(format!("duration {s:?} out of range (100ms to 24h)"));
    }
    Ok(d)
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(proc_root: PathBuf, args: AgentArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .thread_name("goheap-agent")
        .build()?;
    let result = runtime.block_on(run_async(proc_root, args));
    // Do not wait for a cycle still reading (or a profile still being built) on a blocking thread:
    // it has been told to stop, and the process is exiting anyway.
    runtime.shutdown_background();
    result
}

/// How long a stopping agent waits for the cycle in progress to notice (between processes) and
/// return before it exits regardless.
const STOP_GRACE: Duration = Duration::from_millis(150);

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GOHEAP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn run_async(proc_root: PathBuf, args: AgentArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", args.listen))?;
    let local = listener.local_addr()?;
    let metrics = metrics::AgentMetrics::new()?;
    let output = match &args.output_dir {
        Some(dir) => {
            let mut out = output::OutputDir::open(dir.clone(), args.output_retain_bytes)?;
            // Said (once) and counted now, not only when the first profile is due.
            if out.probe().is_err() {
                metrics
                    .errors
                    .with_label_values(&["output_not_writable"])
                    .inc();
            }
            Some(out)
        }
        None => None,
    };
    let mut shared = collector::Shared::new(
        proc_root.clone(),
        args.mode,
        args.node_name.clone(),
        metrics,
    );
    shared.walk_budget = args.read_budget;
    shared.advertise = args.advertise_address.clone();
    shared.listen = Some(local);
    shared.kubelet_log_dir =
        (!args.kubelet_log_dir.as_os_str().is_empty()).then(|| args.kubelet_log_dir.clone());
    shared.symbol_cache_bytes = args.symbol_cache_bytes;
    shared.goroutine_metrics = args.goroutine_metrics;
    // A new binary's processes are read in the cycle that found them if it is inspected by then.
    shared.inspect_wait = (args.interval / 2).min(Duration::from_secs(2));
    if !args.push.is_empty() {
        let credentials = push::Credentials::load(
            args.push_basic_auth_file.as_deref(),
            args.push_bearer_token_file.as_deref(),
            args.push_tenant_file.as_deref(),
        )?;
        let settings = push::PushSettings {
            queue_items: args.push_queue_items.max(1),
            queue_bytes: args.push_queue_bytes,
            timeout: args.push_timeout,
            max_attempts: args.push_max_attempts,
            ca_file: args.push_ca_file.clone(),
            ..push::PushSettings::default()
        };
        let pusher = push::Pusher::start(
            args.push.clone(),
            settings,
            credentials,
            &shared.metrics.registry,
            shared.stop.clone(),
        )?;
        shared.push = Some(Arc::new(pusher));
    }
    let shared = Arc::new(shared);
    tracing::info!(
        listen = %local,
        interval_s = args.interval.as_secs_f64(),
        mode = ?args.mode,
        proc_root = %proc_root.display(),
        output_dir = ?args.output_dir,
        push = ?args.push.iter().map(|s| s.url.as_str()).collect::<Vec<_>>(),
        "goheap agent started"
    );
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let server = tokio::spawn(http::serve(listener, shared.clone()));
    let mut collector = Some(collector::Collector::new(shared.clone(), output));
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The cycle in progress, on a blocking thread (it reads /proc and remote memory). It is polled
    // alongside the signals, so a signal is handled at once, not after the cycle.
    let mut running: Option<tokio::task::JoinHandle<collector::Collector>> = None;
    let signal = loop {
        tokio::select! {
            _ = ticker.tick(), if running.is_none() => {
                let Some(mut c) = collector.take() else { break "none" };
                running = Some(tokio::task::spawn_blocking(move || { c.cycle(); c }));
            }
            done = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                match done {
                    Ok(c) => collector = Some(c),
                    Err(e) => anyhow::bail!("collection cycle panicked: {e}"),
                }
            }
            _ = interrupt.recv() => break "SIGINT",
            _ = term.recv() => break "SIGTERM",
        }
    };
    tracing::info!(signal, "goheap agent stopping");
    // Cycles, reads and inspections not started yet are skipped from now on; the cycle in progress
    // gets a moment to return, then is left behind.
    shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    server.abort();
    if let Some(cycle) = running {
        let _ = tokio::time::timeout(STOP_GRACE, cycle).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_as_go_takes_them() {
        use std::net::{IpAddr, Ipv4Addr, SocketAddr};
        let v4 = |a: [u8; 4], p| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p);
        assert_eq!(parse_listen("0.0.0.0:9465"), Ok(v4([0, 0, 0, 0], 9465)));
        assert_eq!(parse_listen("127.0.0.1:0"), Ok(v4([127, 0, 0, 1], 0)));
        assert_eq!(parse_listen("localhost:9465"), Ok(v4([127, 0, 0, 1], 9465)));
        assert_eq!(
            parse_listen("[::1]:9465"),
            Ok("[::1]:9465".parse::<SocketAddr>().unwrap())
        );
        let any = parse_listen(":9465").unwrap();
        assert!(any.ip().is_unspecified() && any.port() == 9465, "{any}");
        // This machine's own name resolves (through /etc/hosts or the resolver).
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim();
        let mine = parse_listen(&format!("{host}:9465")).unwrap();
        assert_eq!(mine.port(), 9465);
        for bad in [
            "9465",
            "localhost",
            ":http-alt",
            ":70000",
            "::1:9465",
            "[::1:9465",
            "[nothost]:1",
            "no-such-host.invalid:9465",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid listen address {bad:?}")),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("10ms").is_err());
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("64 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }
}
