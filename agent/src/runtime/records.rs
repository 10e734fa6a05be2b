//! Re-reading the memRecords of known buckets at the copy floor: a read plan that coalesces
//! records lying close together into one range, built once per bucket list and reused every
//! cycle with the same buffer.
//!
//! Buckets come from `persistentalloc`, a bump allocator, so a process's buckets sit packed in a
//! few anonymous chunks and their memRecords are a few hundred bytes apart. One `process_vm_readv`
//! range per record makes the kernel pin a page per range; merging records within
//! [`RecordPlan::gap`] bytes of each other reads somewhat more bytes in far fewer ranges. A merged
//! range never leaves the readable anonymous mapping its first record lies in, and never exceeds
//! [`MAX_RANGE`] bytes.
//!
//! The ranges are read in batches of about [`BATCH_BYTES`] into one reused buffer, and each
//! batch's records are decoded into the buckets right after it arrives, while it is still in the
//! CPU cache: the kernel's copy and the decoding stay within a cache-sized buffer instead of a
//! buffer of the whole plan (measured in `benches/src/bin/cycle_cost.rs`).
//!
//! Most records do not move between two cycles: the plan keeps, in a dense array in its own
//! (address) order, the published counters it last wrote into each bucket and the `mProfCycle`
//! they were summed at. A record whose published counters and cycle are both unchanged is not
//! decoded and its bucket (168 scattered bytes of a list that outgrows the CPU cache) is not
//! touched.

use crate::runtime::layout::RuntimeLayout;
use crate::runtime::walk::{published_words, RawBucket};
use crate::target::maps::MemoryMap;
use crate::target::memory::{MemoryError, ReadRequest, RemoteMemory, IOV_MAX};

/// Default [`RecordPlan::gap`]: chosen by `benches/src/bin/cycle_cost.rs` (bytes vs syscalls vs
/// kernel CPU).
pub const DEFAULT_COALESCE_GAP: u64 = 1024;

/// Bytes one batch (one `process_vm_readv`) of a plan reads once it holds at least as many records
/// as a batch of one range a record would (`IOV_MAX` less the extra ranges): a batch ends at this
/// size only then, so a read never takes more batches than one range a record would, and the
/// buffer stays near this size unless records lie far apart. Chosen by
/// `benches/src/bin/cycle_cost.rs`: 512 KiB batches cost about 0.35 ms less kernel CPU per 4.5 MB
/// than one batch of the whole plan (the copy lands in cache), for 9 syscalls instead of 1.
pub const BATCH_BYTES: usize = 512 << 10;

/// Longest merged range, bytes.
pub const MAX_RANGE: u64 = 256 << 10;

/// Most bytes a plan reads beyond the records themselves (the gaps it bridges). Past it, records
/// are read one range each: the buffer stays within the records' size plus this, whatever a
/// hostile target's bucket layout.
pub const MAX_BRIDGED: u64 = 16 << 20;

/// How many records ahead [`RecordPlan::read_into`] prefetches the bucket a record goes to.
const PREFETCH_AHEAD: usize = 8;

/// Hints the CPU to bring `value`'s cache lines in (no effect on the program's semantics).
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (value as *const T).cast::<i8>();
        for off in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults; `p + off` is within `value`.
            unsafe { std::arch::x86_64::_mm_prefetch(p.add(off), std::arch::x86_64::_MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// What a plan last wrote into one member's bucket: the raw words its published counters sum to
/// (`active + future[cycle % 3]`, or `active` alone when the cycle is unknown; allocs, frees and,
/// where the layout has them, the two byte counters) and the cycle they were summed at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    words: [u64; 4],
    /// 0: nothing written since the plan was built; 1: summed without a known cycle; 2 + cycle.
    cycle: u64,
}

/// [`Seen::cycle`]'s encoding of `cycle`.
fn cycle_tag(cycle: Option<u32>) -> u64 {
    cycle.map_or(1, |c| 2 + u64::from(c))
}

/// Whether `a == b`, word by word in registers: a vector compare of the freshly summed words
/// would load them back from the stack right after they were stored one word at a time, a store
/// the CPU cannot forward (`perf` put 30% of the re-read's own samples on that load).
#[inline(always)]
fn same_words(a: &[u64; 4], b: &[u64; 4]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
}

/// One range of a plan.
#[derive(Debug, Clone, Copy)]
struct Range {
    /// Address in the target.
    addr: u64,
    /// Bytes (at most [`MAX_RANGE`], or one record).
    len: usize,
    /// Its records: `members[first..first + count]`.
    first: usize,
    count: usize,
}

/// Where the memRecords of a bucket list are read from, and which bucket each belongs to.
#[derive(Debug, Default)]
pub struct RecordPlan {
    /// Largest gap, in bytes, between two records merged into one range (0: one range a record).
    pub gap: u64,
    /// The ranges (ascending by address within the full plan and within each part added by
    /// [`RecordPlan::prepend`]).
    ranges: Vec<Range>,
    /// Per range, in range order: `(age, offset)` of each record in it — the bucket's age is its
    /// position counted from the end of the list (the oldest bucket is 0), which prepending new
    /// buckets does not change; the offset is the record's, in bytes from the range start.
    members: Vec<(u32, u32)>,
    /// Per member, same order as `members`: what the last read wrote into its bucket. Members
    /// past its end (added since the last read) have had nothing written.
    seen: Vec<Seen>,
    /// Buckets planned (the length of the list the plan was built for).
    count: usize,
    /// Bytes of all ranges.
    total: usize,
    /// The buffer one batch is read into (kept between reads).
    buf: Vec<u8>,
    /// [`Seen::cycle`] of the last read (a read at another cycle rewrites every bucket).
    last_cycle: u64,
    /// Ranges of the last full plan, and ranges added since by [`RecordPlan::prepend`].
    planned: usize,
    appended: usize,
    /// The range the next read starts with (after a read cut short by its deadline).
    next: usize,
}

/// What [`RecordPlan::read_into`] needs to know of its extra ranges, and where it notes the
/// buckets whose published counters moved.
#[derive(Debug, Default)]
pub struct ChangeLog<'a> {
    /// Ages (position counted from the end of the list) of the buckets whose published counters
    /// moved are appended here (`None`: not noted).
    pub ages: Option<&'a mut Vec<u32>>,
    /// Which of the extra ranges holds `mProfCycle` (4 bytes); without it only `active` counts.
    pub cycle_extra: Option<usize>,
}

/// What one [`RecordPlan::read_into`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRead {
    /// Whether every range was read (false: the deadline cut the read short).
    pub complete: bool,
    /// Buckets whose record was not updated (its range was not read, or did not arrive whole):
    /// they keep their previous record.
    pub kept: usize,
}

impl RecordPlan {
    /// An empty plan merging records up to `gap` bytes apart.
    pub fn new(gap: u64) -> RecordPlan {
        RecordPlan {
            gap,
            ..RecordPlan::default()
        }
    }

    /// Plans the reads of the records of `buckets` (list order). `map` bounds merged ranges to
    /// readable anonymous memory; without it no records are merged.
    pub fn rebuild(&mut self, buckets: &[RawBucket], layout: &RuntimeLayout, map: &MemoryMap) {
        let rs = layout.record_size();
        let n = buckets.len();
        let mut order: Vec<(u64, u32)> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (b.record_addr(layout), (n - 1 - i) as u32))
            .collect();
        order.sort_unstable();
        self.ranges.clear();
        self.members.clear();
        self.members.reserve(n);
        // Filled by the first read (not here: a cold cycle's cache is for the walked buckets).
        self.seen.clear();
        self.count = n;
        self.total = 0;
        // (start, end, end of the anonymous mapping it may grow to)
        let mut cur: Option<(u64, u64, u64)> = None;
        let mut bridged = 0u64;
        for &(addr, age) in &order {
            let end = addr.saturating_add(rs);
            let extend = cur.is_some_and(|(start, cend, limit)| {
                addr >= start
                    && addr.saturating_sub(cend) <= self.gap
                    && end <= limit
                    && end - start <= MAX_RANGE
                    && bridged + addr.saturating_sub(cend) <= MAX_BRIDGED
            });
            if let (true, Some((_, cend, _))) = (extend, cur) {
                bridged += addr.saturating_sub(cend);
            }
            if !extend {
                if let Some((s, e, _)) = cur.take() {
                    self.push_range(s, e);
                }
                let limit = if self.gap == 0 {
                    end
                } else {
                    map.anonymous_range(addr).map_or(end, |(_, hi)| hi.max(end))
                };
                cur = Some((addr, end, limit));
            } else if let Some(c) = cur.as_mut() {
                c.1 = c.1.max(end);
            }
            let start = cur.map_or(addr, |c| c.0);
            // Within MAX_RANGE of the start: fits in u32.
            self.members.push((age, (addr - start) as u32));
        }
        if let Some((s, e, _)) = cur {
            self.push_range(s, e);
        }
        self.planned = self.ranges.len();
        self.appended = 0;
        self.next = 0;
    }

    /// Adds the records of `new` buckets, which the runtime prepended to the list the plan was
    /// built for, without re-planning the rest: their ranges (merged among themselves) go after the
    /// planned ones. When the ranges added this way outnumber the planned ones, the whole list
    /// (`all`, new buckets first) is planned again so merging stays near-optimal.
    pub fn prepend(
        &mut self,
        new: usize,
        all: &[RawBucket],
        layout: &RuntimeLayout,
        map: &MemoryMap,
    ) {
        if new == 0 {
            return;
        }
        if self.count + new != all.len() || self.appended > self.planned {
            self.rebuild(all, layout, map);
            return;
        }
        let mut part = RecordPlan::new(self.gap);
        part.rebuild(&all[..new], layout, map);
        // The new buckets' ages in the whole list: after every planned one.
        let old = self.count as u32;
        let first = self.members.len();
        self.members
            .extend(part.members.iter().map(|&(age, off)| (age + old, off)));
        for r in &part.ranges {
            self.ranges.push(Range {
                first: r.first + first,
                ..*r
            });
        }
        self.total += part.total;
        self.count += new;
        self.appended += part.ranges.len();
    }

    fn push_range(&mut self, start: u64, end: u64) {
        let len = (end - start) as usize;
        let first = self.ranges.last().map_or(0, |r| r.first + r.count);
        self.ranges.push(Range {
            addr: start,
            len,
            first,
            count: self.members.len() - first,
        });
        self.total += len;
    }

    /// Ranges read per cycle.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes read per cycle (without the extra ranges).
    pub fn bytes(&self) -> usize {
        self.total
    }

    /// Batches (`read_batch` calls, i.e. `process_vm_readv` syscalls) of a whole read with
    /// `extra` extra ranges, starting at the first range: at most
    /// `ceil((records + extra) / IOV_MAX)`.
    pub fn batches(&self, extra: usize) -> usize {
        let mut k = 0usize;
        let mut batches = 0usize;
        let mut n_extra = extra;
        while k < self.ranges.len() || batches == 0 {
            k += self.batch_len(k, n_extra).0;
            n_extra = 0;
            batches += 1;
        }
        batches
    }

    /// The batch starting at range `k` (reading order) with `n_extra` extra ranges: (ranges, bytes).
    fn batch_len(&self, k: usize, n_extra: usize) -> (usize, usize) {
        let n = self.ranges.len();
        let (mut ranges, mut records, mut bytes) = (0usize, 0usize, 0usize);
        let room = IOV_MAX.saturating_sub(n_extra).max(1);
        while k + ranges < n && ranges < room {
            let r = &self.ranges[(self.next + k + ranges) % n];
            if ranges > 0 && records >= room && bytes + r.len > BATCH_BYTES {
                break;
            }
            ranges += 1;
            records += r.count;
            bytes += r.len;
        }
        (ranges, bytes)
    }

    /// Re-reads the records of `buckets` (the list the plan was built for, list order, prepends
    /// included) into them, with `extra` ranges (the head pointer, `MemProfileRate`,
    /// `mProfCycle`) first in the first batch.
    ///
    /// Batches hold at most [`IOV_MAX`] ranges and end at [`BATCH_BYTES`] once they hold as many
    /// records as a batch of one range a record would; each is decoded into the buckets as soon as
    /// it arrives. Reading stops after the batch during which `deadline` passes (the first batch,
    /// with `extra`, is always read); the next read starts with the ranges not read, so a huge
    /// list is re-read over several calls rather than delaying one. Buckets whose records were not
    /// read (or did not arrive whole) keep their previous record. A `buckets` slice of another
    /// length than planned updates only the buckets the plan knows (by age). With `changed.ages`,
    /// the age of every bucket whose published counters ([`MemRecord::published`] at the
    /// `mProfCycle` read in `extra`) differ from those of the record it had is appended to it; at
    /// an `mProfCycle` other than the bucket's last read, every bucket rewritten is (its counters
    /// may have moved).
    ///
    /// A record whose published counters and `mProfCycle` are those the plan last wrote into its
    /// bucket is left as it is (its other cycles may have moved: mallocs and frees of the next
    /// cycles, which nothing reads at this `mProfCycle`). Records publishing nothing are always
    /// rewritten, for the runtime's fallback of a process that has published nothing yet (every
    /// cycle counts). So `buckets` must be the list the plan last read into, as the plan's
    /// builder ([`RecordPlan::rebuild`], [`RecordPlan::prepend`]) saw it.
    pub fn read_into<M: RemoteMemory + ?Sized>(
        &mut self,
        mem: &M,
        extra: &mut [ReadRequest<'_>],
        deadline: Option<std::time::Instant>,
        buckets: &mut [RawBucket],
        layout: &RuntimeLayout,
        mut changed: ChangeLog<'_>,
    ) -> Result<PlanRead, MemoryError> {
        let mut cycle = None;
        let mut tag = cycle_tag(None);
        let n = self.ranges.len();
        if self.next >= n {
            self.next = 0;
        }
        let rs = layout.record_size() as usize;
        let nb = buckets.len();
        if self.seen.len() < self.members.len() {
            self.seen.resize(self.members.len(), Seen::default());
        }
        let mut updated = 0usize;
        let mut done = 0usize;
        let mut first = true;
        while first || done < n {
            if !first && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                self.next = (self.next + done) % n;
                return Ok(PlanRead {
                    complete: false,
                    kept: nb.saturating_sub(updated),
                });
            }
            let n_extra = if first { extra.len() } else { 0 };
            let (count, bytes) = self.batch_len(done, n_extra);
            if self.buf.len() < bytes {
                self.buf.resize(bytes, 0);
            }
            let mut reqs: Vec<ReadRequest<'_>> = Vec::with_capacity(n_extra + count);
            if first {
                for r in extra.iter_mut() {
                    reqs.push(ReadRequest {
                        addr: r.addr,
                        buf: &mut r.buf[..],
                        got: 0,
                    });
                }
            }
            let mut rest: &mut [u8] = &mut self.buf[..bytes];
            for k in 0..count {
                let r = &self.ranges[(self.next + done + k) % n];
                let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(r.len);
                rest = tail;
                reqs.push(ReadRequest {
                    addr: r.addr,
                    buf: chunk,
                    got: 0,
                });
            }
            mem.read_batch(&mut reqs)?;
            if first {
                cycle = changed.cycle_extra.and_then(|k| {
                    reqs[..n_extra]
                        .get(k)
                        .filter(|q| q.got == 4)
                        .and_then(|q| q.buf.get(..4)?.try_into().ok())
                        .map(|b| u32::from_le_bytes(b) >> 1)
                });
                tag = cycle_tag(cycle);
            }
            // After a GC (a new mProfCycle) every bucket is rewritten: fetch them ahead.
            let rewriting = tag != self.last_cycle;
            let (got_extra, got_ranges) = reqs.split_at(n_extra);
            let got: Vec<usize> = got_extra.iter().map(|q| q.got).collect();
            // Decode what arrived, while it is in cache.
            for (k, q) in got_ranges.iter().enumerate() {
                if q.got != q.buf.len() {
                    continue;
                }
                let r = &self.ranges[(self.next + done + k) % n];
                let Some(members) = self.members.get(r.first..r.first + r.count) else {
                    continue;
                };
                let Some(seen) = self.seen.get_mut(r.first..r.first + r.count) else {
                    continue;
                };
                for (j, (&(age, off), seen)) in members.iter().zip(seen.iter_mut()).enumerate() {
                    let (age, off) = (age as usize, off as usize);
                    let Some(data) = q.buf.get(off..off + rs) else {
                        continue;
                    };
                    let Some(words) = published_words(layout, data, cycle) else {
                        continue;
                    };
                    let same = same_words(&seen.words, &words);
                    if seen.cycle == tag && same && words != [0; 4] {
                        // Published as the bucket already holds it.
                        if nb > age {
                            updated += 1;
                        }
                        continue;
                    }
                    // The buckets a range's records go to lie far apart in memory (a bucket with
                    // its stack and record is ~170 bytes, 10k of them outgrow the L2 cache): when
                    // all are rewritten, ask for the bucket a few records ahead meanwhile.
                    if let Some(ahead) = members
                        .get(j + PREFETCH_AHEAD)
                        .filter(|_| rewriting)
                        .and_then(|&(a, _)| nb.checked_sub(a as usize + 1))
                        .and_then(|i| buckets.get(i))
                    {
                        prefetch(ahead);
                    }
                    let Some(b) = nb.checked_sub(age + 1).and_then(|i| buckets.get_mut(i)) else {
                        continue;
                    };
                    // At the cycle of its last write the bucket publishes `seen.words` (known
                    // without reading the bucket back); at another cycle it may have moved.
                    let moved = seen.cycle != tag || !same;
                    if let (Some(log), true) = (changed.ages.as_mut(), moved) {
                        log.push(age as u32);
                    }
                    let size = b.size;
                    if b.record.decode_into(layout, data, size) {
                        *seen = Seen { words, cycle: tag };
                        updated += 1;
                    }
                }
            }
            drop(reqs);
            for (r, g) in extra.iter_mut().zip(got) {
                r.got = g;
            }
            done += count;
            first = false;
        }
        self.next = 0;
        self.last_cycle = tag;
        Ok(PlanRead {
            complete: true,
            kept: nb.saturating_sub(updated),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::walk::MemRecord;
    use crate::runtime::GoVersion;

    fn bucket(addr: u64) -> RawBucket {
        RawBucket {
            addr,
            size: 16,
            stack: vec![1, 2],
            record: MemRecord::default(),
        }
    }

    /// Memory over a byte vector at `base`, one "syscall" per batch of up to IOV_MAX ranges.
    struct Image {
        base: u64,
        bytes: Vec<u8>,
        calls: std::cell::Cell<u64>,
    }

    impl RemoteMemory for Image {
        fn pid(&self) -> i32 {
            1
        }
        fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
            let off = (addr - self.base) as usize;
            let n = buf.len().min(self.bytes.len().saturating_sub(off));
            buf[..n].copy_from_slice(&self.bytes[off..off + n]);
            Ok(n)
        }
        fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
            self.calls
                .set(self.calls.get() + reqs.len().div_ceil(IOV_MAX) as u64);
            for r in reqs.iter_mut() {
                r.got = self.read_partial(r.addr, r.buf)?;
            }
            Ok(())
        }
        fn stats(&self) -> crate::target::memory::ReadStats {
            Default::default()
        }
    }

    /// A read that notes no changes and knows no `mProfCycle`.
    fn no_log() -> ChangeLog<'static> {
        ChangeLog::default()
    }

    /// The allocs count the image holds for bucket `i` of the deadline test.
    fn marked(i: usize) -> u64 {
        i as u64 + 1
    }

    #[test]
    fn a_read_past_its_deadline_stops_and_resumes() {
        let layout = RuntimeLayout::for_version(&GoVersion::new(1, 23));
        let base = 0xc0_0000_0000u64;
        let stride = 1024u64; // records 1 KiB apart: gap 0 plans one range each
        let n = 2500usize;
        let bs: Vec<RawBucket> = (0..n as u64).map(|i| bucket(base + i * stride)).collect();
        let mut bytes = vec![0u8; (n as u64 * stride + 4096) as usize];
        for (i, b) in bs.iter().enumerate() {
            let off = (b.record_addr(&layout) - base) as usize;
            bytes[off..off + 8].copy_from_slice(&marked(i).to_le_bytes());
        }
        let mem = Image {
            base,
            bytes,
            calls: Default::default(),
        };
        let map = MemoryMap::default();
        let mut p = RecordPlan::new(0);
        p.rebuild(&bs, &layout, &map);
        assert_eq!(p.ranges(), n);
        let past = Some(std::time::Instant::now());
        let mut head = [0u8; 8];
        let mut extra = [ReadRequest {
            addr: base,
            buf: &mut head,
            got: 0,
        }];
        // Out of time: only the first batch (with the extra range) is read.
        let mut got = bs.clone();
        let r = p
            .read_into(&mem, &mut extra, past, &mut got, &layout, no_log())
            .unwrap();
        assert!(!r.complete);
        assert_eq!(extra[0].got, 8);
        let read: Vec<usize> = (0..n).filter(|&i| got[i].record != bs[i].record).collect();
        assert_eq!(read.len(), IOV_MAX - 1);
        assert_eq!(r.kept, n - read.len());
        for &i in &read {
            assert_eq!(got[i].record.active.allocs, marked(i));
        }
        // The next reads continue where it stopped, and together cover every record.
        for _ in 0..2 {
            let mut extra = [ReadRequest {
                addr: base,
                buf: &mut head,
                got: 0,
            }];
            let _ = p
                .read_into(&mem, &mut extra, past, &mut got, &layout, no_log())
                .unwrap();
        }
        assert!((0..n).all(|i| got[i].record.active.allocs == marked(i)));
        // Without a deadline everything arrives in ceil((n + 1) / IOV_MAX) batches (a new list:
        // planned anew, as the plan remembers what it wrote into the last one).
        p.rebuild(&bs, &layout, &map);
        let before = mem.calls.get();
        let mut fresh = bs.clone();
        let r = p
            .read_into(&mem, &mut [], None, &mut fresh, &layout, no_log())
            .unwrap();
        assert_eq!((r.complete, r.kept), (true, 0));
        assert!((0..n).all(|i| fresh[i].record.active.allocs == marked(i)));
        assert_eq!(mem.calls.get() - before, n.div_ceil(IOV_MAX) as u64);
        assert_eq!(p.batches(0), n.div_ceil(IOV_MAX));
    }

    #[test]
    fn batches_end_near_batch_bytes_and_decode_every_record() {
        // Packed buckets (records 450 B apart, one mapping): merged into MAX_RANGE ranges, read
        // in batches of about BATCH_BYTES, never more batches than one range a record would take.
        let layout = RuntimeLayout::for_version(&GoVersion::new(1, 24));
        let base = 0xc0_0000_0000u64;
        let stride = 450u64;
        let n = 12_000usize;
        let size = (n as u64 * stride + 4096) as usize;
        let map = MemoryMap::parse(&format!(
            "{:x}-{:x} rw-p 00000000 00:00 0\n",
            base,
            base + size as u64 + 4096
        ))
        .unwrap();
        // List order: newest (highest address) first, as persistentalloc hands them out.
        let bs: Vec<RawBucket> = (0..n as u64)
            .rev()
            .map(|i| bucket(base + i * stride))
            .collect();
        let mut bytes = vec![0u8; size];
        for (i, b) in bs.iter().enumerate() {
            let off = (b.record_addr(&layout) - base) as usize;
            bytes[off..off + 8].copy_from_slice(&marked(i).to_le_bytes());
        }
        let mem = Image {
            base,
            bytes,
            calls: Default::default(),
        };
        let mut p = RecordPlan::new(DEFAULT_COALESCE_GAP);
        // Planned for the older part, then the newest third prepended.
        p.rebuild(&bs[n / 3..], &layout, &map);
        p.prepend(n / 3, &bs, &layout, &map);
        let mut got = bs.clone();
        let r = p
            .read_into(&mem, &mut [], None, &mut got, &layout, ChangeLog::default())
            .unwrap();
        assert_eq!((r.complete, r.kept), (true, 0));
        for (i, b) in got.iter().enumerate() {
            assert_eq!(b.record.active.allocs, marked(i), "bucket {i}");
        }
        let calls = mem.calls.get() as usize;
        assert_eq!(calls, p.batches(0));
        assert!(calls <= n.div_ceil(IOV_MAX), "{calls} batches");
        assert!(
            calls >= p.bytes().div_ceil(BATCH_BYTES + MAX_RANGE as usize),
            "{calls} batches for {} bytes",
            p.bytes()
        );
        assert!(p.buf.len() <= BATCH_BYTES + MAX_RANGE as usize);
        // A shorter list than planned: only the buckets the plan knows (by age) are updated.
        p.rebuild(&bs, &layout, &map);
        let mut older = bs[1..].to_vec();
        let r = p
            .read_into(&mem, &mut [], None, &mut older, &layout, no_log())
            .unwrap();
        assert_eq!(r.kept, 0);
        for (i, b) in older.iter().enumerate() {
            assert_eq!(b.record.active.allocs, marked(i + 1), "bucket {i}");
        }
    }

    /// Writes `rec` as the memRecord of `b` into `bytes` (an image at `base`), Go 1.24 layout.
    fn put(bytes: &mut [u8], base: u64, layout: &RuntimeLayout, b: &RawBucket, rec: &[u64; 16]) {
        let off = (b.record_addr(layout) - base) as usize;
        for (k, w) in rec.iter().enumerate() {
            bytes[off + 8 * k..off + 8 * k + 8].copy_from_slice(&w.to_le_bytes());
        }
    }

    #[test]
    fn only_records_whose_published_counters_moved_are_rewritten_and_logged() {
        let layout = RuntimeLayout::for_version(&GoVersion::new(1, 24));
        let base = 0xc0_0000_0000u64;
        let n = 6usize;
        let bs: Vec<RawBucket> = (0..n as u64).map(|i| bucket(base + i * 512)).collect();
        let map = MemoryMap::parse(&format!(
            "{:x}-{:x} rw-p 00000000 00:00 0\n",
            base,
            base + 8192
        ))
        .unwrap();
        let mut bytes = vec![0u8; 8192];
        // Every bucket publishes at cycle 1 (active + future[1]); bucket 5 publishes nothing.
        let rec = |i: u64| {
            let mut w = [0u64; 16];
            w[0] = i + 1; // active.allocs
            w[2] = 16 * (i + 1); // active.alloc_bytes
            w[4] = 1; // future[0].allocs
            w[6] = 16; // future[0].alloc_bytes
            w
        };
        for (i, b) in bs.iter().enumerate().take(n - 1) {
            put(&mut bytes, base, &layout, b, &rec(i as u64));
        }
        // mProfCycle (value << 1) lives after the buckets.
        let cycle_at = base + 8000;
        bytes[8000..8004].copy_from_slice(&(1u32 << 1).to_le_bytes());
        let mem = Image {
            base,
            bytes,
            calls: Default::default(),
        };
        let mut p = RecordPlan::new(DEFAULT_COALESCE_GAP);
        p.rebuild(&bs, &layout, &map);
        let mut got = bs.clone();
        let mut read = |mem: &Image, got: &mut Vec<RawBucket>| {
            let mut c = [0u8; 4];
            let mut extra = [ReadRequest {
                addr: cycle_at,
                buf: &mut c,
                got: 0,
            }];
            let mut ages = Vec::new();
            let log = ChangeLog {
                ages: Some(&mut ages),
                cycle_extra: Some(0),
            };
            let r = p
                .read_into(mem, &mut extra, None, got, &layout, log)
                .unwrap();
            assert_eq!((r.complete, r.kept), (true, 0));
            // As list indices, ascending.
            let mut idx: Vec<usize> = ages.iter().map(|&a| n - 1 - a as usize).collect();
            idx.sort_unstable();
            idx
        };
        // The first read writes (and logs) every bucket.
        assert_eq!(read(&mem, &mut got), (0..n).collect::<Vec<_>>());
        assert_eq!(got[2].record.active.allocs, 3);
        // Unchanged: only the bucket publishing nothing is written again (it is not logged).
        assert_eq!(read(&mem, &mut got), Vec::<usize>::new());
        // At cycle 1 mallocs go to future[(1 + 2) % 3] = future[0], published nowhere yet: the
        // bucket keeps its record. A change of future[1] (published at cycle 1) is rewritten
        // and logged, whichever of its published words moved.
        let mut bytes = mem.bytes.clone();
        let mut r0 = rec(0);
        r0[4] = 8; // future[0].allocs
        put(&mut bytes, base, &layout, &bs[0], &r0);
        let mut r3 = rec(3);
        r3[9] = 1; // future[1].frees
        put(&mut bytes, base, &layout, &bs[3], &r3);
        // Each published word counts, the last (free_bytes) as much as the first.
        let mut r1 = rec(1);
        r1[11] = 32; // future[1].free_bytes
        put(&mut bytes, base, &layout, &bs[1], &r1);
        let mem = Image { bytes, ..mem };
        assert_eq!(read(&mem, &mut got), vec![1, 3]);
        assert_eq!(got[3].record.future[1].frees, 1);
        assert_eq!(got[1].record.future[1].free_bytes, 32);
        assert_eq!(got[0].record.future[0].allocs, 1, "bucket 0 was rewritten");
        // The bucket publishing nothing was rewritten every time (the runtime's all-cycles
        // fallback reads every slot of it).
        let mut bytes = mem.bytes.clone();
        let mut r5 = [0u64; 16];
        r5[12] = 9; // future[2].allocs
        put(&mut bytes, base, &layout, &bs[5], &r5);
        let mem = Image { bytes, ..mem };
        assert_eq!(read(&mem, &mut got), Vec::<usize>::new());
        assert_eq!(got[5].record.future[2].allocs, 9);
        // A new mProfCycle: every bucket is rewritten and logged (its counters may have moved).
        let mut bytes = mem.bytes.clone();
        bytes[8000..8004].copy_from_slice(&(2u32 << 1).to_le_bytes());
        let mem = Image { bytes, ..mem };
        assert_eq!(read(&mem, &mut got), (0..n).collect::<Vec<_>>());
        assert_eq!(got[0].record.future[0].allocs, 8);
    }

    #[test]
    fn merges_close_records_within_one_mapping() {
        let layout = RuntimeLayout::for_version(&GoVersion::new(1, 23));
        let map = MemoryMap::parse(
            "c000000000-c000010000 rw-p 00000000 00:00 0\nc000010000-c000020000 rw-p 00000000 fd:01 9 /f\n",
        )
        .unwrap();
        let base = 0xc0_0000_0000u64;
        // Three packed buckets, one far away in the same mapping, one in a file mapping.
        let bs = [
            bucket(base + 0x400),
            bucket(base + 0x200),
            bucket(base),
            bucket(base + 0x8000),
            bucket(base + 0x10100),
        ];
        let mut p = RecordPlan::new(1024);
        p.rebuild(&bs, &layout, &map);
        assert_eq!(p.ranges(), 3, "{:?}", p.ranges);
        let rec = |b: &RawBucket| b.record_addr(&layout);
        assert_eq!(p.ranges[0].addr, rec(&bs[2]));
        assert_eq!(
            p.ranges[0].len as u64,
            rec(&bs[0]) + layout.record_size() - rec(&bs[2])
        );
        // Members point at each record inside its range.
        let members = |p: &RecordPlan| {
            let mut v: Vec<(usize, u64)> = Vec::new();
            for r in &p.ranges {
                for &(age, off) in &p.members[r.first..r.first + r.count] {
                    assert!(off as usize + layout.record_size() as usize <= r.len);
                    v.push((p.count - 1 - age as usize, r.addr + u64::from(off)));
                }
            }
            v.sort_unstable();
            v
        };
        let want: Vec<(usize, u64)> = bs.iter().map(rec).enumerate().collect();
        assert_eq!(members(&p), want);
        // Prepending keeps every member pointing at its own record.
        let mut inc = RecordPlan::new(1024);
        inc.rebuild(&bs[2..], &layout, &map);
        inc.prepend(2, &bs, &layout, &map);
        assert_eq!(inc.count, bs.len());
        assert_eq!(members(&inc), want);
        assert_eq!(inc.bytes(), inc.ranges.iter().map(|r| r.len).sum::<usize>());
        let mut one = RecordPlan::new(0);
        one.rebuild(&bs, &layout, &map);
        assert_eq!(one.ranges(), 5);
        assert_eq!(one.bytes(), 5 * layout.record_size() as usize);
    }
}
