//! How processes come and go under `goheap agent` (issue #9): every way a process leaves ends its
//! series, short-lived processes stay out of the info log, SIGINT/SIGTERM stop the agent promptly
//! even mid-cycle, a broken `--output-dir` is reported, and new processes become readable quickly
//! however many arrive at once.

mod agent_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_common::*;

/// A proc root holding only the given processes (symlinks into /proc), so an agent under test
/// touches nothing else on the machine.
fn private_proc_root(s: &Scratch, pids: &[i32]) -> PathBuf {
    let root = s.path("proc");
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        add_to_proc_root(&root, *pid);
    }
    root
}

fn add_to_proc_root(root: &std::path::Path, pid: i32) {
    std::os::unix::fs::symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
}

/// The state of `/proc/PID/stat` (`R`, `S`, `Z`, …).
fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next().map(str::to_string)
}

/// Log lines (text format) that mention `pid=PID`.
fn log_lines_of(log: &str, pid: i32) -> Vec<String> {
    let needle = format!("pid={pid} ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// A Go process that exits but is not reaped by its parent (a zombie) ends its series and its
/// `/processes` entry, and is logged `gone`, while it is still a zombie; reaping it later adds
/// nothing.
#[test]
fn zombie_ends_its_series_before_it_is_reaped() {
    let s = Scratch::new("zombie");
    let (mut sa, _) = start_steadyalloc(&s, "sa", 4.0);
    let root = private_proc_root(&s, &[sa.pid]);
    let agent = Agent::start_with_interval(&s, "500ms", &["--proc-root", root.to_str().unwrap()]);
    agent.wait_state(sa.pid, "readable", Duration::from_secs(20));
    wait_for(Duration::from_secs(10), "series of the process", || {
        metric_for_pid(&agent.metrics(), "container_go_alloc_bytes_total", sa.pid)
    });
    // SIGKILL, not reaped: a zombie until `wait`.
    sa.child.kill().unwrap();
    wait_for(Duration::from_secs(10), "a zombie", || {
        (proc_state(sa.pid).as_deref() == Some("Z")).then_some(())
    });
    let pid = sa.pid;
    let t0 = Instant::now();
    loop {
        let m = agent.metrics();
        let series = m
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("pid=\"{pid}\"")))
            .count();
        if series == 0 && agent.process(pid).is_none() {
            break;
        }
        assert_eq!(proc_state(pid).as_deref(), Some("Z"), "still a zombie");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the zombie {pid} keeps {series} series / its /processes entry:\n{m}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = log_lines_of(&agent.log_text(), pid);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("state=\"gone\"") || l.contains("state=gone")),
        "no gone line for the zombie: {lines:#?}"
    );
    // Reaping it later logs nothing more.
    sa.child.wait().unwrap();
    let c0 = agent.cycles();
    wait_for(Duration::from_secs(10), "two more cycles", || {
        (agent.cycles() >= c0 + 2).then_some(())
    });
    assert_eq!(
        log_lines_of(&agent.log_text(), pid),
        lines,
        "nothing more once reaped"
    );
}
