//! The `pread` fallback: when the kernel refuses `process_vm_readv` (a seccomp profile that blocks
//! it, as some container runtimes' do), goheap reads `/proc/PID/mem` instead and produces the same
//! profile. goheap runs here under a real seccomp filter (installed between fork and exec) that
//! makes `process_vm_readv` fail with EPERM or ENOSYS; strace and the agent's syscall counter show
//! which syscalls it really used.

mod agent_common;

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use agent_common::*;
use pprof_proto::Profile;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Installs, in the child between fork and exec, a seccomp filter under which `process_vm_readv`
/// fails with `errno` and every other syscall is allowed. The filter is inherited by the child's
/// children.
fn deny_process_vm_readv(cmd: &mut Command, errno: i32) {
    use libc::*;
    let filter = [
        // seccomp_data.arch is at offset 4, .nr at offset 0.
        bpf_stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        bpf_jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        bpf_stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        bpf_stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        bpf_jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv as u32, 0, 1),
        bpf_stmt(
            BPF_RET | BPF_K,
            SECCOMP_RET_ERRNO | (errno as u32 & SECCOMP_RET_DATA),
        ),
        bpf_stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    ];
    // SAFETY: the hook only calls prctl, which is async-signal-safe, on memory prepared before the
    // fork (the filter array is moved into the closure).
    unsafe {
        cmd.pre_exec(move || {
            let prog = sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut sock_filter,
            };
            if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || prctl(
                    PR_SET_SECCOMP,
                    SECCOMP_MODE_FILTER,
                    &prog as *const sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn start_small(s: &Scratch, tag: &str) -> Running {
    let bin = fixture("heapfixture", GO, "default");
    let ready = s.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(bin);
    cmd.env("GOGC", "off")
        .args(["-scale", "0.1", "-rate", "4096", "-ready"])
        .arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(60))
}

fn decode_file(path: &Path) -> Profile {
    Profile::decode(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_same(a: &Profile, b: &Profile, what: &str) {
    let d = compare(a, b);
    assert!(d.is_empty(), "{what}: {d:#?}");
    let d = compare(b, a);
    assert!(d.is_empty(), "{what} (reversed): {d:#?}");
}

/// What strace saw goheap do to read the target's memory.
#[derive(Debug, Default)]
struct MemSyscalls {
    /// `process_vm_readv` calls that transferred bytes.
    vm_ok: usize,
    /// `process_vm_readv` calls that failed, with their error names.
    vm_failed: Vec<String>,
    /// `pread64` calls on the file descriptor of `/proc/PID/mem`.
    pread_mem: usize,
}

fn parse_trace(trace: &str, pid: i32) -> MemSyscalls {
    let mem_path = format!("\"/proc/{pid}/mem\"");
    let mut mem_fds: Vec<String> = Vec::new();
    let mut out = MemSyscalls::default();
    for line in trace.lines() {
        // With -f every line starts with the thread id.
        let call = line.split_once(' ').map(|(_, c)| c).unwrap_or(line).trim();
        let result = call.rsplit_once(" = ").map(|(_, r)| r.trim());
        if call.starts_with("openat(") && call.contains(&mem_path) {
            if let Some(fd) = result.and_then(|r| r.split(' ').next()) {
                if fd.parse::<i32>().is_ok_and(|n| n >= 0) {
                    mem_fds.push(fd.to_string());
                }
            }
        } else if call.starts_with("process_vm_readv(") {
            match result {
                Some(r) if r.starts_with("-1 ") => {
                    out.vm_failed
                        .push(r.split(' ').nth(1).unwrap_or("").to_string());
                }
                Some(_) => out.vm_ok += 1,
                None => panic!("unfinished process_vm_readv in trace: {line}"),
            }
        } else if let Some(args) = call.strip_prefix("pread64(") {
            let fd = args.split(',').next().unwrap_or("");
            if mem_fds.iter().any(|f| f == fd) {
                out.pread_mem += 1;
            }
        }
    }
    assert!(
        !mem_fds.is_empty(),
        "goheap opened /proc/{pid}/mem:\n{trace}"
    );
    out
}

/// Runs `goheap profile` of `pid` under strace (and, with `errno`, under the seccomp filter).
fn traced_profile(s: &Scratch, tag: &str, pid: i32, errno: Option<i32>) -> (PathBuf, MemSyscalls) {
    let dest = s.path(&format!("{tag}.pb.gz"));
    let trace = s.path(&format!("{tag}.strace"));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "signal=none"])
        .args(["-e", "trace=openat,process_vm_readv,pread64"])
        .arg("-o")
        .arg(&trace)
        .arg(goheap_bin())
        .args(["profile", "-p", &pid.to_string(), "-q", "-o"])
        .arg(&dest);
    if let Some(e) = errno {
        deny_process_vm_readv(&mut cmd, e);
    }
    let out = cmd
        .output()
        .expect("running strace (apt-get install strace)");
    assert!(out.status.success(), "{tag}: {}", stderr_of(&out));
    let text = std::fs::read_to_string(&trace).unwrap();
    (dest, parse_trace(&text, pid))
}

/// Under a filter that makes `process_vm_readv` fail with EPERM, and one with ENOSYS, `goheap
/// profile` succeeds and writes the same profile as without the filter. strace shows the refused
/// call once, then only `pread64` on `/proc/PID/mem`, while without the filter the reads are
/// `process_vm_readv` and no `pread64` touches the mem file.
#[test]
fn profile_falls_back_to_pread() {
    let s = Scratch::new("fallback");
    let running = start_small(&s, "fb");
    let pid = running.pid;

    let (normal, normal_calls) = traced_profile(&s, "normal", pid, None);
    assert!(normal_calls.vm_ok >= 3, "{normal_calls:?}");
    assert!(normal_calls.vm_failed.is_empty(), "{normal_calls:?}");
    assert_eq!(normal_calls.pread_mem, 0, "{normal_calls:?}");
    let reference = decode_file(&normal);
    assert!(reference.sample.len() >= 10);

    for (errno, name) in [(libc::EPERM, "EPERM"), (libc::ENOSYS, "ENOSYS")] {
        let (path, calls) = traced_profile(&s, name, pid, Some(errno));
        assert_eq!(calls.vm_ok, 0, "{name}: {calls:?}");
        assert_eq!(
            calls.vm_failed,
            vec![name.to_string()],
            "{name}: one refused process_vm_readv, then no more attempts"
        );
        // A one-shot read is one call per range either way (MemProfileRate, mProfCycle, mbuckets,
        // then the first bucket and the read windows below it): the same reads, as pread.
        assert_eq!(
            calls.pread_mem, normal_calls.vm_ok,
            "{name}: {calls:?}, unfiltered {normal_calls:?}"
        );
        assert!(
            calls.pread_mem > 3,
            "{name}: {calls:?} for {} samples",
            reference.sample.len()
        );
        assert_same(&decode_file(&path), &reference, name);
    }

    // Without strace, too (strace itself reads with process_vm_readv and could mask differences).
    let dest = s.path("plain-eperm.pb.gz");
    let mut cmd = Command::new(goheap_bin());
    cmd.args(["profile", "-p", &pid.to_string(), "-q", "-o"])
        .arg(&dest);
    deny_process_vm_readv(&mut cmd, libc::EPERM);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_same(&decode_file(&dest), &reference, "EPERM without strace");
}

/// A proc root holding only the given processes (symlinks into /proc).
fn private_proc_root(s: &Scratch, tag: &str, pids: &[i32]) -> PathBuf {
    let root = s.path(tag);
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// A running agent whose `goheap` process is started by `cmd` (so a seccomp filter can be put on
/// it), killed on drop.
struct FilteredAgent {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl FilteredAgent {
    fn start(s: &Scratch, tag: &str, root: &Path, errno: Option<i32>) -> FilteredAgent {
        let port = free_port();
        let log = s.path(&format!("{tag}.log"));
        let mut cmd = Command::new(goheap_bin());
        cmd.arg("--proc-root")
            .arg(root)
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--interval", "300ms"])
            .env_remove("GOHEAP_OUTPUT_DIR")
            .env_remove("GO_HEAP_PROFILER")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(e) = errno {
            deny_process_vm_readv(&mut cmd, e);
        }
        let child = cmd.spawn().unwrap();
        let a = FilteredAgent { child, port, log };
        wait_for(Duration::from_secs(20), "agent /healthz", || {
            http_get(a.port, "/healthz")
                .ok()
                .filter(|r| r.status == 200)
        });
        a
    }

    fn get(&self, path: &str) -> HttpResponse {
        http_get(self.port, path).unwrap_or_else(|e| {
            panic!(
                "GET {path}: {e}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// (cycles, read syscalls, read bytes) at a moment between two cycles: two scrapes 50 ms apart
    /// that agree.
    fn counters_between_cycles(&self) -> (u64, u64, u64) {
        let read = || {
            let m = self.get("/metrics").text();
            let v = |name: &str| metric_value(&m, name).unwrap_or(-1.0) as u64;
            (
                v("goheap_agent_cycles_total"),
                v("goheap_agent_read_syscalls_total"),
                v("goheap_agent_read_bytes_total"),
            )
        };
        wait_for(
            Duration::from_secs(30),
            "a quiet moment between cycles",
            || {
                let a = read();
                std::thread::sleep(Duration::from_millis(50));
                (read() == a).then_some(a)
            },
        )
    }

    fn process(&self, pid: i32) -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.get("/processes").body).ok()?;
        v["processes"]
            .as_array()?
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
    }
}

impl Drop for FilteredAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per steady cycle over `n` known buckets (plus the head pointer, `MemProfileRate` and
/// `mProfCycle`), (syscalls, bytes) as the agent's counters show them.
fn steady_cycle_cost(agent: &FilteredAgent) -> (u64, u64) {
    let (c0, s0, b0) = agent.counters_between_cycles();
    wait_for(Duration::from_secs(30), "four more cycles", || {
        (agent.counters_between_cycles().0 >= c0 + 4).then_some(())
    });
    let (c1, s1, b1) = agent.counters_between_cycles();
    let cycles = c1 - c0;
    assert_eq!((s1 - s0) % cycles, 0, "same cost every cycle");
    assert_eq!((b1 - b0) % cycles, 0, "same bytes every cycle");
    ((s1 - s0) / cycles, (b1 - b0) / cycles)
}

/// The agent under the EPERM filter reads the fixture each cycle with one `pread` per range: its
/// syscall counter grows by `n + 3` per steady cycle (`n` buckets), where an unfiltered agent
/// needs `ceil((n + 3) / IOV_MAX)` = 1 `process_vm_readv`; both read the same `20 + n × 128`
/// bytes (Go 1.23 memRecords are 128 bytes). Its `/debug/pprof/heap?pid=` equals `goheap profile`.
#[test]
fn agent_under_seccomp_reads_with_pread() {
    let s = Scratch::new("fallback-agent");
    let running = start_small(&s, "fba");
    let pid = running.pid;
    let normal = s.path("normal.pb.gz");
    let out = std::process::Command::new(goheap_bin())
        .args(["profile", "-p", &pid.to_string(), "-q", "-o"])
        .arg(&normal)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));

    let root = private_proc_root(&s, "proc", &[pid]);
    let filtered = FilteredAgent::start(&s, "filtered", &root, Some(libc::EPERM));
    let plain = FilteredAgent::start(&s, "plain", &root, None);
    let n = wait_for(
        Duration::from_secs(60),
        "both agents read the fixture",
        || {
            let a = filtered.process(pid).filter(|p| p["state"] == "readable")?;
            let b = plain.process(pid).filter(|p| p["state"] == "readable")?;
            let n = a["buckets"].as_u64()?;
            (n > 0 && b["buckets"].as_u64() == Some(n)).then_some(n)
        },
    );
    assert!(n >= 10, "{n} buckets");

    // The same read plan either way: the three globals and the coalesced ranges of the records,
    // one pread each under the filter, one process_vm_readv batch without it.
    let (calls_f, bytes_f) = steady_cycle_cost(&filtered);
    let (calls_p, bytes_p) = steady_cycle_cost(&plain);
    assert_eq!(calls_p, 1, "process_vm_readv: one batch ({n} buckets)");
    assert!(
        (4..=n + 3).contains(&calls_f),
        "pread: one syscall per range, at most one a record ({calls_f} for {n} buckets)"
    );
    assert_eq!(bytes_f, bytes_p, "the same ranges read either way");
    assert!(
        bytes_p >= 20 + n * 128,
        "every record read ({bytes_p} bytes for {n} buckets)"
    );

    let r = filtered.get(&format!("/debug/pprof/heap?pid={pid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let served = Profile::decode(&r.body).unwrap();
    assert_same(&served, &decode_file(&normal), "agent under seccomp");
}
