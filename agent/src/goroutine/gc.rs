//! GC state read from the runtime's own globals (`runtime.memstats`, `runtime.gcController`;
//! src/runtime/mstats.go, mgcpacer.go — the same fields in Go 1.19–1.27): completed cycles, last
//! GC time, heap live and goal, GOGC and the memory limit in force.
//!
//! Field offsets come from the target's DWARF ([`crate::goroutine::dwarf_layout::read_structs`]);
//! the globals' addresses from `.symtab`. Stripped binaries (no DWARF, no `.symtab`) are not
//! supported yet: [`GcLocation::of`] says so.

use crate::binary::locate::LocateMethod;
use crate::binary::symtab::SymbolTable;
use crate::binary::GoBinary;
use crate::target::memory::{MemoryError, ReadRequest, RemoteMemory};

/// Where the GC fields are (unrelocated addresses of each field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcLocation {
    /// `memstats.numgc` (uint32).
    pub numgc: u64,
    /// `memstats.last_gc_unix` (uint64, ns since the epoch).
    pub last_gc_unix: u64,
    /// `gcController.gcPercent` (int32; GOGC, −1 = off).
    pub gc_percent: u64,
    /// `gcController.memoryLimit` (int64 bytes; math.MaxInt64 = no limit).
    pub memory_limit: u64,
    /// `gcController.heapMarked` (uint64 bytes marked live by the last GC).
    pub heap_marked: u64,
    /// `gcController.gcPercentHeapGoal`, `sweepDistMinTrigger`, `triggered` (uint64): the inputs of
    /// `heapGoalInternal`.
    pub gc_percent_heap_goal: u64,
    pub sweep_dist_min_trigger: u64,
    pub triggered: u64,
    pub method: LocateMethod,
}

/// The GC state at one moment. Byte values are exact (not scaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcState {
    /// Completed GC cycles (`/gc/cycles/total:gc-cycles`).
    pub cycles: u64,
    /// End of the last GC, ns since the Unix epoch (0 before the first).
    pub last_gc_unix_ns: u64,
    /// Heap bytes marked live by the last GC (`/gc/heap/live:bytes`).
    pub heap_live_bytes: u64,
    /// Heap goal (`/gc/heap/goal:bytes`), as `heapGoalInternal` computes it outside the
    /// memory-limit regime.
    pub heap_goal_bytes: u64,
    /// GOGC in force (`/gc/gogc:percent`; −1 when off).
    pub gogc_percent: i64,
    /// Memory limit in force (`/gc/gomemlimit:bytes`).
    pub memory_limit_bytes: i64,
}

impl GcLocation {
    /// Locates the GC fields of `bin`: `.symtab` for the globals, DWARF for the offsets.
    pub fn of(bin: &GoBinary) -> Result<GcLocation, String> {
        let loc = bin
            .symtab_location()
            .ok_or("stripped: no .symtab (GC state of stripped binaries is not supported)")?;
        let (ms, gc) = ("runtime.memstats", "runtime.gcController");
        let table = SymbolTable::find(&bin.file, loc, &[ms, gc]).map_err(|e| e.to_string())?;
        let (Some(ms), Some(gc)) = (table.get(ms), table.get(gc)) else {
            return Err(".symtab lacks runtime.memstats or runtime.gcController".into());
        };
        let structs = crate::goroutine::dwarf_layout::read_structs(
            &bin.path,
            &["runtime.mstats", "runtime.gcControllerState"],
        )
        .map_err(|e| e.to_string())?;
        let field = |s: &str, f: &str| -> Result<u64, String> {
            structs
                .get(s)
                .and_then(|m| m.get(f))
                .ok_or_else(|| format!("DWARF lacks {s}.{f}"))
        };
        let m = |f: &str| field("runtime.mstats", f).map(|o| ms.value + o);
        let c = |f: &str| field("runtime.gcControllerState", f).map(|o| gc.value + o);
        Ok(GcLocation {
            numgc: m("numgc")?,
            last_gc_unix: m("last_gc_unix")?,
            gc_percent: c("gcPercent")?,
            memory_limit: c("memoryLimit")?,
            heap_marked: c("heapMarked")?,
            gc_percent_heap_goal: c("gcPercentHeapGoal")?,
            sweep_dist_min_trigger: c("sweepDistMinTrigger")?,
            triggered: c("triggered")?,
            method: LocateMethod::Symtab,
        })
    }

    /// Reads the state from a process at load `bias` (8 small ranges in one batch: one
    /// `process_vm_readv`).
    pub fn read(&self, mem: &dyn RemoteMemory, bias: u64) -> Result<GcState, MemoryError> {
        let addrs = [
            self.gc_percent_heap_goal,
            self.sweep_dist_min_trigger,
            self.triggered,
            self.numgc,
            self.last_gc_unix,
            self.heap_marked,
            self.gc_percent,
            self.memory_limit,
        ];
        let mut bufs = [[0u8; 8]; 8];
        let mut reqs: Vec<ReadRequest<'_>> = bufs
            .iter_mut()
            .zip(addrs)
            .enumerate()
            .map(|(i, (buf, a))| ReadRequest {
                addr: a.wrapping_add(bias),
                // numgc and gcPercent are 4-byte fields.
                buf: if i == 3 || i == 6 {
                    &mut buf[..4]
                } else {
                    &mut buf[..]
                },
                got: 0,
            })
            .collect();
        mem.read_batch(&mut reqs)?;
        if let Some(r) = reqs.iter().find(|r| r.got < r.buf.len()) {
            return Err(MemoryError::Unmapped {
                pid: mem.pid(),
                addr: r.addr,
                len: r.buf.len(),
            });
        }
        drop(reqs);
        let w = |i: usize| u64::from_le_bytes(bufs[i]);
        let (goal, sweep, triggered) = (w(0), w(1), w(2));
        // heapGoalInternal outside the memory-limit regime: the GOGC goal, at least the sweep
        // distance trigger, and at least 64 KiB above the trigger point of a running cycle.
        let mut heap_goal = goal.max(sweep);
        const MIN_RUNWAY: u64 = 64 << 10;
        if triggered != u64::MAX && heap_goal < triggered.saturating_add(MIN_RUNWAY) {
            heap_goal = triggered.saturating_add(MIN_RUNWAY);
        }
        Ok(GcState {
            cycles: w(3),
            last_gc_unix_ns: w(4),
            heap_live_bytes: w(5),
            heap_goal_bytes: heap_goal,
            gogc_percent: i64::from(w(6) as u32 as i32),
            memory_limit_bytes: w(7) as i64,
        })
    }
}
