//! Reading every goroutine of a running process, read-only and without stopping it: the `allgs`
//! array, each `g` header (batched), each non-running goroutine's stack in one read, unwound with
//! the pclntab ([`crate::symbolize::pclntab::Pclntab::traceback_pcs`]), then the `g` header read
//! again: a goroutine whose status, goid or saved context changed under the read is dropped and
//! counted, never shown half-read.

use std::collections::HashSet;
use std::sync::Arc;

use crate::goroutine::layout::{GLayout, GStatus};
use crate::runtime::version::GoVersion;
use crate::symbolize::pclntab::{Pclntab, StackWindow, UnwindEnd, UnwindStart};
use crate::target::memory::{MemoryError, ReadRequest, RemoteMemory};

/// Bounds of one read; everything read from the target is checked against them.
#[derive(Debug, Clone, Copy)]
pub struct GoroutineLimits {
    /// Most `g`s read (`allglen` beyond this is refused as corrupt).
    pub max_goroutines: u64,
    /// Most PCs recorded per stack (the runtime's goroutine profile records 32 up to Go 1.22,
    /// `debug.profstackdepth` = 128 from Go 1.23).
    pub max_frames: usize,
    /// Most bytes of one stack read (from the saved SP up); deeper frames end the walk.
    pub max_stack_bytes: u64,
}

impl GoroutineLimits {
    /// The limits matching the runtime's goroutine profile of release `v`.
    pub fn for_version(v: &GoVersion) -> GoroutineLimits {
        GoroutineLimits {
            max_goroutines: 1 << 20,
            max_frames: if v.at_least(23) { 128 } else { 32 },
            max_stack_bytes: 8 << 20,
        }
    }
}

/// `g` headers read per batch (and held at once).
const CHUNK: usize = 4096;

/// Largest goroutine stack the runtime allows (`maxstacksize` on 64-bit: 1 GB).
const MAX_STACK_SIZE: u64 = 1 << 30;

/// One goroutine as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    pub status: GStatus,
    /// `atomicstatus` as read (may carry `_Gscan`).
    pub raw_status: u32,
    /// `waitreason` (index into the release's `waitReasonStrings`).
    pub wait_reason: u8,
    /// `waitsince`: `nanotime()` (CLOCK_MONOTONIC, ns) of the start of the first GC that saw the
    /// goroutine blocked; 0 when no GC has since.
    pub waitsince: i64,
    /// `parentGoid` (Go 1.21+).
    pub parent_goid: Option<u64>,
    /// Creation PC (`gopc`, the `go` statement's return PC) and start function PC, unrelocated.
    pub gopc: u64,
    pub startpc: u64,
    /// Return PCs (unrelocated), innermost first, as `saveg` records them; empty for running
    /// goroutines. Shared between goroutines with the same stack (one copy per distinct stack).
    pub stack: Arc<[u64]>,
    /// Why the unwind ended (`None` when not unwound: running).
    pub unwind: Option<UnwindEnd>,
    /// A runtime goroutine (`isSystemGoroutine`): not in the goroutine profile or NumGoroutine.
    pub system: bool,
}

/// Every goroutine of one read, and what was left out.
#[derive(Debug, Clone, Default)]
pub struct GoroutineSnapshot {
    pub goroutines: Vec<Goroutine>,
    /// `allglen` as read.
    pub allglen: u64,
    /// Dropped: the `g` changed between the reads.
    pub changed: usize,
    /// Dropped: a `g` that failed validation (status out of range, stack bounds, duplicate goid).
    pub invalid: usize,
    /// CLOCK_MONOTONIC (ns) when the read started, to compare with `waitsince`.
    pub monotonic_ns: i64,
}

impl GoroutineSnapshot {
    /// User goroutines (what `runtime.NumGoroutine` and the goroutine profile count).
    pub fn user(&self) -> impl Iterator<Item = &Goroutine> {
        self.goroutines.iter().filter(|g| !g.system)
    }
}

/// Why a read failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum GoroutineReadError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    Corrupt(String),
}

/// What the reader needs of the process and its binary.
pub struct GoroutineTarget<'a> {
    pub mem: &'a dyn RemoteMemory,
    pub pclntab: &'a Pclntab,
    pub layout: GLayout,
    pub version: GoVersion,
    pub uses_lr: bool,
    /// Runtime addresses of `runtime.allgs` and `runtime.allglen`.
    pub allgs: u64,
    pub allglen: u64,
    /// Load bias (runtime address − ELF address).
    pub bias: u64,
}

/// The fields of a `g` header goheap uses, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    status: u32,
    goid: u64,
    sched_sp: u64,
    sched_pc: u64,
    sched_lr: u64,
    syscallsp: u64,
    syscallpc: u64,
    stack_lo: u64,
    stack_hi: u64,
    waitreason: u8,
    waitsince: i64,
    parent_goid: Option<u64>,
    gopc: u64,
    startpc: u64,
}

fn decode(l: &GLayout, b: &[u8]) -> Option<Header> {
    let w = |o: u64| -> Option<u64> {
        let o = usize::try_from(o).ok()?;
        Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
    };
    let st = usize::try_from(l.atomicstatus).ok()?;
    Some(Header {
        status: u32::from_le_bytes(b.get(st..st + 4)?.try_into().ok()?),
        goid: w(l.goid)?,
        sched_sp: w(l.sched_sp)?,
        sched_pc: w(l.sched_pc)?,
        sched_lr: w(l.sched_lr)?,
        syscallsp: w(l.syscallsp)?,
        syscallpc: w(l.syscallpc)?,
        stack_lo: w(l.stack_lo)?,
        stack_hi: w(l.stack_hi)?,
        waitreason: *b.get(usize::try_from(l.waitreason).ok()?)?,
        waitsince: w(l.waitsince)? as i64,
        parent_goid: match l.parent_goid {
            Some(o) => Some(w(o)?),
            None => None,
        },
        gopc: w(l.gopc)?,
        startpc: w(l.startpc)?,
    })
}

/// The `g` pointers of `allgs[:allglen]`, checked against the slice header and the limit.
fn read_allgs(
    t: &GoroutineTarget<'_>,
    limits: &GoroutineLimits,
) -> Result<Vec<u64>, GoroutineReadError> {
    let mem = t.mem;
    let allglen = mem.read_u64(t.allglen)?;
    let mut hdr = [0u8; 24];
    mem.read_exact(t.allgs, &mut hdr)?;
    let word = |i: usize| u64::from_le_bytes(hdr[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (ptr, len, cap) = (word(0), word(1), word(2));
    if len > cap || allglen > len || allglen > limits.max_goroutines {
        return Err(GoroutineReadError::Corrupt(format!(
            "runtime.allgs (len {len}, cap {cap}) and allglen {allglen} do not agree or exceed {} goroutines",
            limits.max_goroutines
        )));
    }
    let n = allglen as usize;
    let mut ptrs = vec![0u8; n * 8];
    mem.read_exact(ptr, &mut ptrs)?;
    let gptrs: Vec<u64> = ptrs
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    Ok(gptrs)
}

/// CLOCK_MONOTONIC now, ns (the clock of the runtime's `nanotime`).
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Reads every goroutine of the target.
pub fn read_goroutines(
    t: &GoroutineTarget<'_>,
    limits: &GoroutineLimits,
) -> Result<GoroutineSnapshot, GoroutineReadError> {
    let monotonic = monotonic_ns();
    let mem = t.mem;
    let gptrs = read_allgs(t, limits)?;
    let allglen = gptrs.len() as u64;
    let n = gptrs.len();
    let glen = t.layout.read_len() as usize;
    let read_headers = |part: &[u64], out: &mut Vec<u8>| -> Result<Vec<bool>, MemoryError> {
        out.clear();
        out.resize(part.len() * glen, 0);
        let mut reqs: Vec<ReadRequest<'_>> = out
            .chunks_exact_mut(glen)
            .zip(part)
            .map(|(buf, &addr)| ReadRequest { addr, buf, got: 0 })
            .collect();
        mem.read_batch(&mut reqs)?;
        Ok(reqs.iter().map(|r| r.got == glen).collect())
    };
    let mut snap = GoroutineSnapshot {
        allglen,
        monotonic_ns: monotonic,
        ..Default::default()
    };
    let mut seen: HashSet<u64> = HashSet::with_capacity(n);
    let mut stack_buf: Vec<u8> = Vec::new();
    let mut interned: HashSet<Arc<[u64]>> = HashSet::new();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    // A part of allgs at a time: both header reads of a goroutine are close in time, and the
    // buffers stay small (CHUNK headers) whatever allglen is.
    for part in gptrs.chunks(CHUNK) {
        let ok = read_headers(part, &mut first)?;
        // (index into part, header) of goroutines kept, to compare with the second read.
        let mut kept: Vec<(usize, Header)> = Vec::new();
        let mut found: Vec<Goroutine> = Vec::new();
        for (i, chunk) in first.chunks_exact(glen).enumerate() {
            let Some(h) = ok[i].then(|| decode(&t.layout, chunk)).flatten() else {
                snap.invalid += 1;
                continue;
            };
            let Some(status) = GStatus::decode(h.status, &t.version) else {
                snap.invalid += 1;
                continue;
            };
            if matches!(status, GStatus::Dead | GStatus::Idle) {
                continue;
            }
            if !seen.insert(h.goid) {
                snap.invalid += 1;
                continue;
            }
            let system = is_system_goroutine(t.pclntab, h.startpc.wrapping_sub(t.bias));
            let mut g = Goroutine {
                goid: h.goid,
                status,
                raw_status: h.status,
                wait_reason: h.waitreason,
                waitsince: h.waitsince,
                parent_goid: h.parent_goid,
                gopc: h.gopc.wrapping_sub(t.bias),
                startpc: h.startpc.wrapping_sub(t.bias),
                stack: Arc::from(Vec::new()),
                unwind: None,
                system,
            };
            if status != GStatus::Running {
                let (sp, pc, lr, syscall) = if h.syscallsp != 0 {
                    (h.syscallsp, h.syscallpc, 0, true)
                } else {
                    (h.sched_sp, h.sched_pc, h.sched_lr, false)
                };
                let bounds_ok = h.stack_lo < sp
                    && sp <= h.stack_hi
                    && h.stack_hi - h.stack_lo <= MAX_STACK_SIZE;
                if !bounds_ok {
                    snap.invalid += 1;
                    continue;
                }
                let want = (h.stack_hi - sp).min(limits.max_stack_bytes) as usize;
                // Grown (and zeroed) only past its largest size so far: a hostile `g` claiming a
                // huge stack costs one read, not a memset of `max_stack_bytes` per goroutine.
                if stack_buf.len() < want {
                    stack_buf.resize(want, 0);
                }
                let got = mem.read_partial(sp, &mut stack_buf[..want])?;
                let window = StackWindow {
                    base: sp,
                    bytes: &stack_buf[..got],
                };
                let start = UnwindStart {
                    pc,
                    sp,
                    lr,
                    syscall,
                };
                let (pcs, end) =
                    t.pclntab
                        .traceback_pcs(start, t.bias, &window, t.uses_lr, limits.max_frames);
                g.stack = match interned.get(&pcs[..]) {
                    Some(a) => a.clone(),
                    None => {
                        let a: Arc<[u64]> = Arc::from(pcs);
                        interned.insert(a.clone());
                        a
                    }
                };
                g.unwind = Some(end);
            }
            kept.push((i, h));
            found.push(g);
        }
        // Second read of the headers: drop every goroutine that moved on meanwhile.
        let ok2 = read_headers(part, &mut second)?;
        let mut keep = Vec::with_capacity(kept.len());
        for (i, h) in &kept {
            let again = ok2[*i]
                .then(|| decode(&t.layout, &second[i * glen..(i + 1) * glen]))
                .flatten();
            let same = again.is_some_and(|a| {
                a.status == h.status
                    && a.goid == h.goid
                    && a.sched_sp == h.sched_sp
                    && a.sched_pc == h.sched_pc
                    && a.syscallsp == h.syscallsp
                    && a.syscallpc == h.syscallpc
            });
            keep.push(same);
            if !same {
                snap.changed += 1;
            }
        }
        let mut it = keep.into_iter();
        snap.goroutines
            .extend(found.into_iter().filter(|_| it.next().unwrap_or(false)));
    }
    Ok(snap)
}

/// User goroutines by state, from one batched read of the `g` headers (no stacks, no second
/// read): the agent's per-cycle gauge. Invalid headers are left out.
pub fn count_states(
    t: &GoroutineTarget<'_>,
    limits: &GoroutineLimits,
) -> Result<std::collections::BTreeMap<&'static str, i64>, GoroutineReadError> {
    let gptrs = read_allgs(t, limits)?;
    let glen = t.layout.read_len() as usize;
    let mut out = std::collections::BTreeMap::new();
    let mut seen: HashSet<u64> = HashSet::with_capacity(gptrs.len());
    let mut buf = Vec::new();
    for part in gptrs.chunks(CHUNK) {
        buf.clear();
        buf.resize(part.len() * glen, 0);
        let mut reqs: Vec<ReadRequest<'_>> = buf
            .chunks_exact_mut(glen)
            .zip(part)
            .map(|(buf, &addr)| ReadRequest { addr, buf, got: 0 })
            .collect();
        t.mem.read_batch(&mut reqs)?;
        let ok: Vec<bool> = reqs.iter().map(|r| r.got == glen).collect();
        drop(reqs);
        for (i, chunk) in buf.chunks_exact(glen).enumerate() {
            let Some(h) = ok[i].then(|| decode(&t.layout, chunk)).flatten() else {
                continue;
            };
            let Some(status) = GStatus::decode(h.status, &t.version) else {
                continue;
            };
            if matches!(status, GStatus::Dead | GStatus::Idle)
                || !seen.insert(h.goid)
                || is_system_goroutine(t.pclntab, h.startpc.wrapping_sub(t.bias))
            {
                continue;
            }
            *out.entry(status.as_str()).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// `isSystemGoroutine(gp, fixed=false)` at a quiescent moment: the start function is in package
/// `runtime` and is not `runtime.main`, `runtime.handleAsyncEvent` or `runtime.corostart`. The
/// finalizer goroutine (`runtime.runfinq`) counts as a system goroutine (it is one except while it
/// runs a finalizer). `startpc` is unrelocated.
pub fn is_system_goroutine(pclntab: &Pclntab, startpc: u64) -> bool {
    let Some(name) = pclntab.func_raw_name(startpc) else {
        return false;
    };
    if matches!(
        name.as_str(),
        "runtime.main" | "runtime.handleAsyncEvent" | "runtime.corostart"
    ) {
        return false;
    }
    name.starts_with("runtime.")
}
