//! Push with the sink stopped: runs `goheap agent --interval 1s` over N steadyalloc processes for
//! SECONDS without `--push` (baseline), then for SECONDS with `--push otlp+http://` to a port where
//! nothing listens (the sink stopped the whole run) and a small queue, and reports per run the mean
//! cycle duration (from the agent's own histogram), the agent's peak RSS (VmHWM) and, for the push
//! run, what the metrics say was dropped and is queued.
//!
//! Run: `cargo build --release -p goheap && cargo run --release -p goheap-benches --bin push_sink [SECONDS] [PROCESSES] [QUEUE_ITEMS]`
//! (defaults 60, 20, 64).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goheap_benches::node::{free_port, metric, status_kib};
use goheap_benches::*;

struct Run {
    label: String,
    cycles: f64,
    mean_cycle_ms: f64,
    hwm_kib: u64,
    rss_kib: u64,
    dropped: f64,
    failed: f64,
    queued: f64,
    queued_bytes: f64,
}

fn run_agent(goheap: &PathBuf, seconds: u64, extra: &[String], label: &str) -> anyhow::Result<Run> {
    let port = free_port()?;
    let mut agent = Proc(
        Command::new(goheap)
            .args([
                "agent",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--interval",
                "1s",
            ])
            .args(extra)
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
    let text = support::http_get(port, "/metrics")?.text();
    let cycles = metric(&text, "goheap_agent_cycle_duration_seconds_count");
    let sum = metric(&text, "goheap_agent_cycle_duration_seconds_sum");
    let r = Run {
        label: label.to_string(),
        cycles,
        mean_cycle_ms: if cycles > 0.0 {
            1e3 * sum / cycles
        } else {
            0.0
        },
        hwm_kib: status_kib(apid, "VmHWM:").unwrap_or(0),
        rss_kib: status_kib(apid, "VmRSS:").unwrap_or(0),
        dropped: metric(&text, "goheap_agent_push_dropped_total") + 0.0,
        failed: metric(&text, "goheap_agent_push_failed_total") + 0.0,
        queued: metric(&text, "goheap_agent_push_queue_length") + 0.0,
        queued_bytes: metric(&text, "goheap_agent_push_queue_bytes") + 0.0,
    };
    let _ = agent.0.kill();
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let nproc: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let queue: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let goheap: PathBuf = std::env::current_exe()?
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
        .join("goheap");
    anyhow::ensure!(
        goheap.exists(),
        "{} missing: cargo build --release -p goheap",
        goheap.display()
    );
    let scratch = Scratch::new("push-sink")?;
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
    // Nothing listens on this port for the whole push run: the sink is stopped.
    let dead = free_port()?;
    let push = vec![
        "--push".to_string(),
        format!("otlp+http://127.0.0.1:{dead}"),
        "--push-queue-items".to_string(),
        queue.to_string(),
        "--push-timeout".to_string(),
        "2s".to_string(),
    ];
    let runs = vec![
        run_agent(&goheap, seconds, &[], "no sink")?,
        run_agent(&goheap, seconds, &push, "sink stopped")?,
    ];
    println!("| run | Go processes | interval | time | cycles | mean cycle | agent VmHWM | agent VmRSS | queue (profiles / bytes) | dropped | failed requests |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {nproc} | 1 s | {seconds} s | {:.0} | {:.2} ms | {:.1} MiB | {:.1} MiB | {:.0} / {:.0} | {:.0} | {:.0} |",
            r.label,
            r.cycles,
            r.mean_cycle_ms,
            r.hwm_kib as f64 / 1024.0,
            r.rss_kib as f64 / 1024.0,
            r.queued,
            r.queued_bytes,
            r.dropped,
            r.failed,
        );
    }
    let base = runs[0].mean_cycle_ms;
    if base > 0.0 {
        println!(
            "\nmean cycle with the sink stopped: {:+.1}% of the no-sink run",
            100.0 * (runs[1].mean_cycle_ms - base) / base
        );
    }
    drop(procs);
    Ok(())
}
