//! `./demo.sh` on a machine that has never seen the project (issue #8 §1).
//!
//! The demo runs to completion in a private mount namespace (`unshare -m`) where everything it does
//! not install itself is hidden: an empty tmpfs over the Go toolchains of this machine
//! (`/usr/local/go`, Debian's `/usr/lib/go-1.19`), over `~/.cache/goheap`, Go's own caches and
//! settings (`~/.cache/go-build`, `~/.config/go`, `~/go`) and `~/.pyenv`;
//! the commands of the Debian packages `./test.sh` installs and the demo does not (prometheus,
//! strace, libcap2-bin, chromium, zsh, fish) are covered with an empty non-executable file. It gets a fresh
//! `GOHEAP_CACHE` in a temp dir, Debian's default PATH plus the directory of `cargo`, and an
//! environment with nothing of the caller's but HOME, locale, and network settings (proxies,
//! certificates, registry configuration). So it installs its Go toolchain from PyPI into the empty
//! cache (pip's own download cache may be warm), builds the fixture with it, and builds goheap
//! with `cargo build --release` in this workspace's target dir (incremental after the first run).
//!
//! Checked: it exits 0, prints every `== command` section, `go tool pprof -top` lists the
//! fixture's allocating functions, `goheap-demo.pb.gz` is written into the directory the demo was
//! started from (a temp dir, so nothing lands in the repository), and only the asked-for Go
//! toolchain is in the cache. A second test: without cargo on PATH the demo stops at once with a
//! one-line error, before installing anything.
//!
//! Needs root (mount namespaces, and apt if a package the demo needs is missing) and PyPI.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Go version the demo profiles by default (its `GOHEAP_DEMO_GO_VERSION`).
const DEMO_GO_VERSION: &str = "1.24.11";
/// Debian packages `./test.sh` installs that the demo does not: their commands are hidden.
const NOT_DEMO_PACKAGES: &[&str] = &[
    "golang-1.19-go",
    "prometheus",
    "strace",
    "libcap2-bin",
    "chromium",
    "zsh",
    "fish",
];
/// Debian's default PATH for root.
const DEBIAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Upper bound of one cold demo run (pip download, fixture builds, a cold release build).
const TIMEOUT: Duration = Duration::from_secs(45 * 60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The target dir the tests were built in (`<target>/<profile>/goheap`), so the demo's release
/// build is shared with earlier runs instead of starting cold.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_goheap"))
        .parent()
        .and_then(Path::parent)
        .expect("target dir of the goheap binary")
        .to_path_buf()
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("goheap-fresh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The caller's environment reduced to what a fresh machine has too: HOME, locale, and how to
/// reach the package registries (proxies, CA certificates, pip/cargo/rustup settings).
fn fresh_env(cmd: &mut Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        let keep = matches!(
            name,
            "HOME"
                | "USER"
                | "LOGNAME"
                | "LANG"
                | "TERM"
                | "SSL_CERT_FILE"
                | "SSL_CERT_DIR"
                | "REQUESTS_CA_BUNDLE"
                | "CURL_CA_BUNDLE"
                | "CARGO_HOME"
        ) || name.starts_with("LC_")
            || name.to_ascii_lowercase().ends_with("_proxy")
            || name.starts_with("PIP_")
            || name.starts_with("RUSTUP_")
            || name.starts_with("CARGO_HTTP_")
            || name.starts_with("CARGO_NET_")
            || name.starts_with("CARGO_REGISTRIES_")
            || name.starts_with("CARGO_REGISTRY_");
        if keep {
            cmd.env(k, v);
        }
    }
}

/// Directory of the `cargo` found on the caller's PATH (rustup's `~/.cargo/bin` on a fresh machine).
fn cargo_dir() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| {
            std::fs::metadata(d.join("cargo"))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .expect("cargo on PATH")
}

/// Paths to hide: directories get an empty tmpfs, files an empty non-executable file.
fn hidden_paths() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let home = home();
    let dirs: Vec<PathBuf> = [
        PathBuf::from("/usr/local/go"),
        PathBuf::from("/usr/lib/go-1.19"),
        home.join(".cache/goheap"),
        home.join(".cache/go-build"),
        home.join(".config/go"),
        home.join("go"),
        home.join(".pyenv"),
    ]
    .into_iter()
    .filter(|d| d.is_dir())
    .collect();
    let mut files = Vec::new();
    for pkg in NOT_DEMO_PACKAGES {
        let out = Command::new("dpkg").args(["-L", pkg]).output();
        let Ok(out) = out else { continue };
        if !out.status.success() {
            continue; // not installed here: nothing to hide
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = Path::new(line);
            let on_path = ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"]
                .iter()
                .any(|d| line.starts_with(d));
            if on_path && p.is_file() && !dirs.iter().any(|d| p.starts_with(d)) {
                files.push(p.to_path_buf());
            }
        }
    }
    (dirs, files)
}

fn show(out: &Output) -> String {
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    };
    format!(
        "exit: {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    )
}

#[test]
fn demo_runs_on_a_fresh_machine() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (unshare -m, mount)"
    );
    let tmp = TempDir::new("demo");
    let cache = tmp.0.join("cache");
    let out_dir = tmp.0.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let empty = tmp.0.join("hidden");
    std::fs::write(&empty, b"").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (dirs, files) = hidden_paths();

    // Inside the namespace: make every mount private (nothing propagates back), hide, run the demo.
    let script = r#"set -eu
mount --make-rprivate /
empty=$1; shift
while [ "$1" != -- ]; do mount -t tmpfs -o size=1m,mode=0755 goheap-hidden "$1"; shift; done; shift
while [ "$1" != -- ]; do mount --bind "$empty" "$1"; shift; done; shift
exec bash "$@"
"#;
    let mut cmd = Command::new("timeout");
    fresh_env(&mut cmd);
    cmd.arg("--kill-after=30")
        .arg(TIMEOUT.as_secs().to_string())
        .args(["unshare", "-m", "--propagation", "private", "bash", "-c"])
        .arg(script)
        .arg("hide")
        .arg(&empty)
        .args(&dirs)
        .arg("--")
        .args(&files)
        .arg("--")
        .arg(repo_root().join("demo.sh"))
        .current_dir(&out_dir)
        .env("PATH", {
            let mut p = OsString::from(cargo_dir());
            p.push(":");
            p.push(DEBIAN_PATH);
            p
        })
        .env("GOHEAP_CACHE", &cache)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never");
    let t0 = Instant::now();
    let out = cmd.output().expect("running unshare");
    let secs = t0.elapsed().as_secs();
    eprintln!(
        "demo on a fresh machine: {secs} s (hidden: {dirs:?}, {} package commands)",
        files.len()
    );
    let text = show(&out);
    eprintln!("{text}");
    assert!(out.status.success(), "demo.sh failed after {secs} s");

    let stdout = String::from_utf8_lossy(&out.stdout);
    for section in [
        "== install",
        "== build",
        "== goheap ps",
        "== goheap profile",
        "== go tool pprof -top",
        "== goheap profile --pid",
        "== goheap record",
    ] {
        assert!(stdout.contains(section), "no `{section}` section\n{text}");
    }
    // `go tool pprof -top`: the header and the fixture's functions as rows of the top list.
    let pprof = &stdout[stdout.find("== go tool pprof").unwrap()..];
    assert!(
        pprof.contains("Type: inuse_space") && pprof.contains("flat  flat%   sum%"),
        "no pprof top list\n{text}"
    );
    let rows = pprof
        .lines()
        .filter(|l| l.contains('%') && l.contains(" main."))
        .count();
    assert!(
        rows >= 3,
        "the top list names fewer than 3 fixture functions\n{text}"
    );
    // goheap's own summary (stderr) saw the fixture.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("go{DEMO_GO_VERSION}")) && stderr.contains("symbols via symtab"),
        "no goheap profile summary\n{text}"
    );

    let profile = std::fs::read(out_dir.join("goheap-demo.pb.gz")).unwrap_or_else(|e| {
        panic!("goheap-demo.pb.gz not written into the demo's start directory: {e}\n{text}")
    });
    assert!(
        profile.len() > 100 && profile.starts_with(&[0x1f, 0x8b]),
        "goheap-demo.pb.gz is not a gzipped profile ({} bytes)",
        profile.len()
    );
    // The two flame graphs: the heap in use, and what the allocating program allocated during
    // the recorded window (its two allocating functions).
    for (name, functions) in [
        ("goheap-demo.svg", &["main."][..]),
        (
            "goheap-demo-allocs.svg",
            &["main.makeRecords", "main.makeBuffer"][..],
        ),
    ] {
        let svg = std::fs::read_to_string(out_dir.join(name))
            .unwrap_or_else(|e| panic!("{name} not written: {e}\n{text}"));
        assert!(svg.contains("<svg"), "{name} is not an SVG");
        for f in functions {
            assert!(svg.contains(f), "{name} has no {f} frame");
        }
    }
    let toolchains: Vec<String> = std::fs::read_dir(cache.join("go"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        toolchains,
        [DEMO_GO_VERSION],
        "the demo installed other Go toolchains than its own"
    );
}

#[test]
fn demo_without_cargo_stops_at_once() {
    let tmp = TempDir::new("nocargo");
    let cache = tmp.0.join("cache");
    let mut cmd = Command::new("bash");
    fresh_env(&mut cmd);
    let t0 = Instant::now();
    let out = cmd
        .arg(repo_root().join("demo.sh"))
        .current_dir(&tmp.0)
        .env("PATH", DEBIAN_PATH)
        .env("GOHEAP_CACHE", &cache)
        .output()
        .expect("running demo.sh");
    let text = show(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "not a one-line error\n{text}");
    assert!(stderr.contains("cargo not found on PATH"), "{text}");
    assert!(
        !cache.exists(),
        "demo.sh installed things before finding cargo missing"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{text}");
}
