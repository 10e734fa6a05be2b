//! Per-process state of the agent: identity (pid + start time), the incremental bucket reader, and
//! the per-bucket counter baselines that turn cumulative runtime counters into deltas.

use std::collections::HashMap;
use std::path::Path;

use crate::binary::BinaryInfo;
use crate::error::Refusal;
use crate::profile::heap;
use crate::runtime::layout::RuntimeLayout;
use crate::runtime::records::{ChangeLog, RecordPlan, DEFAULT_COALESCE_GAP};
use crate::runtime::snapshot::{self, HeapSnapshot};
use crate::runtime::walk::{
    BucketWalker, Cycle, MemProfileRecord, MemRecord, RawBucket, WalkLimits,
};
use crate::target::maps::MemoryMap;
use crate::target::memory::{ReadRequest, ReadStats, RemoteMemory};
use crate::target::open::RuntimeAddresses;

/// A process identity that survives pid reuse: the pid and its start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub pid: i32,
    pub start_time: u64,
}

/// Entries keyed by pid, each remembering the start time it was created for. A pid seen with another
/// start time is a different process: its old entry ends and a new one is created.
pub struct ProcessTable<T> {
    entries: HashMap<i32, (u64, T)>,
}

impl<T> Default for ProcessTable<T> {
    fn default() -> Self {
        ProcessTable {
            entries: HashMap::new(),
        }
    }
}

impl<T> ProcessTable<T> {
    /// Reconciles with the processes alive now (`(pid, start_time)` pairs): creates entries for new
    /// keys with `create`, and returns the entries that ended (gone, or pid reused by a new process).
    pub fn sync(
        &mut self,
        live: &[ProcessKey],
        mut create: impl FnMut(ProcessKey) -> T,
    ) -> Vec<(ProcessKey, T)> {
        let mut ended = Vec::new();
        let alive: HashMap<i32, u64> = live.iter().map(|k| (k.pid, k.start_time)).collect();
        let gone: Vec<i32> = self
            .entries
            .iter()
            .filter(|(pid, (st, _))| alive.get(pid) != Some(st))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some((st, v)) = self.entries.remove(&pid) {
                ended.push((
                    ProcessKey {
                        pid,
                        start_time: st,
                    },
                    v,
                ));
            }
        }
        for k in live {
            self.entries
                .entry(k.pid)
                .or_insert_with(|| (k.start_time, create(*k)));
        }
        ended
    }

    pub fn get(&self, pid: i32) -> Option<&T> {
        self.entries.get(&pid).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, pid: i32) -> Option<&mut T> {
        self.entries.get_mut(&pid).map(|(_, v)| v)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ProcessKey, &mut T)> {
        self.entries.iter_mut().map(|(pid, (st, v))| {
            (
                ProcessKey {
                    pid: *pid,
                    start_time: *st,
                },
                v,
            )
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (ProcessKey, &T)> {
        self.entries.iter().map(|(pid, (st, v))| {
            (
                ProcessKey {
                    pid: *pid,
                    start_time: *st,
                },
                v,
            )
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What one [`IncrementalReader::read`] did.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Whether this read walked the whole list (first read, or after a broken incremental walk).
    pub full_walk: bool,
    /// Buckets that were new this read.
    pub new_buckets: usize,
    /// memRecords that could not be re-read (kept at their previous values).
    pub unreadable_records: usize,
    /// Set when a walk stopped early.
    pub warning: Option<String>,
}

/// Which buckets' records changed since [`IncrementalReader::take_changes`] was last called.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RecordChanges {
    /// Any of them may have: the list was walked anew or re-ordered.
    #[default]
    All,
    /// Only these, by age (position counted from the end of the list, which the runtime's
    /// prepending does not change; may repeat): buckets added at the front and buckets whose
    /// published counters ([`MemRecord::published`]) moved at the `mProfCycle` read with them
    /// (after a read at a new `mProfCycle`, every bucket whose record was read: it may have).
    Ages(Vec<u32>),
}

/// Reads a process's buckets cycle after cycle at minimal cost.
///
/// The first read walks the whole `allnext` list. Later reads do one batch (`read_batch`, i.e.
/// `process_vm_readv` with up to `IOV_MAX` ranges per call) holding the `mbuckets` head pointer,
/// `MemProfileRate`, `mProfCycle` and the memRecord of every known bucket (records close together
/// read as one range, in batches of about [`crate::runtime::records::BATCH_BYTES`]); only when
/// the head moved are the new buckets (always prepended by the runtime) walked, up to the first
/// known one. A steady cycle over `n` buckets therefore costs at most `ceil((n + 3) / IOV_MAX)`
/// syscalls ([`RecordPlan::batches`]).
///
/// Walks are bounded in time by [`IncrementalReader::walk_budget`]: a walk that runs out of time
/// keeps what it read and the reader continues from that point (the *tail*) on the next reads, so a
/// process with a huge list never delays the other processes of a cycle by more than the budget.
pub struct IncrementalReader<M: RemoteMemory> {
    pub mem: M,
    map: MemoryMap,
    addrs: RuntimeAddresses,
    layout: RuntimeLayout,
    /// Buckets in list order (newest first). Records are as of the last read.
    buckets: Vec<RawBucket>,
    /// How the known buckets' records are re-read (coalesced ranges, reused buffers).
    plan: RecordPlan,
    head: u64,
    rate: u64,
    cycle: Option<u32>,
    needs_full_walk: bool,
    /// Where the last time-limited walk stopped: older buckets not read yet.
    tail: Option<u64>,
    /// Time allowed for walking buckets in one read (the batched re-read is not limited).
    pub walk_budget: std::time::Duration,
    /// Bytes read at once when walking many buckets ([`WalkLimits::read_window`]; 0: one read a
    /// bucket).
    pub read_window: u64,
    /// What changed since the last [`IncrementalReader::take_changes`].
    changes: RecordChanges,
}

/// Default [`IncrementalReader::walk_budget`].
pub const DEFAULT_WALK_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

impl<M: RemoteMemory> IncrementalReader<M> {
    /// A reader over `mem`; `map` is the process's maps (re-read when new buckets appear).
    pub fn new(mem: M, map: MemoryMap, addrs: RuntimeAddresses, layout: RuntimeLayout) -> Self {
        IncrementalReader {
            mem,
            map,
            addrs,
            layout,
            buckets: Vec::new(),
            plan: RecordPlan::new(DEFAULT_COALESCE_GAP),
            head: 0,
            rate: 0,
            cycle: None,
            needs_full_walk: true,
            tail: None,
            walk_budget: DEFAULT_WALK_BUDGET,
            read_window: crate::runtime::walk::DEFAULT_READ_WINDOW,
            changes: RecordChanges::All,
        }
    }

    /// Which buckets changed since the last call (all of them on the first).
    pub fn take_changes(&mut self) -> RecordChanges {
        std::mem::replace(&mut self.changes, RecordChanges::Ages(Vec::new()))
    }

    /// Whether older buckets remain to be read (a time-limited walk stopped early).
    pub fn incomplete(&self) -> bool {
        self.tail.is_some()
    }

    fn limits(&self) -> WalkLimits {
        WalkLimits {
            deadline: Some(std::time::Instant::now() + self.walk_budget),
            read_window: self.read_window,
            ..WalkLimits::default()
        }
    }

    /// The buckets as of the last read, newest first.
    pub fn buckets(&self) -> &[RawBucket] {
        &self.buckets
    }

    /// `runtime.MemProfileRate` at the last read.
    pub fn mem_profile_rate(&self) -> u64 {
        self.rate
    }

    /// Decoded `mProfCycle` at the last read.
    pub fn cycle(&self) -> Option<u32> {
        self.cycle
    }

    pub fn layout(&self) -> &RuntimeLayout {
        &self.layout
    }

    pub fn map(&self) -> &MemoryMap {
        &self.map
    }

    pub fn stats(&self) -> ReadStats {
        self.mem.stats()
    }

    /// The last read as a snapshot (for building profiles).
    pub fn snapshot(&self) -> HeapSnapshot {
        HeapSnapshot {
            mem_profile_rate: self.rate,
            cycle: self.cycle,
            buckets: self.buckets.clone(),
            warning: None,
            resume_at: self.tail,
        }
    }

    /// Reads the current counters. `info` and `proc_root` are for error mapping and the first walk.
    pub fn read(&mut self, info: &BinaryInfo, proc_root: &Path) -> Result<ReadOutcome, Refusal> {
        if self.needs_full_walk {
            return self.full_walk(info, proc_root);
        }
        let pid = self.mem.pid();
        let mut head_buf = [0u8; 8];
        let mut rate_buf = [0u8; 8];
        let mut cycle_buf = [0u8; 4];
        let mut extra: Vec<ReadRequest<'_>> = vec![
            ReadRequest {
                addr: self.addrs.mbuckets,
                buf: &mut head_buf,
                got: 0,
            },
            ReadRequest {
                addr: self.addrs.mem_profile_rate,
                buf: &mut rate_buf,
                got: 0,
            },
        ];
        if let Some(a) = self.addrs.mprof_cycle {
            extra.push(ReadRequest {
                addr: a,
                buf: &mut cycle_buf,
                got: 0,
            });
        }
        // The re-read is time-limited like walks: a cut-short read keeps the rest at their
        // previous values and starts with them next time. Records are decoded into the buckets
        // batch by batch (so a read refused below has updated them with what it read).
        let deadline = std::time::Instant::now() + self.walk_budget;
        // mProfCycle is the third extra range when its address is known.
        let cycle_extra = self.addrs.mprof_cycle.map(|_| 2);
        let changed = ChangeLog {
            ages: match &mut self.changes {
                RecordChanges::Ages(ages) => Some(ages),
                RecordChanges::All => None,
            },
            cycle_extra,
        };
        let planned = self
            .plan
            .read_into(
                &self.mem,
                &mut extra,
                Some(deadline),
                &mut self.buckets,
                &self.layout,
                changed,
            )
            .map_err(|e| snapshot::walk_refusal(pid, e.into(), info, proc_root))?;
        let extra_ok: Vec<bool> = extra.iter().map(|r| r.got == r.buf.len()).collect();
        drop(extra);
        if !extra_ok.iter().all(|ok| *ok) {
            return Err(if crate::target::procfs::process_ended(proc_root, pid) {
                Refusal::ProcessExited { pid }
            } else {
                Refusal::Corrupt {
                    pid,
                    detail: "runtime globals became unreadable".into(),
                }
            });
        }
        let rate = u64::from_le_bytes(rate_buf);
        snapshot::check_mem_profile_rate(pid, rate, info)?;
        self.rate = rate;
        if self.addrs.mprof_cycle.is_some() {
            self.cycle = Some(u32::from_le_bytes(cycle_buf) >> 1);
        }
        let mut out = ReadOutcome {
            unreadable_records: planned.kept,
            ..ReadOutcome::default()
        };
        let head = u64::from_le_bytes(head_buf);
        if head != self.head {
            // New buckets: they may live in memory mapped since the last maps read.
            if let Ok(m) = MemoryMap::read(proc_root, pid) {
                self.map = m;
            }
            let mut walker = BucketWalker::new(&self.mem, self.layout, Some(&self.map));
            walker.limits = self.limits();
            // The runtime only prepends: the walk ends at the previous head.
            let old_head = self.head;
            let walk = walker
                .walk_until(head, |a| a == old_head)
                .map_err(|e| snapshot::walk_refusal(pid, e, info, proc_root))?;
            if walk.warning.is_some() || walk.resume_at.is_some() {
                // Some new buckets are missing (a bad list, or out of time between new buckets
                // and known ones): walk everything next time.
                self.needs_full_walk = true;
                out.warning = walk.warning;
            }
            out.new_buckets = walk.buckets.len();
            let old = self.buckets.len();
            if let RecordChanges::Ages(v) = &mut self.changes {
                v.extend((old..old + out.new_buckets).map(|a| a as u32));
            }
            let mut list = walk.buckets;
            list.append(&mut self.buckets);
            self.plan
                .prepend(out.new_buckets, &list, &self.layout, &self.map);
            self.buckets = list;
            self.head = head;
        }
        if let Some(tail) = self.tail {
            self.continue_tail(tail, info, proc_root, &mut out)?;
        }
        // Not taken for a while: "all" says as much in less memory.
        if matches!(&self.changes, RecordChanges::Ages(v) if v.len() > self.buckets.len()) {
            self.changes = RecordChanges::All;
        }
        Ok(out)
    }

    /// Reads older buckets from where a time-limited walk stopped, appending them.
    fn continue_tail(
        &mut self,
        tail: u64,
        info: &BinaryInfo,
        proc_root: &Path,
        out: &mut ReadOutcome,
    ) -> Result<(), Refusal> {
        let pid = self.mem.pid();
        let mut walker = BucketWalker::new(&self.mem, self.layout, Some(&self.map));
        walker.limits = self.limits();
        walker.limits.max_buckets = walker.limits.max_buckets.saturating_sub(self.buckets.len());
        if walker.limits.max_buckets == 0 {
            self.tail = None;
            out.warning = Some("bucket list longer than the bucket cap; truncated".into());
            return Ok(());
        }
        // Only a corrupt list could lead back into known buckets; built only while a tail is left.
        let known: std::collections::HashSet<u64> = self.buckets.iter().map(|b| b.addr).collect();
        let walk = walker
            .walk_until(tail, |a| known.contains(&a))
            .map_err(|e| snapshot::walk_refusal(pid, e, info, proc_root))?;
        self.tail = walk.resume_at;
        if walk.warning.is_some() {
            self.tail = None;
            out.warning = walk.warning;
        }
        out.new_buckets += walk.buckets.len();
        let mut list = std::mem::take(&mut self.buckets);
        list.extend(walk.buckets);
        let head = self.head;
        self.set_buckets(list, head);
        Ok(())
    }

    fn full_walk(&mut self, info: &BinaryInfo, proc_root: &Path) -> Result<ReadOutcome, Refusal> {
        // Buckets may live in memory mapped since the maps were read.
        if let Ok(m) = MemoryMap::read(proc_root, self.mem.pid()) {
            self.map = m;
        }
        let limits = self.limits();
        let snap = snapshot::read_snapshot_within(
            &self.mem,
            info,
            &self.addrs,
            Some(&self.map),
            proc_root,
            limits,
        )?;
        self.rate = snap.mem_profile_rate;
        self.cycle = snap.cycle;
        let head = snap.buckets.first().map(|b| b.addr).unwrap_or(0);
        let n = snap.buckets.len();
        self.needs_full_walk = snap.warning.is_some();
        self.tail = snap.resume_at;
        self.set_buckets(snap.buckets, head);
        Ok(ReadOutcome {
            full_walk: true,
            new_buckets: n,
            unreadable_records: 0,
            warning: snap.warning,
        })
    }

    fn set_buckets(&mut self, list: Vec<RawBucket>, head: u64) {
        // A new list, or older buckets appended (every age moves).
        self.changes = RecordChanges::All;
        self.plan.rebuild(&list, &self.layout, &self.map);
        self.buckets = list;
        self.head = head;
    }

    /// The steady re-read's plan: ranges and bytes per cycle (for benchmarks and tests).
    pub fn plan(&self) -> &RecordPlan {
        &self.plan
    }

    /// Sets the largest gap between two records read as one range (0: one range per record).
    pub fn set_coalesce_gap(&mut self, gap: u64) {
        self.plan.gap = gap;
        self.plan.rebuild(&self.buckets, &self.layout, &self.map);
    }
}

/// The counters of one bucket as `runtime.MemProfile` publishes them ([`MemRecord::published`]).
pub fn published(record: &MemRecord, cycle: Option<u32>) -> Cycle {
    record.published(cycle)
}

/// Per-cycle sampled growth above this many bytes in one bucket is treated as garbage, not counted.
const MAX_PLAUSIBLE_DELTA_BYTES: u64 = 1 << 44;

/// Results of one [`DeltaTracker::update`].
#[derive(Debug, Clone, Default)]
pub struct CycleDelta {
    /// (index into the bucket slice, sampled growth since the previous update) for buckets that grew.
    pub grown: Vec<(usize, Cycle)>,
    /// Scaled estimates added this cycle.
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    /// Scaled in-use estimates now (sum over buckets of the cumulative published counters).
    pub inuse_objects: i64,
    pub inuse_bytes: i64,
}

/// Turns cumulative per-bucket counters into deltas and monotonic scaled totals.
///
/// Each bucket keeps a high-water mark of its published counters. The runtime never frees buckets
/// and only ever adds to them, so a value below the mark is not a real decrease: it is a read that
/// raced the runtime's flush of a future cycle into `active` (or garbage). Such a read adds nothing,
/// and counting resumes above the mark, so totals never go backwards, never jump by a negative
/// amount wrapped to a huge one, and a transient over-read is absorbed rather than counted twice.
/// A process restart is a new [`ProcessKey`] and therefore a new tracker (a counter reset).
///
/// State is kept in flat arrays in the reader's list order (newest first): the runtime only
/// prepends buckets, so the arrays of the previous update are a suffix of the new list and are
/// matched by one comparison of addresses, without hashing. Each bucket's in-use contribution is
/// cached and recomputed only when its counters move.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    /// Bucket addresses, list order, as of the last update.
    addrs: Vec<u64>,
    /// What is kept of each bucket, list order (one array: a bucket's update touches one entry).
    state: Vec<BucketState>,
    /// The `grown` vector of the last [`CycleDelta`] handed back by [`DeltaTracker::recycle`],
    /// reused so that a cycle in which every bucket grew allocates nothing.
    spare_grown: Vec<(usize, Cycle)>,
    /// Sums of the buckets' `inuse`.
    inuse_objects: i64,
    inuse_bytes: i64,
    /// `MemProfileRate` the cached values were scaled with.
    rate: i64,
    /// `mProfCycle` of the last update: the published counters depend on it, not only on the
    /// records.
    cycle: Option<u32>,
    /// Scaled totals since the process was first seen (including what it had allocated before).
    pub alloc_objects_total: u64,
    pub alloc_bytes_total: u64,
}

/// One bucket's state in a [`DeltaTracker`].
#[derive(Debug, Clone, Copy)]
struct BucketState {
    /// High-water mark of the published counters (sampled).
    mark: Cycle,
    /// Scaled in-use (objects, bytes) as of `mark`.
    inuse: (i64, i64),
    /// `scaleHeapSample`'s factor for the bucket's object size at the tracker's rate (NaN: not
    /// computed yet).
    scale: f64,
}

impl Default for BucketState {
    fn default() -> Self {
        BucketState {
            mark: Cycle::default(),
            inuse: (0, 0),
            scale: f64::NAN,
        }
    }
}

impl DeltaTracker {
    /// Hands back a finished delta so its `grown` vector is reused by the next update.
    pub fn recycle(&mut self, delta: CycleDelta) {
        self.spare_grown = delta.grown;
    }

    /// Updates with the buckets as read now. `rate` is `MemProfileRate`, used to scale the growth.
    pub fn update(
        &mut self,
        buckets: &[RawBucket],
        cycle: Option<u32>,
        rate: u64,
        layout: &RuntimeLayout,
    ) -> CycleDelta {
        self.update_changed(buckets, cycle, rate, layout, &RecordChanges::All)
    }

    /// Updates with what `reader` read last, visiting only the buckets it says changed when
    /// nothing else moved (same `MemProfileRate` and `mProfCycle`, list only prepended to);
    /// the result equals [`DeltaTracker::update`]'s.
    pub fn update_from<M: RemoteMemory>(
        &mut self,
        reader: &mut IncrementalReader<M>,
    ) -> CycleDelta {
        let changes = reader.take_changes();
        self.update_changed(
            reader.buckets(),
            reader.cycle(),
            reader.mem_profile_rate(),
            reader.layout(),
            &changes,
        )
    }

    /// [`DeltaTracker::update`], told which buckets may have changed since the last update.
    pub fn update_changed(
        &mut self,
        buckets: &[RawBucket],
        cycle: Option<u32>,
        rate: u64,
        layout: &RuntimeLayout,
        changes: &RecordChanges,
    ) -> CycleDelta {
        let rate = rate.min(i64::MAX as u64) as i64;
        let prepended = self.align(buckets, matches!(changes, RecordChanges::Ages(_)));
        let rescale = rate != self.rate;
        if rescale {
            self.rate = rate;
        }
        let same_cycle = cycle == self.cycle;
        self.cycle = cycle;
        let mut out = CycleDelta {
            grown: std::mem::take(&mut self.spare_grown),
            ..CycleDelta::default()
        };
        out.grown.clear();
        let n = buckets.len();
        match (changes, prepended) {
            // Past half the list a pass in list order is cheaper than visiting by age.
            (RecordChanges::Ages(ages), Some(k))
                if !rescale && same_cycle && ages.len() < n / 2 =>
            {
                for (i, b) in buckets.iter().enumerate().take(k) {
                    self.step(i, b, cycle, rate, false, layout, &mut out);
                }
                for &age in ages {
                    let Some(i) = n.checked_sub(age as usize + 1).filter(|&i| i >= k) else {
                        continue;
                    };
                    self.step(i, &buckets[i], cycle, rate, false, layout, &mut out);
                }
                // In list order, as a full pass gives them.
                out.grown.sort_unstable_by_key(|(i, _)| *i);
            }
            _ => {
                for (i, b) in buckets.iter().enumerate() {
                    self.step(i, b, cycle, rate, rescale, layout, &mut out);
                }
            }
        }
        out.inuse_objects = self.inuse_objects.max(0);
        out.inuse_bytes = self.inuse_bytes.max(0);
        self.alloc_objects_total = self.alloc_objects_total.saturating_add(out.alloc_objects);
        self.alloc_bytes_total = self.alloc_bytes_total.saturating_add(out.alloc_bytes);
        out
    }

    /// Moves bucket `i`'s mark to its published counters now, adding its growth to `out` and
    /// refreshing its in-use contribution. A bucket visited twice adds nothing the second time.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        i: usize,
        b: &RawBucket,
        cycle: Option<u32>,
        rate: i64,
        rescale: bool,
        layout: &RuntimeLayout,
        out: &mut CycleDelta,
    ) {
        let now = published(&b.record, cycle);
        let st = &mut self.state[i];
        let mark = &mut st.mark;
        let d = Cycle {
            allocs: now.allocs.saturating_sub(mark.allocs),
            frees: now.frees.saturating_sub(mark.frees),
            alloc_bytes: now.alloc_bytes.saturating_sub(mark.alloc_bytes),
            free_bytes: now.free_bytes.saturating_sub(mark.free_bytes),
        };
        let moved = d != Cycle::default();
        if moved {
            mark.allocs = mark.allocs.max(now.allocs);
            mark.frees = mark.frees.max(now.frees);
            mark.alloc_bytes = mark.alloc_bytes.max(now.alloc_bytes);
            mark.free_bytes = mark.free_bytes.max(now.free_bytes);
        }
        let plausible = d.alloc_bytes <= MAX_PLAUSIBLE_DELTA_BYTES
            && d.free_bytes <= MAX_PLAUSIBLE_DELTA_BYTES
            && d.allocs <= MAX_PLAUSIBLE_DELTA_BYTES
            && d.frees <= MAX_PLAUSIBLE_DELTA_BYTES;
        if rescale || st.scale.is_nan() {
            st.scale = size_scale(b.size, rate);
        }
        let scale = st.scale;
        if plausible && (d.allocs > 0 || d.frees > 0) {
            let (o, by) = scaled(
                d.allocs as i64,
                d.alloc_bytes as i64,
                b.size,
                scale,
                rate,
                layout,
            );
            out.alloc_objects = out.alloc_objects.saturating_add(o.max(0) as u64);
            out.alloc_bytes = out.alloc_bytes.saturating_add(by.max(0) as u64);
            out.grown.push((i, d));
        }
        if moved || rescale {
            // In use: from the cumulative published counters (capped at the mark, so consistent).
            let mark = &st.mark;
            let count = (mark.allocs.min(i64::MAX as u64) as i64)
                .wrapping_sub(mark.frees.min(mark.allocs).min(i64::MAX as u64) as i64);
            let bytes = (mark.alloc_bytes.min(i64::MAX as u64) as i64)
                .wrapping_sub(mark.free_bytes.min(mark.alloc_bytes).min(i64::MAX as u64) as i64);
            let (o, by) = scaled(count, bytes, b.size, scale, rate, layout);
            let new = (o.max(0), by.max(0));
            let old = std::mem::replace(&mut st.inuse, new);
            self.inuse_objects = self.inuse_objects.wrapping_sub(old.0).wrapping_add(new.0);
            self.inuse_bytes = self.inuse_bytes.wrapping_sub(old.1).wrapping_add(new.1);
        }
    }

    /// Brings the arrays in line with `buckets`: new buckets in front get fresh marks; anything
    /// else (a list re-read from scratch, older buckets appended by a resumed walk) is matched by
    /// address once.
    ///
    /// Returns how many buckets were added in front when the arrays were a suffix of `buckets`
    /// (`None`: matched anew). `only_prepended` (the reader says its list was only prepended to
    /// since the last update) checks the suffix at its two ends instead of every address.
    fn align(&mut self, buckets: &[RawBucket], only_prepended: bool) -> Option<usize> {
        let n = buckets.len();
        let old = self.addrs.len();
        let suffix = n >= old
            && if only_prepended {
                buckets.get(n - old).map(|b| b.addr) == self.addrs.first().copied()
                    && buckets.last().map(|b| b.addr) == self.addrs.last().copied()
            } else {
                buckets[n - old..]
                    .iter()
                    .zip(&self.addrs)
                    .all(|(b, a)| b.addr == *a)
            };
        if suffix {
            let k = n - old;
            if k > 0 {
                self.addrs.splice(0..0, buckets[..k].iter().map(|b| b.addr));
                self.state
                    .splice(0..0, std::iter::repeat_n(BucketState::default(), k));
            }
            return Some(k);
        }
        let prev: HashMap<u64, BucketState> = self
            .addrs
            .iter()
            .zip(&self.state)
            .map(|(a, st)| (*a, *st))
            .collect();
        self.addrs = buckets.iter().map(|b| b.addr).collect();
        self.state.clear();
        for b in buckets {
            let st = prev.get(&b.addr).copied().unwrap_or_default();
            self.state.push(BucketState {
                scale: f64::NAN,
                ..st
            });
        }
        self.inuse_objects = self
            .state
            .iter()
            .fold(0i64, |s, st| s.wrapping_add(st.inuse.0));
        self.inuse_bytes = self
            .state
            .iter()
            .fold(0i64, |s, st| s.wrapping_add(st.inuse.1));
        None
    }
}

/// `scaleHeapSample`'s factor `1 / (1 − e^(−size/rate))` for objects of `size` bytes (1 when the
/// rate samples every allocation).
fn size_scale(size: u64, rate: i64) -> f64 {
    if rate <= 1 || size == 0 {
        return 1.0;
    }
    1.0 / (1.0 - (-(size as f64) / rate as f64).exp())
}

/// The scaled (objects, bytes) of `count` sampled objects totalling `bytes` in a bucket of object
/// `size`, exactly as [`heap::record_values`] computes them, with the bucket's cached factor
/// `scale` when the record is consistent (≤ 1.26: `bytes == count × size`, so the runtime's average
/// size is `size`; 1.27 always scales by object size).
fn scaled(
    count: i64,
    bytes: i64,
    size: u64,
    scale: f64,
    rate: i64,
    layout: &RuntimeLayout,
) -> (i64, i64) {
    if rate <= 1 {
        // Every allocation sampled: `scaleHeapSample` leaves the values as they are (zero when
        // either is zero), as `heap::record_values` does.
        let bytes = if layout.object_size_records {
            if size == 0 {
                return (0, 0);
            }
            count.wrapping_mul(size as i64)
        } else {
            bytes
        };
        return if count == 0 || bytes == 0 && !layout.object_size_records {
            (0, 0)
        } else {
            (count, bytes)
        };
    }
    let consistent =
        layout.object_size_records || (size > 0 && (size as i64).checked_mul(count) == Some(bytes));
    if !consistent || rate <= 1 || count == 0 || size == 0 {
        let rec = MemProfileRecord {
            object_size: size,
            alloc_objects: count,
            free_objects: 0,
            alloc_bytes: bytes,
            free_bytes: 0,
            stack: Vec::new(),
        };
        let (v, _) = heap::record_values(&rec, rate, layout);
        return (v[0], v[1]);
    }
    let bytes = if layout.object_size_records {
        count.wrapping_mul(size as i64)
    } else {
        bytes
    };
    ((count as f64 * scale) as i64, (bytes as f64 * scale) as i64)
}

/// Sampled records of the growth in `delta`, with the stacks of `buckets`, for a delta profile.
pub fn delta_records(buckets: &[RawBucket], delta: &CycleDelta) -> Vec<MemProfileRecord> {
    delta
        .grown
        .iter()
        .filter_map(|(i, d)| {
            let b = buckets.get(*i)?;
            Some(MemProfileRecord {
                object_size: b.size,
                alloc_objects: d.allocs.min(i64::MAX as u64) as i64,
                free_objects: d.frees.min(i64::MAX as u64) as i64,
                alloc_bytes: d.alloc_bytes.min(i64::MAX as u64) as i64,
                free_bytes: d.free_bytes.min(i64::MAX as u64) as i64,
                stack: b.stack.clone(),
            })
        })
        .collect()
}

/// Sampled growth between two snapshots of one process (matched by bucket address), in `later`'s
/// order, for `/debug/pprof/allocs?seconds=N`. Buckets without growth are left out.
pub fn snapshot_delta(earlier: &HeapSnapshot, later: &HeapSnapshot) -> Vec<MemProfileRecord> {
    let before: HashMap<u64, MemProfileRecord> = earlier
        .buckets
        .iter()
        .map(|b| b.addr)
        .zip(earlier.records())
        .collect();
    later
        .buckets
        .iter()
        .map(|b| b.addr)
        .zip(later.records())
        .filter_map(|(addr, r)| {
            let (ao, ab, fo, fb) = match before.get(&addr) {
                Some(p) => (p.alloc_objects, p.alloc_bytes, p.free_objects, p.free_bytes),
                None => (0, 0, 0, 0),
            };
            let d = MemProfileRecord {
                object_size: r.object_size,
                alloc_objects: r.alloc_objects.saturating_sub(ao).max(0),
                free_objects: r.free_objects.saturating_sub(fo).max(0),
                alloc_bytes: r.alloc_bytes.saturating_sub(ab).max(0),
                free_bytes: r.free_bytes.saturating_sub(fb).max(0),
                stack: r.stack,
            };
            (d.alloc_objects > 0 || d.free_objects > 0).then_some(d)
        })
        .collect()
}

/// Re-exported for callers that build records from snapshots.
pub use crate::runtime::walk::memprofile_records;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::version::GoVersion;

    fn layout() -> RuntimeLayout {
        RuntimeLayout::for_version(&GoVersion::parse("go1.23.9").unwrap())
    }

    fn bucket(addr: u64, size: u64, allocs: u64, frees: u64) -> RawBucket {
        RawBucket {
            addr,
            size,
            stack: vec![0x401000],
            record: MemRecord {
                active: Cycle {
                    allocs,
                    frees,
                    alloc_bytes: allocs * size,
                    free_bytes: frees * size,
                },
                future: [Cycle::default(); 3],
            },
        }
    }

    #[test]
    fn pid_reuse_is_a_new_process() {
        let mut t: ProcessTable<u32> = ProcessTable::default();
        let mut made = 0;
        let k1 = ProcessKey {
            pid: 100,
            start_time: 5,
        };
        assert!(t
            .sync(&[k1], |_| {
                made += 1;
                made
            })
            .is_empty());
        assert_eq!(t.get(100), Some(&1));
        // Same pid, same start time: kept.
        assert!(t.sync(&[k1], |_| 99).is_empty());
        assert_eq!(t.get(100), Some(&1));
        // Same pid, new start time: the old entry ends, a new one starts.
        let k2 = ProcessKey {
            pid: 100,
            start_time: 7,
        };
        let ended = t.sync(&[k2], |_| 2);
        assert_eq!(ended, vec![(k1, 1)]);
        assert_eq!(t.get(100), Some(&2));
        // Gone.
        let ended = t.sync(&[], |_| 3);
        assert_eq!(ended, vec![(k2, 2)]);
        assert!(t.is_empty());
    }

    #[test]
    fn deltas_are_monotonic_and_scaled() {
        let l = layout();
        let rate = 512 * 1024;
        let mut d = DeltaTracker::default();
        let first = d.update(&[bucket(0x1000, 64, 10, 4)], None, rate, &l);
        assert_eq!(first.grown.len(), 1);
        let scale = 1.0 / (1.0 - (-64.0f64 / rate as f64).exp());
        assert_eq!(first.alloc_bytes, (640.0 * scale) as u64);
        assert_eq!(first.inuse_objects, (6.0 * scale) as i64);
        let total1 = d.alloc_bytes_total;
        // No change: no growth.
        let same = d.update(&[bucket(0x1000, 64, 10, 4)], None, rate, &l);
        assert!(same.grown.is_empty());
        assert_eq!(d.alloc_bytes_total, total1);
        // Growth by 5 objects.
        let g = d.update(&[bucket(0x1000, 64, 15, 4)], None, rate, &l);
        assert_eq!(g.grown[0].1.allocs, 5);
        assert_eq!(g.alloc_bytes, (320.0 * scale) as u64);
        // A read that went backwards (flush race or garbage) adds nothing and is not negative...
        let total2 = d.alloc_bytes_total;
        let back = d.update(&[bucket(0x1000, 64, 3, 1)], None, rate, &l);
        assert!(back.grown.is_empty());
        assert_eq!(d.alloc_bytes_total, total2);
        // ...and counting resumes above the high-water mark, without double counting.
        let up = d.update(&[bucket(0x1000, 64, 16, 4)], None, rate, &l);
        assert_eq!(up.grown[0].1.allocs, 1);
        // Garbage that jumps absurdly is not counted.
        let huge = d.update(&[bucket(0x1000, 64, u64::MAX / 64, 4)], None, rate, &l);
        assert!(huge.grown.is_empty());
    }

    /// Visiting only the buckets a reader says changed gives what a full pass gives, through
    /// prepends, record changes (up and back), `mProfCycle` and `MemProfileRate` changes.
    #[test]
    fn changed_buckets_only_equal_a_full_pass() {
        let l = layout();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut full, mut partial) = (DeltaTracker::default(), DeltaTracker::default());
        let mut list: Vec<RawBucket> = Vec::new();
        let (mut cycle, mut rate) = (Some(1u32), 512 * 1024u64);
        let mut fast_passes = 0;
        for round in 0..400 {
            let mut ages: Vec<u32> = Vec::new();
            let n = list.len();
            // Prepend a few buckets now and then (ages n.., in front).
            if round == 0 || rand(4) == 0 {
                let k = 1 + rand(5) as usize;
                let fresh: Vec<RawBucket> = (0..k)
                    .map(|j| {
                        bucket(
                            0x10_0000 + 0x100 * (n + j) as u64,
                            16 << rand(4),
                            rand(9),
                            0,
                        )
                    })
                    .collect();
                ages.extend((n..n + k).map(|a| a as u32));
                let mut l2 = fresh;
                l2.append(&mut list);
                list = l2;
            }
            let n = list.len();
            // Change some records; some go backwards (a raced read), as reads can.
            for _ in 0..rand(4) {
                let i = rand(n as u64) as usize;
                let b = &mut list[i];
                let c = &mut b.record.future[rand(3) as usize];
                if rand(5) == 0 {
                    c.allocs = c.allocs.saturating_sub(2);
                } else {
                    c.allocs += 1 + rand(3);
                    c.frees += rand(2);
                }
                c.alloc_bytes = c.allocs * b.size;
                c.free_bytes = c.frees * b.size;
                ages.push((n - 1 - i) as u32);
            }
            if rand(10) == 0 {
                cycle = cycle.map(|c| c + 1);
            }
            if rand(50) == 0 {
                rate = if rate == 1 { 512 * 1024 } else { 1 };
            }
            let a = full.update(&list, cycle, rate, &l);
            let fast = partial.cycle == cycle
                && partial.rate == rate as i64
                && ages.len() < list.len() / 2;
            let changes = RecordChanges::Ages(ages);
            fast_passes += usize::from(fast);
            let b = partial.update_changed(&list, cycle, rate, &l, &changes);
            assert_eq!(
                (
                    a.alloc_objects,
                    a.alloc_bytes,
                    a.inuse_objects,
                    a.inuse_bytes
                ),
                (
                    b.alloc_objects,
                    b.alloc_bytes,
                    b.inuse_objects,
                    b.inuse_bytes
                ),
                "round {round}"
            );
            assert_eq!(a.grown, b.grown, "round {round}");
            assert_eq!(full.alloc_bytes_total, partial.alloc_bytes_total);
        }
        assert!(
            fast_passes > 200,
            "the changed-only path ran {fast_passes} times"
        );
    }

    #[test]
    fn cached_scale_equals_record_values() {
        for v in ["go1.19.8", "go1.23.9", "go1.27.3"] {
            let l = RuntimeLayout::for_version(&GoVersion::parse(v).unwrap());
            for rate in [1i64, 2, 4096, 512 * 1024] {
                for size in [8u64, 24, 1000, 32768, 1 << 20] {
                    let scale = size_scale(size, rate);
                    for count in [0i64, 1, 7, 1000, 123_456_789] {
                        for bytes in [count * size as i64, count * size as i64 + 3] {
                            let rec = MemProfileRecord {
                                object_size: size,
                                alloc_objects: count,
                                free_objects: 0,
                                alloc_bytes: bytes,
                                free_bytes: 0,
                                stack: Vec::new(),
                            };
                            let (want, _) = heap::record_values(&rec, rate, &l);
                            assert_eq!(
                                scaled(count, bytes, size, scale, rate, &l),
                                (want[0], want[1]),
                                "{v} rate {rate} size {size} count {count} bytes {bytes}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn published_adds_the_current_future_cycle() {
        let mut b = bucket(8, 16, 2, 0);
        b.record.future[1] = Cycle {
            allocs: 3,
            frees: 1,
            alloc_bytes: 48,
            free_bytes: 16,
        };
        assert_eq!(published(&b.record, Some(4)).allocs, 5);
        assert_eq!(published(&b.record, Some(3)).allocs, 2);
        assert_eq!(published(&b.record, None).allocs, 2);
    }

    #[test]
    fn snapshot_delta_matches_by_address() {
        let a = HeapSnapshot {
            mem_profile_rate: 1,
            cycle: None,
            buckets: vec![bucket(0x10, 8, 4, 0)],
            warning: None,
            resume_at: None,
        };
        let b = HeapSnapshot {
            mem_profile_rate: 1,
            cycle: None,
            buckets: vec![bucket(0x20, 32, 2, 0), bucket(0x10, 8, 9, 1)],
            warning: None,
            resume_at: None,
        };
        let d = snapshot_delta(&a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].alloc_objects, d[0].alloc_bytes), (2, 64));
        assert_eq!((d[1].alloc_objects, d[1].free_objects), (5, 1));
    }
}
