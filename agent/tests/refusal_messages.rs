//! The one-line refusals of `goheap profile` and the states of `goheap ps` say what is really going
//! on (issue #9): a zombie is a zombie, root is denied for a reason it is told, the profiling state
//! comes from the live `runtime.MemProfileRate`, and force mode is not advised where it cannot work.

mod agent_common;

use std::process::{Command, Output};
use std::time::Duration;

use agent_common::*;
use goheap::error::exit_code;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The state letter of `/proc/PID/stat`.
fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next().map(str::to_string)
}

/// `goheap profile` of a zombie exits 9 and says it is a zombie: exited, not reaped by its parent
/// (named by pid).
#[test]
fn zombie_is_called_a_zombie() {
    let s = Scratch::new("zombie-cli");
    let (mut sa, _) = start_steadyalloc(&s, "sa", 1.0);
    sa.child.kill().unwrap();
    wait_for(Duration::from_secs(10), "a zombie", || {
        (proc_state(sa.pid).as_deref() == Some("Z")).then_some(())
    });
    let out = goheap(&["profile", "-p", &sa.pid.to_string(), "-o", "-", "-q"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(exit_code::PROCESS_EXITED), "{err}");
    assert!(err.contains("zombie"), "{err}");
    assert!(err.contains("not reaped"), "{err}");
    assert!(
        err.contains(&format!("parent (pid {})", std::process::id())),
        "names the parent: {err}"
    );
    assert!(!err.contains("while goheap was reading"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    sa.child.wait().unwrap();
}

/// A proc root holding only `pids` (symlinks into /proc).
fn proc_root_of(s: &Scratch, tag: &str, pids: &[i32]) -> std::path::PathBuf {
    let root = s.path(tag);
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        std::os::unix::fs::symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// `goheap --proc-root ROOT ps --json`, as rows keyed by pid.
fn ps_json(root: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(goheap_bin())
        .arg("--proc-root")
        .arg(root)
        .args(["ps", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ps: {}", stderr_of(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn ps_row(root: &std::path::Path, pid: i32) -> serde_json::Value {
    let rows = ps_json(root);
    rows.iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in ps: {rows:#?}"))
        .clone()
}

fn start_noprofile(s: &Scratch, mode: &str, tag: &str) -> Running {
    let ready = s.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(fixture("noprofile", GO, mode));
    cmd.args(["-rate-mib-per-sec", "2"])
        .arg("-ready")
        .arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(30))
}

/// `goheap ps` takes the profiling state from the live `runtime.MemProfileRate`, not from the
/// linker's flag: a program that set the rate to 0 itself is `profiling-disabled` (and `goheap
/// profile` refuses it), a linker-disabled program whose rate was set at run time (here by the
/// agent's force mode, as the program itself could) is `readable` (and `goheap profile` reads it).
#[test]
fn ps_state_comes_from_the_live_mem_profile_rate() {
    let s = Scratch::new("ps-live");
    // The program sets MemProfileRate = 0 itself; the linker did not disable profiling.
    let ready = s.path("zero.ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "default"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.01", "-rate", "0", "-ready"])
        .arg(&ready);
    let zero = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let np = start_noprofile(&s, "default", "np");
    let root = proc_root_of(&s, "proc", &[zero.pid, np.pid]);

    let z = ps_row(&root, zero.pid);
    assert_eq!(z["state"], "profiling-disabled", "{z}");
    assert_eq!(z["detail"], "runtime.MemProfileRate is 0", "{z}");
    let out = goheap(&["profile", "-p", &zero.pid.to_string(), "-o", "-", "-q"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{}",
        stderr_of(&out)
    );
    let before = ps_row(&root, np.pid);
    assert_eq!(before["state"], "profiling-disabled", "{before}");
    assert_eq!(
        before["detail"], "linker set runtime.disableMemoryProfiling",
        "the linker explains the 0: {before}"
    );

    // Force mode writes 524288 into the linker-disabled program.
    let np_root = proc_root_of(&s, "proc-np", &[np.pid]);
    let agent = Agent::start(
        &s,
        &[
            "--proc-root",
            np_root.to_str().unwrap(),
            "--go-heap-profiler",
            "force",
        ],
    );
    let p = agent.wait_state(np.pid, "readable", Duration::from_secs(20));
    assert_eq!(p["profiling_forced"], true, "{p}");
    drop(agent);
    let after = ps_row(&root, np.pid);
    assert_eq!(after["state"], "readable", "{after}");
    let detail = after["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("524288") && detail.contains("disableMemoryProfiling"),
        "says the rate was set at run time: {after}"
    );
    let out = goheap(&["profile", "-p", &np.pid.to_string(), "-o", "-", "-q"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// For a binary whose globals were found from code references alone (stripped `-s -w`) with
/// profiling disabled, neither `goheap profile` nor the agent advises force mode, which writes only
/// at addresses proven by a symbol table: they say why force cannot work and what would (a debug
/// file / a build without -s, or importing runtime/pprof). With a symbol table force is advised.
#[test]
fn force_is_not_advised_where_it_cannot_write() {
    let s = Scratch::new("force-advice");
    let plain = start_noprofile(&s, "default", "np");
    let stripped = start_noprofile(&s, "stripped", "nps");

    let out = goheap(&["profile", "-p", &plain.pid.to_string(), "-o", "-", "-q"]);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{err}"
    );
    assert!(err.contains("--go-heap-profiler=force"), "{err}");
    assert!(!err.contains("cannot"), "{err}");

    let out = goheap(&["profile", "-p", &stripped.pid.to_string(), "-o", "-", "-q"]);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let explains = |text: &str| {
        for want in [
            "force",
            "cannot",
            "code references",
            "symbol table",
            "debug file",
            "-s",
            "runtime/pprof",
        ] {
            assert!(text.contains(want), "lacks {want:?}: {text}");
        }
        assert!(
            !text.contains("run `goheap agent --go-heap-profiler=force` to enable it"),
            "{text}"
        );
    };
    explains(&err);

    // The agent in force mode: the stripped process stays disabled, and its state detail and the
    // log say why force did nothing.
    let root = proc_root_of(&s, "proc", &[plain.pid, stripped.pid]);
    let agent = Agent::start(
        &s,
        &[
            "--proc-root",
            root.to_str().unwrap(),
            "--go-heap-profiler",
            "force",
        ],
    );
    agent.wait_state(plain.pid, "readable", Duration::from_secs(20));
    let st = agent.wait_state(stripped.pid, "profiling-disabled", Duration::from_secs(20));
    assert_eq!(st["profiling_forced"], false, "{st}");
    explains(st["detail"].as_str().unwrap_or_default());
    // Logged once the process is announced (its second cycle).
    let needle = format!("pid={}", stripped.pid);
    let line = wait_for(
        Duration::from_secs(20),
        "the force-mode line of the stripped process",
        || {
            agent
                .log_text()
                .lines()
                .find(|l| l.contains(&needle) && l.contains("force mode"))
                .map(str::to_string)
        },
    );
    assert!(line.contains("code references"), "{line}");
    // ... and names what writes there for one process, when every check agrees.
    assert!(line.contains("--enable-profiling-from-code"), "{line}");
    let n = agent
        .log_text()
        .lines()
        .filter(|l| l.contains(&needle) && l.contains("force mode"))
        .count();
    assert_eq!(n, 1, "said once");
}

/// Pid 1 of another user (and PID) namespace, seen by goheap running as root of its own user
/// namespace: permission denied (exit 5), and the line says why root is not enough (goheap's user
/// namespace is not the host's, so its root has no capabilities over processes outside it) instead
/// of advising CAP_SYS_PTRACE, which it has. `ps --all` says so too. From the host's user namespace
/// the same process is readable.
#[test]
fn root_of_another_user_namespace_is_told_why_it_is_denied() {
    let s = Scratch::new("userns");
    let ready = s.path("ns.ready");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--kill-child",
    ])
    .arg(fixture("steadyalloc", GO, "default"))
    .args(["-rate-mib-per-sec", "1", "-ready"])
    .arg(&ready);
    let unshare = start_and_wait(cmd, &ready, Duration::from_secs(30));
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap().trim(),
        "1",
        "pid 1 of its namespace"
    );
    let pid: i32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("unshare's child")
        .parse()
        .unwrap();

    // From the host's user namespace root reads it.
    let out = goheap(&["profile", "-p", &pid.to_string(), "-o", "-", "-q"]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // From another user namespace, as its root.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(goheap_bin())
        .args(["profile", "-p", &pid.to_string(), "-o", "-", "-q"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PERMISSION_DENIED),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for want in ["user namespace", "root", "host"] {
        assert!(err.contains(want), "lacks {want:?}: {err}");
    }
    assert!(
        !err.contains("setcap"),
        "it has CAP_SYS_PTRACE already: {err}"
    );

    let root = proc_root_of(&s, "proc", &[pid]);
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(goheap_bin())
        .arg("--proc-root")
        .arg(&root)
        .args(["ps", "--all", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("{rows:#}"));
    assert_eq!(row["state"], "permission-denied", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("user namespace"),
        "{row}"
    );
}
