//! Prometheus metrics of the agent: per-process Go heap series (Coroot's names) and self-metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub use super::labels::ProcessLabels;
/// Label names of the per-process series, in order (the one label set, [`super::labels`]).
pub const PROCESS_LABELS: [&str; 10] = super::labels::NAMES;

/// The GC gauges (name, help), in the order of [`AgentMetrics::gc`].
pub const GC_GAUGES: [(&str, &str); 6] = [
    ("container_go_gc_heap_live_bytes", "Heap bytes marked live by the last GC (runtime gcController.heapMarked, /gc/heap/live:bytes)."),
    ("container_go_gc_heap_goal_bytes", "Heap size at which the next GC starts (gcController heap goal, /gc/heap/goal:bytes)."),
    ("container_go_gc_last_unix_seconds", "When the last GC ended, Unix seconds (memstats.last_gc_unix); 0 before the first."),
    ("container_go_gc_gogc_percent", "GOGC in force (gcController.gcPercent, /gc/gogc:percent); -1 = off."),
    ("container_go_gc_memory_limit_bytes", "Memory limit in force (gcController.memoryLimit, /gc/gomemlimit:bytes)."),
    ("container_go_gc_heap_objects_bytes", "Bytes of heap objects allocated and not yet swept free (gcController.totalAlloc - totalFree, /memory/classes/heap/objects:bytes)."),
];

/// Every metric the agent exports.
pub struct AgentMetrics {
    pub registry: Registry,
    /// Scaled estimate of bytes allocated by the process (same unsampling as the heap profile).
    pub alloc_bytes: IntCounterVec,
    pub alloc_objects: IntCounterVec,
    pub inuse_bytes: IntGaugeVec,
    pub inuse_objects: IntGaugeVec,
    /// User goroutines by state (`PROCESS_LABELS` + `state`), as `runtime.NumGoroutine` counts.
    pub goroutines: IntGaugeVec,
    /// GC state from the runtime's globals (`goroutine::gc`): completed cycles, then the gauges
    /// heap live, heap goal, last GC (unix seconds), GOGC, memory limit, heap objects (in
    /// [`GC_GAUGES`] order).
    pub gc_cycles: IntCounterVec,
    pub gc: Vec<IntGaugeVec>,
    pub cycle_duration: Histogram,
    pub cycles: IntCounter,
    pub processes: IntGaugeVec,
    pub read_syscalls: IntCounter,
    pub read_bytes: IntCounter,
    pub errors: IntCounterVec,
    pub symbol_table_scans: IntCounter,
    pub binaries_cached: IntGauge,
    pub profiling_forced: IntCounter,
    pub output_files: IntCounter,
    pub output_dropped: IntCounterVec,
}

impl AgentMetrics {
    pub fn new() -> prometheus::Result<AgentMetrics> {
        let registry = Registry::new();
        let alloc_bytes = IntCounterVec::new(
            Opts::new(
                "container_go_alloc_bytes_total",
                "Bytes allocated by the Go process (estimate unsampled from the runtime memory profile, like the heap profile's alloc_space).",
            ),
            &PROCESS_LABELS,
        )?;
        let alloc_objects = IntCounterVec::new(
            Opts::new(
                "container_go_alloc_objects_total",
                "Objects allocated by the Go process (estimate unsampled from the runtime memory profile, like alloc_objects).",
            ),
            &PROCESS_LABELS,
        )?;
        let inuse_bytes = IntGaugeVec::new(
            Opts::new(
                "container_go_heap_inuse_bytes",
                "Bytes in live heap objects as of the last completed GC (estimate, like the heap profile's inuse_space).",
            ),
            &PROCESS_LABELS,
        )?;
        let inuse_objects = IntGaugeVec::new(
            Opts::new(
                "container_go_heap_inuse_objects",
                "Live heap objects as of the last completed GC (estimate, like inuse_objects).",
            ),
            &PROCESS_LABELS,
        )?;
        let goroutines = IntGaugeVec::new(
            Opts::new("container_go_goroutines", "Goroutines of the Go process by state (waiting, runnable, running, syscall, ...), read from runtime.allgs; system goroutines left out, as runtime.NumGoroutine does."),
            &[&PROCESS_LABELS[..], &["state"]].concat(),
        )?;
        let gc_cycles = IntCounterVec::new(
            Opts::new("container_go_gc_cycles_total", "Completed GC cycles of the Go process (runtime memstats.numgc, /gc/cycles/total:gc-cycles)."),
            &PROCESS_LABELS,
        )?;
        let gc = GC_GAUGES
            .iter()
            .map(|(name, help)| IntGaugeVec::new(Opts::new(*name, *help), &PROCESS_LABELS))
            .collect::<prometheus::Result<Vec<_>>>()?;
        let cycle_duration = Histogram::with_opts(
            HistogramOpts::new(
                "goheap_agent_cycle_duration_seconds",
                "Wall time of one collection cycle.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let cycles = IntCounter::new("goheap_agent_cycles_total", "Collection cycles completed.")?;
        let processes = IntGaugeVec::new(
            Opts::new(
                "goheap_agent_processes",
                "Go processes tracked, by state (readable, profiling-disabled, no-symbol-table, permission-denied, unsupported, error, disabled).",
            ),
            &["state"],
        )?;
        let read_syscalls = IntCounter::new(
            "goheap_agent_read_syscalls_total",
            "Syscalls made to read target memory (process_vm_readv or pread).",
        )?;
        let read_bytes = IntCounter::new(
            "goheap_agent_read_bytes_total",
            "Bytes read from target memory.",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "goheap_agent_errors_total",
                "Failed process reads, by reason.",
            ),
            &["reason"],
        )?;
        let symbol_table_scans = IntCounter::new(
            "goheap_agent_symbol_table_scans_total",
            "Executables inspected (ELF and symbol-table scans); one per distinct binary.",
        )?;
        let binaries_cached = IntGauge::new(
            "goheap_agent_binaries_cached",
            "Distinct executables whose inspection is cached.",
        )?;
        let profiling_forced = IntCounter::new(
            "goheap_agent_profiling_forced_total",
            "Processes whose runtime.MemProfileRate was set from 0 to 524288 by force mode.",
        )?;
        let output_files = IntCounter::new(
            "goheap_agent_output_files_total",
            "Delta profiles written to --output-dir.",
        )?;
        let output_dropped = IntCounterVec::new(
            Opts::new(
                "goheap_agent_output_skipped_total",
                "Delta profiles not written to --output-dir, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(alloc_bytes.clone()))?;
        registry.register(Box::new(alloc_objects.clone()))?;
        registry.register(Box::new(inuse_bytes.clone()))?;
        registry.register(Box::new(inuse_objects.clone()))?;
        registry.register(Box::new(goroutines.clone()))?;
        registry.register(Box::new(gc_cycles.clone()))?;
        for g in &gc {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(cycle_duration.clone()))?;
        registry.register(Box::new(cycles.clone()))?;
        registry.register(Box::new(processes.clone()))?;
        registry.register(Box::new(read_syscalls.clone()))?;
        registry.register(Box::new(read_bytes.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(symbol_table_scans.clone()))?;
        registry.register(Box::new(binaries_cached.clone()))?;
        registry.register(Box::new(profiling_forced.clone()))?;
        registry.register(Box::new(output_files.clone()))?;
        registry.register(Box::new(output_dropped.clone()))?;
        Ok(AgentMetrics {
            registry,
            alloc_bytes,
            alloc_objects,
            inuse_bytes,
            inuse_objects,
            goroutines,
            gc_cycles,
            gc,
            cycle_duration,
            cycles,
            processes,
            read_syscalls,
            read_bytes,
            errors,
            symbol_table_scans,
            binaries_cached,
            profiling_forced,
            output_files,
            output_dropped,
        })
    }

    /// Sets the per-process series. Counters are set to the tracker's totals (they only grow).
    pub fn set_process(
        &self,
        labels: &ProcessLabels,
        alloc_bytes_total: u64,
        alloc_objects_total: u64,
        inuse_bytes: i64,
        inuse_objects: i64,
    ) {
        let l = labels.values();
        let c = self.alloc_bytes.with_label_values(&l);
        c.inc_by(alloc_bytes_total.saturating_sub(c.get()));
        let c = self.alloc_objects.with_label_values(&l);
        c.inc_by(alloc_objects_total.saturating_sub(c.get()));
        self.inuse_bytes.with_label_values(&l).set(inuse_bytes);
        self.inuse_objects.with_label_values(&l).set(inuse_objects);
    }

    /// Sets the goroutine gauges of a process: every state of the vocabulary, 0 when absent.
    pub fn set_goroutines(
        &self,
        labels: &ProcessLabels,
        counts: &std::collections::BTreeMap<&str, i64>,
    ) {
        for st in crate::goroutine::layout::GOROUTINE_STATES {
            let mut v = labels.values().to_vec();
            v.push(st);
            self.goroutines
                .with_label_values(&v)
                .set(counts.get(st).copied().unwrap_or(0));
        }
    }

    /// Sets the GC series of a process.
    pub fn set_gc(&self, labels: &ProcessLabels, s: &crate::goroutine::gc::GcState) {
        let l = labels.values();
        let c = self.gc_cycles.with_label_values(&l);
        c.inc_by(s.cycles.saturating_sub(c.get()));
        let values = [
            s.heap_live_bytes as i64,
            s.heap_goal_bytes as i64,
            (s.last_gc_unix_ns / 1_000_000_000) as i64,
            s.gogc_percent,
            s.memory_limit_bytes,
            s.heap_objects_bytes as i64,
        ];
        for (g, v) in self.gc.iter().zip(values) {
            g.with_label_values(&l).set(v);
        }
    }

    /// Removes the per-process series (the process exited or was replaced).
    pub fn remove_process(&self, labels: &ProcessLabels) {
        let l = labels.values();
        let _ = self.alloc_bytes.remove_label_values(&l);
        let _ = self.alloc_objects.remove_label_values(&l);
        let _ = self.inuse_bytes.remove_label_values(&l);
        let _ = self.inuse_objects.remove_label_values(&l);
        for st in crate::goroutine::layout::GOROUTINE_STATES {
            let mut v = l.to_vec();
            v.push(st);
            let _ = self.goroutines.remove_label_values(&v);
        }
        let _ = self.gc_cycles.remove_label_values(&l);
        for g in &self.gc {
            let _ = g.remove_label_values(&l);
        }
    }

    /// The text exposition format 0.0.4.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_families(self.registry.gather())
    }

    /// Only the per-process series of `pid` (what `/metrics?pid=N` serves: one scrape target per
    /// process, as `/targets` lists them); no self-metrics.
    pub fn encode_pid(&self, pid: i32) -> Vec<u8> {
        let pid = pid.to_string();
        let families = self
            .registry
            .gather()
            .into_iter()
            .filter_map(|mut f| {
                let keep: Vec<_> = f
                    .take_metric()
                    .into_iter()
                    .filter(|m| {
                        m.get_label()
                            .iter()
                            .any(|l| l.get_name() == "pid" && l.get_value() == pid)
                    })
                    .collect();
                if keep.is_empty() {
                    return None;
                }
                f.set_metric(keep);
                Some(f)
            })
            .collect();
        self.encode_families(families)
    }

    fn encode_families(&self, families: Vec<prometheus::proto::MetricFamily>) -> Vec<u8> {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&families, &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        buf
    }
}
