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
//! Medians of CYCLES cycles. Run: `cargo run --release -p goheap-benches --bin cycle_cost [CYCLES]`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use goheap::binary::BinaryInfo;
use goheap::daemon::tracker::{DeltaTracker, IncrementalReader};
use goheap::runtime::walk::BucketWalker;
use goheap::target::maps::MemoryMap;
use goheap::target::memory::{ProcMem, RemoteMemory, VmReader, IOV_MAX};
use goheap::target::open::{self, RuntimeAddresses};
use goheap::target::procfs::ProcPaths;
use goheap_benches::*;

struct Row {
    go: &'static str,
    stacks: usize,
    buckets: usize,
    method: String,
    syscalls: f64,
    bytes: f64,
    cpu_ms: f64,
    wall_ms: f64,
}

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

/// Steady-cycle coalescing gaps compared (bytes); 0 = one range per record.
const GAPS: &[u64] = &[0, 256, 1024, 4096];

/// One collection cycle as the agent runs it: the reader's read, then the delta update. Returns
/// (syscalls, bytes, CPU ms, wall ms, new buckets).
fn timed_cycle<M: RemoteMemory>(
    reader: &mut IncrementalReader<M>,
    deltas: &mut DeltaTracker,
    info: &BinaryInfo,
    proc_root: &Path,
) -> anyhow::Result<(u64, u64, f64, f64, usize)> {
    let s0 = reader.stats();
    let (c0, w0) = (thread_cpu(), Instant::now());
    let out = reader
        .read(info, proc_root)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = deltas.update(
        reader.buckets(),
        reader.cycle(),
        reader.mem_profile_rate(),
        reader.layout(),
    );
    let cpu = (thread_cpu() - c0).as_secs_f64() * 1e3;
    let wall = w0.elapsed().as_secs_f64() * 1e3;
    let s1 = reader.stats();
    Ok((
        s1.syscalls - s0.syscalls,
        s1.bytes - s0.bytes,
        cpu,
        wall,
        out.new_buckets,
    ))
}

fn main() -> anyhow::Result<()> {
    let cycles: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
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
        let pm = ProcMem::open(proc_root, pid)?;
        let (mut calls, mut bytes, mut cpu, mut wall) = (vec![], vec![], vec![], vec![]);
        let mut nb = 0;
        for _ in 0..cycles {
            let s0 = pm.stats();
            let (c0, w0) = (thread_cpu(), Instant::now());
            let _rate = pm.read_u64(addrs.mem_profile_rate)?;
            let head = pm.read_u64(addrs.mbuckets)?;
            let mut walker = BucketWalker::new(&pm, info.layout, None);
            walker.limits.prefetch_frames = 0;
            walker.limits.read_window = 0;
            let walk = walker.walk(head)?;
            nb = walk.buckets.len();
            cpu.push((thread_cpu() - c0).as_secs_f64() * 1e3);
            wall.push(w0.elapsed().as_secs_f64() * 1e3);
            let s1 = pm.stats();
            calls.push((s1.syscalls - s0.syscalls) as f64);
            bytes.push((s1.bytes - s0.bytes) as f64);
            std::thread::sleep(Duration::from_millis(100));
        }
        rows.push(Row {
            go,
            stacks,
            buckets: nb,
            method: "reference: pread, full walk, 2 reads/bucket".into(),
            syscalls: median(&mut calls),
            bytes: median(&mut bytes),
            cpu_ms: median(&mut cpu),
            wall_ms: median(&mut wall),
        });

        // goheap cold cycle: a new reader's first read (full walk through read windows) and the
        // first delta update, median over `cycles` fresh readers.
        let (mut calls, mut bytes, mut cpu, mut wall) = (vec![], vec![], vec![], vec![]);
        for _ in 0..cycles {
            let vm = VmReader::open(proc_root, pid)?;
            let mut reader = IncrementalReader::new(vm, map.clone(), addrs, info.layout);
            let mut deltas = DeltaTracker::default();
            let (c, b, cp, wl, _) = timed_cycle(&mut reader, &mut deltas, &info, proc_root)?;
            calls.push(c as f64);
            bytes.push(b as f64);
            cpu.push(cp);
            wall.push(wl);
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
            syscalls: median(&mut calls),
            bytes: median(&mut bytes),
            cpu_ms: median(&mut cpu),
            wall_ms: median(&mut wall),
        });

        // goheap steady cycles: batched re-read of the known records + delta update, per gap.
        let vm = VmReader::open(proc_root, pid)?;
        let mut reader = IncrementalReader::new(vm, map.clone(), addrs, info.layout);
        let mut deltas = DeltaTracker::default();
        timed_cycle(&mut reader, &mut deltas, &info, proc_root)?;
        for &gap in GAPS {
            reader.set_coalesce_gap(gap);
            let (mut calls, mut bytes, mut cpu, mut wall) = (vec![], vec![], vec![], vec![]);
            let mut worst = 0u64;
            for _ in 0..cycles {
                std::thread::sleep(Duration::from_millis(100));
                let (c, b, cp, wl, new) = timed_cycle(&mut reader, &mut deltas, &info, proc_root)?;
                if new == 0 {
                    worst = worst.max(c);
                }
                calls.push(c as f64);
                bytes.push(b as f64);
                cpu.push(cp);
                wall.push(wl);
            }
            let nbk = reader.buckets().len();
            let budget = (nbk as u64 + 3).div_ceil(IOV_MAX as u64);
            budget_ok &= worst <= budget;
            rows.push(Row {
                go,
                stacks,
                buckets: nbk,
                method: format!(
                    "goheap steady cycle, gap {gap} B ({} ranges; re-read + delta update)",
                    reader.plan().ranges()
                ),
                syscalls: median(&mut calls),
                bytes: median(&mut bytes),
                cpu_ms: median(&mut cpu),
                wall_ms: median(&mut wall),
            });
        }
        eprintln!("go{go} {stacks} stacks: done");
        drop(target);
    }
    println!();
    println!("| Go | stacks | buckets | method | read syscalls / cycle | bytes read / cycle | CPU ms / cycle | wall ms / cycle |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            r.go, r.stacks, r.buckets, r.method, r.syscalls, r.bytes, r.cpu_ms, r.wall_ms
        );
    }
    println!("\n(medians of {cycles} cycles; CPU is the reading thread's CPU time, reads and delta tracking)");
    anyhow::ensure!(budget_ok, "steady-cycle syscall budget exceeded");
    Ok(())
}
