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
    // Its `found` is logged at its second cycle (so its `gone` will be).
    wait_for(Duration::from_secs(10), "the found line", || {
        log_lines_of(&agent.log_text(), sa.pid)
            .iter()
            .any(|l| l.contains("state=\"found\""))
            .then_some(())
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

/// Starts `goheap agent` through `wrapper` (a command line that ends by exec'ing the agent with
/// the arguments appended), e.g. in a private mount namespace; waits for /healthz.
fn agent_via(s: &Scratch, wrapper: &[&str], args: &[&str]) -> Agent {
    use std::process::{Command, Stdio};
    let port = free_port();
    let log = s.path(&format!("agent-{port}.log"));
    let listen = format!("127.0.0.1:{port}");
    let bin = goheap_bin();
    let child = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&bin)
        .args(["agent", "--listen", &listen])
        .args(args)
        .env_remove("GOHEAP_OUTPUT_DIR")
        .env_remove("GO_HEAP_PROFILER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting goheap agent");
    let mut a = Agent { child, port, log };
    let t0 = Instant::now();
    while http_get(port, "/healthz").map(|r| r.status).ok() != Some(200) {
        if let Ok(Some(st)) = a.child.try_wait() {
            panic!("agent exited with {st}: {}", a.log_text());
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "agent not serving");
        std::thread::sleep(Duration::from_millis(50));
    }
    a
}

/// An existing `--output-dir` the agent cannot write to (a read-only file system, in a private mount
/// namespace) is said once, as a warning naming the directory and the error, and counted in
/// `goheap_agent_errors_total{reason="output_not_writable"}` as well as in the skipped profiles.
#[test]
fn unwritable_output_dir_is_logged_once_and_counted() {
    let s = Scratch::new("rodir");
    let out = s.path("out");
    std::fs::create_dir(&out).unwrap();
    let (sa, _) = start_steadyalloc(&s, "sa", 8.0);
    let root = private_proc_root(&s, &[sa.pid]);
    let out_s = out.to_str().unwrap();
    let script = format!("mount -t tmpfs -o ro goheap-ro {out_s} && exec \"$0\" \"$@\"");
    let agent = agent_via(
        &s,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &[
            "--interval",
            "500ms",
            "--proc-root",
            root.to_str().unwrap(),
            "--output-dir",
            out_s,
        ],
    );
    agent.wait_state(sa.pid, "readable", Duration::from_secs(20));
    let skipped = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("goheap_agent_output_skipped_total{reason=\"io_error\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    wait_for(
        Duration::from_secs(15),
        "several profiles not written",
        || (skipped(&agent.metrics())? >= 3.0).then_some(()),
    );
    let m = agent.metrics();
    let errors = m
        .lines()
        .find(|l| l.starts_with("goheap_agent_errors_total{reason=\"output_not_writable\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        errors.unwrap_or(0.0) >= 1.0,
        "not counted as an error:\n{m}"
    );
    let log = agent.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(out_s))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming the directory:\n{log}"
    );
    assert!(
        warnings[0].contains("not writable") && warnings[0].contains("Read-only file system"),
        "{}",
        warnings[0]
    );
}

/// Processes that live less than one cycle (the compiler processes of a build, say) are not logged
/// at info level: `found` is logged once a process is still there at its next cycle, and `gone`
/// only for processes whose `found` was. A long-lived process still gets `found`, its state and
/// `gone`.
#[test]
fn short_lived_processes_stay_out_of_the_info_log() {
    let s = Scratch::new("shortlog");
    let root = private_proc_root(&s, &[]);
    let agent = Agent::start_with_interval(&s, "1s", &["--proc-root", root.to_str().unwrap()]);
    let (long, _) = start_steadyalloc(&s, "long", 2.0);
    add_to_proc_root(&root, long.pid);
    agent.wait_state(long.pid, "readable", Duration::from_secs(20));

    // Short-lived processes, readable and profiling-disabled ones, each seen by (at most) one
    // cycle: started right after a cycle ended, gone well before the next one.
    let mut seen = Vec::new();
    for i in 0..6 {
        let c0 = agent.cycles();
        wait_for(Duration::from_secs(10), "a cycle to end", || {
            (agent.cycles() > c0).then_some(())
        });
        let short = if i % 2 == 0 {
            start_steadyalloc(&s, &format!("short{i}"), 1.0).0
        } else {
            let ready = s.path(&format!("np{i}.ready"));
            let mut cmd = std::process::Command::new(fixture("noprofile", GO, "default"));
            cmd.args(["-rate-mib-per-sec", "1", "-ready"]).arg(&ready);
            start_and_wait(cmd, &ready, Duration::from_secs(30))
        };
        add_to_proc_root(&root, short.pid);
        // Present in /processes at some point: the agent did see it.
        let t0 = Instant::now();
        while agent.process(short.pid).is_none() && t0.elapsed() < Duration::from_millis(900) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if agent.process(short.pid).is_some() {
            seen.push(short.pid);
        }
        drop(short);
    }
    assert!(
        seen.len() >= 3,
        "the agent saw too few of the short-lived processes ({seen:?}):\n{}",
        agent.log_text()
    );
    let long_pid = long.pid;
    drop(long);
    wait_for(
        Duration::from_secs(10),
        "gone line of the long-lived process",
        || {
            log_lines_of(&agent.log_text(), long_pid)
                .iter()
                .any(|l| l.contains("state=\"gone\""))
                .then_some(())
        },
    );
    let log = agent.log_text();
    for pid in &seen {
        let lines = log_lines_of(&log, *pid);
        assert!(
            lines.is_empty(),
            "short-lived pid {pid} logged at info:\n{lines:#?}"
        );
    }
    let states: Vec<String> = log_lines_of(&log, long_pid)
        .iter()
        .filter_map(|l| Some(l.split("state=\"").nth(1)?.split('"').next()?.to_string()))
        .collect();
    assert_eq!(states, ["found", "readable", "gone"], "{log}");
}

/// A CPU-limited cgroup (v1 `cpu` controller, as a DaemonSet's CPU limit would be): `percent` of
/// one CPU in periods of 20 ms (at least 5%). Removed on drop (after its processes are gone).
struct CpuLimit(PathBuf);

impl CpuLimit {
    fn new(tag: &str, percent: u32) -> CpuLimit {
        let base = std::path::Path::new("/sys/fs/cgroup/cpu");
        assert!(
            base.join("cpu.cfs_quota_us").exists(),
            "this test needs the cgroup v1 cpu controller at {}",
            base.display()
        );
        let dir = base.join(format!("goheap-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap();
        let limit = CpuLimit(dir);
        // The kernel's smallest quota is 1 ms.
        std::fs::write(limit.0.join("cpu.cfs_period_us"), "20000").unwrap();
        std::fs::write(
            limit.0.join("cpu.cfs_quota_us"),
            (200 * percent).to_string(),
        )
        .unwrap();
        limit
    }

    /// A shell snippet that moves the shell into the cgroup, then execs its arguments.
    fn wrapper(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            self.0.display()
        )
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Builds `benches/manybuckets` (N distinct allocation stacks at MemProfileRate 1) into `dir`.
fn build_manybuckets(dir: &std::path::Path) -> PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/manybuckets");
    let out = dir.join("manybuckets");
    let st = std::process::Command::new(go_tool(GO))
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", cache_dir().join(format!("gocache-{GO}")))
        .env("GOPATH", cache_dir().join("gopath"))
        .status()
        .expect("go build");
    assert!(st.success(), "go build of manybuckets failed");
    out
}

/// SIGINT and SIGTERM stop the agent within a second even in the middle of a long cycle: here the
/// first full walk of a process with 100k buckets under a large read budget, by an agent limited to
/// 5% of a CPU (as a DaemonSet's CPU limit would), so the cycle takes many seconds.
#[test]
fn sigint_and_sigterm_stop_the_agent_mid_cycle() {
    let s = Scratch::new("sigint");
    let bin = build_manybuckets(&s.0);
    let ready = s.path("mb.ready");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["-n", "100000", "-ready"]).arg(&ready);
    let mb = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let root = private_proc_root(&s, &[mb.pid]);
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let limit = CpuLimit::new(name, 5);
        let script = limit.wrapper();
        let mut agent = agent_via(
            &s,
            &["sh", "-c", &script],
            &[
                "--interval",
                "1s",
                "--read-budget",
                "60s",
                "--proc-root",
                root.to_str().unwrap(),
            ],
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            agent.cycles(),
            0,
            "the first cycle should still be running (the test needs a long cycle)"
        );
        let t0 = Instant::now();
        // SAFETY: kill has no memory effects; the pid is our child.
        unsafe { libc::kill(agent.child.id() as i32, signal) };
        let status = loop {
            if let Some(st) = agent.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "{name}: the agent still runs after 1 s:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        println!("{name}: stopped in {:?} ({status})", t0.elapsed());
        assert!(status.success(), "{name}: {status}\n{}", agent.log_text());
        assert!(
            agent.log_text().contains("goheap agent stopping"),
            "{}",
            agent.log_text()
        );
        drop(agent);
        drop(limit);
    }
}

/// Many new binaries at once (32 distinct executables: steadyalloc and noprofile, with and without
/// a symbol table, for every Go version of the matrix; more than the inspection pool holds at once),
/// all started together between two cycles, are all read by the next cycle, each binary inspected
/// once.
#[test]
fn many_new_binaries_at_once_are_read_by_the_next_cycle() {
    use std::process::{Command, Stdio};
    let s = Scratch::new("newbins");
    let root = private_proc_root(&s, &[]);
    // The processes start before the agent can see them (the private /proc root lists none of
    // them yet): starting 32 Go programs took 14.7 s once on a loaded CI machine, longer than any
    // interval a test can wait. They become visible all at once, right after a cycle ends, so the
    // next cycle is the first that sees any of them.
    let agent = Agent::start_with_interval(&s, "4s", &["--proc-root", root.to_str().unwrap()]);
    let mut procs = Vec::new();
    for v in GO_VERSIONS {
        for program in ["steadyalloc", "noprofile"] {
            for mode in ["default", "stripped"] {
                let child = Command::new(fixture(program, v, mode))
                    .args(["-rate-mib-per-sec", "1"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let pid = child.id() as i32;
                procs.push(Running { child, pid });
            }
        }
    }
    let c0 = agent.cycles();
    wait_for(Duration::from_secs(40), "a cycle to end", || {
        (agent.cycles() > c0).then_some(())
    });
    let c1 = agent.cycles();
    let t0 = Instant::now();
    for r in &procs {
        add_to_proc_root(&root, r.pid);
    }
    assert!(
        agent.cycles() == c1,
        "could not make them visible between two cycles ({:?})",
        t0.elapsed()
    );
    wait_for(Duration::from_secs(40), "the next cycle", || {
        (agent.cycles() > c1).then_some(())
    });
    let v = agent.processes();
    let list = v["processes"].as_array().unwrap();
    let unread: Vec<i32> = procs
        .iter()
        .map(|r| r.pid)
        .filter(|pid| {
            !list.iter().any(|p| {
                p["pid"] == *pid && (p["state"] == "readable" || p["state"] == "profiling-disabled")
            })
        })
        .collect();
    assert!(
        unread.is_empty(),
        "{} of {} not read by the next cycle: {unread:?}\n{v:#}",
        unread.len(),
        procs.len()
    );
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "goheap_agent_symbol_table_scans_total"),
        Some(32.0),
        "one inspection per binary"
    );
}
