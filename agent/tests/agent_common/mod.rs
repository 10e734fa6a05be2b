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
