//! Cycle cost of reading a process's heap-profile buckets: read syscalls and CPU time per cycle for
//! ~1k and ~10k buckets, measured against a real Go process (`benches/manybuckets`, MemProfileRate 1).
//!
//! - reference: `pread` on /proc/PID/mem, full walk every cycle, 2 reads per bucket (header+record,
//!   then stack+record), plus MemProfileRate and the head pointer.
//! - goheap: [`IncrementalReader`]: first cycle a full walk, then one batched `process_vm_readv` pass
//!   (IOV_MAX ranges per call) over all memRecords with the head pointer, MemProfileRate and
//!   mProfCycle riding along; new buckets only when the head moved.
//!
//! Run: `cargo run --release -p goheap-benches --bin cycle_cost [CYCLES]`.

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
            let s0 = reader.stats();
            let (c0, w0) = (thread_cpu(), Instant::now());
            reader
                .read(&info, proc_root)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = deltas.update(
                reader.buckets(),
                reader.cycle(),
                reader.mem_profile_rate(),
                reader.layout(),
            );
            cpu.push((thread_cpu() - c0).as_secs_f64() * 1e3);
            wall.push(w0.elapsed().as_secs_f64() * 1e3);
            let s1 = reader.stats();
            calls.push((s1.syscalls - s0.syscalls) as f64);
            bytes.push((s1.bytes - s0.bytes) as f64);
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
        reader
            .read(&info, proc_root)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        deltas.update(
            reader.buckets(),
            reader.cycle(),
            reader.mem_profile_rate(),
            reader.layout(),
        );
        for &gap in GAPS {
            reader.set_coalesce_gap(gap);
            let (mut calls, mut bytes, mut cpu, mut wall) = (vec![], vec![], vec![], vec![]);
            let mut worst = 0u64;
            for _ in 0..cycles {
                std::thread::sleep(Duration::from_millis(100));
                let s0 = reader.stats();
                let (c0, w0) = (thread_cpu(), Instant::now());
                let out = reader
                    .read(&info, proc_root)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let _ = deltas.update(
                    reader.buckets(),
                    reader.cycle(),
                    reader.mem_profile_rate(),
                    reader.layout(),
                );
                cpu.push((thread_cpu() - c0).as_secs_f64() * 1e3);
                wall.push(w0.elapsed().as_secs_f64() * 1e3);
                let s1 = reader.stats();
                let c = s1.syscalls - s0.syscalls;
                if out.new_buckets == 0 {
                    worst = worst.max(c);
                }
                calls.push(c as f64);
                bytes.push((s1.bytes - s0.bytes) as f64);
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
