//! The one support module of goheap's tests (and of `pprof-proto`'s tests, the fuzz harness and the
//! benchmarks, which include this file with `#[path]`): the Go versions of the matrix, where the
//! cache, fixtures and toolchains are, starting a fixture and waiting until it is ready, running the
//! goheap binary, an HTTP client for the servers under test, a seeded RNG, and comparing two heap
//! profiles by content.
//!
//! Only `std` and `pprof_proto` are used, so every crate that includes it can build it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// --- Go versions ------------------------------------------------------------------------------

// The Go releases every test runs against; `fixtures/build.sh` builds the same list (a test in
// profile_equality.rs checks that). Tests name a release by its constant, never by a literal.
pub const GO_1_19: &str = "1.19";
pub const GO_1_21: &str = "1.21.13";
pub const GO_1_22: &str = "1.22.10";
pub const GO_1_23: &str = "1.23.9";
pub const GO_1_24: &str = "1.24.11";
pub const GO_1_25: &str = "1.25.5";
pub const GO_1_26: &str = "1.26.6";
pub const GO_1_27: &str = "1.27.3";

/// Go versions of the matrix, oldest first (directory names under the fixture output and the
/// toolchain cache).
pub const GO_VERSIONS: &[&str] = &[
    GO_1_19, GO_1_21, GO_1_22, GO_1_23, GO_1_24, GO_1_25, GO_1_26, GO_1_27,
];
/// Build modes the profile-equality test covers.
pub const LIVE_MODES: &[&str] = &["default", "pie", "cgo", "trimpath", "stripped"];

// --- Paths ------------------------------------------------------------------------------------

/// `$GOHEAP_CACHE` (when set and non-empty), else `~/.cache/goheap`: toolchains, fixtures, build
/// caches and the kubernetes-validate venv live there.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("GOHEAP_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").expect("neither GOHEAP_CACHE nor HOME is set"))
            .join(".cache/goheap"),
    }
}

/// `$GOHEAP_FIXTURES_OUT`, else `<cache>/fixtures` (where `fixtures/build.sh` writes).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("GOHEAP_FIXTURES_OUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => cache_dir().join("fixtures"),
    }
}

/// `GOROOT` of a cached toolchain (no check that it exists).
pub fn goroot(version: &str) -> PathBuf {
    cache_dir().join("go").join(version).join("goroot")
}

/// `GOCACHE` the tests use for toolchain `version`.
pub fn gocache(version: &str) -> PathBuf {
    cache_dir().join(format!("gocache-{version}"))
}

/// Path of a built fixture; panics with the command to run when it is missing.
pub fn fixture(program: &str, version: &str, mode: &str) -> PathBuf {
    let p = fixtures_dir()
        .join(program)
        .join(version)
        .join(mode)
        .join(program);
    assert!(p.exists(), "fixture {} is missing: run fixtures/build.sh (it installs the Go toolchains and builds the matrix)", p.display());
    p
}

/// The `go` binary of a toolchain; panics with the installer's name when missing.
pub fn go_tool(version: &str) -> PathBuf {
    let p = goroot(version).join("bin/go");
    assert!(
        p.exists(),
        "Go toolchain {version} is missing at {}: run fixtures/install-toolchains.sh",
        p.display()
    );
    p
}

/// The goheap binary cargo built for this test. Only goheap's own integration tests have it (the
/// crates that include this file for the other helpers do not).
pub fn goheap_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_goheap") {
        Some(p) => PathBuf::from(p),
        None => panic!("the goheap binary is only known to goheap's integration tests"),
    }
}

/// Every environment variable `goheap agent` reads (its `[env: NAME=…]` annotations in
/// `goheap agent --help`, plus `GOHEAP_LOG`, the log filter), so tests can clear them all and the
/// host environment cannot change how an agent under test parses its flags.
pub fn agent_env_vars() -> &'static [String] {
    static VARS: OnceLock<Vec<String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let mut cmd = Command::new(goheap_bin());
        cmd.args(["agent", "--help"]);
        // The help text shows the current value of a variable that is set; it must not matter.
        let out = cmd.output().expect("running goheap agent --help");
        assert!(out.status.success(), "goheap agent --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let mut vars: Vec<String> = help
            .split("[env: ")
            .skip(1)
            .filter_map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                (!name.is_empty()).then_some(name)
            })
            .collect();
        vars.push("GOHEAP_LOG".to_string());
        vars.sort();
        vars.dedup();
        for known in [
            "GOHEAP_LISTEN",
            "GOHEAP_READ_BUDGET",
            "GOHEAP_PROC_ROOT",
            "NODE_NAME",
        ] {
            assert!(
                vars.iter().any(|v| v == known),
                "{known} not found in goheap agent --help ({vars:?}); did the help format change?"
            );
        }
        vars
    })
}

/// `cmd` with every variable of [`agent_env_vars`] removed from its environment.
pub fn without_agent_env(cmd: &mut Command) -> &mut Command {
    for v in agent_env_vars() {
        cmd.env_remove(v);
    }
    cmd
}

/// A unique scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);
impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "goheap-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running fixture process, killed on drop.
pub struct Running {
    pub child: Child,
    pub pid: i32,
}
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (with a `-ready PATH` argument already added by the caller) and waits until `ready`
/// exists. Panics with the process's stderr if it exits or takes longer than `timeout`.
pub fn start_and_wait(mut cmd: Command, ready: &Path, timeout: Duration) -> Running {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let t0 = Instant::now();
    loop {
        if ready.exists() {
            return Running { child, pid };
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{cmd:?} exited with {status} before becoming ready: {err}");
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            panic!("{cmd:?} not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the heap fixture under GOGC=off; it writes its own profile to `profile` before it is ready.
pub fn start_heapfixture(bin: &Path, scratch: &Scratch) -> (Running, PathBuf) {
    let profile = scratch.path("self.pb.gz");
    let ready = scratch.path("ready");
    let mut cmd = Command::new(bin);
    cmd.env("GOGC", "off")
        .arg("-profile")
        .arg(&profile)
        .arg("-ready")
        .arg(&ready);
    (
        start_and_wait(cmd, &ready, Duration::from_secs(60)),
        profile,
    )
}

/// Debian's `prometheus` (stripped, cgo, Go 1.19), installed by `fixtures/install-toolchains.sh`:
/// the real-world stripped binary of the tests.
pub const DEBIAN_PROMETHEUS: &str = "/usr/bin/prometheus";

/// Starts Debian's Prometheus on a free loopback port with `config` as its configuration file and
/// waits until `/-/ready` answers 200; returns it (killed on drop) and its port.
pub fn start_prometheus(scratch: &Scratch, config: &str) -> (Running, u16) {
    assert!(
        Path::new(DEBIAN_PROMETHEUS).exists(),
        "{DEBIAN_PROMETHEUS} missing: run fixtures/install-toolchains.sh"
    );
    let port = free_port();
    let cfg = scratch.path(&format!("prometheus-{port}.yml"));
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(DEBIAN_PROMETHEUS)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path(&format!("prometheus-{port}-data")).display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let running = Running {
        pid: child.id() as i32,
        child,
    };
    wait_for(Duration::from_secs(60), "prometheus /-/ready", || {
        (http_get(port, "/-/ready").ok()?.status == 200).then_some(())
    });
    (running, port)
}

/// Debian's `etcd` (package etcd-server: stripped, Go 1.19), installed by
/// `fixtures/install-toolchains.sh`.
pub const DEBIAN_ETCD: &str = "/usr/bin/etcd";

/// Starts Debian's etcd as a one-member cluster on free loopback ports (client and peer) with its
/// data in `scratch` and `--enable-pprof` (`/debug/pprof/` on the client port), and waits until
/// `/health` answers 200; returns it (killed on drop) and its client port.
pub fn start_etcd(scratch: &Scratch) -> (Running, u16) {
    assert!(
        Path::new(DEBIAN_ETCD).exists(),
        "{DEBIAN_ETCD} missing: run fixtures/install-toolchains.sh"
    );
    let client = free_port();
    let peer = std::iter::repeat_with(free_port)
        .find(|&p| p != client)
        .expect("a second free port");
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(DEBIAN_ETCD)
        .args(["--name", "goheap-test"])
        .arg(format!(
            "--data-dir={}",
            scratch.path(&format!("etcd-{client}")).display()
        ))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=goheap-test={peer_url}"))
        .arg("--enable-pprof")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let running = Running {
        pid: child.id() as i32,
        child,
    };
    wait_for(Duration::from_secs(60), "etcd /health", || {
        (http_get(client, "/health").ok()?.status == 200).then_some(())
    });
    (running, client)
}

/// Runs goheap with `args`.
pub fn goheap(args: &[&str]) -> Output {
    Command::new(goheap_bin())
        .args(args)
        .output()
        .expect("running goheap")
}

// --- Comparing two heap profiles by content -------------------------------------------------------

use pprof_proto::{FlatLabelValue, FlatSample, Profile};
use std::collections::BTreeMap;

type Key = (Vec<(String, String, i64)>, Vec<(String, String)>);

fn key(s: &FlatSample) -> Key {
    let stack = s.stack.clone();
    let labels = s
        .labels
        .iter()
        .map(|(k, v)| {
            let v = match v {
                FlatLabelValue::Str(s) => s.clone(),
                FlatLabelValue::Num { value, unit } => format!("{value}{unit}"),
            };
            (k.clone(), v)
        })
        .collect();
    (stack, labels)
}

fn samples(p: &Profile) -> BTreeMap<Key, Vec<Vec<i64>>> {
    let mut m: BTreeMap<Key, Vec<Vec<i64>>> = BTreeMap::new();
    for s in p.flat_samples().expect("flat samples") {
        m.entry(key(&s)).or_default().push(s.values.clone());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn show(k: &Key) -> String {
    let frames: Vec<String> =
        k.0.iter()
            .take(6)
            .map(|(f, file, l)| format!("{f} {}:{l}", file.rsplit('/').next().unwrap_or("")))
            .collect();
    format!("[{}] {:?}", frames.join(" <- "), k.1)
}

/// Compares two heap profiles; returns a list of differences (empty when equal).
pub fn compare(ours: &Profile, theirs: &Profile) -> Vec<String> {
    let mut diffs = Vec::new();
    if ours.sample_types().unwrap() != theirs.sample_types().unwrap() {
        diffs.push(format!(
            "sample types {:?} vs {:?}",
            ours.sample_types(),
            theirs.sample_types()
        ));
    }
    if ours.period_type_strings().unwrap() != theirs.period_type_strings().unwrap()
        || ours.period != theirs.period
    {
        diffs.push(format!(
            "period {:?}/{} vs {:?}/{}",
            ours.period_type_strings(),
            ours.period,
            theirs.period_type_strings(),
            theirs.period
        ));
    }
    let a = samples(ours);
    let b = samples(theirs);
    for (k, theirs_vals) in &b {
        match a.get(k) {
            None => diffs.push(format!("missing sample {} {:?}", show(k), theirs_vals)),
            Some(our_vals) => {
                let close = our_vals.len() == theirs_vals.len()
                    && our_vals.iter().zip(theirs_vals).all(|(x, y)| {
                        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1)
                    });
                if !close {
                    diffs.push(format!(
                        "values differ for {}: ours {:?} theirs {:?}",
                        show(k),
                        our_vals,
                        theirs_vals
                    ));
                }
            }
        }
    }
    for (k, v) in &a {
        // Buckets created after the process wrote its profile (sampled allocations of the profile
        // writer itself) exist only in ours, with all-zero values: the runtime would show them too.
        if !b.contains_key(k) && v.iter().any(|vals| vals.iter().any(|x| *x != 0)) {
            diffs.push(format!("extra sample {} {:?}", show(k), v));
        }
    }
    diffs
}

// --- Talking HTTP to servers under test ------------------------------------------------------

/// A free TCP port on loopback (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP response.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on 127.0.0.1:port (HTTP/1.1, Connection: close); 60 s timeouts.
pub fn http_get(port: u16, path: &str) -> std::io::Result<HttpResponse> {
    http_request(port, "GET", path)
}

/// `METHOD path` on 127.0.0.1:port; 60 s timeouts.
pub fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<HttpResponse> {
    http_request_within(port, method, path, Duration::from_secs(60))
}

/// `METHOD path` on 127.0.0.1:port (HTTP/1.1, Connection: close; plain or chunked body), with
/// `timeout` for connecting, writing and each read.
pub fn http_request_within(
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    // A server may reset the connection right after its response (Connection: close with unread
    // request bytes); keep what arrived before the reset.
    if let Err(e) = s.read_to_end(&mut raw) {
        if e.kind() != std::io::ErrorKind::ConnectionReset || raw.is_empty() {
            return Err(e);
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body)?;
    }
    Ok(resp)
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::other("bad chunked body");
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(bad)?);
        data = data.get(size + 2..).ok_or_else(bad)?;
    }
}

// --- A seeded RNG -----------------------------------------------------------------------------

/// xorshift64*: a tiny deterministic RNG, so randomized tests reproduce from their seed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Uniform-ish in `0..n` for a `u64` bound (0 when `n` is 0).
    pub fn below_u64(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// `len` bytes (the high byte of each output).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

// --- Waiting ----------------------------------------------------------------------------------

/// Polls `f` every 200 ms until it returns `Some`, or gives `None` after `timeout` (for a
/// caller that says what was missing).
pub fn wait_for_within<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_for_within(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}
