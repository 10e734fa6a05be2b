//! Push with the sink stopped: in each of ROUNDS rounds, two `goheap agent --interval 1s` run side
//! by side for SECONDS over the same N steadyalloc processes, one without `--push` (baseline) and
//! one with `--push otlp+http://` to a port where nothing listens (the sink stopped the whole run)
//! and a small queue. Reported per round and agent: the mean cycle duration (from the agent's own
//! histogram), peak RSS (VmHWM) and, for the push agent, what the metrics say was dropped and is
//! queued; then the change of the mean cycle per round and its median.
//!
//! Run: `cargo build --release -p goheap && cargo run --release -p goheap-benches --bin push_sink [SECONDS] [PROCESSES] [QUEUE_ITEMS] [ROUNDS]`
//! (defaults 60, 20, 64, 3).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// A running agent and the port its HTTP endpoint listens on.
struct RunningAgent {
    agent: Proc,
    port: u16,
    label: String,
}

fn start_agent(goheap: &PathBuf, extra: &[String], label: &str) -> anyhow::Result<RunningAgent> {
    let port = free_port()?;
    let agent = Proc(
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
    Ok(RunningAgent {
        agent,
        port,
        label: label.to_string(),
    })
}

/// Reads an agent's cycle durations, memory and push counters, then stops it.
fn finish_agent(mut a: RunningAgent) -> anyhow::Result<Run> {
    if let Some(st) = a.agent.0.try_wait()? {
        anyhow::bail!("{}: agent exited: {st}", a.label);
    }
    let apid = a.agent.pid();
    let text = support::http_get(a.port, "/metrics")?.text();
    let cycles = metric(&text, "goheap_agent_cycle_duration_seconds_count");
    let sum = metric(&text, "goheap_agent_cycle_duration_seconds_sum");
    let r = Run {
        label: a.label.clone(),
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
    let _ = a.agent.0.kill();
    Ok(r)
}

/// Runs the two agents side by side over the same processes for `seconds` (the one started first
/// alternates between rounds), so that both see the same machine: the shared machine's load moves
/// a baseline run by 10% or more from one minute to the next.
fn run_round(
    goheap: &PathBuf,
    seconds: u64,
    push: &[String],
    push_first: bool,
) -> anyhow::Result<[Run; 2]> {
    let (base, pushing) = if push_first {
        let p = start_agent(goheap, push, "sink stopped")?;
        (start_agent(goheap, &[], "no sink")?, p)
    } else {
        let b = start_agent(goheap, &[], "no sink")?;
        (b, start_agent(goheap, push, "sink stopped")?)
    };
    std::thread::sleep(Duration::from_secs(seconds));
    Ok([finish_agent(base)?, finish_agent(pushing)?])
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    let nproc: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let queue: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
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
    let mut runs = Vec::new();
    for round in 0..rounds {
        let [base, pushing] = run_round(&goheap, seconds, &push, round % 2 == 1)?;
        eprintln!(
            "round {}: no sink {:.2} ms, sink stopped {:.2} ms",
            round + 1,
            base.mean_cycle_ms,
            pushing.mean_cycle_ms
        );
        runs.push((round + 1, base, pushing));
    }
    println!("{rounds} rounds of {seconds} s, {nproc} Go processes, both agents at --interval 1s side by side in each round");
    println!();
    println!("| round | run | cycles | mean cycle | agent VmHWM | agent VmRSS | queue (profiles / bytes) | dropped | failed requests |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (round, base, pushing) in &runs {
        for r in [base, pushing] {
            println!(
                "| {round} | {} | {:.0} | {:.2} ms | {:.1} MiB | {:.1} MiB | {:.0} / {:.0} | {:.0} | {:.0} |",
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
    }
    let mut changes: Vec<f64> = runs
        .iter()
        .filter(|(_, b, _)| b.mean_cycle_ms > 0.0)
        .map(|(_, b, p)| 100.0 * (p.mean_cycle_ms - b.mean_cycle_ms) / b.mean_cycle_ms)
        .collect();
    println!();
    for (k, c) in changes.iter().enumerate() {
        println!(
            "round {}: mean cycle with the sink stopped {c:+.1}% of the no-sink agent's",
            k + 1
        );
    }
    changes.sort_by(f64::total_cmp);
    let n = changes.len();
    if n > 0 {
        let m = if n % 2 == 1 {
            changes[n / 2]
        } else {
            (changes[n / 2 - 1] + changes[n / 2]) / 2.0
        };
        println!("median over {n} rounds: {m:+.1}%");
    }
    drop(procs);
    Ok(())
}
