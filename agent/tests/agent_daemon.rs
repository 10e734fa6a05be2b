//! End-to-end tests of `goheap agent` against real Go processes, a real Prometheus server,
//! `promtool` and `go tool pprof`. All tests live in one binary so they run in parallel (total time is
//! bounded by the Prometheus accuracy test, about 75 s).

mod agent_common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use pprof_proto::Profile;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs Prometheus scraping the agent every 2 s; killed on drop.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(scratch: &Scratch, target_port: u16) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} missing: run fixtures/install-toolchains.sh (installs Debian prometheus)"
        );
        let port = free_port();
        let cfg = scratch.path("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  evaluation_interval: 2s\n\
                 scrape_configs:\n  - job_name: goheap\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let log = scratch.path("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting prometheus");
        Prometheus { child, port, log }
    }

    /// Instant query at `time`; returns the first result's value.
    fn query(&self, q: &str, time: f64) -> Option<f64> {
        let r = http_get(
            self.port,
            &format!("/api/v1/query?query={}&time={time:.3}", urlencode(q)),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["data"]["result"].as_array()?.first()?["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rate(container_go_alloc_bytes_total[1m])` from a real Prometheus, against the exact allocation
/// rate steadyalloc reports (runtime TotalAlloc) over the same minute; plus `promtool check metrics`.
#[test]
fn prometheus_rate_matches_steadyalloc_total_alloc() {
    let s = Scratch::new("prom");
    let (sa, addr) = start_steadyalloc(&s, "sa", 64.0);
    let agent = Agent::start(&s, &[]);
    let prom = Prometheus::start(&s, agent.port);
    agent.wait_state(sa.pid, "readable", Duration::from_secs(20));

    // promtool lint: exit 0 and no findings on the live exposition (with per-process series).
    let text = wait_for(Duration::from_secs(10), "per-process series", || {
        let t = agent.metrics();
        metric_for_pid(&t, "container_go_alloc_bytes_total", sa.pid).map(|_| t)
    });
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (run fixtures/install-toolchains.sh)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {:?} {findings}\n{text}",
        out.status
    );

    // Wait until Prometheus has the series, then collect a minute (plus margin) of /alloc readings.
    let series = format!("container_go_alloc_bytes_total{{pid=\"{}\"}}", sa.pid);
    let first = wait_for(Duration::from_secs(30), "prometheus to ingest", || {
        let now = unix_now();
        prom.query(&series, now).map(|_| now)
    });
    let end = first + 64.0;
    let mut readings: Vec<(f64, f64)> = Vec::new();
    while unix_now() < end + 1.5 {
        let a = alloc_stats(&addr);
        readings.push((
            a["unix_nanos"].as_f64().unwrap() / 1e9,
            a["total_alloc_bytes"].as_f64().unwrap(),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    let at = |t: f64| -> f64 {
        let i = readings.partition_point(|(rt, _)| *rt <= t);
        let (t0, v0) = readings[i - 1];
        let (t1, v1) = readings[i];
        v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    };
    let exact = (at(end) - at(end - 60.0)) / 60.0;
    let q = format!("rate({series}[1m])");
    let measured = wait_for(Duration::from_secs(10), "rate query", || {
        prom.query(&q, end)
    });
    let ratio = measured / exact;
    println!(
        "ACCURACY rate(container_go_alloc_bytes_total[1m]) = {:.0} B/s, runtime TotalAlloc rate = {:.0} B/s, ratio = {ratio:.4}",
        measured, exact
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "ratio {ratio} outside ±5% (measured {measured}, exact {exact})\nprometheus log: {}",
        std::fs::read_to_string(&prom.log).unwrap_or_default()
    );
}

/// `/debug/pprof/heap?pid=` is exactly what `goheap profile` writes, and `go tool pprof` reads it over
/// HTTP.
#[test]
fn heap_endpoint_equals_goheap_profile_and_go_pprof_reads_it() {
    let s = Scratch::new("heap");
    let hf = start_small_heapfixture(&s, "hf", 0.05);
    let agent = Agent::start(&s, &[]);
    agent.wait_state(hf.pid, "readable", Duration::from_secs(20));
    let r = agent.get(&format!("/debug/pprof/heap?pid={}", hf.pid));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("Content-Disposition"),
        Some("attachment; filename=\"heap\"")
    );
    let over_http = Profile::decode(&r.body).expect("profile decodes");
    let file = s.path("cli.pb.gz");
    let out = goheap(&[
        "profile",
        "-p",
        &hf.pid.to_string(),
        "-q",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let cli = Profile::decode(&std::fs::read(&file).unwrap()).unwrap();
    let flat = |p: &Profile| {
        let mut v: Vec<String> = p
            .flat_samples()
            .unwrap()
            .iter()
            .map(|s| format!("{:?} {:?} {:?}", s.stack, s.labels, s.values))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (flat(&over_http), flat(&cli));
    assert!(a.len() > 10, "too few samples: {}", a.len());
    assert_eq!(a, b, "HTTP profile differs from goheap profile");
    assert_eq!(
        over_http.sample_types().unwrap(),
        cli.sample_types().unwrap()
    );

    let go = go_tool(GO);
    let pprof_tmp = s.path("pprof-tmp");
    std::fs::create_dir_all(&pprof_tmp).unwrap();
    let out = Command::new(&go)
        .args(["tool", "pprof", "-raw"])
        .arg(format!(
            "http://127.0.0.1:{}/debug/pprof/heap?pid={}",
            agent.port, hf.pid
        ))
        .env("PPROF_TMPDIR", &pprof_tmp)
        .env("HOME", s.0.as_os_str())
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes")
            && raw.contains("main."),
        "{raw}"
    );
}

/// Bad parameters are 400, unknown pids 404; allocs?seconds=N is the delta of N seconds: its
/// alloc_space equals what the program itself allocated in N seconds (runtime TotalAlloc), within
/// the sampling error.
#[test]
fn http_errors_and_allocs_delta() {
    let s = Scratch::new("http");
    // 64 MiB/s for 8 s: 512 MiB, about 1024 samples at the default MemProfileRate (see below).
    let (sa, addr) = start_steadyalloc(&s, "sa", 64.0);
    let agent = Agent::start(&s, &[]);
    agent.wait_state(sa.pid, "readable", Duration::from_secs(20));
    for (path, status) in [
        ("/debug/pprof/heap".to_string(), 400),
        ("/debug/pprof/heap?pid=abc".to_string(), 400),
        ("/debug/pprof/heap?pid=-4".to_string(), 400),
        ("/debug/pprof/heap?pid=2147483647".to_string(), 404),
        (format!("/debug/pprof/allocs?pid={}&seconds=0", sa.pid), 400),
        (
            format!("/debug/pprof/allocs?pid={}&seconds=100000", sa.pid),
            400,
        ),
        (format!("/debug/pprof/allocs?pid={}&seconds=x", sa.pid), 400),
        ("/nope".to_string(), 404),
    ] {
        let r = agent.get(&path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let t = r.text();
        assert_eq!(t.trim_end().lines().count(), 1, "one-line reason: {t:?}");
    }
    assert_eq!(
        http_request(agent.port, "POST", "/metrics").unwrap().status,
        405
    );
    assert_eq!(agent.get("/healthz").text(), "ok\n");

    const SECONDS: u64 = 8;
    let before = alloc_stats(&addr);
    let r = agent.get(&format!(
        "/debug/pprof/allocs?pid={}&seconds={SECONDS}",
        sa.pid
    ));
    let after = alloc_stats(&addr);
    let stat = |a: &serde_json::Value, k: &str| a[k].as_f64().unwrap();
    let elapsed = (stat(&after, "unix_nanos") - stat(&before, "unix_nanos")) / 1e9;
    assert!(elapsed >= SECONDS as f64, "answered after {elapsed} s");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("Content-Disposition"),
        Some("attachment; filename=\"allocs\"")
    );
    let p = Profile::decode(&r.body).unwrap();
    let mut alloc_space = 0i64;
    let mut leaves = BTreeMap::new();
    for smp in p.flat_samples().unwrap() {
        alloc_space += smp.values[1];
        *leaves.entry(smp.stack[0].0.clone()).or_insert(0i64) += smp.values[1];
    }
    // The oracle is the program's own count, runtime TotalAlloc: its rate over the request (read
    // just before and just after), times the SECONDS between the agent's two reads. (The request
    // also spans the two reads and the profile build, a few hundred ms in a debug build, so the
    // raw TotalAlloc difference would overstate the delta's window.) What may differ, and by how
    // much:
    // - sampling: the runtime records one sample per MemProfileRate (512 KiB) bytes on average,
    //   a Poisson count, and goheap unsamples each like pprof does; 512 MiB gives N ≈ 1024 samples,
    //   a relative standard error of 1/sqrt(N) ≈ 3.1%;
    // - the window edges: the profile only moves when a GC cycle publishes, so each end of the
    //   delta may lag its read by one GC interval (a few MiB of the 512 MiB here, under 1%);
    // - pacing: steadyalloc tracks its rate against the wall clock, so the rate inside the window
    //   is the rate over the request within a few percent even on a busy machine.
    // ±12% is about 3.5 standard errors beyond those; a factor-2 error (wrong period, double
    // counting, a cumulative instead of a delta profile) is far outside.
    let rate = (stat(&after, "total_alloc_bytes") - stat(&before, "total_alloc_bytes")) / elapsed;
    let own = rate * SECONDS as f64;
    let ratio = alloc_space as f64 / own;
    println!(
        "allocs?seconds={SECONDS}: profile {alloc_space} bytes, program's TotalAlloc rate {rate:.0} B/s \
         over {elapsed:.3} s, {own:.0} bytes in {SECONDS} s, ratio {ratio:.3}"
    );
    assert!(
        (0.88..=1.12).contains(&ratio),
        "delta profile holds {alloc_space} bytes, the program allocated {own:.0} in {SECONDS} s (ratio {ratio:.3})"
    );
    // steadyalloc allocates half of its bytes in each function (16 KiB per round each); each half
    // has about 512 samples, a 4.4% standard error, so its share is 0.5 ± 0.022.
    for f in ["main.makeRecords", "main.makeBuffer"] {
        let share = *leaves
            .get(f)
            .unwrap_or_else(|| panic!("{f} missing: {leaves:?}")) as f64
            / alloc_space as f64;
        assert!(
            (0.4..=0.6).contains(&share),
            "{f} holds {share:.3} of the delta, expected half: {leaves:?}"
        );
    }
}

/// 50 processes of one binary: all tracked and exported; the binary is inspected exactly once, and a
/// steady cycle costs what the incremental reader promises: one `process_vm_readv` batch per process
/// (the head pointer, MemProfileRate, mProfCycle and the planned ranges of every known memRecord, at
/// most `IOV_MAX` ranges a call, so `ceil((ranges + 3) / IOV_MAX)` = 1 for these small lists). The
/// agent sees only these 50 processes (a private proc root), so nothing else on the machine adds to
/// its counters.
#[test]
fn fifty_processes() {
    let s = Scratch::new("fifty");
    let bin = fixture("heapfixture", GO, "default");
    let mut children = Vec::new();
    for i in 0..50 {
        let ready = s.path(&format!("hf{i}.ready"));
        let child = Command::new(&bin)
            .env("GOGC", "off")
            .args(["-scale", "0.004", "-rate", "4096"])
            .arg("-ready")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(Running {
            pid: child.id() as i32,
            child,
        });
    }
    wait_for(Duration::from_secs(90), "50 heapfixtures ready", || {
        (0..50)
            .all(|i| s.path(&format!("hf{i}.ready")).exists())
            .then_some(())
    });
    let pids: Vec<i32> = children.iter().map(|c| c.pid).collect();
    let root = private_proc_root(&s, &pids);
    let agent = Agent::start(&s, &["--proc-root", root.to_str().unwrap()]);
    // What was missing at the last poll, for the failure message. (How fast 50 processes become
    // readable is measured by benches/ node_scale; here the wait only bounds a stuck state: it
    // ran out at 30 s twice in 6 runs of this test beside another, under the suite's load.)
    let mut missing = String::new();
    let t0 = std::time::Instant::now();
    let ready = wait_for_within(Duration::from_secs(90), || {
        let v = agent.processes();
        let procs = v["processes"].as_array()?;
        let m = agent.metrics();
        let lacking: Vec<String> = pids
            .iter()
            .filter_map(|pid| {
                let state = procs
                    .iter()
                    .find(|p| p["pid"].as_i64() == Some(*pid as i64))
                    .map_or("not listed", |p| p["state"].as_str().unwrap_or("no state"));
                let bytes = metric_for_pid(&m, "container_go_alloc_bytes_total", *pid);
                let objects = metric_for_pid(&m, "container_go_alloc_objects_total", *pid);
                let exported = bytes.unwrap_or(0.0) > 0.0 && objects.unwrap_or(0.0) > 0.0;
                (state != "readable" || !exported)
                    .then(|| format!("{pid}: {state}, alloc bytes {bytes:?} objects {objects:?}"))
            })
            .collect();
        missing = format!(
            "{} of 50 not readable with metrics after {} agent cycles: {}",
            lacking.len(),
            agent.cycles(),
            lacking.join("; ")
        );
        lacking.is_empty().then_some(())
    });
    assert!(ready.is_some(), "after {:?}: {missing}", t0.elapsed());
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "goheap_agent_symbol_table_scans_total"),
        Some(1.0),
        "symbol-table scans for 50 processes of one binary"
    );
    assert_eq!(metric_value(&m, "goheap_agent_binaries_cached"), Some(1.0));

    // Steady cycles (the fixtures no longer allocate, so no bucket is new): the syscall counter
    // grows by exactly one batched re-read of every process per cycle.
    let procs = agent.processes();
    let procs = procs["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 50);
    for p in procs {
        let buckets = p["buckets"].as_u64().unwrap() as usize;
        assert!(
            buckets > 0 && buckets + 3 <= goheap::target::memory::IOV_MAX,
            "one batch must hold every record of {p}"
        );
    }
    let expected_per_cycle = 50u64;
    let (c0, s0) = settled_counters(&agent);
    wait_for(Duration::from_secs(20), "3 more cycles", || {
        (agent.cycles() >= c0 + 3).then_some(())
    });
    let (c1, s1) = settled_counters(&agent);
    println!(
        "{} cycles: {} read syscalls, {expected_per_cycle} expected per cycle",
        c1 - c0,
        s1 - s0
    );
    assert_eq!(
        s1 - s0,
        expected_per_cycle * (c1 - c0),
        "read syscalls over {} steady cycles of 50 processes",
        c1 - c0
    );
}

/// (cycles, read syscalls) from /metrics, read twice 300 ms apart until both agree, so the pair
/// is not taken in the middle of a cycle (a cycle over 50 idle processes takes milliseconds).
fn settled_counters(agent: &Agent) -> (u64, u64) {
    let read = || {
        let m = agent.metrics();
        (
            metric_value(&m, "goheap_agent_cycles_total").unwrap() as u64,
            metric_value(&m, "goheap_agent_read_syscalls_total").unwrap() as u64,
        )
    };
    wait_for(Duration::from_secs(20), "counters between cycles", || {
        let a = read();
        std::thread::sleep(Duration::from_millis(300));
        (read() == a).then_some(a)
    })
}

/// Processes that start and exit between cycles, a restart at a new pid, output-dir retention and
/// JSON logs.
#[test]
fn lifecycle_restart_churn_output_dir_and_json_logs() {
    let s = Scratch::new("life");
    let out_dir = s.path("profiles");
    let agent = Agent::start(
        &s,
        &[
            "--output-dir",
            out_dir.to_str().unwrap(),
            "--output-retain-bytes",
            "60000",
            "--log-format",
            "json",
        ],
    );
    let (a, _) = start_steadyalloc(&s, "a", 8.0);
    agent.wait_state(a.pid, "readable", Duration::from_secs(20));
    let a_pid = a.pid;
    wait_for(Duration::from_secs(10), "series of a", || {
        metric_for_pid(&agent.metrics(), "container_go_alloc_bytes_total", a_pid)
    });

    // Short-lived processes, staggered across a few cycles.
    let mut churn_pids = Vec::new();
    for i in 0..8 {
        let (c, _) = start_steadyalloc(&s, &format!("churn{i}"), 1.0);
        churn_pids.push(c.pid);
        std::thread::sleep(Duration::from_millis(300 + 250 * (i % 4)));
        drop(c);
    }
    // Restart: a new process of the same binary (new pid, new start time).
    drop(a);
    let (b, _) = start_steadyalloc(&s, "b", 8.0);
    agent.wait_state(b.pid, "readable", Duration::from_secs(20));
    // b was read in a cycle that began after a and every churn process had been reaped, so that
    // cycle dropped them; allow one more cycle, however long cycles take on a busy machine.
    let c_b = agent.cycles();
    wait_for(Duration::from_secs(60), "one more cycle", || {
        (agent.cycles() > c_b).then_some(())
    });
    let m = agent.metrics();
    let exited: Vec<i32> = std::iter::once(a_pid)
        .chain(churn_pids.iter().copied())
        .collect();
    let in_metrics: Vec<i32> = exited
        .iter()
        .copied()
        .filter(|p| m.contains(&format!("pid=\"{p}\"")))
        .collect();
    let in_list: Vec<i32> = exited
        .iter()
        .copied()
        .filter(|p| agent.process(*p).is_some())
        .collect();
    assert!(
        in_metrics.is_empty() && in_list.is_empty(),
        "exited processes still tracked a cycle after: series of {in_metrics:?}, /processes lists {in_list:?}\n{}",
        m.lines().filter(|l| in_metrics.iter().any(|p| l.contains(&format!("pid=\"{p}\"")))).collect::<Vec<_>>().join("\n")
    );
    let c0 = agent.cycles();
    wait_for(Duration::from_secs(10), "cycles continue", || {
        (agent.cycles() >= c0 + 2).then_some(())
    });
    assert!(metric_for_pid(&agent.metrics(), "container_go_alloc_bytes_total", b.pid).is_some());

    // Output dir: delta profiles that decode, within the retention bound.
    let files: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pb.gz"))
        .collect();
    assert!(!files.is_empty(), "no delta profiles written");
    let total: u64 = files.iter().map(|e| e.metadata().unwrap().len()).sum();
    assert!(total <= 60000, "output dir holds {total} bytes > 60000");
    for f in &files {
        let p = Profile::decode(&std::fs::read(f.path()).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
        assert!(!p.flat_samples().unwrap().is_empty());
    }

    // Logs: JSON lines; one "gone" line for a, not one per cycle.
    let log = agent.log_text();
    let mut states_of_a = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if v["pid"].as_i64() == Some(a_pid as i64) {
            states_of_a.push(v["state"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(states_of_a, ["found", "readable", "gone"], "{log}");
}

/// A proc root holding only the given processes (symlinks into /proc), so an agent under test
/// touches nothing else on the machine.
fn private_proc_root(s: &Scratch, pids: &[i32]) -> std::path::PathBuf {
    let root = s.path("proc");
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// Force mode turns on profiling in `noprofile` (MemProfileRate 0) only where the address is proven
/// by a symbol table; allocations then show up in the metrics.
#[test]
fn force_mode_enables_profiling_in_noprofile() {
    let s = Scratch::new("force");
    let start = |mode: &str, tag: &str| {
        let ready = s.path(&format!("{tag}.ready"));
        let mut cmd = Command::new(fixture("noprofile", GO, mode));
        cmd.args(["-rate-mib-per-sec", "8"])
            .arg("-ready")
            .arg(&ready);
        start_and_wait(cmd, &ready, Duration::from_secs(30))
    };
    let np = start("default", "np");
    let stripped = start("stripped", "nps");
    let root = private_proc_root(&s, &[np.pid, stripped.pid]);
    let root_s = root.to_str().unwrap();

    // Without force: profiling-disabled, nothing written.
    {
        let passive = Agent::start(&s, &["--proc-root", root_s]);
        passive.wait_state(np.pid, "profiling-disabled", Duration::from_secs(20));
    }
    let agent = Agent::start(&s, &["--proc-root", root_s, "--go-heap-profiler", "force"]);
    let p = agent.wait_state(np.pid, "readable", Duration::from_secs(20));
    assert_eq!(p["profiling_forced"], true);
    assert_eq!(p["mem_profile_rate"], 524288);
    // The stripped twin's globals are found from code references only: force mode must not
    // write there, so it stays disabled.
    let st = agent.wait_state(stripped.pid, "profiling-disabled", Duration::from_secs(20));
    assert_eq!(st["method"], "code-reference", "{st}");
    assert_eq!(st["profiling_forced"], false, "{st}");
    wait_for(
        Duration::from_secs(20),
        "noprofile allocations in metrics",
        || {
            (metric_for_pid(&agent.metrics(), "container_go_alloc_bytes_total", np.pid)? > 0.0)
                .then_some(())
        },
    );
    let m = agent.metrics();
    assert_eq!(
        metric_value(&m, "goheap_agent_profiling_forced_total"),
        Some(1.0)
    );
    assert!(agent
        .log_text()
        .contains("force mode: set runtime.MemProfileRate"));
}

/// Hashes every readable, writable mapping of a (stopped) process.
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
        let perms = f.next().unwrap();
        if !(perms.starts_with("rw")) {
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
                    // Unreadable page: hash its absence and skip it.
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

fn stop_and_wait(pid: i32) {
    // SAFETY: sending a signal to a child process we own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_for(Duration::from_secs(5), "process stopped", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat[stat.rfind(')')? + 2..].chars().next()?;
        (state == 'T').then_some(())
    });
}

/// In enabled and disabled modes the agent never changes the target: a stopped process (which cannot
/// change its own memory) hashes identically before and after several agent cycles and profile
/// requests.
#[test]
fn non_force_modes_leave_target_memory_unchanged() {
    let s = Scratch::new("nowrite");
    let (sa, _) = start_steadyalloc(&s, "sa", 8.0);
    std::thread::sleep(Duration::from_millis(500));
    stop_and_wait(sa.pid);
    let before = hash_writable_memory(sa.pid);
    assert!(before.len() > 3);
    for mode in ["enabled", "disabled"] {
        let agent = Agent::start(&s, &["--go-heap-profiler", mode]);
        let want = if mode == "enabled" {
            "readable"
        } else {
            "disabled"
        };
        agent.wait_state(sa.pid, want, Duration::from_secs(20));
        let c0 = agent.cycles();
        wait_for(Duration::from_secs(15), "3 more cycles", || {
            (agent.cycles() >= c0 + 3).then_some(())
        });
        let heap = agent.get(&format!("/debug/pprof/heap?pid={}", sa.pid));
        let allocs = agent.get(&format!("/debug/pprof/allocs?pid={}&seconds=1", sa.pid));
        if mode == "enabled" {
            assert_eq!(heap.status, 200, "{}", heap.text());
            assert_eq!(allocs.status, 200, "{}", allocs.text());
        } else {
            assert_eq!(heap.status, 403);
        }
        let after = hash_writable_memory(sa.pid);
        let changed: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(k) != Some(v))
            .map(|(k, _)| format!("{:#x}-{:#x}", k.0, k.1))
            .collect();
        assert!(
            changed.is_empty() && after.len() == before.len(),
            "{mode}: target memory changed in {changed:?}"
        );
    }
    // SAFETY: resuming our own child before it is killed on drop.
    unsafe { libc::kill(sa.pid, libc::SIGCONT) };
}

/// A pid reused by a new process between two cycles: the agent must see a new process (pid + start
/// time), not continue the old one's counters. The kernel's `ns_last_pid` makes the new process get
/// the old one's pid.
#[test]
fn reused_pid_is_a_new_process() {
    let s = Scratch::new("pidreuse");
    let agent = Agent::start(&s, &[]);
    for attempt in 0..5 {
        let (a, _) = start_steadyalloc(&s, &format!("a{attempt}"), 64.0);
        let pid = a.pid;
        agent.wait_state(pid, "readable", Duration::from_secs(20));
        let a_start = agent.process(pid).unwrap()["start_time"]
            .as_u64()
            .expect("start_time in /processes");
        let a_total = wait_for(Duration::from_secs(30), "old process counts 40 MiB", || {
            metric_for_pid(&agent.metrics(), "container_go_alloc_bytes_total", pid)
                .filter(|v| *v > 40.0 * 1048576.0)
        });
        drop(a);
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid (tests run as root)");
        let (b, b_addr) = start_steadyalloc(&s, &format!("b{attempt}"), 1.0);
        if b.pid != pid {
            eprintln!("attempt {attempt}: another process took pid {pid}; retrying");
            continue;
        }
        let entry = wait_for(
            Duration::from_secs(20),
            "the new process at the reused pid",
            || {
                agent.process(pid).filter(|p| {
                    p["start_time"].as_u64() != Some(a_start) && p["state"] == "readable"
                })
            },
        );
        assert_ne!(entry["start_time"].as_u64(), Some(a_start));
        // Two more cycles, then the counter must be the new process's own, far below the old one's.
        let c0 = agent.cycles();
        wait_for(Duration::from_secs(10), "two cycles", || {
            (agent.cycles() >= c0 + 2).then_some(())
        });
        // The new process must have its own series (a missing one is a failure, not a zero).
        let m = agent.metrics();
        let b_metric = metric_for_pid(&m, "container_go_alloc_bytes_total", pid)
            .unwrap_or_else(|| panic!("no series for the new process at reused pid {pid}:\n{m}"));
        let b_own = alloc_stats(&b_addr)["total_alloc_bytes"].as_f64().unwrap();
        assert!(
            b_metric < a_total / 2.0,
            "new process's counter {b_metric} continues the old one's {a_total}"
        );
        assert!(
            b_metric <= 1.5 * b_own + 4.0 * 1048576.0,
            "new process's counter {b_metric} exceeds its own allocations {b_own}"
        );
        return;
    }
    panic!("could not get the same pid for a second process in 5 attempts");
}

/// A time-limited walk: with `--read-budget 0` each cycle reads at least one more bucket of a long
/// list and keeps what it has; over the cycles the agent reaches the whole list, with the same totals
/// as a one-shot profile.
#[test]
fn read_budget_spreads_a_long_walk_over_cycles() {
    let s = Scratch::new("budget");
    let fixture = start_small_heapfixture(&s, "hf", 0.05);
    let out = std::process::Command::new(goheap_bin())
        .args([
            "profile",
            "--pid",
            &fixture.pid.to_string(),
            "-o",
            "-",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = Profile::decode(&out.stdout).unwrap();
    let buckets = profile.sample.len() as u64;
    assert!(
        buckets >= 10,
        "the fixture should have many buckets, has {buckets}"
    );
    let alloc_objects: i64 = profile.sample.iter().map(|s| s.value[0]).sum();

    let agent = Agent::start_with_interval(&s, "100ms", &["--read-budget", "0"]);
    let first = agent.wait_state(fixture.pid, "readable", Duration::from_secs(20));
    assert!(
        first["buckets"].as_u64().unwrap() < buckets,
        "the first cycle must not read the whole list: {first}"
    );
    // Progress is counted in the agent's cycles, not in seconds: on a loaded machine a cycle
    // (which reads every Go process of the host) can take much longer than its interval. Each
    // cycle must read at least one more bucket and never lose what it read.
    let cycles = |m: &str| metric_value(m, "goheap_agent_cycles_total").unwrap_or(0.0);
    let c0 = cycles(&agent.metrics());
    let allowed = 3.0 * buckets as f64 + 20.0;
    let t0 = std::time::Instant::now();
    let mut seen = first["buckets"].as_u64().unwrap();
    loop {
        let p = agent.process(fixture.pid).expect("fixture listed");
        let now = p["buckets"].as_u64().unwrap_or(0);
        // (The runtime may add a bucket of its own meanwhile.)
        if now >= buckets {
            break;
        }
        assert!(
            now >= seen,
            "the walk lost buckets it had read ({seen} -> {now}): {p}"
        );
        seen = now;
        let m = agent.metrics();
        let done = cycles(&m) - c0;
        assert!(
            done <= allowed && t0.elapsed() < Duration::from_secs(300),
            "{now} of {buckets} buckets after {done} cycles in {:?} (at most {allowed} cycles \
             allowed); cycle durations sum {:?} s over {:?}: {p}",
            t0.elapsed(),
            metric_value(&m, "goheap_agent_cycle_duration_seconds_sum"),
            metric_value(&m, "goheap_agent_cycle_duration_seconds_count"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metric = wait_for(Duration::from_secs(10), "alloc objects metric", || {
        metric_for_pid(
            &agent.metrics(),
            "container_go_alloc_objects_total",
            fixture.pid,
        )
    });
    let rel = (metric - alloc_objects as f64).abs() / alloc_objects as f64;
    assert!(
        rel < 0.01,
        "agent counts {metric} objects, the profile {alloc_objects}"
    );
}
