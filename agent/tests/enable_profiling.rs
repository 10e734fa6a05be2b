//! `--enable-profiling` on `goheap record` and `goheap top` against the real `noprofile` fixture
//! (linker-disabled profiling, `runtime.MemProfileRate` 0): with the flag, a window of it is
//! recorded and matches the program's own `/gc/heap/allocs:bytes` within 5%; without it, exit 7
//! names the flag; the stripped (`-s -w`) twins of every Go version are refused with the reason and
//! left byte-for-byte unchanged; a target whose rate is already non-zero is never written.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use goheap::error::exit_code;
use pprof_proto::Profile;
use support::*;

const GO: &str = GO_1_23;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts noprofile (`mode`, Go `version`) at `rate` MiB/s, with its stats file when `stats`.
fn start_noprofile(
    s: &Scratch,
    version: &str,
    mode: &str,
    tag: &str,
    rate: f64,
    stats: Option<&std::path::Path>,
) -> Running {
    let ready = s.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(fixture("noprofile", version, mode));
    cmd.args(["-rate-mib-per-sec", &rate.to_string()])
        .arg("-ready")
        .arg(&ready);
    if let Some(p) = stats {
        cmd.arg("-stats").arg(p);
    }
    start_and_wait(cmd, &ready, Duration::from_secs(30))
}

/// The process's row of `goheap ps --json` (its `state` comes from the live MemProfileRate).
fn ps_state(pid: i32) -> serde_json::Value {
    let out = goheap(&["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in goheap ps"))
        .clone()
}

/// Hashes every writable mapping of a (stopped) process: equal hashes before and after mean
/// nothing was written.
fn hash_writable_memory(pid: i32) -> BTreeMap<(u64, u64), u64> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        if !f.next().unwrap().starts_with("rw") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            match mem.read_at(&mut buf[..n], at) {
                Ok(0) | Err(_) => {
                    0xdeadu16.hash(&mut h);
                    at += 4096;
                }
                Ok(got) => {
                    buf[..got].hash(&mut h);
                    at += got as u64;
                }
            }
        }
        out.insert((start, end), h.finish());
    }
    out
}

/// SIGSTOP / SIGCONT.
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a child process of this test.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits until `pid` is in the stopped state (`T` in /proc/PID/stat).
fn wait_stopped(pid: i32) {
    wait_for(Duration::from_secs(5), "process stopped", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .to_string();
        (state == "T").then_some(())
    });
}

/// With `--enable-profiling`, a 20 s window of the linker-disabled fixture records what the
/// program's runtime says it allocated over the same window (`/gc/heap/allocs:bytes`, written by
/// the fixture every 100 ms) within 5%. At 128 MiB/s of 128-byte objects the window holds ~5,000
/// samples (one standard deviation 1.4%).
#[test]
fn enabled_window_matches_the_programs_own_count() {
    window_matches_own_count("default", "--enable-profiling");
}

/// The same for the stripped (`-s -w`) twin with `--enable-profiling-from-code`: the write at the
/// recovered address enables profiling, and the window matches the program's own count.
#[test]
fn enabled_from_code_window_matches_the_programs_own_count() {
    window_matches_own_count("stripped", "--enable-profiling-from-code");
}

fn window_matches_own_count(mode: &str, flag: &str) {
    let s = Scratch::new(&format!("enable-rate-{mode}"));
    let stats = s.path("np.stats");
    let np = start_noprofile(&s, GO, mode, "np", 128.0, Some(&stats));
    assert_eq!(ps_state(np.pid)["state"], "profiling-disabled");
    // The program's own count, as often as it writes it, while recording.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, stats) = (stop.clone(), stats.clone());
        std::thread::spawn(move || {
            let mut readings: Vec<(i64, f64)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(t) = std::fs::read_to_string(&stats) {
                    let mut f = t.split_whitespace();
                    if let (Some(Ok(ts)), Some(Ok(v))) =
                        (f.next().map(str::parse), f.next().map(str::parse))
                    {
                        if readings.last().is_none_or(|(last, _)| *last != ts) {
                            readings.push((ts, v));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            readings
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let file = s.path("window.pb.gz");
    let out = goheap(&[
        "record",
        "-p",
        &np.pid.to_string(),
        flag,
        "--duration",
        "20s",
        "-o",
        file.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let readings = poller.join().unwrap();
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--enable-profiling: set runtime.MemProfileRate to 524288"),
        "{err}"
    );
    let p = Profile::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(p.period, 524288);
    let (end, start) = (p.time_nanos, p.time_nanos - p.duration_nanos);
    let at = |t: i64| -> f64 {
        let i = readings.partition_point(|(rt, _)| *rt <= t);
        assert!(i > 0 && i < readings.len(), "no readings around {t}");
        let (t0, v0) = readings[i - 1];
        let (t1, v1) = readings[i];
        v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64
    };
    let exact = at(end) - at(start);
    let recorded: f64 = p
        .flat_samples()
        .unwrap()
        .iter()
        .map(|s| s.values[1] as f64)
        .sum();
    let ratio = recorded / exact;
    println!(
        "ACCURACY goheap record {flag} ({mode}) 20s: alloc_space {recorded:.0} B, runtime /gc/heap/allocs:bytes delta {exact:.0} B, ratio {ratio:.4}"
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "recorded {recorded} vs the program's own {exact}: ratio {ratio}\n{err}"
    );
    assert!(err.contains("main.churn"), "{err}");
    // The rate stays set: the process is now readable without the flag.
    let st = ps_state(np.pid);
    assert_eq!(st["state"], "readable", "{st}");
    let out = goheap(&["profile", "-p", &np.pid.to_string(), "-o", "-", "-q"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// Without the flag, `record`, `top` and `profile` refuse the linker-disabled fixture with exit 7,
/// and the one line names `--enable-profiling`; nothing is written into the process. Then `top
/// --enable-profiling` enables it and shows `main.churn`.
#[test]
fn without_the_flag_exit_7_names_it() {
    let s = Scratch::new("enable-noflag");
    let np = start_noprofile(&s, GO, "default", "np", 32.0, None);
    let pid = np.pid.to_string();
    signal(np.pid, libc::SIGSTOP);
    wait_stopped(np.pid);
    let before = hash_writable_memory(np.pid);
    for args in [
        vec!["record", "-p", &pid, "-d", "1s", "-o", "-", "-q"],
        vec!["top", "-p", &pid, "--once"],
        vec!["profile", "-p", &pid, "-o", "-", "-q"],
    ] {
        let out = goheap(&args);
        let err = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(exit_code::PROFILING_DISABLED),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains("--enable-profiling"), "{args:?}: {err}");
        assert!(!err.contains("cannot"), "{args:?}: {err}");
    }
    assert_eq!(before, hash_writable_memory(np.pid), "memory changed");
    signal(np.pid, libc::SIGCONT);
    // `top` with the flag: enabled, and the next interval shows the program's allocator.
    let out = goheap(&[
        "top",
        "-p",
        &pid,
        "--enable-profiling",
        "--once",
        "-i",
        "2s",
    ]);
    let err = stderr_of(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--enable-profiling: set runtime.MemProfileRate to 524288"),
        "{err}"
    );
    assert!(
        text.contains("MemProfileRate 524288") && text.contains("main.churn"),
        "{text}"
    );
}

/// The stripped (`-s -w`) twin of every Go version: its globals come from code references only,
/// so `--enable-profiling` refuses (exit 7) with the reason and what to do (naming
/// `--enable-profiling-from-code`), and the process's memory is byte-for-byte unchanged; with
/// `--enable-profiling-from-code` exactly one mapping changes and the process then profiles its
/// allocations (`main.churn` appears), so the word written was `runtime.MemProfileRate`. Its
/// `default` twin, stopped the same way, is written by `--enable-profiling`.
#[test]
fn stripped_twins_are_refused_and_never_written() {
    let s = Scratch::new("enable-stripped");
    for version in GO_VERSIONS {
        let st = start_noprofile(
            &s,
            version,
            "stripped",
            &format!("st-{version}"),
            16.0,
            None,
        );
        let pid = st.pid.to_string();
        signal(st.pid, libc::SIGSTOP);
        wait_stopped(st.pid);
        let before = hash_writable_memory(st.pid);
        for cmd in ["record", "top"] {
            let args: Vec<&str> = if cmd == "record" {
                vec![cmd, "-p", &pid, "--enable-profiling", "-d", "1s", "-o", "-"]
            } else {
                vec![cmd, "-p", &pid, "--enable-profiling", "--once"]
            };
            let out = goheap(&args);
            let err = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(exit_code::PROFILING_DISABLED),
                "go{version} {cmd}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "go{version} {cmd}: {err}");
            for want in [
                "--enable-profiling",
                "cannot enable it here",
                "code references",
                "symbol table",
                "/usr/lib/debug/.build-id",
                "rebuild without -s -w",
                "runtime/pprof",
                "--enable-profiling-from-code",
            ] {
                assert!(
                    err.contains(want),
                    "go{version} {cmd}: lacks {want:?}: {err}"
                );
            }
        }
        assert_eq!(
            before,
            hash_writable_memory(st.pid),
            "go{version}: the stripped process's memory changed"
        );
        // The separate flag accepts the recovered address (every check holds for these twins)
        // and writes exactly one word: then the process profiles its allocations.
        let out = goheap(&[
            "record",
            "-p",
            &pid,
            "--enable-profiling-from-code",
            "-d",
            "200ms",
            "-o",
            "-",
        ]);
        let err = stderr_of(&out);
        assert!(out.status.success(), "go{version}: {err}");
        assert!(
            err.contains("set runtime.MemProfileRate to 524288") && err.contains("code-reference"),
            "go{version}: {err}"
        );
        let after = hash_writable_memory(st.pid);
        let changed = before
            .iter()
            .filter(|(k, v)| after.get(k) != Some(v))
            .count();
        assert_eq!(changed, 1, "go{version}: one mapping changes");
        signal(st.pid, libc::SIGCONT);
        let out = goheap(&["top", "-p", &pid, "--once", "-i", "1s"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "go{version}: {}", stderr_of(&out));
        assert!(
            text.contains("MemProfileRate 524288") && text.contains("main.churn"),
            "go{version}: profiling is on after the write: {text}"
        );

        let plain = start_noprofile(&s, version, "default", &format!("np-{version}"), 2.0, None);
        signal(plain.pid, libc::SIGSTOP);
        wait_stopped(plain.pid);
        let before = hash_writable_memory(plain.pid);
        let out = goheap(&[
            "record",
            "-p",
            &plain.pid.to_string(),
            "--enable-profiling",
            "-d",
            "200ms",
            "-o",
            "-",
            "-q",
        ]);
        assert!(out.status.success(), "go{version}: {}", stderr_of(&out));
        let after = hash_writable_memory(plain.pid);
        let changed = before
            .iter()
            .filter(|(k, v)| after.get(k) != Some(v))
            .count();
        assert_eq!(
            changed, 1,
            "go{version}: exactly the mapping of runtime.MemProfileRate changes"
        );
        signal(plain.pid, libc::SIGCONT);
        // Now readable without the flag, at the written rate.
        let out = goheap(&["top", "-p", &plain.pid.to_string(), "--once", "-i", "200ms"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "go{version}: {}", stderr_of(&out));
        assert!(
            text.contains("MemProfileRate 524288"),
            "go{version}: {text}"
        );
    }
}

/// A target whose rate is already non-zero (steadyalloc, 524288) is never written: stopped, its
/// writable memory hashes the same before and after `record` and `top` with `--enable-profiling`.
#[test]
fn a_non_zero_rate_is_never_written() {
    let s = Scratch::new("enable-nonzero");
    let ready = s.path("sa.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", "4"])
        .arg("-ready")
        .arg(&ready);
    let sa = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let pid = sa.pid.to_string();
    signal(sa.pid, libc::SIGSTOP);
    wait_stopped(sa.pid);
    let before = hash_writable_memory(sa.pid);
    let out = goheap(&[
        "record",
        "-p",
        &pid,
        "--enable-profiling",
        "-d",
        "300ms",
        "-o",
        "-",
    ]);
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("set runtime.MemProfileRate"), "{err}");
    let out = goheap(&[
        "top",
        "-p",
        &pid,
        "--enable-profiling",
        "--once",
        "-i",
        "200ms",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("MemProfileRate 524288"),
        "{out:?}"
    );
    assert_eq!(before, hash_writable_memory(sa.pid), "memory changed");
    signal(sa.pid, libc::SIGCONT);
}

/// `--enable-profiling-from-code` refuses where the evidence does not hold: the stripped
/// heapfixture sets `MemProfileRate = 0` itself (`-rate 0`), so the linker did not disable
/// profiling (`disableMemoryProfiling` is false in the file) — exit 7 saying so, and the stopped
/// process's memory is unchanged. `--enable-profiling` refuses it too (no symbol table).
#[test]
fn from_code_refuses_a_rate_the_program_set_to_zero() {
    let s = Scratch::new("enable-fromcode-refused");
    let ready = s.path("hf.ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "stripped"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.01", "-rate", "0", "-ready"])
        .arg(&ready);
    let hf = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let pid = hf.pid.to_string();
    signal(hf.pid, libc::SIGSTOP);
    wait_stopped(hf.pid);
    let before = hash_writable_memory(hf.pid);
    let out = goheap(&[
        "record",
        "-p",
        &pid,
        "--enable-profiling-from-code",
        "-d",
        "200ms",
        "-o",
        "-",
    ]);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--enable-profiling-from-code refused")
            && err.contains("the linker did not disable profiling")
            && err.contains("the program set the rate to 0 itself"),
        "{err}"
    );
    let out = goheap(&["top", "-p", &pid, "--enable-profiling", "--once"]);
    let err = stderr_of(&out);
    assert_eq!(
        out.status.code(),
        Some(exit_code::PROFILING_DISABLED),
        "{err}"
    );
    assert!(err.contains("cannot enable it here"), "{err}");
    assert_eq!(before, hash_writable_memory(hf.pid), "memory changed");
    signal(hf.pid, libc::SIGCONT);
}
