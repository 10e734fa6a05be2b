//! Cycle cost of reading a process's heap-profile buckets: read syscalls, bytes and CPU time per
//! collection cycle (the read and the delta update, as the agent runs them), against a real Go
//! process (`benches/manybuckets`, N distinct allocation stacks at `MemProfileRate` 1) built by
//! Go 1.24 and 1.27 (whose memRecord has no byte counters).
//!
//! - reference: `pread` on /proc/PID/mem, full walk every cycle, 2 reads per bucket (header+record,
//!   then stack+record), plus MemProfileRate and the head pointer.
//! - goheap cold cycle: a new `IncrementalReader`'s first read (the walk in read windows) and
//!   the first `DeltaTracker` update.
//! - goheap steady cycle: the batched re-read through the coalescing `RecordPlan`, for several
//!   gaps (0 = one range per record), and the delta update.
//!
//! Medians of CYCLES cycles. Run: `cargo run --release -p goheap-benches --bin cycle_cost --
//! [CYCLES] [--no-reference] [--no-cold] [--gaps=G,...] [GO:STACKS ...]` (e.g. `1.24.11:10000`; default: every configuration).
//! Steady cycles during which the target added buckets (the Go 1.27 build keeps adding some) are
//! reported in their own "growing" rows, so the steady rows measure re-reads only; steady cycles
//! after a GC (`mProfCycle` moved, so every bucket the fixture allocated in publishes new counters
//! and the delta update visits it) apart from those without one (the re-read finds nothing moved).

use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use goheap::binary::BinaryInfo;
use goheap::daemon::tracker::{DeltaTracker, IncrementalReader};
use goheap::runtime::walk::BucketWalker;
use goheap::target::maps::MemoryMap;
use goheap::target::memory::{
    MemoryError, ProcMem, ReadRequest, ReadStats, RemoteMemory, VmReader, IOV_MAX,
};
use goheap::target::open::{self, RuntimeAddresses};
use goheap::target::procfs::ProcPaths;
use goheap_benches::*;

struct Row {
    go: &'static str,
    stacks: usize,
    buckets: usize,
    method: String,
    s: Medians,
}

/// One cycle's measurements.
#[derive(Default, Clone, Copy)]
struct Sample {
    syscalls: f64,
    bytes: f64,
    /// Reading thread's CPU time, read and delta update, ms.
    cpu_ms: f64,
    /// Of which the delta update, ms (0 for the reference).
    delta_ms: f64,
    /// Of which inside the read syscalls (the kernel pinning and copying pages), ms; measured by
    /// [`TimedMemory`].
    syscall_ms: f64,
    wall_ms: f64,
}

/// Medians of each field of [`Sample`] (each field's own median).
struct Medians(Sample);

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn medians(samples: &[Sample]) -> Medians {
    let m = |f: fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Medians(Sample {
        syscalls: m(|s| s.syscalls),
        bytes: m(|s| s.bytes),
        cpu_ms: m(|s| s.cpu_ms),
        delta_ms: m(|s| s.delta_ms),
        syscall_ms: m(|s| s.syscall_ms),
        wall_ms: m(|s| s.wall_ms),
    })
}

/// Remote memory that adds the reading thread's CPU time spent inside each read call to a shared
/// counter: the kernel's share of a cycle (pinning the target's pages and copying them), apart
/// from goheap's own decoding and delta tracking.
struct TimedMemory<M> {
    inner: M,
    in_reads: Rc<Cell<Duration>>,
}

impl<M: RemoteMemory> TimedMemory<M> {
    fn new(inner: M) -> (TimedMemory<M>, Rc<Cell<Duration>>) {
        let in_reads = Rc::new(Cell::new(Duration::ZERO));
        (
            TimedMemory {
                inner,
                in_reads: in_reads.clone(),
            },
            in_reads,
        )
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let c0 = thread_cpu();
        let out = f();
        self.in_reads.set(self.in_reads.get() + (thread_cpu() - c0));
        out
    }
}

impl<M: RemoteMemory> RemoteMemory for TimedMemory<M> {
    fn pid(&self) -> i32 {
        self.inner.pid()
    }
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        self.timed(|| self.inner.read_partial(addr, buf))
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
        self.timed(|| self.inner.read_batch(reqs))
    }
    fn stats(&self) -> ReadStats {
        self.inner.stats()
    }
}

/// Steady-cycle coalescing gaps compared (bytes); 0 = one range per record.
const GAPS: &[u64] = &[0, 256, 1024, 4096];

/// One collection cycle as the agent runs it: the reader's read, then the delta update. Returns
/// the sample and the number of new buckets.
fn timed_cycle<M: RemoteMemory>(
    reader: &mut IncrementalReader<M>,
    deltas: &mut DeltaTracker,
    info: &BinaryInfo,
    proc_root: &Path,
    in_reads: &Cell<Duration>,
) -> anyhow::Result<(Sample, usize)> {
    let s0 = reader.stats();
    let r0 = in_reads.get();
    let (c0, w0) = (thread_cpu(), Instant::now());
    let out = reader
        .read(info, proc_root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c1 = thread_cpu();
    let delta = deltas.update_from(reader);
    deltas.recycle(delta);
    let c2 = thread_cpu();
    let wall = w0.elapsed().as_secs_f64() * 1e3;
    let s1 = reader.stats();
    Ok((
        Sample {
            syscalls: (s1.syscalls - s0.syscalls) as f64,
            bytes: (s1.bytes - s0.bytes) as f64,
            cpu_ms: (c2 - c0).as_secs_f64() * 1e3,
            delta_ms: (c2 - c1).as_secs_f64() * 1e3,
            syscall_ms: (in_reads.get() - r0).as_secs_f64() * 1e3,
            wall_ms: wall,
        },
        out.new_buckets,
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cycles: usize = args
        .first()
        .filter(|s| s.parse::<usize>().is_ok())
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let reference = !args.iter().any(|a| a == "--no-reference");
    let cold = !args.iter().any(|a| a == "--no-cold");
    let gaps: Vec<u64> = match args.iter().find_map(|a| a.strip_prefix("--gaps=")) {
        Some(list) => list
            .split(',')
            .map(|g| g.parse())
            .collect::<Result<_, _>>()?,
        None => GAPS.to_vec(),
    };
    let only: Vec<&String> = args.iter().filter(|a| a.contains(':')).collect();
    let scratch = Scratch::new("cycle")?;
    let proc_root = Path::new("/proc");
    let mut rows = Vec::new();
    let mut budget_ok = true;
    for (go, stacks) in [
        ("1.24.11", 1000usize),
        ("1.24.11", 10000),
        ("1.27.3", 10000),
        ("1.27.3", 20000),
    ] {
        if !only.is_empty() && !only.iter().any(|o| **o == format!("{go}:{stacks}")) {
            continue;
        }
        let bin = build_go_program_with("manybuckets", &scratch.0, go)?;
        let ready = scratch.0.join(format!("ready-{go}-{stacks}"));
        let mut cmd = Command::new(&bin);
        cmd.args(["-n", &stacks.to_string()])
            .arg("-ready")
            .arg(&ready);
        let target = spawn_ready(cmd, &ready, Duration::from_secs(60))?;
        let pid = target.pid();
        let paths = ProcPaths::new(proc_root, pid);
        let gobin = open::open_binary(&paths).map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = BinaryInfo::inspect(gobin, None);
        let symbols = info
            .symbols
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no symbols"))?;
        let map = MemoryMap::read(proc_root, pid)?;
        let bias = open::load_bias(&info, &map).ok_or_else(|| anyhow::anyhow!("no bias"))?;
        let addrs = RuntimeAddresses::new(&symbols, bias);

        // Reference: pread, full walk, 2 reads per bucket.
        if reference {
            let (pm, in_reads) = TimedMemory::new(ProcMem::open(proc_root, pid)?);
            let mut samples = Vec::new();
            let mut nb = 0;
            for _ in 0..cycles {
                let s0 = pm.stats();
                let r0 = in_reads.get();
                let (c0, w0) = (thread_cpu(), Instant::now());
                let _rate = pm.read_u64(addrs.mem_profile_rate)?;
                let head = pm.read_u64(addrs.mbuckets)?;
                let mut walker = BucketWalker::new(&pm, info.layout, None);
                walker.limits.prefetch_frames = 0;
                walker.limits.read_window = 0;
                let walk = walker.walk(head)?;
                nb = walk.buckets.len();
                let cpu_ms = (thread_cpu() - c0).as_secs_f64() * 1e3;
                let wall_ms = w0.elapsed().as_secs_f64() * 1e3;
                let s1 = pm.stats();
                samples.push(Sample {
                    syscalls: (s1.syscalls - s0.syscalls) as f64,
                    bytes: (s1.bytes - s0.bytes) as f64,
                    cpu_ms,
                    delta_ms: 0.0,
                    syscall_ms: (in_reads.get() - r0).as_secs_f64() * 1e3,
                    wall_ms,
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            rows.push(Row {
                go,
                stacks,
                buckets: nb,
                method: "reference: pread, full walk, 2 reads/bucket".into(),
                s: medians(&samples),
            });
        }

        // goheap cold cycle: a new reader's first read (full walk through read windows) and the
        // first delta update, median over `cycles` fresh readers.
        if cold {
            let mut samples = Vec::new();
            let mut nb = 0;
            for _ in 0..cycles {
                let (vm, in_reads) = TimedMemory::new(VmReader::open(proc_root, pid)?);
                let mut reader = IncrementalReader::new(vm, map.clone(), addrs, info.layout);
                let mut deltas = DeltaTracker::default();
                let (s, _) = timed_cycle(&mut reader, &mut deltas, &info, proc_root, &in_reads)?;
                samples.push(s);
                nb = reader.buckets().len();
                std::thread::sleep(Duration::from_millis(50));
            }
            rows.push(Row {
                go,
                stacks,
                buckets: nb,
                method: format!(
                    "goheap cold cycle (walk in {} KiB windows + delta update)",
                    goheap::runtime::walk::DEFAULT_READ_WINDOW >> 10
                ),
                s: medians(&samples),
            });
        }

        // goheap steady cycles: batched re-read of the known records + delta update, per gap.
        // Cycles during which the target added buckets are reported apart ("growing").
        let (vm, in_reads) = TimedMemory::new(VmReader::open(proc_root, pid)?);
        let mut reader = IncrementalReader::new(vm, map.clone(), addrs, info.layout);
        let mut deltas = DeltaTracker::default();
        timed_cycle(&mut reader, &mut deltas, &info, proc_root, &in_reads)?;
        for &gap in &gaps {
            reader.set_coalesce_gap(gap);
            // Steady cycles with a GC since the previous one (mProfCycle moved: every bucket the
            // fixture allocated in is published anew, and the delta update visits them all),
            // steady cycles without, and growing cycles.
            let mut m: [Vec<Sample>; 3] = Default::default();
            let mut worst = 0.0f64;
            for _ in 0..cycles {
                std::thread::sleep(Duration::from_millis(100));
                let before = reader.cycle();
                let (s, new) = timed_cycle(&mut reader, &mut deltas, &info, proc_root, &in_reads)?;
                if new == 0 {
                    worst = worst.max(s.syscalls);
                }
                let k = if new > 0 {
                    2
                } else if reader.cycle() != before {
                    0
                } else {
                    1
                };
                m[k].push(s);
            }
            let nbk = reader.buckets().len();
            let budget = (nbk as u64 + 3).div_ceil(IOV_MAX as u64);
            budget_ok &= worst <= budget as f64;
            for (k, what) in [
                "steady cycle after a GC",
                "steady cycle, no GC since the last",
                "growing cycle (new buckets walked)",
            ]
            .iter()
            .enumerate()
            {
                if m[k].is_empty() {
                    continue;
                }
                rows.push(Row {
                    go,
                    stacks,
                    buckets: nbk,
                    method: format!(
                        "goheap {what}, gap {gap} B ({} ranges; {} of {cycles} cycles)",
                        reader.plan().ranges(),
                        m[k].len()
                    ),
                    s: medians(&m[k]),
                });
            }
        }
        eprintln!("go{go} {stacks} stacks: done");
        drop(target);
    }
    println!();
    println!("| Go | stacks | buckets | method | read syscalls / cycle | bytes read / cycle | CPU ms / cycle | of which in read syscalls | of which delta update | wall ms / cycle |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let s = &r.s.0;
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.go,
            r.stacks,
            r.buckets,
            r.method,
            s.syscalls,
            s.bytes,
            s.cpu_ms,
            s.syscall_ms,
            s.delta_ms,
            s.wall_ms
        );
    }
    println!("\n(medians of {cycles} cycles; CPU is the reading thread's CPU time, reads and delta tracking)");
    anyhow::ensure!(budget_ok, "steady-cycle syscall budget exceeded");
    Ok(())
}
