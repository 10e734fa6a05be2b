//! GC state read from the runtime's own globals (`runtime.memstats`, `runtime.gcController`;
//! src/runtime/mstats.go, mgcpacer.go — the same fields in Go 1.19–1.27): completed cycles, last
//! GC time, heap live, heap objects and goal, GOGC and the memory limit in force.
//!
//! Field offsets come from the target's DWARF ([`GcLayout::from_dwarf`]), else (stripped) from the
//! checked-in table row of its release ([`GcLayout::for_version`]); the globals' addresses from
//! `.symtab`, else from code references ([`GoBinary::gc_symbols`]). Every value read is
//! untrusted: [`GcLocation::read`] rejects a state no runtime would be in.

use crate::binary::locate::LocateMethod;
use crate::binary::GoBinary;
use crate::goroutine::gc_layout::GcLayout;
use crate::goroutine::LayoutSource;
use crate::runtime::version::GoVersion;
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
    /// `heapGoalInternal` outside the memory-limit regime.
    pub gc_percent_heap_goal: u64,
    pub sweep_dist_min_trigger: u64,
    pub triggered: u64,
    /// `gcController.heapFree`, `totalAlloc`, `totalFree`, `mappedReady` (uint64 bytes): the inputs
    /// of `memoryLimitHeapGoal`; `totalAlloc − totalFree` is also the heap objects' bytes.
    pub heap_free: u64,
    pub total_alloc: u64,
    pub total_free: u64,
    pub mapped_ready: u64,
    /// The target's release (the memory-limit headroom rule changed in Go 1.21).
    pub version: GoVersion,
    /// How the globals were found, and where the offsets came from.
    pub method: LocateMethod,
    pub offsets: LayoutSource,
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
    /// Bytes of heap objects allocated and not yet swept free
    /// (`/memory/classes/heap/objects:bytes`): `totalAlloc − totalFree`. runtime/metrics
    /// computes the same from `memstats.heapStats` (`largeAlloc + Σ smallAllocCount[i] ·
    /// class_to_size[i] − largeFree − Σ smallFreeCount[i] · class_to_size[i]`); every site that
    /// adds to those (mcache `refill`/`allocLarge`/`releaseAll`, `mspan.sweep`, Go 1.19–1.27)
    /// adds the same bytes (`slots · elemsize`, `npages · pageSize`) to `totalAlloc`/`totalFree`,
    /// so the two agree whenever no update is half done. `tinyAllocCount` counts objects only:
    /// tiny blocks are 16-byte class-2 objects, counted in `smallAllocCount`.
    pub heap_objects_bytes: u64,
    /// Heap goal (`/gc/heap/goal:bytes`), as `heapGoalInternal` computes it, the memory-limit
    /// goal included.
    pub heap_goal_bytes: u64,
    /// True when the memory-limit goal is below the GOGC goal (it is the heap goal).
    pub memory_limited: bool,
    /// GOGC in force (`/gc/gogc:percent`; −1 when off).
    pub gogc_percent: i64,
    /// Memory limit in force (`/gc/gomemlimit:bytes`).
    pub memory_limit_bytes: i64,
}

/// Why no GC state was read.
#[derive(Debug, thiserror::Error)]
pub enum GcReadError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("implausible GC state (GOGC {gogc}, memory limit {limit}, {total_alloc} bytes allocated, {total_free} freed): not the runtime's gcController")]
    Implausible {
        gogc: i64,
        limit: i64,
        total_alloc: u64,
        total_free: u64,
    },
}

/// Largest GOGC accepted as plausible (`SetGCPercent` takes any int32; a value past this means
/// the wrong address).
pub const MAX_GOGC: i64 = 1_000_000;

impl GcLocation {
    /// Locates the GC fields of `bin`: `.symtab` or code references for the globals, DWARF or the
    /// table for the offsets.
    pub fn of(bin: &GoBinary) -> Result<GcLocation, String> {
        let (layout, offsets) = match GcLayout::from_dwarf(&bin.path) {
            Ok(l) => (l, LayoutSource::Dwarf),
            Err(crate::goroutine::dwarf_layout::DwarfLayoutError::NoDwarf(_)) => (
                GcLayout::for_version(&bin.go_version, bin.arch),
                LayoutSource::Table,
            ),
            Err(e) => return Err(e.to_string()),
        };
        let syms = bin.gc_symbols(&layout)?;
        let (m, c) = (&layout.mstats, &layout.controller);
        let ms = |o: u64| syms.memstats + o;
        let gc = |o: u64| syms.gc_controller + o;
        Ok(GcLocation {
            numgc: ms(m.numgc),
            last_gc_unix: ms(m.last_gc_unix),
            gc_percent: gc(c.gc_percent),
            memory_limit: gc(c.memory_limit),
            heap_marked: gc(c.heap_marked),
            gc_percent_heap_goal: gc(c.gc_percent_heap_goal),
            sweep_dist_min_trigger: gc(c.sweep_dist_min_trigger),
            triggered: gc(c.triggered),
            heap_free: gc(c.heap_free),
            total_alloc: gc(c.total_alloc),
            total_free: gc(c.total_free),
            mapped_ready: gc(c.mapped_ready),
            version: bin.go_version,
            method: syms.method,
            offsets,
        })
    }

    /// Reads the state from a process at load `bias` (12 small ranges in one batch: one
    /// `process_vm_readv`). A state no runtime is in (GOGC below −1 or above [`MAX_GOGC`], a
    /// negative memory limit, more bytes freed than allocated) is an `Invalid` error: the
    /// addresses are wrong ([`GcReadError::Implausible`]).
    pub fn read(&self, mem: &dyn RemoteMemory, bias: u64) -> Result<GcState, GcReadError> {
        const NUMGC: usize = 3;
        const GC_PERCENT: usize = 6;
        let addrs = [
            self.gc_percent_heap_goal,
            self.sweep_dist_min_trigger,
            self.triggered,
            self.numgc,
            self.last_gc_unix,
            self.heap_marked,
            self.gc_percent,
            self.memory_limit,
            self.heap_free,
            self.total_alloc,
            self.total_free,
            self.mapped_ready,
        ];
        let mut bufs = [[0u8; 8]; 12];
        let mut reqs: Vec<ReadRequest<'_>> = bufs
            .iter_mut()
            .zip(addrs)
            .enumerate()
            .map(|(i, (buf, a))| ReadRequest {
                addr: a.wrapping_add(bias),
                // numgc and gcPercent are 4-byte fields.
                buf: if i == NUMGC || i == GC_PERCENT {
                    &mut buf[..4]
                } else {
                    &mut buf[..]
                },
                got: 0,
            })
            .collect();
        mem.read_batch(&mut reqs)?;
        if let Some(r) = reqs.iter().find(|r| r.got < r.buf.len()) {
            return Err(GcReadError::Memory(MemoryError::Unmapped {
                pid: mem.pid(),
                addr: r.addr,
                len: r.buf.len(),
            }));
        }
        drop(reqs);
        let w = |i: usize| u64::from_le_bytes(bufs[i]);
        let gogc = i64::from(w(GC_PERCENT) as u32 as i32);
        let limit = w(7) as i64;
        let (total_alloc, total_free) = (w(9), w(10));
        if !(-1..=MAX_GOGC).contains(&gogc) || limit < 0 || total_free > total_alloc {
            return Err(GcReadError::Implausible {
                gogc,
                limit,
                total_alloc,
                total_free,
            });
        }
        let inputs = GoalInputs {
            gc_percent_heap_goal: w(0),
            sweep_dist_min_trigger: w(1),
            triggered: w(2),
            heap_marked: w(5),
            memory_limit: limit as u64,
            heap_free: w(8),
            heap_alloc: total_alloc - total_free,
            mapped_ready: w(11),
        };
        let (heap_goal, memory_limited) = inputs.heap_goal(&self.version);
        Ok(GcState {
            cycles: w(NUMGC),
            last_gc_unix_ns: w(4),
            heap_live_bytes: w(5),
            heap_objects_bytes: total_alloc - total_free,
            heap_goal_bytes: heap_goal,
            memory_limited,
            gogc_percent: gogc,
            memory_limit_bytes: limit,
        })
    }
}

/// The `gcControllerState` fields `heapGoalInternal` reads (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoalInputs {
    pub gc_percent_heap_goal: u64,
    pub sweep_dist_min_trigger: u64,
    /// `^uint64(0)` outside a cycle.
    pub triggered: u64,
    pub heap_marked: u64,
    pub memory_limit: u64,
    pub heap_free: u64,
    /// `totalAlloc − totalFree`.
    pub heap_alloc: u64,
    pub mapped_ready: u64,
}

impl GoalInputs {
    /// `gcControllerState.heapGoalInternal` of release `v` (mgcpacer.go): the GOGC goal, unless the
    /// memory-limit goal is lower (then that, and `true`); outside the memory-limit regime at least
    /// the sweep-distance trigger and 64 KiB above the trigger point of a running cycle. Unsigned
    /// arithmetic wraps as Go's does.
    pub fn heap_goal(&self, v: &GoVersion) -> (u64, bool) {
        let mut goal = self.gc_percent_heap_goal;
        let limit_goal = self.memory_limit_heap_goal(v);
        if limit_goal < goal {
            return (limit_goal, true);
        }
        goal = goal.max(self.sweep_dist_min_trigger);
        const MIN_RUNWAY: u64 = 64 << 10;
        if self.triggered != u64::MAX && goal < self.triggered.wrapping_add(MIN_RUNWAY) {
            goal = self.triggered.wrapping_add(MIN_RUNWAY);
        }
        (goal, false)
    }

    /// `gcControllerState.memoryLimitHeapGoal`: the memory limit minus the memory not in heap
    /// objects (and any overage above the limit), less a headroom — 1 MiB in Go 1.19 and 1.20;
    /// from 1.21 3 % of that goal, at least 1 MiB — and never below `heapMarked`.
    pub fn memory_limit_heap_goal(&self, v: &GoVersion) -> u64 {
        let limit = self.memory_limit;
        let non_heap = self
            .mapped_ready
            .wrapping_sub(self.heap_free)
            .wrapping_sub(self.heap_alloc);
        let overage = self.mapped_ready.saturating_sub(limit);
        if non_heap.wrapping_add(overage) >= limit {
            return self.heap_marked;
        }
        let mut goal = limit - non_heap.wrapping_add(overage);
        const MIN_HEADROOM: u64 = 1 << 20;
        let headroom = if v.at_least(21) {
            (goal / 100 * 3).max(MIN_HEADROOM)
        } else {
            MIN_HEADROOM
        };
        if goal < headroom || goal - headroom < headroom {
            goal = headroom;
        } else {
            goal -= headroom;
        }
        goal.max(self.heap_marked)
    }
}
