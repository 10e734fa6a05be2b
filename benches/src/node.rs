//! Helpers of the benchmarks that drive the `goheap` binary (as a subprocess) against real
//! daemons: a private PID namespace, process groups killed on drop, Ctrl-C handling, the agent's
//! HTTP endpoints and `/proc` readings.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Set by SIGINT, SIGTERM or SIGHUP once [`install_stop_handlers`] ran.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set [`STOP`] instead of killing the process, so that the
/// benchmark unwinds and its guards kill every child and remove the scratch directory.
pub fn install_stop_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_stop_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t,
            )
        };
    }
}

/// An error once a stop signal arrived.
pub fn check_stop() -> anyhow::Result<()> {
    anyhow::ensure!(!STOP.load(Ordering::SeqCst), "interrupted by a signal");
    Ok(())
}

/// Sleeps `d`, returning early with an error on a stop signal.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

const PIDNS_ENV: &str = "GOHEAP_BENCH_PIDNS";

/// Whether this process runs as PID 1 of the namespace [`isolate`] made.
pub fn isolated() -> bool {
    std::env::var_os(PIDNS_ENV).is_some()
}

/// Re-runs this program with the same arguments as PID 1 of a new PID namespace with its own
/// `/proc` (`unshare --pid --fork --mount-proc`, root only), then exits with its status.
///
/// In there the agent sees only the processes the benchmark started, not the other Go programs
/// of a shared machine, and when the benchmark exits (even killed) the kernel kills everything
/// left in the namespace. Returns (without re-running) when already isolated, when `enabled` is
/// false, or when not root (with a warning).
pub fn isolate(enabled: bool) -> anyhow::Result<()> {
    if isolated() || !enabled {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("warning: not root, so no private PID namespace: the agent also sees the other Go processes of this machine");
        return Ok(());
    }
    install_stop_handlers();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(std::env::current_exe()?)
        .args(&args)
        .env(PIDNS_ENV, "1")
        .spawn()
        .map_err(|e| anyhow::anyhow!("unshare (util-linux) failed to start: {e}"))?;
    // Ctrl-C reaches the inner benchmark directly (same process group); a signal sent to this
    // process alone is passed on to it.
    let mut forwarded = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if STOP.load(Ordering::SeqCst) && !forwarded {
            forwarded = true;
            for pid in children_of(child.id() as i32) {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::exit(status.code().unwrap_or(1));
}

fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A child started in its own process group; on drop the whole group gets SIGTERM, then SIGKILL
/// after a grace period.
pub struct Group {
    pub name: String,
    pub child: Child,
    /// Kept open for programs that read stdin until EOF (so they stay up).
    pub stdin: Option<std::process::ChildStdin>,
    reaped: bool,
}

impl Group {
    /// Spawns `cmd` in a new process group, stdout and stderr appended to `log`, stdin null (or a
    /// pipe held open with `keep_stdin`).
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        keep_stdin: bool,
    ) -> anyhow::Result<Group> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = cmd
            .process_group(0)
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name} ({:?}): {e}", cmd.get_program()))?;
        let stdin = child.stdin.take();
        Ok(Group {
            name: name.to_string(),
            child,
            stdin,
            reaped: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `None` while running, else how it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.reaped = true;
                Some(st)
            }
            _ => None,
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory effects; a negative pid names our own child's group.
        unsafe { libc::kill(-self.pid(), sig) };
    }

    fn finish(&mut self, deadline: Instant) {
        while !self.reaped && Instant::now() < deadline {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(libc::SIGKILL);
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            self.stdin = None;
            self.signal_group(libc::SIGTERM);
            self.finish(Instant::now() + Duration::from_secs(5));
        }
    }
}

/// Many [`Group`]s, stopped together on drop: SIGTERM to all, one shared grace period, then SIGKILL.
#[derive(Default)]
pub struct Fleet(pub Vec<Group>);

impl Fleet {
    pub fn stop_all(&mut self) {
        for g in &mut self.0 {
            g.stdin = None;
            if !g.reaped {
                g.signal_group(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for g in &mut self.0 {
            g.finish(deadline);
        }
        self.0.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`, `RssAnon:`).
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Memory of a process at one moment, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
}

impl Mem {
    pub fn of(pid: i32) -> Mem {
        Mem {
            rss: status_kib(pid, "VmRSS:").unwrap_or(0),
            hwm: status_kib(pid, "VmHWM:").unwrap_or(0),
            anon: status_kib(pid, "RssAnon:").unwrap_or(0),
        }
    }
}

/// `utime + stime` of a process, in seconds.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port free now and not handed out before by this process.
pub fn free_port() -> anyhow::Result<u16> {
    let mut taken = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port")
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// One HTTP/1.1 GET to 127.0.0.1:`port`: status code and body (`Connection: close`).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    let r = crate::support::http_request_within(port, "GET", path, timeout)
        .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
    Ok((r.status, r.body))
}

/// `target/release/goheap` beside this benchmark's executable, or `explicit`.
pub fn goheap_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let p = match explicit {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no exe dir"))?
            .join("goheap"),
    };
    anyhow::ensure!(
        p.exists(),
        "{} missing: cargo build --release -p goheap",
        p.display()
    );
    Ok(p)
}

/// A running `goheap agent` on a loopback port.
pub struct Agent {
    pub group: Group,
    pub port: u16,
    pub started: Instant,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `goheap agent --interval INTERVAL --listen 127.0.0.1:PORT` (log to `log`) and waits
    /// for its HTTP listener.
    pub fn start(goheap: &Path, interval: &str, log: &Path) -> anyhow::Result<Agent> {
        let port = free_port()?;
        let mut cmd = Command::new(goheap);
        cmd.args([
            "agent",
            "--interval",
            interval,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        let started = Instant::now();
        let mut agent = Agent {
            group: Group::spawn("goheap agent", &mut cmd, log, false)?,
            port,
            started,
            log: log.to_path_buf(),
        };
        while !port_open(port) {
            agent.check_alive()?;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "agent not listening after 30 s"
            );
            sleep(Duration::from_millis(20))?;
        }
        Ok(agent)
    }

    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// An error with the log's tail if the agent exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.group.exited() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("goheap agent exited ({st}); log tail:\n{}", tail.join("\n"));
        }
        Ok(())
    }

    /// GET /processes, parsed.
    pub fn processes(&mut self) -> anyhow::Result<Processes> {
        self.check_alive()?;
        let (status, body) = http_get(self.port, "/processes", Duration::from_secs(30))?;
        anyhow::ensure!(status == 200, "GET /processes: HTTP {status}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let cycles = v["cycles"].as_u64().unwrap_or(0);
        let procs = v["processes"]
            .as_array()
            .map(|a| a.iter().map(ProcState::from_json).collect())
            .unwrap_or_default();
        Ok(Processes { cycles, procs })
    }

    /// GET /metrics.
    pub fn metrics(&mut self) -> anyhow::Result<String> {
        self.check_alive()?;
        let (status, body) = http_get(self.port, "/metrics", Duration::from_secs(30))?;
        anyhow::ensure!(status == 200, "GET /metrics: HTTP {status}");
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until the agent's cycle counter reaches `n`.
    pub fn wait_cycles(&mut self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let t0 = Instant::now();
        loop {
            let c = self.processes()?.cycles;
            if c >= n {
                return Ok(c);
            }
            anyhow::ensure!(
                t0.elapsed() < timeout,
                "agent at cycle {c}, not {n}, after {timeout:?}"
            );
            sleep(Duration::from_millis(100))?;
        }
    }

    /// Mean cycle duration in seconds, from `goheap_agent_cycle_duration_seconds`.
    pub fn mean_cycle_seconds(&mut self) -> anyhow::Result<f64> {
        let m = self.metrics()?;
        let count = metric(&m, "goheap_agent_cycle_duration_seconds_count");
        let sum = metric(&m, "goheap_agent_cycle_duration_seconds_sum");
        Ok(if count > 0.0 { sum / count } else { 0.0 })
    }
}

/// Sum of the samples of a metric whose line starts with `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One Go process as `/processes` shows it.
#[derive(Debug, Clone, Default)]
pub struct ProcState {
    pub pid: i32,
    pub state: String,
    pub detail: Option<String>,
    pub binary_name: String,
    pub go_version: String,
    pub method: Option<String>,
    pub buckets: u64,
}

impl ProcState {
    fn from_json(v: &serde_json::Value) -> ProcState {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        ProcState {
            pid: v["pid"].as_i64().unwrap_or(0) as i32,
            state: s("state"),
            detail: v["detail"].as_str().map(str::to_string),
            binary_name: s("binary_name"),
            go_version: s("go_version"),
            method: v["method"].as_str().map(str::to_string),
            buckets: v["buckets"].as_u64().unwrap_or(0),
        }
    }
}

/// `/processes`: the cycle count and the Go processes.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    pub cycles: u64,
    pub procs: Vec<ProcState>,
}

impl Processes {
    pub fn get(&self, pid: i32) -> Option<&ProcState> {
        self.procs.iter().find(|p| p.pid == pid)
    }
}

fn proc_net_sockets() -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for (file, v6) in [
        ("tcp", false),
        ("tcp6", true),
        ("udp", false),
        ("udp6", true),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            let addr = |hex: &str| -> String {
                let ip = hex.split(':').next().unwrap_or("");
                let loopback = if v6 {
                    // ::1, ::ffff:127.x.x.x, or :: (unconnected peer)
                    ip == "00000000000000000000000001000000"
                        || (ip.starts_with("0000000000000000FFFF0000") && ip.ends_with("7F"))
                        || ip.chars().all(|c| c == '0')
                } else {
                    ip.ends_with("7F") || ip == "00000000"
                };
                format!("{}{}", if loopback { "" } else { "!" }, hex)
            };
            out.push((inode, addr(f[1]), format!("{file} {}", addr(f[2]))));
        }
    }
    out
}

/// Sockets of `pids` bound to or connected to an address outside the loopback range, as
/// `pid: proto local remote` lines (empty when everything stays on loopback). A listener on the
/// wildcard address counts as outside.
pub fn non_loopback_sockets(pids: &[i32]) -> Vec<String> {
    let net = proc_net_sockets();
    let mut bad = Vec::new();
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            for (ino, local, remote) in &net {
                if *ino != inode {
                    continue;
                }
                let local_wild = local
                    .trim_start_matches('!')
                    .split(':')
                    .next()
                    .is_some_and(|ip| ip.chars().all(|c| c == '0'));
                if local.starts_with('!') || remote.contains('!') || local_wild {
                    bad.push(format!("{pid}: {remote} local {local}"));
                }
            }
        }
    }
    bad
}

/// Least-squares slope and intercept of `y` over `x`.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}
