//! The collection cycle: discover processes, classify them once per binary, read Go processes
//! incrementally, update metrics, write delta profiles, publish the process table for HTTP.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::binary::cache as binary_cache;
use crate::binary::{BinaryCache, BinaryIdentity, BinaryInfo, CachedBinary};
use crate::error::Refusal;
use crate::runtime::snapshot::DEFAULT_MEM_PROFILE_RATE;
use crate::target::discovery;
use crate::target::memory::{self, ReadStats, RemoteMemory, VmReader};
use crate::target::open::{self, RuntimeAddresses};
use crate::target::procfs::{self, ProcPaths};
use crate::target::state::ProcessState;

use super::metrics::{AgentMetrics, ProcessLabels};
use super::output::{OutputDir, OutputError};
use super::pool::{self, Pool};
use super::tracker::{self, DeltaTracker, IncrementalReader, ProcessKey, ProcessTable};
use super::ProfilerMode;
use crate::target::cgroup::{self, ContainerInfo};
use crate::target::k8s::{KubeNames, KubeletNames};

/// State shared between the cycle loop and the HTTP server.
pub struct Shared {
    pub proc_root: PathBuf,
    pub mode: ProfilerMode,
    pub node_name: Option<String>,
    pub metrics: AgentMetrics,
    pub view: Mutex<ProcessesView>,
    /// Time one process's bucket walk may take in a cycle (`--read-budget`).
    pub walk_budget: Duration,
    /// Byte budget of the symbol cache (`--symbol-cache-bytes`).
    pub symbol_cache_bytes: u64,
    /// How long a cycle waits for new binaries to be inspected before it reads their processes
    /// (a slower inspection is taken up by a later cycle).
    pub inspect_wait: Duration,
    /// Set when the agent is stopping: cycles, reads and inspections not started are skipped.
    pub stop: Arc<AtomicBool>,
    /// The kubelet's log root (`--kubelet-log-dir`) for Kubernetes names; `None`: no names.
    pub kubelet_log_dir: Option<PathBuf>,
    /// `host:port` that `/targets` names (`--advertise-address`); `None`: the request's `Host`.
    pub advertise: Option<String>,
    /// The address the listener is bound to (the last fallback of `/targets`).
    pub listen: Option<std::net::SocketAddr>,
    /// `--goroutine-metrics`: also read goroutine states and the GC state each cycle.
    pub goroutine_metrics: bool,
    /// The `--push` sinks; each cycle's profiles are enqueued there (never waiting for a sink).
    pub push: Option<Arc<super::push::Pusher>>,
}

impl Shared {
    pub fn new(
        proc_root: PathBuf,
        mode: ProfilerMode,
        node_name: Option<String>,
        metrics: AgentMetrics,
    ) -> Shared {
        Shared {
            proc_root,
            mode,
            node_name,
            metrics,
            view: Mutex::new(ProcessesView::default()),
            walk_budget: super::tracker::DEFAULT_WALK_BUDGET,
            symbol_cache_bytes: crate::symbolize::cache::DEFAULT_SYMBOL_CACHE_BYTES,
            inspect_wait: Duration::from_secs(1),
            stop: Arc::new(AtomicBool::new(false)),
            kubelet_log_dir: None,
            advertise: None,
            listen: None,
            goroutine_metrics: false,
            push: None,
        }
    }

    /// The published entry of `pid`, if it is a tracked Go process.
    pub fn process(&self, pid: i32) -> Option<ProcessInfo> {
        self.view
            .lock()
            .ok()
            .and_then(|v| v.processes.get(&pid).cloned())
    }
}

/// The Go processes as of the last cycle.
#[derive(Default, Clone, Serialize)]
pub struct ProcessesView {
    pub cycles: u64,
    /// Wall-clock end of the last cycle, seconds since the epoch.
    pub last_cycle_unix: f64,
    pub processes: BTreeMap<i32, ProcessInfo>,
}

/// One Go process in `/processes`.
#[derive(Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: i32,
    /// Start time in clock ticks since boot (with the pid, the process identity).
    pub start_time: u64,
    pub binary: String,
    pub binary_name: String,
    pub go_version: String,
    pub state: ProcessState,
    pub detail: Option<String>,
    /// How the runtime globals were located (`symtab`, `debug-file`, `code-reference`).
    pub method: Option<&'static str>,
    pub container_id: String,
    pub pod_uid: String,
    /// The process's label set, as on its `/metrics` series and its `/targets` group.
    pub labels: ProcessLabels,
    pub buckets: usize,
    pub mem_profile_rate: u64,
    /// Scaled estimates (as the metrics).
    pub alloc_bytes_total: u64,
    pub alloc_objects_total: u64,
    pub inuse_bytes: i64,
    pub inuse_objects: i64,
    /// Whether force mode set `MemProfileRate` in this process.
    pub profiling_forced: bool,
    #[serde(skip)]
    pub cached: Option<Arc<CachedBinary>>,
}

/// A Go process being tracked.
struct GoProcess {
    cached: Option<Arc<CachedBinary>>,
    binary: String,
    binary_name: String,
    go_version: String,
    container: ContainerInfo,
    /// Kubernetes names (kubelet log layout); looked up again each cycle while incomplete.
    names: KubeNames,
    labels: ProcessLabels,
    reader: Option<IncrementalReader<VmReader>>,
    addrs: Option<RuntimeAddresses>,
    bias: u64,
    deltas: DeltaTracker,
    last_stats: ReadStats,
    series: bool,
    forced: bool,
    /// Force mode declined to write (the address is not proven by a symbol table); logged once.
    force_declined: bool,
    state: ProcessState,
    detail: Option<String>,
    inuse: (i64, i64),
    /// Cycles this process was read in.
    cycles: u32,
    /// Wall-clock time of its last successful read, ns since the epoch (the start of the next
    /// pushed alloc delta's interval).
    last_read_unix_nano: Option<u64>,
    /// Its `found` line was logged (at its second cycle: a process that lives less than a cycle,
    /// a compiler's say, stays out of the info log). Until then state changes are debug lines,
    /// and so is its `gone`.
    announced: bool,
}

enum Kind {
    /// Not looked at yet (or its executable changed: exec), or its binary is being inspected.
    Unclassified,
    /// Not a Go program (or a kernel thread); re-checked only if its executable changes.
    NotGo,
    /// The kernel refused to show its executable.
    Denied,
    Go(Box<GoProcess>),
}

struct Tracked {
    exe: Option<BinaryIdentity>,
    kind: Kind,
}

/// An inspection of a new binary, run on the inspection pool: the identity it is for, the process
/// whose executable is read (any process of the binary will do) and the outcome.
type InspectJob = (BinaryIdentity, ProcPaths);
type Inspected = (BinaryIdentity, i32, Result<BinaryInfo, Refusal>);

/// Threads inspecting new binaries at once, and inspections queued behind them.
const INSPECT_THREADS: usize = 2;
const INSPECT_QUEUE: usize = 16;

/// Runs collection cycles. Owned by the cycle loop; one cycle at a time.
pub struct Collector {
    shared: Arc<Shared>,
    output: Option<Mutex<OutputDir>>,
    binaries: BinaryCache,
    not_go: HashSet<BinaryIdentity>,
    table: ProcessTable<Tracked>,
    /// New binaries are inspected here, off the cycle: an inspection cannot be interrupted, so a
    /// cycle waits for one only up to [`Shared::inspect_wait`] and takes the result in a later
    /// cycle if it is slow. `None` if no thread could be started (then inspections run inline).
    inspector: Option<Pool<InspectJob, Inspected>>,
    /// Binaries being inspected (at most the pool's capacity).
    inspecting: HashSet<BinaryIdentity>,
    self_pid: i32,
    scans_reported: u64,
    cycles: u64,
    kube: KubeletNames,
}

fn exe_identity(paths: &ProcPaths) -> Result<BinaryIdentity, std::io::ErrorKind> {
    std::fs::metadata(paths.exe())
        .map(|m| BinaryIdentity::of(&m))
        .map_err(|e| e.kind())
}

impl Collector {
    pub fn new(shared: Arc<Shared>, output: Option<OutputDir>) -> Collector {
        let inspector = Pool::new(
            "goheap-inspect",
            INSPECT_THREADS,
            INSPECT_QUEUE,
            shared.stop.clone(),
            |(id, paths): InspectJob| {
                // A panic (a parser bug) fails this binary, not the pool's accounting.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    binary_cache::inspect(&paths)
                }))
                .unwrap_or_else(|_| {
                    Err(Refusal::Corrupt {
                        pid: paths.pid,
                        detail: "inspecting the executable panicked (a goheap bug)".into(),
                    })
                });
                (id, paths.pid, r)
            },
        )
        .map_err(|e| tracing::warn!(error = %e, "no inspection threads; inspecting inline"))
        .ok();
        let kube = KubeletNames::new(shared.kubelet_log_dir.clone());
        Collector {
            kube,
            binaries: BinaryCache::with_symbol_budget(shared.symbol_cache_bytes),
            shared,
            output: output.map(Mutex::new),
            not_go: HashSet::new(),
            table: ProcessTable::default(),
            inspector,
            inspecting: HashSet::new(),
            self_pid: std::process::id() as i32,
            scans_reported: 0,
            cycles: 0,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// One collection cycle: processes already known are read while new binaries are inspected
    /// (in parallel, each on its own thread); processes whose binary is ready within
    /// [`Shared::inspect_wait`] are read in the same cycle, the others in a later one. Returns
    /// early, unfinished, once the agent is stopping.
    pub fn cycle(&mut self) {
        let t0 = Instant::now();
        if self.stopping() {
            return;
        }
        let root = self.shared.proc_root.clone();
        let live: Vec<ProcessKey> = discovery::list_pids(&root)
            .into_iter()
            .filter(|&p| p != self.self_pid)
            .filter_map(|pid| {
                Some(ProcessKey {
                    pid,
                    start_time: procfs::start_time(&root, pid)?,
                })
            })
            .collect();
        let ended = self.table.sync(&live, |_| Tracked {
            exe: None,
            kind: Kind::Unclassified,
        });
        for (key, t) in ended {
            if let Kind::Go(g) = t.kind {
                self.end_go(key, &g);
            }
        }
        // Results of inspections that outlived an earlier cycle.
        self.take_inspections(Instant::now(), &mut Vec::new());
        let keys: Vec<ProcessKey> = self.table.iter().map(|(k, _)| k).collect();
        // The new binaries of this cycle, one process each (dropped with the cycle).
        let mut wanted: Vec<InspectJob> = Vec::new();
        let mut wanted_ids: HashSet<BinaryIdentity> = HashSet::new();
        for key in keys {
            if self.stopping() {
                return;
            }
            if let Some(job) = self.step(key) {
                if wanted_ids.insert(job.0) {
                    wanted.push(job);
                }
            }
        }
        let deadline = Instant::now() + self.shared.inspect_wait;
        wanted.reverse();
        self.submit_inspections(&mut wanted);
        // Read the processes known already while the inspections run.
        self.resolve_names();
        self.read_go_processes(|g| g.cycles > 0);
        self.take_inspections(deadline, &mut wanted);
        if self.stopping() {
            return;
        }
        // Then the ones classified in this cycle.
        self.resolve_names();
        self.read_go_processes(|g| g.cycles == 0);
        if self.stopping() {
            return;
        }
        self.announce();
        self.finish_cycle(t0);
    }

    /// Looks up the Kubernetes names of Go processes in a container whose names are not complete
    /// yet (the kubelet may list a container after its process started). New names replace the
    /// process's labels; its series under the old labels are removed (the next read sets them
    /// again from the totals).
    fn resolve_names(&mut self) {
        let cycle = self.cycles;
        let node = self.shared.node_name.clone().unwrap_or_default();
        for (key, t) in self.table.iter_mut() {
            let Kind::Go(g) = &mut t.kind else { continue };
            let c = &g.container;
            let incomplete = (!c.container_id.is_empty() && g.names.container.is_empty())
                || (!c.pod_uid.is_empty() && g.names.pod.is_empty());
            if !incomplete {
                continue;
            }
            let names = self.kube.lookup(&c.container_id, &c.pod_uid, cycle);
            if names == g.names {
                continue;
            }
            let labels = ProcessLabels::new(
                key.pid,
                &g.binary_name,
                &g.go_version,
                &g.container,
                &names,
                &node,
            );
            if g.series {
                self.shared.metrics.remove_process(&g.labels);
                g.series = false;
            }
            g.names = names;
            g.labels = labels;
        }
    }

    fn end_go(&self, key: ProcessKey, g: &GoProcess) {
        if g.series {
            self.shared.metrics.remove_process(&g.labels);
        }
        if g.announced {
            tracing::info!(pid = key.pid, binary = %g.binary_name, state = "gone", "process state");
        } else {
            tracing::debug!(pid = key.pid, binary = %g.binary_name, state = "gone", "process state");
        }
    }

    /// Checks one process's executable (exit, exec) and classifies it if it is new. Returns the
    /// inspection its binary needs, if it is new to the agent.
    fn step(&mut self, key: ProcessKey) -> Option<InspectJob> {
        let root = self.shared.proc_root.clone();
        let paths = ProcPaths::new(&root, key.pid);
        let id = match exe_identity(&paths) {
            Ok(id) => Some(id),
            Err(std::io::ErrorKind::PermissionDenied) => None,
            Err(_) => {
                // Kernel thread, zombie (exited, not reaped yet) or exiting: nothing to read. A Go
                // process that was tracked has left: its series end now, not when it is reaped.
                let old = self
                    .entry(key.pid)
                    .map(|t| std::mem::replace(&mut t.kind, Kind::NotGo));
                if let Some(Kind::Go(g)) = old {
                    self.end_go(key, &g);
                }
                return None;
            }
        };
        // exec: a new executable in the same process. Start over.
        let replaced = {
            let t = self.entry(key.pid)?;
            if t.exe != id || (id.is_none() && !matches!(t.kind, Kind::Denied)) {
                let old = std::mem::replace(&mut t.kind, Kind::Unclassified);
                t.exe = id;
                match old {
                    Kind::Go(g) => Some(g),
                    _ => None,
                }
            } else {
                None
            }
        };
        if let Some(g) = replaced {
            self.end_go(key, &g);
        }
        if !matches!(self.entry(key.pid)?.kind, Kind::Unclassified) {
            return None;
        }
        let Some(id) = id else {
            self.set_kind(key.pid, Kind::Denied);
            return None;
        };
        if self.not_go.contains(&id) {
            self.set_kind(key.pid, Kind::NotGo);
            return None;
        }
        if let Some(cached) = self.binaries.lookup(&id) {
            let kind = self.go_kind(key, &paths, Ok(cached));
            self.set_kind(key.pid, kind);
            return None;
        }
        // New binary: inspected on the pool (or inline without one).
        if self.inspector.is_none() {
            let r = binary_cache::inspect(&paths);
            self.inspected(id, key.pid, r);
            return None;
        }
        Some((id, paths))
    }

    fn entry(&mut self, pid: i32) -> Option<&mut Tracked> {
        self.table.get_mut(pid)
    }

    fn set_kind(&mut self, pid: i32, kind: Kind) {
        if let Some(t) = self.entry(pid) {
            t.kind = kind;
        }
    }

    /// Hands new binaries to the inspection pool (those not being inspected already), from the end
    /// of `wanted`, while it has room; the rest stay in `wanted` (this cycle's list of new binaries)
    /// for when it has room again.
    fn submit_inspections(&mut self, wanted: &mut Vec<InspectJob>) {
        let Some(pool) = self.inspector.as_mut() else {
            return;
        };
        while let Some((id, paths)) = wanted.pop() {
            if self.inspecting.contains(&id) {
                continue;
            }
            if let Err(job) = pool.try_submit((id, paths)) {
                wanted.push(job);
                return;
            }
            self.inspecting.insert(id);
        }
    }

    /// Takes inspection results until none is pending or `deadline` (checking the stop flag),
    /// classifies the processes waiting for them, and submits more of `wanted` as room frees.
    fn take_inspections(&mut self, deadline: Instant, wanted: &mut Vec<InspectJob>) {
        loop {
            if self.stopping() {
                return;
            }
            let Some(pool) = self.inspector.as_mut() else {
                return;
            };
            if pool.in_flight() == 0 {
                return;
            }
            // Wake up now and then to notice a stop.
            let until = deadline.min(Instant::now() + std::time::Duration::from_millis(50));
            match pool.recv_until(until) {
                Some((id, pid, r)) => {
                    self.inspecting.remove(&id);
                    self.inspected(id, pid, r);
                    self.submit_inspections(wanted);
                }
                None if Instant::now() >= deadline => return,
                None => {}
            }
        }
    }

    /// Applies the inspection of binary `id` (read through process `pid`) to every process of that
    /// binary still waiting to be classified.
    fn inspected(&mut self, id: BinaryIdentity, pid: i32, r: Result<BinaryInfo, Refusal>) {
        let root = self.shared.proc_root.clone();
        let waiting: Vec<ProcessKey> = self
            .table
            .iter()
            .filter(|(_, t)| t.exe == Some(id) && matches!(t.kind, Kind::Unclassified))
            .map(|(k, _)| k)
            .collect();
        match r {
            Ok(info) => {
                let cached = self.binaries.insert(info);
                for key in waiting {
                    let paths = ProcPaths::new(&root, key.pid);
                    let kind = self.go_kind(key, &paths, Ok(cached.clone()));
                    self.set_kind(key.pid, kind);
                }
            }
            Err(Refusal::NotGo { .. }) => {
                if self.not_go.len() < 100_000 {
                    self.not_go.insert(id);
                }
                for key in waiting {
                    self.set_kind(key.pid, Kind::NotGo);
                }
            }
            // The process it was read through is gone or hidden: the others of this binary are
            // inspected through another one next cycle.
            Err(
                Refusal::NoSuchProcess { .. }
                | Refusal::ProcessExited { .. }
                | Refusal::Zombie { .. },
            ) => self.set_kind(pid, Kind::NotGo),
            Err(Refusal::PermissionDenied { .. }) => self.set_kind(pid, Kind::Denied),
            Err(r) => {
                let detail = r.to_string();
                let state = ProcessState::of_refusal(&r);
                for key in waiting {
                    let paths = ProcPaths::new(&root, key.pid);
                    let mut kind = self.go_kind(key, &paths, Err(detail.clone()));
                    if let Kind::Go(g) = &mut kind {
                        set_state(key, g, state, Some(detail.clone()));
                    }
                    self.set_kind(key.pid, kind);
                }
            }
        }
    }

    /// A newly classified Go process: of a located binary, or one whose inspection failed
    /// (`Err(detail)`; it is listed with that state).
    fn go_kind(
        &self,
        key: ProcessKey,
        paths: &ProcPaths,
        binary: Result<Arc<CachedBinary>, String>,
    ) -> Kind {
        let exe = procfs::exe_target(paths).unwrap_or_default();
        let binary_name = binary_name(&exe);
        let container = cgroup::read(&paths.root, key.pid);
        let (cached, go_version, detail) = match binary {
            Ok(c) => {
                let v = c.info.binary.go_version_raw.clone();
                (Some(c), v, None)
            }
            Err(d) => (None, String::new(), Some(d)),
        };
        let labels = ProcessLabels::new(
            key.pid,
            &binary_name,
            &go_version,
            &container,
            &KubeNames::default(),
            self.shared.node_name.as_deref().unwrap_or(""),
        );
        tracing::debug!(pid = key.pid, binary = %exe, go_version = %go_version, "new Go process");
        Kind::Go(Box::new(GoProcess {
            cached,
            binary: exe,
            binary_name,
            go_version,
            container,
            names: KubeNames::default(),
            labels,
            reader: None,
            addrs: None,
            bias: 0,
            deltas: DeltaTracker::default(),
            last_stats: ReadStats::default(),
            series: false,
            forced: false,
            force_declined: false,
            state: ProcessState::Found,
            detail,
            inuse: (0, 0),
            cycles: 0,
            last_read_unix_nano: None,
            announced: false,
        }))
    }

    /// Reads the Go processes `which` selects, several at once (see [`pool::for_each_bounded`]):
    /// each read is bounded by the walk budget, so a slow or huge target holds back only its own
    /// thread, by at most its budget.
    fn read_go_processes(&mut self, which: impl Fn(&GoProcess) -> bool) {
        let shared = self.shared.clone();
        let output = self.output.as_ref();
        let mode = shared.mode;
        let work: Vec<(ProcessKey, &mut GoProcess)> = self
            .table
            .iter_mut()
            .filter_map(|(k, t)| match &mut t.kind {
                Kind::Go(g) if which(g) => Some((k, &mut **g)),
                _ => None,
            })
            .collect();
        pool::for_each_bounded(work, pool::read_threads(), &shared.stop, |(key, g)| {
            collect_go(&shared, mode, key, g, output);
            g.cycles = g.cycles.saturating_add(1);
        });
    }

    /// Logs `found` (and the state reached) for processes still here at their second cycle.
    fn announce(&mut self) {
        for (key, t) in self.table.iter_mut() {
            let Kind::Go(g) = &mut t.kind else { continue };
            if g.announced || g.cycles < 2 {
                continue;
            }
            g.announced = true;
            tracing::info!(
                pid = key.pid,
                binary = %g.binary,
                go_version = %g.go_version,
                container_id = %g.container.container_id,
                pod_uid = %g.container.pod_uid,
                state = "found",
                "process state"
            );
            if g.state != ProcessState::Found {
                log_state(key, g, g.state, g.detail.as_deref(), true);
            }
        }
    }

    fn finish_cycle(&mut self, t0: Instant) {
        let m = &self.shared.metrics;
        let mut counts: BTreeMap<ProcessState, i64> =
            ProcessState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut used: HashSet<BinaryIdentity> = HashSet::new();
        let mut not_go_ids: HashSet<BinaryIdentity> = HashSet::new();
        let mut view = BTreeMap::new();
        for (key, t) in self.table.iter() {
            match &t.kind {
                Kind::Go(g) => {
                    *counts.entry(g.state).or_default() += 1;
                    if let Some(c) = &g.cached {
                        used.insert(c.info.binary.identity);
                    }
                    view.insert(key.pid, process_info(key, g));
                }
                Kind::Denied => *counts.entry(ProcessState::PermissionDenied).or_default() += 1,
                Kind::NotGo => {
                    if let Some(id) = t.exe {
                        not_go_ids.insert(id);
                    }
                }
                Kind::Unclassified => {}
            }
        }
        self.binaries.retain(&used);
        self.not_go.retain(|id| not_go_ids.contains(id));
        for (state, n) in counts {
            m.processes.with_label_values(&[state.as_str()]).set(n);
        }
        m.symbol_table_scans
            .inc_by(self.binaries.scans.saturating_sub(self.scans_reported));
        self.scans_reported = self.binaries.scans;
        m.binaries_cached.set(self.binaries.len() as i64);
        m.cycle_duration.observe(t0.elapsed().as_secs_f64());
        m.cycles.inc();
        self.cycles += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if let Ok(mut v) = self.shared.view.lock() {
            *v = ProcessesView {
                cycles: self.cycles,
                last_cycle_unix: now,
                processes: view,
            };
        }
    }
}

fn binary_name(path: &str) -> String {
    let p = path.strip_suffix(" (deleted)").unwrap_or(path);
    p.rsplit('/').next().unwrap_or(p).to_string()
}

fn process_info(key: ProcessKey, g: &GoProcess) -> ProcessInfo {
    ProcessInfo {
        pid: key.pid,
        start_time: key.start_time,
        binary: g.binary.clone(),
        binary_name: g.binary_name.clone(),
        go_version: g.go_version.clone(),
        state: g.state,
        detail: g.detail.clone(),
        method: g
            .cached
            .as_ref()
            .and_then(|c| c.info.symbols.as_ref())
            .map(|s| s.method.as_str()),
        container_id: g.container.container_id.clone(),
        pod_uid: g.container.pod_uid.clone(),
        labels: g.labels.clone(),
        buckets: g.reader.as_ref().map(|r| r.buckets().len()).unwrap_or(0),
        mem_profile_rate: g.reader.as_ref().map(|r| r.mem_profile_rate()).unwrap_or(0),
        alloc_bytes_total: g.deltas.alloc_bytes_total,
        alloc_objects_total: g.deltas.alloc_objects_total,
        inuse_bytes: g.inuse.0,
        inuse_objects: g.inuse.1,
        profiling_forced: g.forced,
        cached: g.cached.clone(),
    }
}

/// Logs a state change (only changes: one line per transition, not per cycle); at info level only
/// once the process was announced.
fn set_state(key: ProcessKey, g: &mut GoProcess, state: ProcessState, detail: Option<String>) {
    if g.state != state {
        log_state(key, g, state, detail.as_deref(), g.announced);
    }
    g.state = state;
    g.detail = detail;
}

fn log_state(
    key: ProcessKey,
    g: &GoProcess,
    state: ProcessState,
    detail: Option<&str>,
    info: bool,
) {
    let (pid, binary, state) = (key.pid, &g.binary_name, state.as_str());
    match (detail, info) {
        (Some(d), true) => {
            tracing::info!(pid, binary = %binary, state, detail = %d, "process state")
        }
        (None, true) => tracing::info!(pid, binary = %binary, state, "process state"),
        (Some(d), false) => {
            tracing::debug!(pid, binary = %binary, state, detail = %d, "process state")
        }
        (None, false) => tracing::debug!(pid, binary = %binary, state, "process state"),
    }
}

/// Reads one Go process and updates its metrics. Failures stay with this process.
fn collect_go(
    shared: &Shared,
    mode: ProfilerMode,
    key: ProcessKey,
    g: &mut GoProcess,
    output: Option<&Mutex<OutputDir>>,
) {
    let m = &shared.metrics;
    let root = &shared.proc_root;
    let Some(cached) = g.cached.clone() else {
        return;
    };
    let info = &cached.info;
    if mode == ProfilerMode::Disabled {
        set_state(key, g, ProcessState::Disabled, None);
        return;
    }
    let Some(symbols) = info.symbols.as_ref() else {
        set_state(
            key,
            g,
            ProcessState::NoSymbolTable,
            info.symbols_error.clone(),
        );
        return;
    };
    if g.reader.is_none() {
        match open_reader(root, key.pid, &cached) {
            Ok((mut reader, addrs, bias)) => {
                reader.walk_budget = shared.walk_budget;
                g.reader = Some(reader);
                g.addrs = Some(addrs);
                g.bias = bias;
                g.last_stats = ReadStats::default();
            }
            Err(r) => {
                m.errors.with_label_values(&[r.reason()]).inc();
                set_state(key, g, ProcessState::of_refusal(&r), Some(r.to_string()));
                return;
            }
        }
    }
    let (Some(reader), Some(addrs)) = (g.reader.as_mut(), g.addrs) else {
        return;
    };
    if mode == ProfilerMode::Force && !g.forced && symbols.method.proven_by_symbols() {
        match reader.mem.read_u64(addrs.mem_profile_rate) {
            Ok(0) => {
                match memory::write_u64_proven(
                    root,
                    key.pid,
                    addrs.mem_profile_rate,
                    DEFAULT_MEM_PROFILE_RATE,
                ) {
                    Ok(()) => {
                        g.forced = true;
                        m.profiling_forced.inc();
                        tracing::info!(
                            pid = key.pid,
                            binary = %g.binary_name,
                            address = format!("{:#x}", addrs.mem_profile_rate),
                            value = DEFAULT_MEM_PROFILE_RATE,
                            "force mode: set runtime.MemProfileRate (was 0)"
                        );
                    }
                    Err(e) => {
                        m.errors.with_label_values(&["force_write_failed"]).inc();
                        tracing::warn!(pid = key.pid, error = %e, "force mode: cannot write runtime.MemProfileRate");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(pid = key.pid, error = %e, "force mode: reading MemProfileRate")
            }
        }
    } else if mode == ProfilerMode::Force
        && !symbols.method.proven_by_symbols()
        && !g.force_declined
        && g.announced
    {
        // Located from code references alone: force never writes there. Said once per process
        // (once announced: a short-lived process is not worth the line).
        if let Ok(0) = reader.mem.read_u64(addrs.mem_profile_rate) {
            g.force_declined = true;
            tracing::info!(
                pid = key.pid,
                binary = %g.binary_name,
                method = symbols.method.as_str(),
                "force mode: not writing runtime.MemProfileRate (it is 0): its address was recovered from code references, not proven by a symbol table; install the binary's debug file under /usr/lib/debug/.build-id or build it without -ldflags=-s (or import runtime/pprof in the program); for one process, `goheap record|top --enable-profiling-from-code` writes there when the code references, the file and the live process agree"
            );
        }
    }
    let result = reader.read(info, root);
    let stats = reader.stats();
    m.read_syscalls
        .inc_by(stats.syscalls.saturating_sub(g.last_stats.syscalls));
    m.read_bytes
        .inc_by(stats.bytes.saturating_sub(g.last_stats.bytes));
    g.last_stats = stats;
    match result {
        Ok(outcome) => {
            if let Some(w) = &outcome.warning {
                tracing::debug!(pid = key.pid, warning = %w, "partial bucket walk");
            }
            let Some(reader) = g.reader.as_mut() else {
                return;
            };
            let delta = g.deltas.update_from(reader);
            g.inuse = (delta.inuse_bytes, delta.inuse_objects);
            m.set_process(
                &g.labels,
                g.deltas.alloc_bytes_total,
                g.deltas.alloc_objects_total,
                delta.inuse_bytes,
                delta.inuse_objects,
            );
            if let (true, Some(r), Some(c)) = (
                shared.goroutine_metrics,
                g.reader.as_ref(),
                g.cached.as_ref(),
            ) {
                match crate::goroutine::count_states(&r.mem, c, g.bias) {
                    Ok(counts) => m.set_goroutines(&g.labels, &counts),
                    Err(e) => tracing::debug!(pid = key.pid, error = %e, "goroutines not counted"),
                }
                match crate::goroutine::gc_location(c).map(|l| l.read(&r.mem, g.bias)) {
                    Ok(Ok(s)) => m.set_gc(&g.labels, &s),
                    Ok(Err(e)) => tracing::debug!(pid = key.pid, error = %e, "GC state not read"),
                    Err(e) => tracing::debug!(pid = key.pid, error = %e, "GC state not located"),
                }
            }
            g.series = true;
            set_state(key, g, ProcessState::Readable, None);
            let now_unix_nano = super::push::now_unix_nano();
            let from_unix_nano = g.last_read_unix_nano.replace(now_unix_nano);
            let Some(reader) = g.reader.as_ref() else {
                return;
            };
            // The delta profile is built here only for --output-dir (push builds off the cycle).
            let delta_profile = (!delta.grown.is_empty() && output.is_some()).then(|| {
                let records = tracker::delta_records(reader.buckets(), &delta);
                crate::profile::oneshot::build_profile(
                    key.pid,
                    &cached,
                    &records,
                    reader.mem_profile_rate(),
                    reader.map(),
                    g.bias,
                )
            });
            if let Some(push) = &shared.push {
                let built = delta_profile.as_ref().and_then(|r| r.as_ref().ok());
                push_profiles(
                    push,
                    key,
                    g,
                    &cached,
                    (from_unix_nano, now_unix_nano),
                    (&delta, built),
                );
            }
            if let (Some(out), Some(built)) = (output, delta_profile) {
                match built {
                    Ok(p) => match out
                        .lock()
                        .map_err(|_| OutputError::Poisoned)
                        .and_then(|mut out| out.write(&g.binary_name, key.pid, &p.encode_gzip()))
                    {
                        Ok(_) => m.output_files.inc(),
                        Err(e) => {
                            m.output_dropped.with_label_values(&[e.reason()]).inc();
                            if matches!(e, OutputError::Io { .. }) {
                                m.errors.with_label_values(&["output_not_writable"]).inc();
                            }
                            tracing::debug!(pid = key.pid, error = %e, "delta profile not written");
                        }
                    },
                    Err(r) => {
                        m.output_dropped.with_label_values(&["build_failed"]).inc();
                        tracing::debug!(pid = key.pid, error = %r, "delta profile not built");
                    }
                }
            }
            g.deltas.recycle(delta);
        }
        Err(r) => {
            let state = ProcessState::of_refusal(&r);
            if !matches!(r, Refusal::ProfilingDisabled { .. }) {
                m.errors.with_label_values(&[r.reason()]).inc();
                // Start over next cycle (maps and a full walk).
                g.reader = None;
            }
            set_state(key, g, state, Some(r.to_string()));
        }
    }
}

/// Hands this read to the push sinks: the alloc delta since the previous read (not at the first
/// read, whose counters hold everything since the process started; the profile `--output-dir`
/// built, or its records) and every bucket's records for the in-use profile. Only copies records
/// and enqueues: profiles are built on the push builder thread, sent on the sinks' threads.
fn push_profiles(
    push: &super::push::Pusher,
    key: ProcessKey,
    g: &GoProcess,
    cached: &Arc<CachedBinary>,
    (from_unix_nano, now_unix_nano): (Option<u64>, u64),
    delta: (&tracker::CycleDelta, Option<&pprof_proto::Profile>),
) {
    use super::push::DeltaSource;
    let Some(reader) = g.reader.as_ref() else {
        return;
    };
    let (cycle_delta, built) = delta;
    let delta = match (from_unix_nano, built) {
        (None, _) => None,
        _ if cycle_delta.grown.is_empty() => None,
        (Some(_), Some(p)) => Some(DeltaSource::Built(Box::new(p.clone()))),
        (Some(_), None) => Some(DeltaSource::Records(tracker::delta_records(
            reader.buckets(),
            cycle_delta,
        ))),
    };
    let labels = super::push::labels_of(key.pid, &g.labels, &g.binary);
    push.enqueue(super::push::Pending {
        labels,
        from_unix_nano: from_unix_nano.unwrap_or(now_unix_nano),
        until_unix_nano: now_unix_nano,
        cached: cached.clone(),
        rate: reader.mem_profile_rate(),
        map: reader.map().clone(),
        bias: g.bias,
        delta,
        inuse: crate::runtime::walk::memprofile_records(reader.buckets(), reader.cycle()),
    });
}

fn open_reader(
    root: &std::path::Path,
    pid: i32,
    cached: &CachedBinary,
) -> Result<(IncrementalReader<VmReader>, RuntimeAddresses, u64), Refusal> {
    let info = &cached.info;
    let open::OpenedProcess { mem, map, addrs } = open::OpenedProcess::open(root, pid, info)?;
    let bias = addrs.bias;
    Ok((
        IncrementalReader::new(mem, map, addrs, info.layout),
        addrs,
        bias,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names() {
        assert_eq!(binary_name("/usr/bin/steadyalloc"), "steadyalloc");
        assert_eq!(binary_name("/tmp/x/app (deleted)"), "app");
        assert_eq!(binary_name(""), "");
    }
}
