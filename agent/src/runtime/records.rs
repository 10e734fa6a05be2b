//! Re-reading the memRecords of known buckets at the copy floor: a read plan that coalesces
//! records lying close together into one range, built once per bucket list and reused every
//! cycle with the same buffers.
//!
//! Buckets come from `persistentalloc`, a bump allocator, so a process's buckets sit packed in a
//! few anonymous chunks and their memRecords are a few hundred bytes apart. One `process_vm_readv`
//! range per record makes the kernel pin a page per range; merging records within
//! [`RecordPlan::gap`] bytes of each other reads somewhat more bytes in far fewer ranges. A merged
//! range never leaves the readable anonymous mapping its first record lies in, and never exceeds
//! [`MAX_RANGE`] bytes.

use crate::runtime::layout::RuntimeLayout;
use crate::runtime::walk::{MemRecord, RawBucket};
use crate::target::maps::MemoryMap;
use crate::target::memory::{MemoryError, ReadRequest, RemoteMemory, IOV_MAX};

/// Default [`RecordPlan::gap`]: chosen by `benches/src/bin/cycle_cost.rs` (bytes vs syscalls vs
/// kernel CPU).
pub const DEFAULT_COALESCE_GAP: u64 = 1024;

/// Most bytes one batch (one `process_vm_readv`) of a plan reads.
pub const BATCH_BYTES: usize = 16 << 20;

/// Longest merged range, bytes.
pub const MAX_RANGE: u64 = 256 << 10;

/// Most bytes a plan reads beyond the records themselves (the gaps it bridges). Past it, records
/// are read one range each: the buffer stays within the records' size plus this, whatever a
/// hostile target's bucket layout.
pub const MAX_BRIDGED: u64 = 16 << 20;

/// Where the memRecords of a bucket list are read from, and where each lands in the buffer.
#[derive(Debug, Default)]
pub struct RecordPlan {
    /// Largest gap, in bytes, between two records merged into one range (0: one range a record).
    pub gap: u64,
    /// `(address, length, offset in the buffer)` of each range (ascending by address within the
    /// full plan and within each part added by [`RecordPlan::prepend`]).
    ranges: Vec<(u64, usize, usize)>,
    /// Per bucket, in list order: offset of its record in the buffer and the index of its range.
    slots: Vec<(usize, u32)>,
    /// Bytes of all ranges.
    total: usize,
    /// The buffer the ranges are read into (kept between reads).
    buf: Vec<u8>,
    /// Whether each range arrived whole at the last read.
    arrived: Vec<bool>,
    /// Ranges of the last full plan, and ranges added since by [`RecordPlan::prepend`].
    planned: usize,
    appended: usize,
    /// The range the next read starts with (after a read cut short by its deadline).
    next: usize,
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
        let mut order: Vec<(u64, u32)> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (b.record_addr(layout), i as u32))
            .collect();
        order.sort_unstable();
        self.ranges.clear();
        self.slots.clear();
        self.slots.resize(buckets.len(), (0, 0));
        self.total = 0;
        // (start, end, end of the anonymous mapping it may grow to)
        let mut cur: Option<(u64, u64, u64)> = None;
        let mut bridged = 0u64;
        for &(addr, i) in &order {
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
            let (start, _, _) = cur.unwrap_or((addr, end, end));
            let off = self.total + (addr - start) as usize;
            self.slots[i as usize] = (off, self.ranges.len() as u32);
        }
        if let Some((s, e, _)) = cur {
            self.push_range(s, e);
        }
        self.buf.resize(self.total, 0);
        self.arrived.resize(self.ranges.len(), false);
        self.planned = self.ranges.len();
        self.appended = 0;
    }

    /// Adds the records of `new` buckets, which the runtime prepended to the list the plan was
    /// built for, without re-planning the rest: their ranges (merged among themselves) go at the end
    /// of the buffer. When the ranges added this way outnumber the planned ones, the whole list
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
        if self.slots.len() + new != all.len() || self.appended > self.planned {
            self.rebuild(all, layout, map);
            return;
        }
        let mut part = RecordPlan::new(self.gap);
        part.rebuild(&all[..new], layout, map);
        let (ranges_before, total_before) = (self.ranges.len() as u32, self.total);
        for &(addr, len, off) in &part.ranges {
            self.ranges.push((addr, len, off + total_before));
        }
        self.total += part.total;
        self.slots.splice(
            0..0,
            part.slots
                .iter()
                .map(|&(off, r)| (off + total_before, r + ranges_before)),
        );
        self.appended += part.ranges.len();
        self.buf.resize(self.total, 0);
        self.arrived.resize(self.ranges.len(), false);
    }

    fn push_range(&mut self, start: u64, end: u64) {
        let len = (end - start) as usize;
        self.ranges.push((start, len, self.total));
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

    /// Reads every range, with `extra` ranges (the head pointer, `MemProfileRate`, `mProfCycle`)
    /// first in the same batch.
    pub fn read<M: RemoteMemory + ?Sized>(
        &mut self,
        mem: &M,
        extra: &mut [ReadRequest<'_>],
    ) -> Result<(), MemoryError> {
        self.read_until(mem, extra, None).map(|_| ())
    }

    /// [`RecordPlan::read`] in batches of at most [`IOV_MAX`] ranges and [`BATCH_BYTES`] bytes,
    /// stopping after the batch during which `deadline` passes (the first batch, with `extra`, is
    /// always read). Ranges not read keep `arrived == false` (their records keep their previous
    /// values) and the next read starts with them, so a huge list is re-read over several calls
    /// rather than delaying one. Returns whether every range was read.
    pub fn read_until<M: RemoteMemory + ?Sized>(
        &mut self,
        mem: &M,
        extra: &mut [ReadRequest<'_>],
        deadline: Option<std::time::Instant>,
    ) -> Result<bool, MemoryError> {
        let n = self.ranges.len();
        let start = if self.next < n { self.next } else { 0 };
        self.arrived.iter_mut().for_each(|a| *a = false);
        // Ranges in reading order: from `start` to the end, then from 0.
        let order = |k: usize| (start + k) % n.max(1);
        let mut done = 0usize;
        let mut first = true;
        let mut batch: Vec<usize> = Vec::new();
        while first || done < n {
            if !first && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                self.next = order(done);
                return Ok(false);
            }
            let n_extra = if first { extra.len() } else { 0 };
            batch.clear();
            let mut bytes = 0usize;
            while done + batch.len() < n && n_extra + batch.len() < IOV_MAX {
                let r = order(done + batch.len());
                let len = self.ranges[r].1;
                if !batch.is_empty() && bytes + len > BATCH_BYTES {
                    break;
                }
                bytes += len;
                batch.push(r);
            }
            // Requests in buffer order (any order reads the same), each with its disjoint slice.
            batch.sort_unstable_by_key(|&r| self.ranges[r].2);
            let mut reqs: Vec<ReadRequest<'_>> = Vec::with_capacity(n_extra + batch.len());
            if first {
                for r in extra.iter_mut() {
                    reqs.push(ReadRequest {
                        addr: r.addr,
                        buf: &mut r.buf[..],
                        got: 0,
                    });
                }
            }
            let mut rest: &mut [u8] = &mut self.buf;
            let mut consumed = 0usize;
            for &r in &batch {
                let (addr, len, off) = self.ranges[r];
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(off - consumed);
                let (chunk, tail) = tail.split_at_mut(len);
                rest = tail;
                consumed = off + len;
                reqs.push(ReadRequest {
                    addr,
                    buf: chunk,
                    got: 0,
                });
            }
            mem.read_batch(&mut reqs)?;
            let (got_extra, got_ranges) = reqs.split_at(n_extra);
            for (r, q) in batch.iter().zip(got_ranges) {
                self.arrived[*r] = q.got == q.buf.len();
            }
            let got: Vec<usize> = got_extra.iter().map(|q| q.got).collect();
            drop(reqs);
            for (r, g) in extra.iter_mut().zip(got) {
                r.got = g;
            }
            done += batch.len();
            first = false;
        }
        self.next = 0;
        Ok(true)
    }

    /// Sets the record of each of `buckets` (the list the plan was built for, list order) to its
    /// value as of the last read; buckets whose range did not arrive (or that the plan does not
    /// cover) keep their previous record. Returns how many kept it.
    pub fn update_records(&self, buckets: &mut [RawBucket], layout: &RuntimeLayout) -> usize {
        let rs = layout.record_size() as usize;
        let mut kept = buckets.len().saturating_sub(self.slots.len());
        for (b, &(off, range)) in buckets.iter_mut().zip(&self.slots) {
            let fresh = self.arrived.get(range as usize).copied().unwrap_or(false);
            match self.buf.get(off..off + rs) {
                Some(data) if fresh => match MemRecord::decode(layout, data, b.size) {
                    Some(r) => b.record = r,
                    None => kept += 1,
                },
                _ => kept += 1,
            }
        }
        kept
    }

    /// The record of bucket `i` (list order) as of the last read: `None` if its range did not
    /// arrive or `i` is not planned.
    pub fn record(&self, i: usize, layout: &RuntimeLayout, size: u64) -> Option<MemRecord> {
        let &(off, range) = self.slots.get(i)?;
        if !*self.arrived.get(range as usize)? {
            return None;
        }
        let rs = layout.record_size() as usize;
        MemRecord::decode(layout, self.buf.get(off..off + rs)?, size)
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
            bytes[off..off + 8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
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
        assert!(!p.read_until(&mem, &mut extra, past).unwrap());
        assert_eq!(extra[0].got, 8);
        let read: Vec<usize> = (0..n)
            .filter(|&i| p.record(i, &layout, 16).is_some())
            .collect();
        assert_eq!(read.len(), IOV_MAX - 1);
        for &i in &read {
            assert_eq!(
                p.record(i, &layout, 16).unwrap().active.allocs,
                i as u64 + 1
            );
        }
        // The next reads continue where it stopped, and together cover every record.
        let mut seen: std::collections::HashSet<usize> = read.into_iter().collect();
        for _ in 0..2 {
            let mut extra = [ReadRequest {
                addr: base,
                buf: &mut head,
                got: 0,
            }];
            let _ = p.read_until(&mem, &mut extra, past).unwrap();
            seen.extend((0..n).filter(|&i| p.record(i, &layout, 16).is_some()));
        }
        assert_eq!(seen.len(), n);
        // Without a deadline everything arrives in ceil((n + 1) / IOV_MAX) batches.
        let before = mem.calls.get();
        assert!(p.read_until(&mem, &mut [], None).unwrap());
        assert!((0..n).all(|i| p.record(i, &layout, 16).is_some()));
        assert_eq!(mem.calls.get() - before, n.div_ceil(IOV_MAX) as u64);
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
        assert_eq!(p.ranges[0].0, rec(&bs[2]));
        assert_eq!(
            p.ranges[0].1 as u64,
            rec(&bs[0]) + layout.record_size() - rec(&bs[2])
        );
        // Slots point at each record inside its range.
        for (i, b) in bs.iter().enumerate() {
            let (off, r) = p.slots[i];
            let (start, _, boff) = p.ranges[r as usize];
            assert_eq!(off - boff, (rec(b) - start) as usize);
        }
        // Prepending keeps every slot pointing at its own record.
        let mut inc = RecordPlan::new(1024);
        inc.rebuild(&bs[2..], &layout, &map);
        inc.prepend(2, &bs, &layout, &map);
        assert_eq!(inc.slots.len(), bs.len());
        for (i, b) in bs.iter().enumerate() {
            let (off, r) = inc.slots[i];
            let (start, len, boff) = inc.ranges[r as usize];
            assert!(off >= boff && off - boff + layout.record_size() as usize <= len);
            assert_eq!(start + (off - boff) as u64, rec(b), "bucket {i}");
        }
        assert_eq!(inc.bytes(), inc.buf.len());
        let mut one = RecordPlan::new(0);
        one.rebuild(&bs, &layout, &map);
        assert_eq!(one.ranges(), 5);
        assert_eq!(one.bytes(), 5 * layout.record_size() as usize);
    }
}
