//! Walking the runtime's memory-profile bucket list (`runtime.mbuckets` → `allnext` → …) in a remote
//! process, and turning the counters into what `runtime.MemProfile` would return.
//!
//! Everything read is untrusted: the walk is bounded by [`WalkLimits`], detects cycles, checks that
//! every bucket is a memory-profile bucket with a plausible `nstk` and size, and (when a
//! [`MemoryMap`] is given) that each pointer lies in readable memory before it is followed. A list that
//! turns bad part-way ends the walk with the buckets read so far and a warning.

use std::collections::HashSet;

use crate::runtime::layout::{self, RuntimeLayout, FUTURE_CYCLES};
use crate::target::maps::MemoryMap;
use crate::target::memory::{MemoryError, RemoteMemory};

/// Bounds on one walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Stop after this many buckets (a warning says the list was truncated).
    pub max_buckets: usize,
    /// Stop when the stacks read so far hold this many frames (8 bytes each): with up to 1026
    /// frames a bucket, the bucket cap alone would still allow gigabytes.
    pub max_total_frames: usize,
    /// Stop (without a warning) once this instant has passed, after at least one bucket, and report
    /// where to continue in [`Walk::resume_at`]. Bounds the time one process can take.
    pub deadline: Option<std::time::Instant>,
    /// Frames read speculatively with the header, so most buckets cost one read.
    pub prefetch_frames: u64,
    /// Bytes read at once below a bucket after the first of a walk (0: one read per bucket). The
    /// runtime allocates buckets with `persistentalloc`, a bump allocator, so the next bucket of
    /// `allnext` (the previously allocated one) usually lies just below: one read of the window
    /// serves many buckets. Windows never extend outside the readable anonymous mapping of the
    /// bucket, so they read nothing a bucket-by-bucket walk could not.
    pub read_window: u64,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_buckets: 1 << 20,
            max_total_frames: 1 << 23,
            deadline: None,
            prefetch_frames: 64,
            read_window: DEFAULT_READ_WINDOW,
        }
    }
}

/// Hashing for sets of bucket addresses: one multiply by a random odd key per set (multiply-shift
/// hashing), a fraction of SipHash's cost for the one insert per bucket a walk makes. The key is
/// drawn from the standard library's random hasher seed, so a hostile target cannot aim addresses
/// at one slot.
#[derive(Clone, Copy)]
pub struct AddrHash {
    key: u64,
}

impl Default for AddrHash {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x676f_6865_6170);
        AddrHash {
            key: h.finish() | 1,
        }
    }
}

impl std::hash::BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher {
            key: self.key,
            h: 0,
        }
    }
}

/// See [`AddrHash`].
pub struct AddrHasher {
    key: u64,
    h: u64,
}

impl std::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        // The high bits of the product are the well-mixed ones; hashbrown uses the top 7 for tags
        // and the low bits for the slot.
        self.h ^ (self.h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.h.rotate_left(8));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.h = (v ^ self.h).wrapping_mul(self.key);
    }
}

/// Default [`WalkLimits::read_window`] (chosen by `benches/src/bin/cycle_cost.rs`).
pub const DEFAULT_READ_WINDOW: u64 = 64 << 10;

/// Object sizes above this are treated as garbage (no real allocation is 256 TiB).
const MAX_OBJECT_SIZE: u64 = 1 << 48;

/// One `memRecordCycle`: counts of sampled objects, and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

impl Cycle {
    fn add(&mut self, o: &Cycle) {
        self.allocs = self.allocs.wrapping_add(o.allocs);
        self.frees = self.frees.wrapping_add(o.frees);
        self.alloc_bytes = self.alloc_bytes.wrapping_add(o.alloc_bytes);
        self.free_bytes = self.free_bytes.wrapping_add(o.free_bytes);
    }
}

/// The `memRecord` of one bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemRecord {
    pub active: Cycle,
    pub future: [Cycle; FUTURE_CYCLES],
}

impl MemRecord {
    /// The counters as `runtime.MemProfile` publishes them: `active` plus the future cycle
    /// `mProfCycle % 3` that `MemProfile` flushes before reading (just `active` when the cycle is
    /// unknown). `cycle` is the decoded `mProfCycle` (value >> 1).
    pub fn published(&self, cycle: Option<u32>) -> Cycle {
        let mut c = self.active;
        if let Some(f) = cycle.and_then(|n| self.future.get(n as usize % FUTURE_CYCLES)) {
            c.add(f);
        }
        c
    }

    /// Decodes a memRecord; for layouts without byte counters, bytes = count × `size`. `None` if
    /// `data` is shorter than [`RuntimeLayout::record_size`].
    pub fn decode(layout: &RuntimeLayout, data: &[u8], size: u64) -> Option<MemRecord> {
        let mut r = MemRecord::default();
        r.decode_into(layout, data, size).then_some(r)
    }

    /// [`MemRecord::decode`] in place (no temporary record to move); `false`, leaving `self` as
    /// it was, if `data` is shorter than the record.
    #[inline]
    pub fn decode_into(&mut self, layout: &RuntimeLayout, data: &[u8], size: u64) -> bool {
        if layout.cycle_has_bytes {
            // 4 cycles of (allocs, frees, alloc_bytes, free_bytes).
            let Some(d) = data.get(..layout.record_size() as usize) else {
                return false;
            };
            for (k, c) in std::iter::once(&mut self.active)
                .chain(self.future.iter_mut())
                .enumerate()
            {
                *c = Cycle {
                    allocs: word(d, 4 * k),
                    frees: word(d, 4 * k + 1),
                    alloc_bytes: word(d, 4 * k + 2),
                    free_bytes: word(d, 4 * k + 3),
                };
            }
        } else {
            // 4 cycles of (allocs, frees).
            let Some(d) = data.get(..layout.record_size() as usize) else {
                return false;
            };
            for (k, c) in std::iter::once(&mut self.active)
                .chain(self.future.iter_mut())
                .enumerate()
            {
                let (allocs, frees) = (word(d, 2 * k), word(d, 2 * k + 1));
                *c = Cycle {
                    allocs,
                    frees,
                    alloc_bytes: allocs.wrapping_mul(size),
                    free_bytes: frees.wrapping_mul(size),
                };
            }
        }
        true
    }
}

/// Word `k` (the little-endian u64 at `8 × k`) of `d`; 0 past its end.
#[inline(always)]
fn word(d: &[u8], k: usize) -> u64 {
    le_word(d, 8 * k as u64)
}

/// The raw words the memRecord at the start of `data` publishes at `cycle`
/// ([`MemRecord::published`]'s sum, before 1.27's bytes are derived from counts): allocs, frees
/// and, where the layout has them, the two byte counters (0 otherwise). Equal words at one
/// `cycle` mean equal published counters, as a bucket's object size is fixed. `None` if `data` is
/// shorter than the record.
#[inline]
pub fn published_words(
    layout: &RuntimeLayout,
    data: &[u8],
    cycle: Option<u32>,
) -> Option<[u64; 4]> {
    let mut out = [0u64; 4];
    let per = if layout.cycle_has_bytes { 4 } else { 2 };
    let d = data.get(..layout.record_size() as usize)?;
    for (k, o) in out.iter_mut().enumerate().take(per) {
        *o = word(d, k);
    }
    if let Some(c) = cycle {
        let f = per * (1 + c as usize % FUTURE_CYCLES);
        for (k, o) in out.iter_mut().enumerate().take(per) {
            *o = o.wrapping_add(word(d, f + k));
        }
    }
    Some(out)
}

/// One bucket as read from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBucket {
    /// Address of the bucket in the target (stable: the runtime never frees buckets).
    pub addr: u64,
    /// Allocation size class of the objects in this bucket, in bytes.
    pub size: u64,
    /// Return PCs, innermost first (runtime addresses: subtract the load bias to symbolize).
    pub stack: Vec<u64>,
    pub record: MemRecord,
}

impl RawBucket {
    /// Address of this bucket's memRecord in the target.
    pub fn record_addr(&self, layout: &RuntimeLayout) -> u64 {
        self.addr + layout.record_offset(self.stack.len() as u64)
    }
}

/// Why a walk could not even start or had to stop.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WalkError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("bucket at {addr:#x}: {reason}")]
    BadBucket { addr: u64, reason: String },
    #[error("bucket records do not match the Go {version} layout ({bad} of {checked} buckets have alloc_bytes != allocs × size)")]
    LayoutMismatch {
        version: String,
        bad: usize,
        checked: usize,
    },
}

/// The buckets read, and what went wrong part-way (if anything).
#[derive(Debug, Clone, Default)]
pub struct Walk {
    pub buckets: Vec<RawBucket>,
    /// Set when the walk stopped early: bucket cap reached, a cycle, or a bad/unreadable bucket.
    pub warning: Option<String>,
    /// Set when the walk stopped at its deadline: the next bucket to read. The runtime never unlinks
    /// buckets and only prepends new ones, so the rest of the list can be read later from here.
    pub resume_at: Option<u64>,
}

/// Reads buckets from a remote process.
pub struct BucketWalker<'a, M: RemoteMemory + ?Sized> {
    pub mem: &'a M,
    pub layout: RuntimeLayout,
    pub map: Option<&'a MemoryMap>,
    pub limits: WalkLimits,
    /// The last window read (see [`WalkLimits::read_window`]): its address and bytes.
    window: std::cell::RefCell<(u64, Vec<u8>)>,
    /// Whether a bucket was read since the walk began (the first is read alone).
    warm: std::cell::Cell<bool>,
    /// The bytes of the bucket being decoded (kept between buckets).
    scratch: std::cell::RefCell<Vec<u8>>,
}

impl<'a, M: RemoteMemory + ?Sized> BucketWalker<'a, M> {
    pub fn new(mem: &'a M, layout: RuntimeLayout, map: Option<&'a MemoryMap>) -> Self {
        BucketWalker {
            mem,
            layout,
            map,
            limits: WalkLimits::default(),
            window: std::cell::RefCell::new((0, Vec::new())),
            warm: std::cell::Cell::new(false),
            scratch: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Reads `[addr, addr + buf.len())` like `read_partial`, through the read window when enabled:
    /// served from the last window if it covers the range, else from a new window ending just
    /// above the range, clipped to the range's readable anonymous mapping.
    fn read_windowed(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let want = buf.len() as u64;
        let window = self.limits.read_window;
        let first = !self.warm.replace(true);
        let (Some(map), false, false) = (self.map, window == 0, first) else {
            return self.mem.read_partial(addr, buf);
        };
        let end = addr.saturating_add(want);
        {
            let w = self.window.borrow();
            let (base, data) = (w.0, &w.1);
            if addr >= base && end <= base + data.len() as u64 {
                let off = (addr - base) as usize;
                buf.copy_from_slice(&data[off..off + buf.len()]);
                return Ok(buf.len());
            }
        }
        let Some((lo, hi)) = map.anonymous_range(addr) else {
            return self.mem.read_partial(addr, buf);
        };
        let top = end.min(hi);
        let bottom = top.saturating_sub(window.max(want)).max(lo).min(addr);
        let mut w = self.window.borrow_mut();
        w.1.resize((top - bottom) as usize, 0);
        let got = match self.mem.read_partial(bottom, &mut w.1) {
            Ok(n) => n,
            Err(e @ (MemoryError::ProcessGone(_) | MemoryError::PermissionDenied(_))) => {
                return Err(e)
            }
            Err(_) => 0,
        };
        w.1.truncate(got);
        w.0 = bottom;
        let off = (addr - bottom) as usize;
        if got <= off {
            drop(w);
            return self.mem.read_partial(addr, buf);
        }
        let n = (got - off).min(buf.len());
        buf[..n].copy_from_slice(&w.1[off..off + n]);
        Ok(n)
    }

    /// Walks the whole list starting at `head` (the value of `runtime.mbuckets`).
    pub fn walk(&self, head: u64) -> Result<Walk, WalkError> {
        self.walk_until(head, |_| false)
    }

    /// Walks from `head` until a bucket for which `known(addr)` is true (not included) or the end.
    /// New buckets are only ever prepended, so with `known` = "seen last cycle" this reads just the new
    /// ones. An error on the very first bucket is returned; later errors end the walk with a warning.
    pub fn walk_until(&self, head: u64, known: impl Fn(u64) -> bool) -> Result<Walk, WalkError> {
        let mut out = Walk::default();
        let mut seen: HashSet<u64, AddrHash> = HashSet::default();
        let mut frames = 0usize;
        let mut next = head;
        while next != 0 {
            if known(next) {
                break;
            }
            if out.buckets.len() >= self.limits.max_buckets {
                out.warning = Some(format!(
                    "bucket list longer than {} entries; truncated",
                    self.limits.max_buckets
                ));
                break;
            }
            if !seen.insert(next) {
                out.warning = Some(format!("bucket list loops back to {next:#x}; stopped"));
                break;
            }
            if let Some(deadline) = self.limits.deadline {
                if !out.buckets.is_empty() && std::time::Instant::now() >= deadline {
                    out.resume_at = Some(next);
                    break;
                }
            }
            match self.read_bucket(next) {
                Ok((bucket, allnext)) => {
                    frames += bucket.stack.len();
                    out.buckets.push(bucket);
                    next = allnext;
                    if frames >= self.limits.max_total_frames {
                        out.warning = Some(format!(
                            "bucket stacks exceed {} frames in total; truncated",
                            self.limits.max_total_frames
                        ));
                        break;
                    }
                }
                Err(
                    e @ WalkError::Memory(
                        MemoryError::ProcessGone(_) | MemoryError::PermissionDenied(_),
                    ),
                ) => return Err(e),
                Err(e) if out.buckets.is_empty() => return Err(e),
                Err(e) => {
                    out.warning = Some(format!("bucket list ended early: {e}"));
                    break;
                }
            }
        }
        Ok(out)
    }

    fn check_ptr(&self, addr: u64, len: u64) -> Result<(), WalkError> {
        if !addr.is_multiple_of(8) {
            return Err(WalkError::BadBucket {
                addr,
                reason: "misaligned pointer".into(),
            });
        }
        if let Some(map) = self.map {
            if !map.is_anonymous_readable(addr, len) {
                return Err(WalkError::BadBucket {
                    addr,
                    reason: "pointer outside readable anonymous memory".into(),
                });
            }
        }
        Ok(())
    }

    /// Reads one bucket (header, stack, memRecord); returns it and its `allnext`.
    pub fn read_bucket(&self, addr: u64) -> Result<(RawBucket, u64), WalkError> {
        let l = &self.layout;
        // Fast path: the whole bucket lies in the last read window (which lies in readable
        // anonymous memory), decoded in place.
        if addr.is_multiple_of(8) && self.map.is_some() {
            let w = self.window.borrow();
            let (base, data) = (w.0, &w.1);
            let off = addr.wrapping_sub(base);
            if addr >= base
                && off
                    .checked_add(l.header_size)
                    .is_some_and(|e| e <= data.len() as u64)
            {
                let d = &data[off as usize..];
                let (allnext, size, nstk, total) = self.parse_header(addr, d)?;
                if let Some(d) = d.get(..total as usize) {
                    return self.finish(addr, d, size, nstk, allnext);
                }
            }
        }
        self.check_ptr(addr, l.header_size)?;
        let guess = l.header_size + 8 * self.limits.prefetch_frames + l.record_size();
        let mut scratch = self.scratch.borrow_mut();
        let buf = &mut *scratch;
        buf.clear();
        buf.resize(guess as usize, 0);
        let got = self.read_windowed(addr, buf)?;
        if (got as u64) < l.header_size {
            return Err(WalkError::Memory(MemoryError::Unmapped {
                pid: self.mem.pid(),
                addr,
                len: l.header_size as usize,
            }));
        }
        let (allnext, size, nstk, total) = self.parse_header(addr, buf)?;
        self.check_ptr(addr, total)?;
        if total > got as u64 {
            buf.resize(total as usize, 0);
            let more = self.read_windowed(addr + got as u64, &mut buf[got..])?;
            if got + more < total as usize {
                return Err(WalkError::Memory(MemoryError::Unmapped {
                    pid: self.mem.pid(),
                    addr,
                    len: total as usize,
                }));
            }
        }
        self.finish(addr, &buf[..total as usize], size, nstk, allnext)
    }

    /// Checks the header at the start of `buf` (at least `header_size` bytes) of the bucket at
    /// `addr`; returns its `allnext`, object size, `nstk` and the bucket's whole size in bytes
    /// (header, stack and memRecord; bounded by the version's maximum `nstk`).
    fn parse_header(&self, addr: u64, buf: &[u8]) -> Result<(u64, u64, u64, u64), WalkError> {
        let l = &self.layout;
        let allnext = le_word(buf, layout::OFF_ALLNEXT);
        let typ = le_word(buf, layout::OFF_TYP);
        let size = le_word(buf, layout::OFF_SIZE);
        let nstk = le_word(buf, layout::OFF_NSTK);
        if typ != layout::MEM_PROFILE_BUCKET {
            return Err(WalkError::BadBucket {
                addr,
                reason: format!("bucket type {typ} is not the memory-profile type"),
            });
        }
        if nstk > l.max_stack {
            return Err(WalkError::BadBucket {
                addr,
                reason: format!(
                    "stack depth {nstk} exceeds the runtime maximum {}",
                    l.max_stack
                ),
            });
        }
        if size > MAX_OBJECT_SIZE {
            return Err(WalkError::BadBucket {
                addr,
                reason: format!("object size {size} is implausible"),
            });
        }
        Ok((allnext, size, nstk, l.record_offset(nstk) + l.record_size()))
    }

    /// Decodes the stack and memRecord of the bucket at `addr` from its bytes `data` (its whole
    /// size as [`BucketWalker::parse_header`] computed it).
    fn finish(
        &self,
        addr: u64,
        data: &[u8],
        size: u64,
        nstk: u64,
        allnext: u64,
    ) -> Result<(RawBucket, u64), WalkError> {
        let l = &self.layout;
        let h = l.header_size as usize;
        let roff = l.record_offset(nstk) as usize;
        let short = || WalkError::BadBucket {
            addr,
            reason: "short memRecord".into(),
        };
        let stack: Vec<u64> = data
            .get(h..roff)
            .ok_or_else(short)?
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        let record =
            MemRecord::decode(l, data.get(roff..).ok_or_else(short)?, size).ok_or_else(short)?;
        Ok((
            RawBucket {
                addr,
                size,
                stack,
                record,
            },
            allnext,
        ))
    }
}

/// The little-endian u64 at `off` in `buf` (0 past the end).
#[inline]
fn le_word(buf: &[u8], off: u64) -> u64 {
    let off = off as usize;
    buf.get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Self-check of the layout against what was read.
///
/// ≤ 1.26 layout: in every cycle with allocations, `alloc_bytes == allocs × size`; a 1.27 binary
/// read with 32-byte cycles fails this on most buckets. 1.27 layout (16-byte cycles, no byte
/// counters): a ≤ 1.26 binary read this way shows its `alloc_bytes` as the first future cycle's
/// `allocs`, i.e. `future[0].allocs == active.allocs × size` on most buckets with allocations —
/// which real counts practically never satisfy.
pub fn check_layout(
    layout: &RuntimeLayout,
    version: &str,
    buckets: &[RawBucket],
) -> Result<(), WalkError> {
    let mut checked = 0usize;
    let mut bad = 0usize;
    for b in buckets {
        if layout.cycle_has_bytes {
            for c in std::iter::once(&b.record.active).chain(b.record.future.iter()) {
                if c.allocs == 0 && c.alloc_bytes == 0 {
                    continue;
                }
                checked += 1;
                if c.allocs.checked_mul(b.size) != Some(c.alloc_bytes) {
                    bad += 1;
                }
            }
        } else {
            let a = &b.record.active;
            if a.allocs == 0 || b.size <= 1 {
                continue;
            }
            checked += 1;
            if a.allocs.checked_mul(b.size) == Some(b.record.future[0].allocs) {
                bad += 1;
            }
        }
    }
    if checked > 0 && bad * 4 > checked {
        return Err(WalkError::LayoutMismatch {
            version: version.to_string(),
            bad,
            checked,
        });
    }
    Ok(())
}

/// A bucket's counters as `runtime.MemProfile` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemProfileRecord {
    /// Object size of the bucket, in bytes.
    pub object_size: u64,
    /// Sampled (not scaled) counts and bytes.
    pub alloc_objects: i64,
    pub free_objects: i64,
    pub alloc_bytes: i64,
    pub free_bytes: i64,
    /// Return PCs, innermost first, runtime addresses.
    pub stack: Vec<u64>,
}

/// Mirrors, read-only, what `runtime.MemProfile(p, inuseZero=true)` does before it reads: add the
/// pending future cycle `mProfCycle % 3` into `active` (`mProf_FlushLocked`), and when every active
/// counter is then zero (no GC finished yet), sum all future cycles. `cycle` is the decoded
/// `mProfCycle` (value >> 1) if the symbol was found. Records keep the list order.
pub fn memprofile_records(buckets: &[RawBucket], cycle: Option<u32>) -> Vec<MemProfileRecord> {
    let mut actives: Vec<Cycle> = buckets.iter().map(|b| b.record.published(cycle)).collect();
    if actives.iter().all(|a| a.allocs == 0 && a.frees == 0) {
        for (a, b) in actives.iter_mut().zip(buckets) {
            *a = b.record.active;
            for f in &b.record.future {
                a.add(f);
            }
        }
    }
    buckets
        .iter()
        .zip(actives)
        .map(|(b, a)| MemProfileRecord {
            object_size: b.size,
            alloc_objects: a.allocs as i64,
            free_objects: a.frees as i64,
            alloc_bytes: a.alloc_bytes as i64,
            free_bytes: a.free_bytes as i64,
            stack: b.stack.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::version::GoVersion;
    use crate::target::memory::ReadStats;
    use std::collections::BTreeMap;

    /// `published_words` sums the same words `MemRecord::published` does, for both layouts and
    /// every cycle (and none), and refuses a short record as `decode` does.
    #[test]
    fn published_words_are_the_decoded_records_published_counters() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for v in [(1, 24), (1, 27)] {
            let layout = RuntimeLayout::for_version(&GoVersion::new(v.0, v.1));
            let rs = layout.record_size() as usize;
            for _ in 0..200 {
                let data: Vec<u8> = (0..rs)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 56) as u8
                    })
                    .collect();
                let size = 16 + x % 4096;
                let rec = MemRecord::decode(&layout, &data, size).unwrap();
                for cycle in [None, Some(0), Some(1), Some(2), Some(7)] {
                    let p = rec.published(cycle);
                    let want = if layout.cycle_has_bytes {
                        [p.allocs, p.frees, p.alloc_bytes, p.free_bytes]
                    } else {
                        [p.allocs, p.frees, 0, 0]
                    };
                    assert_eq!(
                        published_words(&layout, &data, cycle),
                        Some(want),
                        "{v:?} {cycle:?}"
                    );
                }
                assert_eq!(published_words(&layout, &data[..rs - 1], Some(1)), None);
                assert_eq!(MemRecord::decode(&layout, &data[..rs - 1], size), None);
            }
        }
    }

    /// A fake address space: a set of byte ranges.
    struct FakeMem {
        bytes: BTreeMap<u64, Vec<u8>>,
    }

    impl RemoteMemory for FakeMem {
        fn pid(&self) -> i32 {
            1
        }
        fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
            let Some((start, data)) = self.bytes.range(..=addr).next_back() else {
                return Ok(0);
            };
            let off = (addr - start) as usize;
            if off >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        }
        fn stats(&self) -> ReadStats {
            ReadStats::default()
        }
    }

    fn bucket_bytes(
        l: &RuntimeLayout,
        allnext: u64,
        typ: u64,
        size: u64,
        stk: &[u64],
        active: (u64, u64),
    ) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [0, allnext, typ, 0xabcdef, size, stk.len() as u64] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        for pc in stk {
            v.extend_from_slice(&pc.to_le_bytes());
        }
        let mut cyc = vec![active.0, active.1];
        if l.cycle_has_bytes {
            cyc.extend([active.0 * size, active.1 * size]);
        }
        for _ in 0..4 {
            for w in &cyc {
                v.extend_from_slice(&w.to_le_bytes());
            }
            cyc.iter_mut().for_each(|w| *w = 0);
        }
        v
    }

    fn layout(v: &str) -> RuntimeLayout {
        RuntimeLayout::for_version(&GoVersion::parse(v).unwrap())
    }

    #[test]
    fn walks_list_in_order_both_layouts() {
        for ver in ["go1.23.1", "go1.27.3"] {
            let l = layout(ver);
            let mut mem = FakeMem {
                bytes: BTreeMap::new(),
            };
            mem.bytes.insert(
                0x1000,
                bucket_bytes(&l, 0x2000, 1, 16, &[0x401000, 0x402000], (10, 4)),
            );
            mem.bytes.insert(
                0x2000,
                bucket_bytes(&l, 0, 1, 65536, &[0x403000; 100], (3, 3)),
            );
            let w = BucketWalker::new(&mem, l, None).walk(0x1000).unwrap();
            assert!(w.warning.is_none(), "{:?}", w.warning);
            assert_eq!(w.buckets.len(), 2);
            assert_eq!(w.buckets[0].stack, vec![0x401000, 0x402000]);
            assert_eq!(
                w.buckets[0].record.active,
                Cycle {
                    allocs: 10,
                    frees: 4,
                    alloc_bytes: 160,
                    free_bytes: 64
                }
            );
            assert_eq!(
                w.buckets[1].stack.len(),
                100,
                "stack longer than the prefetch"
            );
            check_layout(&l, ver, &w.buckets).unwrap();
        }
    }

    #[test]
    fn windowed_walk_decodes_in_place_like_bucket_by_bucket() {
        for ver in ["go1.23.1", "go1.27.3"] {
            let l = layout(ver);
            // Buckets packed downwards as persistentalloc hands them out (the newest highest),
            // each `allnext` pointing at the one below; a bad type near the end of the list.
            let (base, stride, n) = (0xc0_0000_0000u64, 512usize, 300usize);
            let at = |i: usize| base + ((n - 1 - i) * stride) as u64;
            let mut region = vec![0u8; n * stride];
            for i in 0..n {
                let next = if i + 1 < n { at(i + 1) } else { 0 };
                let stk: Vec<u64> = (0..(1 + i % 40) as u64).map(|k| 0x401000 + k).collect();
                let typ = if i == n - 5 { 2 } else { 1 };
                let b = bucket_bytes(&l, next, typ, 16 + i as u64, &stk, (i as u64 + 1, 1));
                let off = (at(i) - base) as usize;
                region[off..off + b.len()].copy_from_slice(&b);
            }
            let mut mem = FakeMem {
                bytes: BTreeMap::new(),
            };
            mem.bytes.insert(base, region);
            let map = MemoryMap::parse(&format!(
                "{:x}-{:x} rw-p 00000000 00:00 0\n",
                base,
                base + (n * stride) as u64
            ))
            .unwrap();
            let windowed = BucketWalker::new(&mem, l, Some(&map)).walk(at(0)).unwrap();
            let mut one_by_one = BucketWalker::new(&mem, l, Some(&map));
            one_by_one.limits.read_window = 0;
            let plain = one_by_one.walk(at(0)).unwrap();
            assert_eq!(windowed.buckets, plain.buckets, "{ver}");
            assert_eq!(windowed.warning, plain.warning, "{ver}");
            assert!(
                windowed
                    .warning
                    .as_deref()
                    .is_some_and(|w| w.contains("memory-profile type")),
                "{ver}: {:?}",
                windowed.warning
            );
            assert_eq!(windowed.buckets.len(), n - 5, "{ver}");
            for (i, b) in windowed.buckets.iter().enumerate() {
                assert_eq!(b.addr, at(i));
                assert_eq!(b.size, 16 + i as u64);
                assert_eq!(b.stack.len(), 1 + i % 40);
                assert_eq!(b.stack.last(), Some(&(0x401000 + (i % 40) as u64)));
                assert_eq!(b.record.active.allocs, i as u64 + 1);
            }
        }
    }

    #[test]
    fn detects_cycles_bad_types_and_limits() {
        let l = layout("go1.22.1");
        let mut mem = FakeMem {
            bytes: BTreeMap::new(),
        };
        mem.bytes
            .insert(0x1000, bucket_bytes(&l, 0x2000, 1, 16, &[1], (1, 0)));
        mem.bytes
            .insert(0x2000, bucket_bytes(&l, 0x1000, 1, 16, &[2], (1, 0)));
        let w = BucketWalker::new(&mem, l, None).walk(0x1000).unwrap();
        assert_eq!(w.buckets.len(), 2);
        assert!(w.warning.unwrap().contains("loops"));

        let mut walker = BucketWalker::new(&mem, l, None);
        walker.limits.max_buckets = 1;
        let w = walker.walk(0x1000).unwrap();
        assert_eq!(w.buckets.len(), 1);
        assert!(w.warning.unwrap().contains("truncated"));

        let mut walker = BucketWalker::new(&mem, l, None);
        walker.limits.max_total_frames = 1;
        let w = walker.walk(0x1000).unwrap();
        assert_eq!(w.buckets.len(), 1);
        assert!(w.warning.unwrap().contains("frames"));
        mem.bytes
            .insert(0x3000, bucket_bytes(&l, 0, 2, 16, &[1], (1, 0)));
        assert!(matches!(
            BucketWalker::new(&mem, l, None).walk(0x3000),
            Err(WalkError::BadBucket { .. })
        ));
        mem.bytes
            .insert(0x4000, bucket_bytes(&l, 0, 1, 16, &[1; 40], (1, 0)));
        assert!(
            matches!(
                BucketWalker::new(&mem, l, None).walk(0x4000),
                Err(WalkError::BadBucket { .. })
            ),
            "nstk 40 > 32"
        );
        // A pointer into nowhere after a good bucket: partial result with a warning.
        mem.bytes
            .insert(0x5000, bucket_bytes(&l, 0x9999_0000, 1, 16, &[1], (1, 0)));
        let w = BucketWalker::new(&mem, l, None).walk(0x5000).unwrap();
        assert_eq!(w.buckets.len(), 1);
        assert!(w.warning.is_some());
        assert!(
            BucketWalker::new(&mem, l, None).walk(0x1001).is_err(),
            "misaligned head"
        );
    }

    #[test]
    fn deadline_stops_with_a_resume_point() {
        let l = layout("go1.23.1");
        let mut mem = FakeMem {
            bytes: BTreeMap::new(),
        };
        for i in 0..5u64 {
            let next = if i < 4 { 0x1000 * (i + 2) } else { 0 };
            mem.bytes.insert(
                0x1000 * (i + 1),
                bucket_bytes(&l, next, 1, 16, &[i + 1], (1, 0)),
            );
        }
        let mut walker = BucketWalker::new(&mem, l, None);
        walker.limits.deadline = Some(std::time::Instant::now());
        let mut all = Vec::new();
        let mut at = Some(0x1000);
        let mut calls = 0;
        while let Some(start) = at {
            let w = walker.walk_until(start, |_| false).unwrap();
            assert!(w.warning.is_none());
            assert!(!w.buckets.is_empty(), "at least one bucket per call");
            all.extend(w.buckets);
            at = w.resume_at;
            calls += 1;
        }
        assert_eq!(
            calls, 5,
            "an expired deadline still reads one bucket a call"
        );
        let stacks: Vec<u64> = all.iter().map(|b| b.stack[0]).collect();
        assert_eq!(stacks, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn wrong_layout_fails_self_check() {
        // Buckets written in the 1.27 layout, read as 1.26.
        let l27 = layout("go1.27.3");
        let l26 = layout("go1.26.1");
        let mut mem = FakeMem {
            bytes: BTreeMap::new(),
        };
        for i in 0..8u64 {
            let next = if i < 7 { 0x1000 * (i + 2) } else { 0 };
            let mut b = bucket_bytes(&l27, next, 1, 48, &[7], (5 + i, 2));
            b.resize(b.len() + 64, 0); // whatever follows the bucket in memory
            mem.bytes.insert(0x1000 * (i + 1), b);
        }
        let w = BucketWalker::new(&mem, l26, None).walk(0x1000).unwrap();
        assert!(matches!(
            check_layout(&l26, "go1.26.1", &w.buckets),
            Err(WalkError::LayoutMismatch { .. })
        ));
    }

    #[test]
    fn older_layout_read_as_1_27_fails_self_check() {
        let l26 = layout("go1.26.1");
        let l27 = layout("go1.27.3");
        let mut mem = FakeMem {
            bytes: BTreeMap::new(),
        };
        for i in 0..8u64 {
            let next = if i < 7 { 0x1000 * (i + 2) } else { 0 };
            mem.bytes.insert(
                0x1000 * (i + 1),
                bucket_bytes(&l26, next, 1, 48, &[7], (5 + i, 2)),
            );
        }
        let w = BucketWalker::new(&mem, l27, None).walk(0x1000).unwrap();
        assert!(matches!(
            check_layout(&l27, "go1.27.3", &w.buckets),
            Err(WalkError::LayoutMismatch { .. })
        ));
        // The right layout passes.
        let w = BucketWalker::new(&mem, l26, None).walk(0x1000).unwrap();
        check_layout(&l26, "go1.26.1", &w.buckets).unwrap();
    }

    #[test]
    fn memprofile_flush_rules() {
        let mk = |active: Cycle, future: [Cycle; 3]| RawBucket {
            addr: 8,
            size: 8,
            stack: vec![],
            record: MemRecord { active, future },
        };
        let c = |a| Cycle {
            allocs: a,
            frees: 0,
            alloc_bytes: a * 8,
            free_bytes: 0,
        };
        let b = [mk(c(5), [c(1), c(2), c(4)])];
        // Active non-zero: only future[cycle % 3] is flushed in.
        assert_eq!(memprofile_records(&b, Some(4))[0].alloc_objects, 7);
        assert_eq!(memprofile_records(&b, None)[0].alloc_objects, 5);
        // Active still zero after the flush (no GC finished yet): all futures are summed.
        let b = [mk(c(0), [c(0), c(2), c(4)])];
        assert_eq!(memprofile_records(&b, Some(0))[0].alloc_objects, 6);
        assert_eq!(memprofile_records(&b, Some(0))[0].alloc_bytes, 48);
        // ...but not when the flushed future makes it non-zero.
        let b = [mk(c(0), [c(1), c(2), c(4)])];
        assert_eq!(memprofile_records(&b, Some(0))[0].alloc_objects, 1);
    }
}
