//! Agent footprint: runs `goheap agent --interval 10s` for ~60 s on a machine with 50 Go processes
//! (steadyalloc at 1 MiB/s each) and reports the agent's peak RSS (VmHWM), CPU time (utime+stime)
//! and cycle durations from its own metrics.
//!
//! Run: `cargo build --release -p goheap && cargo run --release -p goheap-benches --bin agent_load [SECONDS] [PROCESSES]`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goheap_benches::*;

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cpu_seconds(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

fn get(port: u16, path: &str) -> anyhow::Result<String> {
    Ok(support::http_get(port, path)?.text())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let nproc: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let goheap: PathBuf = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
        .join("goheap");
    anyhow::ensure!(
        goheap.exists(),
        "{} missing: cargo build --release -p goheap",
        goheap.display()
    );
    let scratch = Scratch::new("load")?;
    let sa = fixture("steadyalloc")?;
    let mut procs = Vec::new();
    for i in 0..nproc {
        let ready = scratch.0.join(format!("sa{i}.ready"));
        let mut cmd = Command::new(&sa);
        cmd.args(["-rate-mib-per-sec", "1"])
            .arg("-ready")
            .arg(&ready);
        procs.push(spawn_ready(cmd, &ready, Duration::from_secs(30))?);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut agent = Proc(
        Command::new(&goheap)
            .args([
                "agent",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "10s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let apid = agent.pid();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        if let Some(st) = agent.0.try_wait()? {
            anyhow::bail!("agent exited: {st}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = get(port, "/metrics")?;
    let hwm = status_kib(apid, "VmHWM:").unwrap_or(0);
    let rss = status_kib(apid, "VmRSS:").unwrap_or(0);
    let cpu = cpu_seconds(apid).unwrap_or(0.0);
    let wall = t0.elapsed().as_secs_f64();
    let cycles = metric(&metrics, "goheap_agent_cycle_duration_seconds_count");
    let cycle_sum = metric(&metrics, "goheap_agent_cycle_duration_seconds_sum");
    let readable = metric(&metrics, "goheap_agent_processes{state=\"readable\"}");
    let syscalls = metric(&metrics, "goheap_agent_read_syscalls_total");
    drop(agent.0.kill());
    println!("| Go processes | interval | run | readable | agent VmHWM | agent VmRSS | agent CPU (utime+stime) | CPU share | cycles | mean cycle | read syscalls |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {nproc} | 10 s | {wall:.0} s | {readable:.0} | {:.1} MiB | {:.1} MiB | {cpu:.2} s | {:.2}% | {cycles:.0} | {:.1} ms | {syscalls:.0} |",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        100.0 * cpu / wall,
        if cycles > 0.0 { 1e3 * cycle_sum / cycles } else { 0.0 },
    );
    drop(procs);
    Ok(())
}
