//! The agent's incremental bucket reader (`goheap::daemon::tracker::IncrementalReader`) against a
//! memory image laid out like the Go runtime's bucket list, mutated between reads the way the
//! runtime mutates it: new buckets only ever prepended to the `allnext` list (`runtime.mbuckets`
//! moves to the new one), counters of existing buckets growing, `MemProfileRate` and `mProfCycle`
//! changing. After every read the reader's buckets must equal both a fresh full walk and what was
//! written, and its cost must be what the design promises. Read bucket by bucket (read window 0,
//! no coalescing): one batch of `ceil((n + 3) / IOV_MAX)` syscalls and `20 + n × record size`
//! bytes for a steady read over `n` buckets, plus one read per new bucket (two for stacks deeper
//! than the prefetch). With the defaults (walks in read windows, nearby records coalesced): a
//! steady read is one batch of `ceil((ranges + 3) / IOV_MAX)` syscalls over the plan's ranges and
//! bytes, and no read ever makes more syscalls than the bucket-by-bucket reader would.
//!
//! The image is read two ways: through a `RemoteMemory` over a `Vec<u8>` (syscalls counted as
//! `process_vm_readv` would make them), and through the real `VmReader` on this test process, where
//! the image lives at real addresses and the counts are real `process_vm_readv` calls.

mod support;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use goheap::binary::{BinaryInfo, GoBinary};
use goheap::daemon::tracker::{IncrementalReader, ReadOutcome};
use goheap::runtime::layout::RuntimeLayout;
use goheap::runtime::records::{DEFAULT_COALESCE_GAP, MAX_RANGE};
use goheap::runtime::walk::{BucketWalker, Cycle, MemRecord, RawBucket, WalkLimits};
use goheap::target::maps::MemoryMap;
use goheap::target::memory::{
    MemoryError, ReadRequest, ReadStats, RemoteMemory, VmReader, IOV_MAX,
};
use goheap::target::open::RuntimeAddresses;
use support::*;

/// The image size; buckets of the first phase live in the first half, later ones in the second
/// (memory "mapped since the last maps read").
const IMAGE: usize = 16 << 20;
const HALF: usize = IMAGE / 2;
/// Never allocated: prefetching reads past the last bucket must stay inside the image.
const SLACK: usize = 64 << 10;
/// The pid of the fake process (only names its directory in the scratch proc root).
const FAKE_PID: i32 = 4242;

/// A byte image at a fixed address with a bump allocator.
struct Image {
    base: u64,
    bytes: Box<[u8]>,
    next: usize,
}

impl Image {
    /// An image at `base`, or (None) at the address of its own buffer.
    fn new(base: Option<u64>) -> Image {
        let bytes = vec![0u8; IMAGE].into_boxed_slice();
        let base = base.unwrap_or(bytes.as_ptr() as u64);
        Image {
            base,
            bytes,
            next: 0,
        }
    }
    fn alloc(&mut self, len: usize) -> u64 {
        let at = self.next.next_multiple_of(8);
        assert!(at + len <= IMAGE - SLACK, "image full");
        self.next = at + len;
        self.base + at as u64
    }
    fn off(&self, addr: u64) -> usize {
        (addr - self.base) as usize
    }
    fn put(&mut self, addr: u64, data: &[u8]) {
        let o = self.off(addr);
        self.bytes[o..o + data.len()].copy_from_slice(data);
    }
    fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_le_bytes());
    }
    /// Copies what lies at `[addr, addr + buf.len())` inside the image; returns how many bytes.
    fn copy_out(&self, addr: u64, buf: &mut [u8]) -> usize {
        if addr < self.base || addr >= self.base + IMAGE as u64 {
            return 0;
        }
        let o = self.off(addr);
        let n = buf.len().min(IMAGE - o);
        buf[..n].copy_from_slice(&self.bytes[o..o + n]);
        n
    }
}

/// `RemoteMemory` over an [`Image`], counting syscalls as `process_vm_readv` makes them: one per
/// `read_partial`, one per `IOV_MAX` ranges of a batch.
struct FakeMem {
    img: Rc<RefCell<Image>>,
    stats: Cell<ReadStats>,
}

impl FakeMem {
    fn new(img: &Rc<RefCell<Image>>) -> FakeMem {
        FakeMem {
            img: img.clone(),
            stats: Cell::new(ReadStats::default()),
        }
    }
    fn count(&self, calls: u64, bytes: usize) {
        let mut s = self.stats.get();
        s.syscalls += calls;
        s.bytes += bytes as u64;
        self.stats.set(s);
    }
}

impl RemoteMemory for FakeMem {
    fn pid(&self) -> i32 {
        FAKE_PID
    }
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let n = self.img.borrow().copy_out(addr, buf);
        self.count(1, n);
        Ok(n)
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
        let img = self.img.borrow();
        for chunk in reqs.chunks_mut(IOV_MAX) {
            let mut n = 0;
            for r in chunk.iter_mut() {
                r.got = img.copy_out(r.addr, r.buf);
                n += r.got;
            }
            self.count(1, n);
        }
        Ok(())
    }
    fn stats(&self) -> ReadStats {
        self.stats.get()
    }
}

/// One bucket as written: its counters per cycle (`active`, then `future[0..3]`).
#[derive(Clone)]
struct Bucket {
    addr: u64,
    size: u64,
    stack: Vec<u64>,
    counts: [(u64, u64); 4],
}

/// The runtime side: the globals and the bucket list in an image, and what was written.
struct Runtime {
    img: Rc<RefCell<Image>>,
    layout: RuntimeLayout,
    addrs: RuntimeAddresses,
    /// Newest first, as the `allnext` list runs.
    buckets: Vec<Bucket>,
    rate: u64,
    cycle_word: u32,
    rng: XorShift,
}

const SIZES: [u64; 12] = [8, 16, 24, 32, 48, 64, 128, 256, 1024, 8192, 32768, 1 << 20];

impl Runtime {
    fn new(img: Rc<RefCell<Image>>, layout: RuntimeLayout) -> Runtime {
        let globals = img.borrow_mut().alloc(24);
        let mut rt = Runtime {
            img,
            layout,
            addrs: RuntimeAddresses {
                bias: 0,
                mbuckets: globals,
                mem_profile_rate: globals + 8,
                mprof_cycle: Some(globals + 16),
            },
            buckets: Vec::new(),
            rate: 4096,
            cycle_word: 7 << 1,
            rng: XorShift(0x9e37_79b9_7f4a_7c15),
        };
        rt.set_rate(4096);
        rt.set_cycle(7);
        rt
    }

    fn head(&self) -> u64 {
        self.buckets.first().map(|b| b.addr).unwrap_or(0)
    }

    fn set_rate(&mut self, rate: u64) {
        self.rate = rate;
        self.img
            .borrow_mut()
            .put_u64(self.addrs.mem_profile_rate, rate);
    }

    /// `mProfCycle` holds the cycle number shifted left by one (the low bit is a flag).
    fn set_cycle(&mut self, cycle: u32) {
        self.cycle_word = cycle << 1 | 1;
        let a = self.addrs.mprof_cycle.unwrap();
        self.img.borrow_mut().put(a, &self.cycle_word.to_le_bytes());
    }

    /// Allocates from the second half of the image from now on.
    fn grow(&mut self) {
        let mut img = self.img.borrow_mut();
        assert!(img.next <= HALF, "first phase overflowed its half");
        img.next = HALF;
    }

    fn record_addr(&self, b: &Bucket) -> u64 {
        b.addr + self.layout.record_offset(b.stack.len() as u64)
    }

    fn write_record(&self, b: &Bucket) {
        let mut words = Vec::new();
        for (allocs, frees) in b.counts {
            words.extend([allocs, frees]);
            if self.layout.cycle_has_bytes {
                words.extend([allocs * b.size, frees * b.size]);
            }
        }
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(bytes.len() as u64, self.layout.record_size());
        self.img.borrow_mut().put(self.record_addr(b), &bytes);
    }

    /// What `mProf_Malloc` → `stkbucket` does for a new stack: a new bucket whose `allnext` is the
    /// old head, then `mbuckets` = the new bucket.
    fn prepend(&mut self, nstk: usize) {
        assert!(nstk as u64 <= self.layout.max_stack);
        let size = SIZES[self.rng.below_u64(SIZES.len() as u64) as usize];
        let stack: Vec<u64> = (0..nstk)
            .map(|_| 0x40_1000 + 4 * self.rng.below_u64(1 << 18))
            .collect();
        let len = self.layout.record_offset(nstk as u64) + self.layout.record_size();
        let addr = self.img.borrow_mut().alloc(len as usize);
        let allocs = 1 + self.rng.below_u64(1000);
        let b = Bucket {
            addr,
            size,
            stack,
            counts: [
                (allocs, self.rng.below_u64(allocs + 1)),
                (self.rng.below_u64(3), 0),
                (0, 0),
                (self.rng.below_u64(3), 0),
            ],
        };
        {
            let mut img = self.img.borrow_mut();
            let header = [
                0,
                self.head(),
                1, // memProfile
                self.rng.next_u64(),
                size,
                nstk as u64,
            ];
            for (i, w) in header.iter().enumerate() {
                img.put_u64(addr + 8 * i as u64, *w);
            }
            for (i, pc) in b.stack.iter().enumerate() {
                img.put_u64(addr + 48 + 8 * i as u64, *pc);
            }
        }
        self.write_record(&b);
        self.buckets.insert(0, b);
        self.img.borrow_mut().put_u64(self.addrs.mbuckets, addr);
    }

    /// A stack depth: mostly short, sometimes deeper than the reader's prefetch (when the layout
    /// allows it).
    fn depth(&mut self) -> usize {
        let max = self.layout.max_stack;
        let d = if self.rng.below_u64(10) == 0 {
            65 + self.rng.below_u64(200)
        } else {
            1 + self.rng.below_u64(32)
        };
        d.min(max) as usize
    }

    fn prepend_many(&mut self, k: usize) {
        for _ in 0..k {
            let d = self.depth();
            self.prepend(d);
        }
    }

    /// Allocations and frees in bucket `i` (what a GC cycle publishes, and what new sampled
    /// allocations add to the future cycles).
    fn bump(&mut self, i: usize) {
        let add = 1 + self.rng.below_u64(50);
        let free = self.rng.below_u64(add + 1);
        let f = self.rng.below_u64(3);
        let mut b = self.buckets[i].clone();
        b.counts[0].0 += add;
        b.counts[0].1 += free;
        b.counts[2].0 += f;
        self.write_record(&b);
        self.buckets[i] = b;
    }

    /// The buckets as they are in memory, in list order.
    fn expected(&self) -> Vec<RawBucket> {
        self.buckets
            .iter()
            .map(|b| {
                let c = |(allocs, frees): (u64, u64)| Cycle {
                    allocs,
                    frees,
                    alloc_bytes: allocs * b.size,
                    free_bytes: frees * b.size,
                };
                RawBucket {
                    addr: b.addr,
                    size: b.size,
                    stack: b.stack.clone(),
                    record: MemRecord {
                        active: c(b.counts[0]),
                        future: [c(b.counts[1]), c(b.counts[2]), c(b.counts[3])],
                    },
                }
            })
            .collect()
    }

    /// (syscalls, bytes) of reading one bucket of `nstk` frames: one read of the header, the
    /// prefetched frames and a record, and a second read for the rest when the stack is deeper.
    fn bucket_cost(&self, nstk: usize) -> (u64, u64) {
        let l = &self.layout;
        let guess = l.header_size + 8 * WalkLimits::default().prefetch_frames + l.record_size();
        let total = l.record_offset(nstk as u64) + l.record_size();
        if total > guess {
            (2, total)
        } else {
            (1, guess)
        }
    }

    /// (syscalls, bytes) of the batch re-reading `n` known records with the three globals.
    fn batch_cost(&self, n: usize) -> (u64, u64) {
        (
            (n + 3).div_ceil(IOV_MAX) as u64,
            20 + n as u64 * self.layout.record_size(),
        )
    }

    /// (syscalls, bytes) of walking the newest `k` buckets.
    fn walk_cost(&self, k: usize) -> (u64, u64) {
        self.buckets[..k]
            .iter()
            .map(|b| self.bucket_cost(b.stack.len()))
            .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
    }
}

/// Binary facts of a real fixture build of `version` (for the layout, symbols and the checks the
/// reader makes).
fn binary_info(version: &str) -> BinaryInfo {
    let bin = fixture("heapfixture", version, "default");
    let info = BinaryInfo::inspect(GoBinary::open(&bin).unwrap(), None);
    assert!(info.symbols.is_some() && info.linker_disabled_profiling == Some(false));
    info
}

/// A fresh, independent full walk of the image (its own reader, so the counts under test are
/// untouched).
fn fresh_walk(rt: &Runtime, map: &MemoryMap) -> Vec<RawBucket> {
    let mem = FakeMem::new(&rt.img);
    let head = u64::from_le_bytes(
        rt.img.borrow().bytes[rt.img.borrow().off(rt.addrs.mbuckets)..][..8]
            .try_into()
            .unwrap(),
    );
    assert_eq!(head, rt.head());
    let w = BucketWalker::new(&mem, rt.layout, Some(map))
        .walk(head)
        .unwrap();
    assert!(w.warning.is_none(), "{:?}", w.warning);
    w.buckets
}

fn maps_line(base: u64, from: usize, to: usize) -> String {
    format!(
        "{:x}-{:x} rw-p 00000000 00:00 0 \n",
        base + from as u64,
        base + to as u64
    )
}

/// Checks one read: the reader's state against the image, and its cost against `want`.
#[allow(clippy::too_many_arguments)]
fn check_read<M: RemoteMemory>(
    what: &str,
    reader: &mut IncrementalReader<M>,
    rt: &Runtime,
    info: &BinaryInfo,
    proc_root: &Path,
    oracle_map: &MemoryMap,
    want_cost: (u64, u64),
    want_new: usize,
    want_full: bool,
    exact: bool,
) -> ReadOutcome {
    let steady_plan = (
        (reader.plan().ranges() + 3).div_ceil(IOV_MAX) as u64,
        20 + reader.plan().bytes() as u64,
    );
    let before = reader.stats();
    let out = reader
        .read(info, proc_root)
        .unwrap_or_else(|r| panic!("{what}: {r}"));
    let after = reader.stats();
    let cost = (after.syscalls - before.syscalls, after.bytes - before.bytes);
    assert!(out.warning.is_none(), "{what}: {:?}", out.warning);
    assert_eq!(out.unreadable_records, 0, "{what}");
    assert_eq!(
        (out.full_walk, out.new_buckets),
        (want_full, want_new),
        "{what}: full walk, new buckets"
    );
    assert!(!reader.incomplete(), "{what}");
    let expected = rt.expected();
    assert!(
        reader.buckets() == expected.as_slice(),
        "{what}: the reader's {} buckets differ from the {} written",
        reader.buckets().len(),
        expected.len()
    );
    assert!(
        reader.buckets() == fresh_walk(rt, oracle_map).as_slice(),
        "{what}: differs from a fresh full walk"
    );
    assert_eq!(reader.mem_profile_rate(), rt.rate, "{what}");
    assert_eq!(reader.cycle(), Some(rt.cycle_word >> 1), "{what}");
    if exact {
        assert_eq!(cost, want_cost, "{what}: (syscalls, bytes)");
    } else {
        assert!(
            cost.0 <= want_cost.0,
            "{what}: {} syscalls, more than the {} of a bucket-by-bucket read",
            cost.0,
            want_cost.0
        );
        if want_full {
            // A full walk reads many buckets a window: far fewer syscalls than one a bucket.
            assert!(
                cost.0 * 4 <= want_cost.0,
                "{what}: full walk in {} syscalls (bucket by bucket: {})",
                cost.0,
                want_cost.0
            );
        }
        if want_new == 0 {
            assert_eq!(
                cost, steady_plan,
                "{what}: steady read = one batch over the plan"
            );
        }
        // Records closer than the coalescing gap share a range: at most one range per larger
        // gap, per MAX_RANGE bytes spanned, and per mapping the image is split into.
        let l = *reader.layout();
        let mut recs: Vec<u64> = reader.buckets().iter().map(|b| b.record_addr(&l)).collect();
        recs.sort_unstable();
        let wide_gaps = recs
            .windows(2)
            .filter(|w| w[1] - (w[0] + l.record_size()) > DEFAULT_COALESCE_GAP)
            .count();
        let span = recs.last().map_or(0, |last| last - recs[0]);
        let bound = 1 + wide_gaps + (span / MAX_RANGE) as usize + 2;
        assert!(
            reader.plan().ranges() <= bound,
            "{what}: {} ranges for {} records (bound {bound})",
            reader.plan().ranges(),
            recs.len()
        );
    }
    out
}

/// The whole sequence of reads for one layout, through `reader`. `map_grown` is called when the
/// runtime starts using the second half of the image (to publish it in the maps the reader reads).
#[allow(clippy::too_many_arguments)]
fn scenario<M: RemoteMemory>(
    version: &str,
    rt: &mut Runtime,
    mut reader: IncrementalReader<M>,
    info: &BinaryInfo,
    proc_root: &Path,
    oracle_map: &MemoryMap,
    map_grown: &mut dyn FnMut(),
    exact: bool,
) {
    let v = |s: &str| {
        format!(
            "go{version}: {s} ({})",
            if exact {
                "bucket by bucket"
            } else {
                "defaults"
            }
        )
    };
    if exact {
        reader.read_window = 0;
        reader.set_coalesce_gap(0);
    }
    // 1021 buckets: the steady batch is 1021 + 3 = 1024 ranges, exactly one syscall.
    let n0 = IOV_MAX - 3;
    let first = {
        let k = rt.buckets.len();
        assert_eq!(k, n0);
        let (s, b) = rt.walk_cost(k);
        // MemProfileRate, mProfCycle and mbuckets are read one by one, then the walk.
        (3 + s, 20 + b)
    };
    check_read(
        &v("first read"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        first,
        n0,
        true,
        exact,
    );
    check_read(
        &v("steady read"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        rt.batch_cost(n0),
        0,
        false,
        exact,
    );

    // Counters move (a GC cycle published, new samples in a future cycle), the cycle advances.
    for i in (0..n0).step_by(7) {
        rt.bump(i);
    }
    rt.set_cycle(8);
    check_read(
        &v("counters changed"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        rt.batch_cost(n0),
        0,
        false,
        exact,
    );

    // One new bucket: the batch over the 1021 known ones, then just the new one. From now on the
    // runtime allocates buckets in memory the reader's maps do not show yet.
    rt.grow();
    map_grown();
    rt.prepend(3);
    let (bs, bb) = rt.batch_cost(n0);
    let (ws, wb) = rt.walk_cost(1);
    check_read(
        &v("one bucket prepended"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        (bs + ws, bb + wb),
        1,
        false,
        exact,
    );
    // 1022 known buckets: 1025 ranges, two syscalls.
    assert_eq!(rt.batch_cost(n0 + 1).0, 2);
    check_read(
        &v("steady read past IOV_MAX"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        rt.batch_cost(n0 + 1),
        0,
        false,
        exact,
    );

    // Many new buckets (some deeper than the prefetch) with counters moving and a new rate.
    let known = rt.buckets.len();
    for i in (0..known).step_by(5) {
        rt.bump(i);
    }
    rt.prepend_many(90);
    rt.set_rate(512 * 1024);
    rt.set_cycle(9);
    let (bs, bb) = rt.batch_cost(known);
    let (ws, wb) = rt.walk_cost(90);
    check_read(
        &v("90 buckets prepended"),
        &mut reader,
        rt,
        info,
        proc_root,
        oracle_map,
        (bs + ws, bb + wb),
        90,
        false,
        exact,
    );

    // A bucket per read, then nothing.
    for round in 0..3 {
        let known = rt.buckets.len();
        let d = rt.depth();
        rt.prepend(d);
        rt.bump(known / 2);
        let (bs, bb) = rt.batch_cost(known);
        let (ws, wb) = rt.walk_cost(1);
        check_read(
            &v(&format!("prepend round {round}")),
            &mut reader,
            rt,
            info,
            proc_root,
            oracle_map,
            (bs + ws, bb + wb),
            1,
            false,
            exact,
        );
    }
    let n = rt.buckets.len();
    for round in 0..2 {
        check_read(
            &v(&format!("final steady read {round}")),
            &mut reader,
            rt,
            info,
            proc_root,
            oracle_map,
            rt.batch_cost(n),
            0,
            false,
            exact,
        );
    }
}

const VERSIONS: [&str; 3] = [GO_1_19, GO_1_23, GO_1_27];

/// Through the `Vec<u8>`-backed memory, with the maps in a scratch proc root: the second half of
/// the image appears in `<root>/PID/maps` only when the runtime starts using it, so the new buckets
/// are readable only if the reader re-reads the maps when the head moves.
#[test]
fn incremental_reads_over_fake_memory() {
    for (version, exact) in VERSIONS.iter().flat_map(|v| [(*v, true), (*v, false)]) {
        let info = binary_info(version);
        let s = Scratch::new("incr-fake");
        let base = 0xc0_0000_0000u64;
        let img = Rc::new(RefCell::new(Image::new(Some(base))));
        let mut rt = Runtime::new(img.clone(), info.layout);
        rt.prepend_many(IOV_MAX - 3);
        let proc_root = s.path("proc");
        let maps_path = proc_root.join(FAKE_PID.to_string()).join("maps");
        std::fs::create_dir_all(maps_path.parent().unwrap()).unwrap();
        let first_half = maps_line(base, 0, HALF);
        std::fs::write(&maps_path, &first_half).unwrap();
        let reader = IncrementalReader::new(
            FakeMem::new(&img),
            MemoryMap::parse(&first_half).unwrap(),
            rt.addrs,
            info.layout,
        );
        let whole = MemoryMap::parse(&maps_line(base, 0, IMAGE)).unwrap();
        let mut grown = || {
            std::fs::write(
                &maps_path,
                format!("{first_half}{}", maps_line(base, HALF, IMAGE)),
            )
            .unwrap()
        };
        scenario(
            version, &mut rt, reader, &info, &proc_root, &whole, &mut grown, exact,
        );
    }
}

/// Through the real `VmReader` on this very process: the image is a heap buffer here, read with
/// real `process_vm_readv` calls, so the syscall and byte counts are the kernel's.
#[test]
fn incremental_reads_with_process_vm_readv_on_self() {
    let pid = std::process::id() as i32;
    let proc_root = PathBuf::from("/proc");
    for (version, exact) in VERSIONS.iter().flat_map(|v| [(*v, true), (*v, false)]) {
        let info = binary_info(version);
        let img = Rc::new(RefCell::new(Image::new(None)));
        let base = img.borrow().base;
        let mut rt = Runtime::new(img.clone(), info.layout);
        rt.prepend_many(IOV_MAX - 3);
        let map = MemoryMap::read(&proc_root, pid).unwrap();
        assert!(map.is_anonymous_readable(base, IMAGE as u64));
        let mem = VmReader::open(&proc_root, pid).unwrap();
        let reader = IncrementalReader::new(mem, map.clone(), rt.addrs, info.layout);
        scenario(
            version,
            &mut rt,
            reader,
            &info,
            &proc_root,
            &map,
            &mut || {},
            exact,
        );
    }
}

/// With a zero walk budget every read walks at least one bucket and then stops: the reader keeps a
/// prefix of the list, grows it by one bucket a read (continuing from where the last walk
/// stopped), takes a bucket prepended in the meantime along without starting over, and after
/// `n` reads over `n` buckets equals the full list; each read costs the batch over what it knows
/// plus the bucket(s) it walked.
#[test]
fn zero_budget_reads_one_bucket_at_a_time() {
    let info = binary_info(GO_1_23);
    let s = Scratch::new("incr-budget");
    let base = 0xc0_0000_0000u64;
    let img = Rc::new(RefCell::new(Image::new(Some(base))));
    let mut rt = Runtime::new(img.clone(), info.layout);
    rt.prepend_many(40);
    let whole = MemoryMap::parse(&maps_line(base, 0, IMAGE)).unwrap();
    let proc_root = s.path("no-proc"); // no maps file: the reader keeps the map it was given
    let mut reader =
        IncrementalReader::new(FakeMem::new(&img), whole.clone(), rt.addrs, info.layout);
    reader.walk_budget = Duration::ZERO;
    // Costs below are those of the bucket-by-bucket reader.
    reader.read_window = 0;
    reader.set_coalesce_gap(0);

    let mut reads = 0;
    let mut have = 0usize;
    let mut added = false;
    while reads == 0 || reader.incomplete() {
        if reads == 10 {
            rt.prepend(4);
            added = true;
        }
        let before = reader.stats();
        let out = reader.read(&info, &proc_root).unwrap();
        let cost = reader.stats().syscalls - before.syscalls;
        reads += 1;
        assert!(out.warning.is_none(), "{:?}", out.warning);
        let got = reader.buckets().len();
        let expected = rt.expected();
        assert!(
            reader.buckets() == &expected[..got],
            "read {reads}: the {got} buckets are not a prefix of the list"
        );
        let want_new = if reads == 11 { 2 } else { 1 };
        assert_eq!(got, have + want_new, "read {reads}");
        let walked = if reads == 1 {
            // The three globals one by one, then the first bucket.
            3 + rt.bucket_cost(rt.buckets[0].stack.len()).0
        } else {
            let newest = if reads == 11 { 1 } else { 0 };
            let tail: u64 = (0..want_new)
                .map(|j| {
                    let i = if j < newest { 0 } else { got - 1 };
                    rt.bucket_cost(rt.buckets[i].stack.len()).0
                })
                .sum();
            rt.batch_cost(have).0 + tail
        };
        assert_eq!(cost, walked, "read {reads}: syscalls");
        have = got;
        assert!(reads <= 100, "no convergence");
    }
    assert!(added);
    assert_eq!(reads, 40, "one bucket a read; the prepended one came along");
    assert!(reader.buckets() == rt.expected().as_slice());
    assert!(reader.buckets() == fresh_walk(&rt, &whole).as_slice());
}
