//! Every refusal exits with its own code and prints one clear line on stderr; none panics.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use goheap::error::{exit_code, Refusal};
use support::*;

/// Exactly one line on stderr, starting with "goheap: ", no panic text.
fn assert_one_line(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{what}: goheap panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got: {err}"
    );
    assert!(lines[0].starts_with("goheap: "), "{what}: {err}");
    err
}

/// The tests of this file run one at a time: the mid-read race holds goheap inside
/// `process_vm_readv` under strace, and was seen to miss its first hold (5 s without reaching it)
/// only while the other tests here ran beside it.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn nonexistent_pid() {
    let _serial = serial();
    // pid_max is at most 2^22, so this pid cannot exist.
    let out = goheap(&["profile", "--pid", "9999999", "-o", "-"]);
    assert_eq!(out.status.code(), Some(exit_code::NO_SUCH_PROCESS));
    let err = assert_one_line(&out, "nonexistent pid");
    assert!(err.contains("no such process"), "{err}");
}

#[test]
fn non_go_process() {
    let _serial = serial();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let out = goheap(&["profile", "--pid", &sleeper.id().to_string(), "-o", "-"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(exit_code::NOT_GO));
    let err = assert_one_line(&out, "non-Go");
    assert!(err.contains("not a Go program"), "{err}");
}

#[test]
fn stripped_binary_without_other_evidence() {
    let _serial = serial();
    let bin = fixture("heapfixture", GO_1_23, "stripped");
    let scratch = Scratch::new("stripped");
    let (running, _) = start_heapfixture(&bin, &scratch);
    let out = goheap(&[
        "profile",
        "--pid",
        &running.pid.to_string(),
        "--require-symtab",
        "-o",
        "-",
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::NO_SYMBOLS),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = assert_one_line(&out, "stripped");
    assert!(err.contains("symbol table"), "{err}");
}

#[test]
fn profiling_disabled_by_linker() {
    let _serial = serial();
    let bin = fixture("noprofile", GO_1_23, "default");
    let scratch = Scratch::new("noprof");
    let ready = scratch.path("ready");
    let mut cmd = Command::new(&bin);
    cmd.arg("-ready").arg(&ready);
    let running = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let out = goheap(&["profile", "--pid", &running.pid.to_string(), "-o", "-"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = assert_one_line(&out, "disabled");
    assert!(
        err.contains("runtime/pprof") && err.contains("force"),
        "says how to enable: {err}"
    );
}

/// The process is located and opened, then exits before the bucket walk: the read reports that the
/// process exited, not garbage and not a panic.
#[test]
fn process_exits_during_read() {
    let _serial = serial();
    let bin = fixture("heapfixture", GO_1_22, "default");
    let scratch = Scratch::new("exit");
    let (mut running, _) = start_heapfixture(&bin, &scratch);
    let pid = running.pid;
    let proc_root = std::path::Path::new("/proc");
    let paths = goheap::target::procfs::ProcPaths::new(proc_root, pid);
    let bin = goheap::target::open::open_binary(&paths).unwrap();
    let info = goheap::binary::BinaryInfo::inspect(bin, None);
    let map = goheap::target::maps::MemoryMap::read(proc_root, pid).unwrap();
    let bias = goheap::target::open::load_bias(&info, &map).unwrap();
    let addrs = goheap::target::open::RuntimeAddresses::new(info.symbols.as_ref().unwrap(), bias);
    let readers: Vec<(&str, Box<dyn goheap::target::memory::RemoteMemory>)> = vec![
        (
            "pread",
            Box::new(goheap::target::memory::ProcMem::open(proc_root, pid).unwrap()),
        ),
        (
            "process_vm_readv",
            Box::new(goheap::target::memory::VmReader::open(proc_root, pid).unwrap()),
        ),
    ];
    for (_, mem) in &readers {
        // Sanity: while alive, the same read works.
        goheap::runtime::snapshot::read_snapshot(
            mem.as_ref(),
            &info,
            &addrs,
            Some(&map),
            proc_root,
        )
        .expect("alive read");
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    for (reader, mem) in &readers {
        let r = goheap::runtime::snapshot::read_snapshot(
            mem.as_ref(),
            &info,
            &addrs,
            Some(&map),
            proc_root,
        );
        assert!(
            matches!(r, Err(Refusal::ProcessExited { .. })),
            "{reader}: {r:?}"
        );
        assert_eq!(r.unwrap_err().exit_code(), exit_code::PROCESS_EXITED);
    }
    // And the CLI says so for a pid that is gone.
    let out = goheap(&["profile", "--pid", &pid.to_string(), "-o", "-"]);
    assert_eq!(out.status.code(), Some(exit_code::NO_SUCH_PROCESS));
}

/// The pid of a child of `parent` (from `/proc/*/stat`), once it exists.
fn child_of(parent: u32) -> i32 {
    wait_for(Duration::from_secs(10), "strace's child", || {
        std::fs::read_dir("/proc").ok()?.find_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
    })
}

/// A process exiting while goheap is in the middle of reading it. The race is made deterministic
/// with strace's syscall tampering: each run's `when`-th `process_vm_readv` (the first, a middle
/// one, the last) is held at syscall entry for 10 s; once every run is held there (its
/// `/proc/PID/syscall` shows that syscall), the target is killed and reaped, then the held
/// syscalls proceed into a process that is gone. Every run must report exactly "process exited"
/// (exit 9): the kill always lands mid-read, so neither success nor "no such process" (exit 3,
/// only right for a pid that was gone before goheap started) is correct.
#[test]
fn exit_mid_read_is_process_exited() {
    let _serial = serial();
    const HOLD_SECONDS: u64 = 10;
    let bin = fixture("heapfixture", GO_1_27, "default");
    let scratch = Scratch::new("race");
    let (mut running, _) = start_heapfixture(&bin, &scratch);
    let pid = running.pid.to_string();
    // How many process_vm_readv calls a whole profile of this fixture makes (the rate, the cycle,
    // the head, then the walk: the first bucket alone, then read windows). The runs hold the first
    // (before anything is read), the head read, and the first bucket read. How many windows the
    // walk reads after that depends on the target's mappings, which its background scavenger may
    // change between two runs, so later calls are not held: a run could end before reaching them.
    let trace = scratch.path("count.strace");
    let counted = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=process_vm_readv", "-o"])
        .arg(&trace)
        .arg(goheap_bin())
        .args(["profile", "--pid", &pid, "-o", "-", "-q"])
        .output()
        .expect("strace (installed by fixtures/install-toolchains.sh)");
    assert!(counted.status.success(), "{counted:?}");
    let calls = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("process_vm_readv("))
        .count() as u32;
    assert!(
        calls >= 4,
        "a profile made only {calls} process_vm_readv calls"
    );
    let whens = [1u32, 3, 4];
    // Held: one of its threads stopped at the entry of process_vm_readv.
    let held = |goheap_pid: i32| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{goheap_pid}/task")) else {
            return false;
        };
        tasks.filter_map(|t| t.ok()).any(|t| {
            std::fs::read_to_string(t.path().join("syscall"))
                .ok()
                .and_then(|sc| sc.split(' ').next().map(str::to_string))
                == Some(libc::SYS_process_vm_readv.to_string())
        })
    };
    // The three runs under strace, each held at its call; an attempt where a run was not seen held
    // within half the hold (it happened now and then, cause not found) is discarded and made
    // again, before the target is killed: that is the harness missing its moment, not goheap.
    let mut attempt = 0;
    let (runs, goheap_pids) = loop {
        attempt += 1;
        let mut runs: Vec<(u32, std::process::Child)> = whens
            .iter()
            .map(|&when| {
                let child = Command::new("strace")
                    .args([
                        "-f",
                        "-qq",
                        "-o",
                        "/dev/null",
                        "-e",
                        "trace=process_vm_readv",
                    ])
                    .arg(format!(
                        "--inject=process_vm_readv:delay_enter={HOLD_SECONDS}s:when={when}"
                    ))
                    .arg(goheap_bin())
                    .args(["profile", "--pid", &pid, "-o", "-", "-q"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("strace (installed by fixtures/install-toolchains.sh)");
                (when, child)
            })
            .collect();
        let goheap_pids: Vec<i32> = runs.iter().map(|(_, s)| child_of(s.id())).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(HOLD_SECONDS / 2);
        let all_held = goheap_pids.iter().all(|&g| loop {
            if held(g) {
                break true;
            }
            if std::time::Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        if all_held {
            break (runs, goheap_pids);
        }
        for (_, strace) in runs.iter_mut() {
            let _ = strace.kill();
            let _ = strace.wait();
        }
        for g in &goheap_pids {
            // SAFETY: kill has no memory effects; g is a goheap this test started.
            unsafe { libc::kill(*g, libc::SIGKILL) };
        }
        assert!(attempt < 6, "five attempts never held all three reads");
    };
    let _ = running.child.kill();
    let _ = running.child.wait();
    // Still held now that the target is reaped: the kill landed in the middle of every read.
    for ((when, _), goheap_pid) in runs.iter().zip(&goheap_pids) {
        assert!(
            held(*goheap_pid),
            "goheap {goheap_pid} left process_vm_readv #{when} before the kill landed"
        );
    }
    for (when, strace) in runs {
        let out = strace.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(exit_code::PROCESS_EXITED),
            "killed during process_vm_readv #{when}: {err}"
        );
        let line = assert_one_line(&out, &format!("exit during read #{when}"));
        assert!(
            line.contains("exited while goheap was reading it"),
            "{line}"
        );
    }
}

fn ensure_user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name} failed (tests run as root)");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// As a non-root user without CAP_SYS_PTRACE, profiling a root-owned Go process is refused with the
/// permission message; with only CAP_SYS_PTRACE (ambient) it works.
#[test]
fn non_root_needs_cap_sys_ptrace() {
    let _serial = serial();
    let (uid, gid) = ensure_user("goheap-test");
    let bin = fixture("heapfixture", GO_1_24, "default");
    let scratch = Scratch::new("nonroot");
    let (running, _) = start_heapfixture(&bin, &scratch);
    let pid = running.pid.to_string();
    let goheap_path = goheap_bin();
    let setpriv = |caps: &str| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
        if caps.is_empty() {
            c.args(["--inh-caps=-all", "--bounding-set=-all"]);
        } else {
            c.arg(format!("--inh-caps=-all,+{caps}"))
                .arg(format!("--ambient-caps=+{caps}"))
                .arg(format!("--bounding-set=-all,+{caps}"));
        }
        c.arg(&goheap_path)
            .args(["profile", "--pid", &pid, "-o", "-", "-q"]);
        c.output().expect("setpriv")
    };
    let denied = setpriv("");
    assert_eq!(
        denied.status.code(),
        Some(exit_code::PERMISSION_DENIED),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let err = assert_one_line(&denied, "non-root");
    assert!(err.contains("CAP_SYS_PTRACE"), "{err}");

    let allowed = setpriv("sys_ptrace");
    assert!(
        allowed.status.success(),
        "with CAP_SYS_PTRACE: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let p = pprof_proto::Profile::decode(&allowed.stdout).expect("a profile on stdout");
    assert!(!p.sample.is_empty());
}

#[test]
fn help_documents_exit_codes() {
    let _serial = serial();
    let out = goheap(&["profile", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes",
        "permission denied",
        "not a Go process",
        "no such process",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}: {text}");
    }
    let out = goheap(&["profile"]);
    assert_eq!(out.status.code(), Some(exit_code::USAGE));
}
