//! `goheap profile` against the target's own `/debug/pprof/heap` (issue #9 §4): one Go process
//! (`benches/manybuckets`, N distinct allocation stacks at `MemProfileRate=1`, serving
//! net/http/pprof on 127.0.0.1), profiled over and over by both, alternating (the machine is
//! shared and noisy): wall time of the whole command (process start to exit), its peak RSS (the
//! child's `ru_maxrss` from `wait4` = its VmHWM; started from a small helper process so that the
//! benchmark's own pages do not count) and the size of the profile it wrote.
//!
//! Rows: `goheap profile` (summary on stderr), `goheap profile -q`, `curl /debug/pprof/heap`
//! (curl's own RSS is shown, but the work is done in the target). `--goheap LABEL=PATH` (repeated)
//! adds other goheap binaries, e.g. a build of an older commit.
//!
//! Run: `cargo build --release -p goheap -p goheap-benches && target/release/cli_profile
//! [--runs N] [--stacks N] [--goheap LABEL=PATH]...` (defaults: 10 runs, 10000 stacks, the
//! `goheap` next to this binary).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goheap_benches::*;

/// One command measured.
struct Variant {
    label: String,
    cmd: Vec<String>,
    output: PathBuf,
    wall_ms: Vec<f64>,
    maxrss_kib: Vec<u64>,
    bytes: u64,
}

/// Runs `argv` to completion in this process's child: (wall time, the child's ru_maxrss in KiB).
fn run_child(argv: &[String]) -> anyhow::Result<(Duration, u64)> {
    let t0 = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; the Child handle is not waited on afterwards.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    anyhow::ensure!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    let st = std::process::ExitStatus::from_raw(status);
    anyhow::ensure!(st.success(), "{argv:?} failed: {st}");
    Ok((wall, ru.ru_maxrss as u64))
}

/// Helper mode argument: run the rest of the command line with [`run_child`], print the result.
const MEASURE: &str = "--measure-child";

/// Runs `argv` and measures it: (wall time, peak RSS in KiB). A child's ru_maxrss also counts the
/// pages it shared with its parent when it exec'd, so the command is started from a fresh, small
/// process (this binary re-executed in [`MEASURE`] mode), not from this one.
fn measure(argv: &[String]) -> anyhow::Result<(Duration, u64)> {
    let out = Command::new(std::env::current_exe()?)
        .arg(MEASURE)
        .args(argv)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{argv:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(ns)), Some(Ok(kib))) => Ok((Duration::from_nanos(ns), kib)),
        _ => anyhow::bail!("unexpected helper output {text:?}"),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(MEASURE) {
        let (wall, kib) = run_child(&argv[2..])?;
        println!("{} {kib}", wall.as_nanos());
        return Ok(());
    }
    let mut runs = 10usize;
    let mut stacks = 10000usize;
    let mut goheaps: Vec<(String, PathBuf)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--runs" => runs = value()?.parse()?,
            "--stacks" => stacks = value()?.parse()?,
            "--goheap" => {
                let v = value()?;
                let (label, path) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--goheap LABEL=PATH"))?;
                goheaps.push((label.to_string(), PathBuf::from(path)));
            }
            _ => {
                anyhow::bail!("usage: cli_profile [--runs N] [--stacks N] [--goheap LABEL=PATH]...")
            }
        }
    }
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    if goheaps.is_empty() {
        let own = std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
            .join("goheap");
        goheaps.push(("goheap".into(), own));
    }
    for (_, p) in &goheaps {
        anyhow::ensure!(
            p.exists(),
            "{} missing: cargo build --release -p goheap",
            p.display()
        );
    }
    let curl = ["/usr/bin/curl", "/bin/curl"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("curl missing: apt-get install curl"))?;

    let scratch = Scratch::new("cli-profile")?;
    let bin = build_go_program("manybuckets", &scratch.0)?;
    let ready = scratch.0.join("ready");
    let mut cmd = Command::new(&bin);
    cmd.args(["-n", &stacks.to_string(), "-pprof", "127.0.0.1:0", "-ready"])
        .arg(&ready);
    let target = spawn_ready(cmd, &ready, Duration::from_secs(120))?;
    let pid = target.pid();
    let ready_text = std::fs::read_to_string(&ready)?;
    let addr = ready_text
        .lines()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("manybuckets did not report its pprof address"))?
        .to_string();

    let s = |x: &str| x.to_string();
    let mut variants: Vec<Variant> = Vec::new();
    for (label, path) in &goheaps {
        for quiet in [false, true] {
            let output = scratch
                .0
                .join(format!("{label}{}.pb.gz", if quiet { "-q" } else { "" }));
            let mut cmd = vec![
                path.display().to_string(),
                s("profile"),
                s("--pid"),
                pid.to_string(),
                s("-o"),
                output.display().to_string(),
            ];
            if quiet {
                cmd.push(s("-q"));
            }
            variants.push(Variant {
                label: format!("`{label} profile{}`", if quiet { " -q" } else { "" }),
                cmd,
                output,
                wall_ms: Vec::new(),
                maxrss_kib: Vec::new(),
                bytes: 0,
            });
        }
    }
    let go_out = scratch.0.join("handler.pb.gz");
    variants.push(Variant {
        label: s("`curl /debug/pprof/heap` (the target's own handler; RSS: curl's)"),
        cmd: vec![
            curl.display().to_string(),
            s("-sSf"),
            s("-o"),
            go_out.display().to_string(),
            format!("http://{addr}/debug/pprof/heap"),
        ],
        output: go_out,
        wall_ms: Vec::new(),
        maxrss_kib: Vec::new(),
        bytes: 0,
    });

    // Warm-up: page cache, the handler's first-request allocation stacks.
    for v in &variants {
        measure(&v.cmd)?;
    }
    let n = variants.len();
    for round in 0..runs {
        // Alternate the order so that no command always runs right after another.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for i in order {
            let v = &mut variants[i];
            let (wall, rss) = measure(&v.cmd)?;
            v.wall_ms.push(wall.as_secs_f64() * 1e3);
            v.maxrss_kib.push(rss);
            v.bytes = std::fs::metadata(&v.output)?.len();
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut samples = Vec::new();
    for v in &variants {
        let p = pprof_proto::Profile::decode(&std::fs::read(&v.output)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", v.output.display()))?;
        samples.push(p.sample.len());
    }
    // What a command that does nothing measures.
    let (_, floor) = measure(&[s("/bin/true")])?;
    println!(
        "manybuckets -n {stacks} (pid {pid}), {runs} alternating runs each after one warm-up run; \
         peak RSS floor (/bin/true spawned the same way): {:.1} MiB",
        floor as f64 / 1024.0
    );
    println!();
    println!(
        "| command | wall ms median | wall ms min | peak RSS (max) | output bytes | samples |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (v, smp) in variants.iter().zip(&samples) {
        let min = v.wall_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let rss = v.maxrss_kib.iter().copied().max().unwrap_or(0);
        println!(
            "| {} | {:.1} | {:.1} | {:.1} MiB | {} | {} |",
            v.label,
            median(&v.wall_ms),
            min,
            rss as f64 / 1024.0,
            v.bytes,
            smp
        );
    }
    drop(target);
    Ok(())
}
