//! Helpers of the agent integration tests: run `goheap agent`, talk HTTP to it, start fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../support/mod.rs"]
pub mod support;
pub use support::*;
pub mod cgroups;
pub mod otelcol;
pub mod pprof_stacks;

/// The Go version whose fixtures the agent tests use.
pub const GO: &str = GO_1_23;

/// A test tool built from `fixtures/NAME/` (`otelcol`, `pyroscope`) by its `build.sh`, once per
/// machine and cached: `<cache>/NAME/goheap-NAME`. Built at most once per test binary.
pub fn built_tool(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let bin = cache_dir().join(format!("{name}/goheap-{name}"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|n| n == name) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/{name}/build.sh"));
        let st = Command::new("bash")
            .arg(&script)
            .status()
            .unwrap_or_else(|e| panic!("running fixtures/{name}/build.sh: {e}"));
        assert!(st.success(), "fixtures/{name}/build.sh failed");
        assert!(bin.exists(), "{} missing after build.sh", bin.display());
        built.push(name.to_string());
    }
    bin
}

/// goheap's own delta profiles of the steadyalloc process `pid` that `--output-dir` wrote into
/// `dir`: (write time in ms since the epoch, path), oldest first.
pub fn own_profiles(dir: &Path, pid: i32) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let rest = name
                .strip_prefix("goheap-steadyalloc-")?
                .strip_suffix(".pb.gz")?;
            let (p_pid, ms) = rest.rsplit_once('-')?;
            (p_pid == pid.to_string()).then_some((ms.parse().ok()?, p.clone()))
        })
        .collect();
    v.sort();
    v
}

/// A running `goheap agent`, killed on drop. Its stderr goes to `log`.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `goheap agent --listen 127.0.0.1:<free> --interval 2s <extra>` and waits for /healthz.
    pub fn start(scratch: &Scratch, extra: &[&str]) -> Agent {
        Self::start_with_interval(scratch, "2s", extra)
    }

    /// Starts an agent with a given `--interval`.
    pub fn start_with_interval(scratch: &Scratch, interval: &str, extra: &[&str]) -> Agent {
        let port = free_port();
        let log = scratch.path(&format!("agent-{port}.log"));
        let mut cmd = Command::new(goheap_bin());
        let child = without_agent_env(&mut cmd)
            .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--interval", interval])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting goheap agent");
        let mut a = Agent { child, port, log };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = http_get(port, "/healthz") {
                assert_eq!(r.status, 200);
                break;
            }
            if let Ok(Some(st)) = a.child.try_wait() {
                panic!("agent exited with {st}: {}", a.log_text());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "agent not serving: {}",
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_text()))
    }

    /// `/processes` as JSON.
    pub fn processes(&self) -> serde_json::Value {
        let r = self.get("/processes");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("/processes is JSON")
    }

    /// The `/processes` entry of `pid`.
    pub fn process(&self, pid: i32) -> Option<serde_json::Value> {
        self.processes()["processes"]
            .as_array()?
            .iter()
            .find(|p| p["pid"].as_i64() == Some(pid as i64))
            .cloned()
    }

    /// Waits until `pid` is listed with `state`.
    pub fn wait_state(&self, pid: i32, state: &str, timeout: Duration) -> serde_json::Value {
        wait_for(timeout, &format!("pid {pid} in state {state}"), || {
            self.process(pid).filter(|p| p["state"] == state)
        })
    }

    /// Completed cycles.
    pub fn cycles(&self) -> u64 {
        self.processes()["cycles"].as_u64().unwrap_or(0)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        r.text()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the series `name` whose labels include `pid="PID"`, from metrics text.
pub fn metric_for_pid(text: &str, name: &str, pid: i32) -> Option<f64> {
    let needle = format!("pid=\"{pid}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The value of one series, named exactly as the exposition writes it (`name` or
/// `name{label="value",...}`), from metrics text.
pub fn metric_series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The value after `name_and_labels` (a series' name and the start of its labels) on the first
/// line that starts with it, 0 when there is none (counters not yet incremented are absent).
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A metric without labels (or the first series of it).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ') | Some(b'{'))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Starts steadyalloc at `rate` MiB/s; returns it and its /alloc address.
pub fn start_steadyalloc(scratch: &Scratch, tag: &str, rate: f64) -> (Running, String) {
    let bin = fixture("steadyalloc", GO, "default");
    let ready = scratch.path(&format!("{tag}.ready"));
    let addr = scratch.path(&format!("{tag}.addr"));
    let mut cmd = Command::new(bin);
    cmd.args(["-rate-mib-per-sec", &rate.to_string()])
        .arg("-ready")
        .arg(&ready)
        .arg("-addr-file")
        .arg(&addr);
    let r = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let a = std::fs::read_to_string(&addr).unwrap().trim().to_string();
    (r, a)
}

/// Starts a small heapfixture (`-scale`, MemProfileRate 4096 so even a small volume gives many
/// samples), which stops allocating once ready.
pub fn start_small_heapfixture(scratch: &Scratch, tag: &str, scale: f64) -> Running {
    let bin = fixture("heapfixture", GO, "default");
    let ready = scratch.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(bin);
    cmd.env("GOGC", "off")
        .args(["-scale", &scale.to_string(), "-rate", "4096"])
        .arg("-ready")
        .arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(60))
}

/// steadyalloc's `/alloc` counters.
pub fn alloc_stats(addr: &str) -> serde_json::Value {
    let (host, port) = addr.rsplit_once(':').unwrap();
    assert_eq!(host, "127.0.0.1");
    let r = http_get(port.parse().unwrap(), "/alloc").expect("GET /alloc");
    serde_json::from_slice(&r.body).expect("/alloc JSON")
}

/// Whether `/proc/PID` exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
