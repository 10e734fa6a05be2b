//! Push: every cycle's profiles go to the sinks given with `--push URL` (Pyroscope's `/ingest` or
//! its Connect push API, OTLP profiles over HTTP/protobuf or gRPC).
//!
//! Each sink has its own bounded queue and its own worker thread. The collection cycle only calls
//! [`Pusher::enqueue`], which takes each queue's lock for a push and never waits for the network;
//! beyond a queue's bounds (items and bytes) the oldest profile is dropped and counted. The worker
//! pops one profile at a time, encodes it for its sink and sends it with a per-request timeout,
//! retrying network errors, timeouts, 5xx, 408 and 429 with exponential backoff and full jitter, up to
//! `--push-max-attempts` attempts; any other 4xx is the receiver refusing this payload and is not
//! retried (dropped, counted as `rejected`).

pub mod client;
pub mod grpc;
pub mod otlp;
pub mod pyroscope;
pub mod pyroscope_connect;
pub mod tls;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pprof_proto::Profile;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use client::{Endpoint, Outcome};

/// What a sink speaks, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// `pyroscope+http://host:4040[/prefix]`: `POST {prefix}/ingest?format=pprof`, multipart.
    Pyroscope,
    /// `pyroscope+connect+http://host:4040[/prefix]`: Connect unary
    /// `POST {prefix}/push.v1.PusherService/Push`, protobuf `PushRequest`.
    PyroscopeConnect,
    /// `otlp+http://host:4318[/prefix]`: `POST {prefix}/v1development/profiles`, protobuf.
    OtlpHttp,
    /// `otlp+grpc://host:4317`: the `ProfilesService/Export` gRPC call (HTTP/2; over TLS with
    /// ALPN `h2` as `otlp+grpcs://`).
    OtlpGrpc,
}

/// One `--push` URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub kind: SinkKind,
    pub endpoint: Endpoint,
    /// Over TLS (the `…https` and `otlp+grpcs` schemes): chain and host name verified.
    pub tls: bool,
    /// The URL as given (it carries no credentials: those are refused in URLs); the `sink` label.
    pub url: String,
}

/// Parses a `--push` value: `pyroscope+http://HOST[:PORT][/PREFIX]`,
/// `pyroscope+connect+http://HOST[:PORT][/PREFIX]`, `otlp+http://HOST[:PORT][/PREFIX]` or
/// `otlp+grpc://HOST[:PORT]`, or their TLS forms `pyroscope+https`, `pyroscope+connect+https`,
/// `otlp+https` and `otlp+grpcs` (same default ports).
pub fn parse_sink(s: &str) -> Result<SinkSpec, String> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://").ok_or_else(|| {
        format!("invalid --push URL {s:?}: use pyroscope+http://HOST:4040 or otlp+http://HOST:4318")
    })?;
    let (kind, default_port, tls) = match scheme {
        "pyroscope+http" => (SinkKind::Pyroscope, 4040, false),
        "pyroscope+https" => (SinkKind::Pyroscope, 4040, true),
        "pyroscope+connect+http" => (SinkKind::PyroscopeConnect, 4040, false),
        "pyroscope+connect+https" => (SinkKind::PyroscopeConnect, 4040, true),
        "otlp+http" => (SinkKind::OtlpHttp, 4318, false),
        "otlp+https" => (SinkKind::OtlpHttp, 4318, true),
        "otlp+grpc" => (SinkKind::OtlpGrpc, 4317, false),
        "otlp+grpcs" => (SinkKind::OtlpGrpc, 4317, true),
        other => {
            return Err(format!(
                "--push {s:?}: unknown scheme {other:?}; use pyroscope+http(s)://, pyroscope+connect+http(s)://, otlp+http(s):// or otlp+grpc(s)://"
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "--push {s:?}: credentials are not taken from the command line; use --push-basic-auth-file, --push-bearer-token-file or GOHEAP_PUSH_* variables"
        ));
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!(
            "--push {s:?}: a query or fragment is not allowed; give scheme://host:port[/prefix]"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => {
            let port: u16 = p
                .parse()
                .map_err(|_| format!("--push {s:?}: invalid port {p:?}"))?;
            (h.to_string(), port)
        }
        _ => (authority.to_string(), default_port),
    };
    if host.is_empty() {
        return Err(format!("--push {s:?}: no host"));
    }
    Ok(SinkSpec {
        kind,
        endpoint: Endpoint {
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        },
        tls,
        url: s.to_string(),
    })
}

/// Headers sent with every push request (credentials, tenant).
#[derive(Clone, Default)]
pub struct Credentials {
    /// Full `Authorization` header value (`Basic ...` or `Bearer ...`).
    pub authorization: Option<String>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant", &self.tenant)
            .finish()
    }
}

fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the {what} file {}: {e} (check the path and its permissions)",
            path.display()
        )
    })?;
    let s = s.trim().to_string();
    if s.is_empty() {
        anyhow::bail!("the {what} file {} is empty", path.display());
    }
    Ok(s)
}

impl Credentials {
    /// Reads credentials from the files given (`--push-basic-auth-file` holds `user:password`,
    /// `--push-bearer-token-file` a token, `--push-tenant-file` a tenant id) or, when no file is
    /// given, from `GOHEAP_PUSH_BASIC_AUTH`, `GOHEAP_PUSH_BEARER_TOKEN` and `GOHEAP_PUSH_TENANT`.
    pub fn load(
        basic_auth_file: Option<&std::path::Path>,
        bearer_token_file: Option<&std::path::Path>,
        tenant_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Credentials> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let basic = match basic_auth_file {
            Some(p) => Some(read_secret(p, "basic-auth")?),
            None => env("GOHEAP_PUSH_BASIC_AUTH"),
        };
        let bearer = match bearer_token_file {
            Some(p) => Some(read_secret(p, "bearer-token")?),
            None => env("GOHEAP_PUSH_BEARER_TOKEN"),
        };
        let tenant = match tenant_file {
            Some(p) => Some(read_secret(p, "tenant")?),
            None => env("GOHEAP_PUSH_TENANT"),
        };
        let authorization = match (basic, bearer) {
            (Some(_), Some(_)) => anyhow::bail!(
                "both basic-auth and a bearer token are configured for --push; give only one"
            ),
            (Some(b), None) => {
                if !b.contains(':') {
                    anyhow::bail!("basic-auth credentials must be user:password");
                }
                Some(format!("Basic {}", base64(b.trim().as_bytes())))
            }
            (None, Some(t)) => Some(format!("Bearer {}", t.trim())),
            (None, None) => None,
        };
        if let Some(t) = &tenant {
            if t.bytes().any(|b| b < 0x20 || b == 0x7f) {
                anyhow::bail!("the push tenant id contains control characters");
            }
        }
        if let Some(a) = &authorization {
            if a.bytes().any(|b| b < 0x20 || b == 0x7f) {
                anyhow::bail!("the push credentials contain control characters");
            }
        }
        Ok(Credentials {
            authorization,
            tenant: tenant.map(|t| t.trim().to_string()),
        })
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Queue and retry settings shared by every sink.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Most profiles a sink's queue holds (oldest dropped beyond).
    pub queue_items: usize,
    /// Most bytes (encoded pprof size, estimated) a sink's queue holds (oldest dropped beyond).
    pub queue_bytes: u64,
    /// Time one request may take: connect, send and the whole response.
    pub timeout: Duration,
    /// Attempts per profile (1 = no retry).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (full jitter), capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `--push-ca-file`: PEM CA certificates trusted for TLS sinks instead of the system's bundle.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            queue_items: 256,
            queue_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// The labels a pushed profile carries: the process's one label set
/// ([`super::labels::ProcessLabels`]) plus its executable path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushLabels {
    /// `<namespace>/<container>` when the kubelet's names are known, else the binary's file name.
    pub service_name: String,
    pub pid: i32,
    pub binary: String,
    /// Path of the executable.
    pub executable: String,
    pub go_version: String,
    pub container_id: String,
    pub pod_uid: String,
    /// Kubernetes names (empty when unknown).
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// `--node-name`, else this host's name.
    pub node: String,
}

/// The one place push takes its labels from the agent's view of a process.
pub fn labels_of(pid: i32, labels: &super::labels::ProcessLabels, executable: &str) -> PushLabels {
    PushLabels {
        service_name: labels.service_name.clone(),
        pid,
        binary: labels.binary.clone(),
        executable: executable.to_string(),
        go_version: labels.go_version.clone(),
        container_id: labels.container_id.clone(),
        pod_uid: labels.pod_uid.clone(),
        namespace: labels.namespace.clone(),
        pod: labels.pod.clone(),
        container: labels.container.clone(),
        node: Some(labels.node.clone())
            .filter(|n| !n.is_empty())
            .or_else(host_name)
            .unwrap_or_default(),
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What one process produced in one cycle, handed to every sink.
#[derive(Debug)]
pub struct PushItem {
    pub labels: PushLabels,
    /// Start of the interval the alloc delta covers (previous read), ns since the epoch.
    pub from_unix_nano: u64,
    /// This read, ns since the epoch.
    pub until_unix_nano: u64,
    /// Growth over the interval (alloc_objects, alloc_space as the pprof profile scales them);
    /// `None` at a process's first read (the counters then hold everything since it started).
    pub alloc_delta: Option<Profile>,
    /// The heap profile now (in-use values as the runtime's heap profile).
    pub inuse: Profile,
    /// Estimated size in memory and on the wire (sum of the profiles' encoded lengths), bytes.
    pub size: u64,
}

impl PushItem {
    pub fn new(
        labels: PushLabels,
        from_unix_nano: u64,
        until_unix_nano: u64,
        alloc_delta: Option<Profile>,
        inuse: Profile,
    ) -> PushItem {
        use prost::Message;
        let size = alloc_delta.as_ref().map(|p| p.encoded_len()).unwrap_or(0) as u64
            + inuse.encoded_len() as u64;
        PushItem {
            labels,
            from_unix_nano,
            until_unix_nano,
            alloc_delta,
            inuse,
            size,
        }
    }
}

/// Keeps only the value columns of `p` whose sample type is one of `types` (e.g. `alloc_objects`,
/// `alloc_space`), and the samples with a non-zero value among them.
pub fn select_sample_types(p: &Profile, types: &[&str]) -> Profile {
    let name = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let keep: Vec<usize> = p
        .sample_type
        .iter()
        .enumerate()
        .filter(|(_, t)| types.contains(&name(t.r#type)))
        .map(|(i, _)| i)
        .collect();
    let mut out = p.clone();
    out.sample_type = keep.iter().map(|&i| p.sample_type[i]).collect();
    out.sample = p
        .sample
        .iter()
        .filter_map(|s| {
            let value: Vec<i64> = keep
                .iter()
                .map(|&i| s.value.get(i).copied().unwrap_or(0))
                .collect();
            if value.iter().all(|&v| v == 0) {
                return None;
            }
            let mut s = s.clone();
            s.value = value;
            Some(s)
        })
        .collect();
    out.default_sample_type = 0;
    out
}

/// Now, ns since the epoch.
pub fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// Push metrics, each labelled by `sink` (the URL).
#[derive(Clone)]
pub struct PushMetrics {
    pub sent: IntCounterVec,
    pub failed: IntCounterVec,
    pub dropped: IntCounterVec,
    pub queue_length: IntGaugeVec,
    pub queue_bytes: IntGaugeVec,
    pub last_success: GaugeVec,
}

impl PushMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<PushMetrics> {
        let sent = IntCounterVec::new(
            Opts::new(
                "goheap_agent_push_sent_total",
                "Profiles a sink accepted (one per process, interval and kind: alloc delta or in-use).",
            ),
            &["sink"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "goheap_agent_push_failed_total",
                "Push requests that failed (reason: connect, timeout, tls, io, http_4xx, http_5xx, grpc); a failed request may be retried.",
            ),
            &["sink", "reason"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "goheap_agent_push_dropped_total",
                "Profiles given up (reason: queue_full = oldest dropped beyond the queue, rejected = a 4xx, retries_exhausted, build_queue_full = a read not built in time).",
            ),
            &["sink", "reason"],
        )?;
        let queue_length = IntGaugeVec::new(
            Opts::new(
                "goheap_agent_push_queue_length",
                "Process profiles waiting in the sink's queue.",
            ),
            &["sink"],
        )?;
        let queue_bytes = IntGaugeVec::new(
            Opts::new(
                "goheap_agent_push_queue_bytes",
                "Estimated bytes of the profiles waiting in the sink's queue.",
            ),
            &["sink"],
        )?;
        let last_success = GaugeVec::new(
            Opts::new(
                "goheap_agent_push_last_success_timestamp_seconds",
                "Wall-clock time of the sink's last accepted request, seconds since the epoch (0: none yet).",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(queue_length.clone()))?;
        registry.register(Box::new(queue_bytes.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(PushMetrics {
            sent,
            failed,
            dropped,
            queue_length,
            queue_bytes,
            last_success,
        })
    }
}

struct Queue {
    items: VecDeque<Arc<PushItem>>,
    bytes: u64,
}

/// One sink: its queue (shared with its worker) and metrics handles.
struct Sink {
    spec: SinkSpec,
    queue: Mutex<Queue>,
    ready: Condvar,
    settings: PushSettings,
    metrics: PushMetrics,
}

impl Sink {
    fn gauges(&self, q: &Queue) {
        self.metrics
            .queue_length
            .with_label_values(&[&self.spec.url])
            .set(q.items.len() as i64);
        self.metrics
            .queue_bytes
            .with_label_values(&[&self.spec.url])
            .set(q.bytes.min(i64::MAX as u64) as i64);
    }

    /// Adds `item`, dropping the oldest beyond the bounds. Never waits for the worker's I/O (the
    /// worker holds the lock only to pop).
    fn enqueue(&self, item: Arc<PushItem>) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        q.bytes = q.bytes.saturating_add(item.size);
        q.items.push_back(item);
        let mut dropped = 0u64;
        while q.items.len() > self.settings.queue_items.max(1)
            || (q.bytes > self.settings.queue_bytes && q.items.len() > 1)
        {
            if let Some(old) = q.items.pop_front() {
                q.bytes = q.bytes.saturating_sub(old.size);
                dropped += 1;
            }
        }
        // A single item larger than the byte bound is not kept either.
        if q.bytes > self.settings.queue_bytes {
            if let Some(old) = q.items.pop_front() {
                q.bytes = q.bytes.saturating_sub(old.size);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.metrics
                .dropped
                .with_label_values(&[&self.spec.url, "queue_full"])
                .inc_by(dropped);
        }
        self.gauges(&q);
        drop(q);
        self.ready.notify_one();
    }

    fn pop(&self, stop: &AtomicBool) -> Option<Arc<PushItem>> {
        let mut q = self.queue.lock().ok()?;
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(item) = q.items.pop_front() {
                q.bytes = q.bytes.saturating_sub(item.size);
                self.gauges(&q);
                return Some(item);
            }
            q = self
                .ready
                .wait_timeout(q, Duration::from_millis(200))
                .ok()?
                .0;
        }
    }
}

/// What the cycle hands over for one process: the records read, not profiles. Building the
/// profiles (symbolization) happens on the push builder thread, so a cycle's cost does not grow
/// with `--push`.
pub struct Pending {
    pub labels: PushLabels,
    /// Interval, ns since the epoch (see [`PushItem`]).
    pub from_unix_nano: u64,
    pub until_unix_nano: u64,
    pub cached: Arc<crate::binary::CachedBinary>,
    /// `MemProfileRate` at this read.
    pub rate: u64,
    pub map: crate::target::maps::MemoryMap,
    /// Load bias of the executable.
    pub bias: u64,
    /// The alloc delta: already built (when `--output-dir` built it) or its records; `None` at a
    /// process's first read.
    pub delta: Option<DeltaSource>,
    /// Every bucket's published counters now (the in-use profile's records).
    pub inuse: Vec<crate::runtime::walk::MemProfileRecord>,
}

/// The alloc delta of a [`Pending`].
pub enum DeltaSource {
    Built(Box<Profile>),
    Records(Vec<crate::runtime::walk::MemProfileRecord>),
}

/// Process reads waiting for the builder thread; beyond it a read is dropped (counted per sink as
/// `build_queue_full`).
const BUILD_QUEUE: usize = 256;

/// The sinks of `--push`, each with its worker thread, and the builder thread before them.
pub struct Pusher {
    builder: std::sync::mpsc::SyncSender<Pending>,
    sinks: Vec<Arc<Sink>>,
    stop: Arc<AtomicBool>,
}

/// Lowers the calling thread's scheduling priority (nice +10): building and sending pushed
/// profiles yields the CPU to the collection cycle. Best effort; a failure changes nothing else.
fn lower_priority() {
    // SAFETY: setpriority has no memory effects; on Linux PRIO_PROCESS with who = 0 applies to the
    // calling thread only (nice values are per thread).
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}

/// Builds the profiles of a [`Pending`] (`None` if the in-use profile cannot be built).
fn build(p: Pending) -> Option<PushItem> {
    use crate::profile::oneshot::build_profile;
    let pid = p.labels.pid;
    let inuse = match build_profile(pid, &p.cached, &p.inuse, p.rate, &p.map, p.bias) {
        Ok(x) => x,
        Err(r) => {
            tracing::debug!(pid, error = %r, "in-use profile for push not built");
            return None;
        }
    };
    let alloc_delta = match p.delta {
        Some(DeltaSource::Built(d)) => Some(*d),
        Some(DeltaSource::Records(r)) => {
            match build_profile(pid, &p.cached, &r, p.rate, &p.map, p.bias) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::debug!(pid, error = %e, "alloc delta for push not built");
                    None
                }
            }
        }
        None => None,
    };
    Some(PushItem::new(
        p.labels,
        p.from_unix_nano,
        p.until_unix_nano,
        alloc_delta,
        inuse,
    ))
}

impl Pusher {
    /// Starts one worker thread per sink.
    pub fn start(
        specs: Vec<SinkSpec>,
        settings: PushSettings,
        credentials: Credentials,
        registry: &Registry,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Pusher> {
        let metrics = PushMetrics::register(registry)?;
        // Roots are read once, at start: a bad --push-ca-file refuses to start.
        let tls = if specs.iter().any(|s| s.tls) {
            Some(tls::configs(settings.ca_file.as_deref())?)
        } else {
            None
        };
        let mut sinks = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            metrics.sent.with_label_values(&[&spec.url]).inc_by(0);
            metrics
                .last_success
                .with_label_values(&[&spec.url])
                .set(0.0);
            let sink = Arc::new(Sink {
                spec,
                queue: Mutex::new(Queue {
                    items: VecDeque::new(),
                    bytes: 0,
                }),
                ready: Condvar::new(),
                settings: settings.clone(),
                metrics: metrics.clone(),
            });
            if let Ok(q) = sink.queue.lock() {
                sink.gauges(&q);
            }
            let worker = Worker {
                tls: if sink.spec.tls { tls.clone() } else { None },
                tls_warned: false,
                rt: None,
                sink: sink.clone(),
                credentials: credentials.clone(),
                stop: stop.clone(),
                rng: XorShift::seeded(now_unix_nano() ^ ((i as u64 + 1) << 32)),
            };
            std::thread::Builder::new()
                .name(format!("goheap-push-{i}"))
                .spawn(move || {
                    lower_priority();
                    worker.run()
                })
                .map_err(|e| anyhow::anyhow!("cannot start a push thread: {e}"))?;
            sinks.push(sink);
        }
        let (builder, rx) = std::sync::mpsc::sync_channel::<Pending>(BUILD_QUEUE);
        let to = sinks.clone();
        let halt = stop.clone();
        std::thread::Builder::new()
            .name("goheap-push-build".into())
            .spawn(move || {
                lower_priority();
                while let Ok(p) = rx.recv() {
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(item) = build(p) else { continue };
                    let item = Arc::new(item);
                    for s in &to {
                        s.enqueue(item.clone());
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the push builder thread: {e}"))?;
        Ok(Pusher {
            builder,
            sinks,
            stop,
        })
    }

    /// Hands one process's read of this cycle to the builder thread, then every sink. Never
    /// waits: with the builder's queue full the read is dropped and counted.
    pub fn enqueue(&self, pending: Pending) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        if self.builder.try_send(pending).is_err() {
            for s in &self.sinks {
                s.metrics
                    .dropped
                    .with_label_values(&[&s.spec.url, "build_queue_full"])
                    .inc();
            }
        }
    }
}

/// One request to send (already encoded for the sink).
pub struct Request {
    pub path_and_query: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

struct Worker {
    /// The TLS client configurations (TLS sinks only).
    tls: Option<tls::TlsConfigs>,
    /// A TLS failure was logged at warn since the last success (one line, not one per attempt).
    tls_warned: bool,
    /// A runtime for the gRPC client (gRPC sinks only), made at the first request.
    rt: Option<tokio::runtime::Runtime>,
    sink: Arc<Sink>,
    credentials: Credentials,
    stop: Arc<AtomicBool>,
    rng: XorShift,
}

impl Worker {
    fn run(mut self) {
        while let Some(item) = self.sink.pop(&self.stop) {
            let requests = match self.sink.spec.kind {
                SinkKind::Pyroscope => pyroscope::requests(&self.sink.spec.endpoint, &item),
                SinkKind::PyroscopeConnect => {
                    pyroscope_connect::requests(&self.sink.spec.endpoint, &item)
                }
                SinkKind::OtlpHttp => otlp::http_requests(&self.sink.spec.endpoint, &item),
                SinkKind::OtlpGrpc => otlp::grpc_requests(&item),
            };
            for (req, profiles) in requests {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                self.send(&req, profiles);
            }
        }
    }

    /// Sends one request with retries; counts `profiles` as sent or dropped.
    fn send(&mut self, req: &Request, profiles: u64) {
        let url = self.sink.spec.url.clone();
        let m = &self.sink.metrics;
        let s = &self.sink.settings;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = match self.sink.spec.kind {
                SinkKind::OtlpGrpc => {
                    if self.rt.is_none() {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => self.rt = Some(rt),
                            Err(e) => {
                                tracing::warn!(sink = %url, error = %e, "no runtime for the gRPC client; profile dropped");
                                m.dropped
                                    .with_label_values(&[&url, "retries_exhausted"])
                                    .inc_by(profiles);
                                return;
                            }
                        }
                    }
                    let Some(rt) = self.rt.as_ref() else { return };
                    grpc::post(
                        rt,
                        &self.sink.spec.endpoint,
                        req,
                        &self.credentials,
                        s.timeout,
                        self.tls.as_ref().map(|t| &t.h2),
                    )
                }
                SinkKind::PyroscopeConnect => {
                    let h = pyroscope_connect::headers(s.timeout);
                    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    client::post_with(
                        &self.sink.spec.endpoint,
                        req,
                        &self.credentials,
                        s.timeout,
                        &h,
                        pyroscope_connect::classify,
                        self.tls.as_ref().map(|t| &t.http1),
                    )
                }
                _ => client::post(
                    &self.sink.spec.endpoint,
                    req,
                    &self.credentials,
                    s.timeout,
                    self.tls.as_ref().map(|t| &t.http1),
                ),
            };
            let retry = match outcome {
                Outcome::Ok => {
                    self.tls_warned = false;
                    m.sent.with_label_values(&[&url]).inc_by(profiles);
                    m.last_success
                        .with_label_values(&[&url])
                        .set(now_unix_nano() as f64 / 1e9);
                    return;
                }
                Outcome::Failed {
                    reason,
                    retry,
                    detail,
                } => {
                    m.failed.with_label_values(&[&url, reason]).inc();
                    tracing::debug!(sink = %url, attempt, reason, detail = %detail, "push failed");
                    if reason == "tls" && !self.tls_warned {
                        self.tls_warned = true;
                        let ca = self.sink.settings.ca_file.is_some();
                        tracing::warn!(sink = %url, "push over TLS failed (nothing was sent): {}", tls::advice(&detail, ca));
                    }
                    if !retry {
                        tracing::warn!(sink = %url, detail = %detail, "push rejected by the receiver (not retried): check the receiver's log and the agent's --push settings");
                        m.dropped
                            .with_label_values(&[&url, "rejected"])
                            .inc_by(profiles);
                        return;
                    }
                    retry
                }
            };
            debug_assert!(retry);
            if attempt >= s.max_attempts.max(1) {
                m.dropped
                    .with_label_values(&[&url, "retries_exhausted"])
                    .inc_by(profiles);
                return;
            }
            // Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
            let cap = s
                .backoff_base
                .saturating_mul(1u32 << (attempt - 1).min(20))
                .min(s.backoff_max);
            let wait = Duration::from_nanos(self.rng.below(cap.as_nanos().max(1) as u64));
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
            }
        }
    }
}

/// xorshift64*: jitter only, not for anything secret.
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls() {
        let s = parse_sink("otlp+http://collector:4318").unwrap();
        assert_eq!(s.kind, SinkKind::OtlpHttp);
        assert_eq!(s.endpoint.host, "collector");
        assert_eq!(s.endpoint.port, 4318);
        let s = parse_sink("pyroscope+http://pyro/base/").unwrap();
        assert_eq!(s.kind, SinkKind::Pyroscope);
        assert_eq!(s.endpoint.port, 4040);
        assert_eq!(s.endpoint.prefix, "/base");
        let s = parse_sink("pyroscope+connect+http://pyro").unwrap();
        assert_eq!(s.kind, SinkKind::PyroscopeConnect);
        assert_eq!(s.endpoint.port, 4040);
        let t = parse_sink("pyroscope+connect+https://pyro").unwrap();
        assert!(t.tls && t.kind == SinkKind::PyroscopeConnect && t.endpoint.port == 4040);
        let g = parse_sink("otlp+grpcs://h:443").unwrap();
        assert!(g.tls && g.kind == SinkKind::OtlpGrpc && g.endpoint.port == 443);
        assert!(!parse_sink("otlp+grpc://h").unwrap().tls);
        assert!(parse_sink("https://h").is_err());
        assert!(parse_sink("otlp+http://user:pw@host:4318").is_err());
        assert!(parse_sink("http://host").is_err());
        assert_eq!(parse_sink("otlp+grpc://h").unwrap().endpoint.port, 4317);
        assert!(parse_sink("otlp+http://host:99999").is_err());
    }

    fn item(pid: i32) -> Arc<PushItem> {
        let labels = PushLabels {
            pid,
            ..Default::default()
        };
        let mut p = PushItem::new(labels, 0, 1, None, Profile::default());
        p.size = 100;
        Arc::new(p)
    }

    #[test]
    fn the_queue_keeps_the_newest_within_its_bounds_and_counts_the_rest() {
        let registry = Registry::new();
        let sink = Sink {
            spec: parse_sink("otlp+http://h").unwrap(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
            }),
            ready: Condvar::new(),
            settings: PushSettings {
                queue_items: 3,
                queue_bytes: 250,
                ..PushSettings::default()
            },
            metrics: PushMetrics::register(&registry).unwrap(),
        };
        for pid in 1..=5 {
            sink.enqueue(item(pid));
        }
        let q = sink.queue.lock().unwrap();
        // 250 bytes hold two 100-byte items: the two newest stay.
        let pids: Vec<i32> = q.items.iter().map(|i| i.labels.pid).collect();
        assert_eq!(pids, [4, 5]);
        assert_eq!(q.bytes, 200);
        drop(q);
        let dropped = sink
            .metrics
            .dropped
            .with_label_values(&["otlp+http://h", "queue_full"])
            .get();
        assert_eq!(dropped, 3);
        let stop = AtomicBool::new(false);
        assert_eq!(sink.pop(&stop).unwrap().labels.pid, 4);
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
