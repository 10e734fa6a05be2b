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
use goheap::daemon::tracker::IncrementalReader;
use goheap::runtime::walk::BucketWalker;
use goheap::target::maps::MemoryMap;
use goheap::target::memory::{ProcMem, RemoteMemory, VmReader, IOV_MAX};
use goheap::target::open::{self, RuntimeAddresses};
use goheap::target::procfs::ProcPaths;
use goheap_benches::*;

struct Row {
    stacks: usize,
    buckets: usize,
    method: &'static str,
    syscalls: f64,
    bytes: f64,
    cpu_ms: f64,
    wall_ms: f64,
}

fn main() -> anyhow::Result<()> {
    let cycles: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let scratch = Scratch::new("cycle")?;
    let bin = build_go_program("manybuckets", &scratch.0)?;
    let proc_root = Path::new("/proc");
    let mut rows = Vec::new();
    let mut budget_ok = true;
    for stacks in [1000usize, 10000] {
        let ready = scratch.0.join(format!("ready-{stacks}"));
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
        let (mut calls, mut bytes, mut cpu, mut wall) =
            (0u64, 0u64, Duration::ZERO, Duration::ZERO);
        let mut nb = 0;
        for _ in 0..cycles {
            let s0 = pm.stats();
            let (c0, w0) = (thread_cpu(), Instant::now());
            let _rate = pm.read_u64(addrs.mem_profile_rate)?;
            let head = pm.read_u64(addrs.mbuckets)?;
            let mut walker = BucketWalker::new(&pm, info.layout, None);
            walker.limits.prefetch_frames = 0;
            let walk = walker.walk(head)?;
            nb = walk.buckets.len();
            cpu += thread_cpu() - c0;
            wall += w0.elapsed();
            let s1 = pm.stats();
            calls += s1.syscalls - s0.syscalls;
            bytes += s1.bytes - s0.bytes;
            std::thread::sleep(Duration::from_millis(100));
        }
        let n = cycles as f64;
        rows.push(Row {
            stacks,
            buckets: nb,
            method: "reference: pread, full walk, 2 reads/bucket",
            syscalls: calls as f64 / n,
            bytes: bytes as f64 / n,
            cpu_ms: cpu.as_secs_f64() * 1e3 / n,
            wall_ms: wall.as_secs_f64() * 1e3 / n,
        });

        // goheap: incremental batched reader.
        let vm = VmReader::open(proc_root, pid)?;
        let mut reader = IncrementalReader::new(vm, map.clone(), addrs, info.layout);
        let s0 = reader.stats();
        let (c0, w0) = (thread_cpu(), Instant::now());
        reader
            .read(&info, proc_root)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (fc, fw) = (thread_cpu() - c0, w0.elapsed());
        let s1 = reader.stats();
        rows.push(Row {
            stacks,
            buckets: reader.buckets().len(),
            method: "goheap: first cycle (full walk)",
            syscalls: (s1.syscalls - s0.syscalls) as f64,
            bytes: (s1.bytes - s0.bytes) as f64,
            cpu_ms: fc.as_secs_f64() * 1e3,
            wall_ms: fw.as_secs_f64() * 1e3,
        });
        let (mut calls, mut bytes, mut cpu, mut wall, mut worst) =
            (0u64, 0u64, Duration::ZERO, Duration::ZERO, 0u64);
        for _ in 0..cycles {
            std::thread::sleep(Duration::from_millis(100));
            let s0 = reader.stats();
            let (c0, w0) = (thread_cpu(), Instant::now());
            let out = reader
                .read(&info, proc_root)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            cpu += thread_cpu() - c0;
            wall += w0.elapsed();
            let s1 = reader.stats();
            let c = s1.syscalls - s0.syscalls;
            if out.new_buckets == 0 {
                worst = worst.max(c);
            }
            calls += c;
            bytes += s1.bytes - s0.bytes;
        }
        let nbk = reader.buckets().len();
        let budget = (stacks as u64).div_ceil(IOV_MAX as u64) + 3;
        budget_ok &= worst <= budget;
        rows.push(Row {
            stacks,
            buckets: nbk,
            method: "goheap: steady cycle (batched process_vm_readv)",
            syscalls: calls as f64 / n,
            bytes: bytes as f64 / n,
            cpu_ms: cpu.as_secs_f64() * 1e3 / n,
            wall_ms: wall.as_secs_f64() * 1e3 / n,
        });
        println!(
            "{stacks} stacks: {nbk} buckets; worst steady cycle without new buckets: {worst} read syscalls (budget ceil({stacks}/{IOV_MAX})+3 = {budget})"
        );
        drop(target);
    }
    println!();
    println!("| stacks | buckets | method | read syscalls / cycle | bytes read / cycle | CPU ms / cycle | wall ms / cycle |");
    println!("|---:|---:|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.2} | {:.2} |",
            r.stacks, r.buckets, r.method, r.syscalls, r.bytes, r.cpu_ms, r.wall_ms
        );
    }
    println!("\n({cycles} cycles each, 100 ms apart; CPU is the reading thread's CPU time)");
    anyhow::ensure!(budget_ok, "steady-cycle syscall budget exceeded");
    Ok(())
}
