//! Shared helpers of goheap's benchmarks: toolchain and fixture paths, CPU clocks, child processes.

pub mod daemons;
pub mod node;
/// The tests' support module (Go versions, cache paths, the HTTP client), shared by `#[path]`.
#[path = "../../agent/tests/support/mod.rs"]
pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Go toolchain the benchmarks build and run with.
pub const GO_VERSION: &str = support::GO_1_23;

pub use support::cache_dir;

/// The `go` command of [`GO_VERSION`], or an error telling to run the installer.
pub fn go_tool() -> anyhow::Result<PathBuf> {
    go_tool_of(GO_VERSION)
}

/// The `go` command of Go `version` (as cached by fixtures/install-toolchains.sh).
pub fn go_tool_of(version: &str) -> anyhow::Result<PathBuf> {
    let p = cache_dir().join("go").join(version).join("goroot/bin/go");
    anyhow::ensure!(
        p.exists(),
        "Go {version} missing at {}: run fixtures/install-toolchains.sh",
        p.display()
    );
    Ok(p)
}

/// A built fixture program, or an error telling to run fixtures/build.sh.
pub fn fixture(program: &str) -> anyhow::Result<PathBuf> {
    let p = cache_dir()
        .join("fixtures")
        .join(program)
        .join(GO_VERSION)
        .join("default")
        .join(program);
    anyhow::ensure!(
        p.exists(),
        "fixture {} missing: run fixtures/build.sh",
        p.display()
    );
    Ok(p)
}

/// Builds the Go program in `benches/<name>` into `out_dir` (offline, stdlib only).
pub fn build_go_program(name: &str, out_dir: &Path) -> anyhow::Result<PathBuf> {
    build_go_program_with(name, out_dir, GO_VERSION)
}

/// [`build_go_program`] with the toolchain of Go `version`.
pub fn build_go_program_with(name: &str, out_dir: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let out = out_dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(out_dir)?;
    let status = Command::new(go_tool_of(version)?)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", cache_dir().join(format!("gocache-{version}")))
        .env("GOPATH", cache_dir().join("gopath"))
        .status()?;
    anyhow::ensure!(status.success(), "go build of {name} failed");
    Ok(out)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (quiet) and waits up to `timeout` for `ready` to exist.
pub fn spawn_ready(mut cmd: Command, ready: &Path, timeout: Duration) -> anyhow::Result<Proc> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut p = Proc(child);
    let t0 = Instant::now();
    while !ready.exists() {
        if let Some(st) = p.0.try_wait()? {
            anyhow::bail!("{cmd:?} exited with {st}");
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "{cmd:?} not ready after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(p)
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!("goheap-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
