//! Placing test processes in cgroup v2 paths shaped like a container runtime's (containerd,
//! CRI-O, Docker, the kubelet's cgroupfs driver), and ids shaped like theirs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host).
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            (post.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount (the labels test places processes in cgroup v2 paths)")
}

/// Cgroup directories this test uses, removed (deepest first) on drop when no other test of the
/// process uses them any more and a test of the process created them.
///
/// Tests run in parallel share parents such as `kubepods.slice`: every directory is counted in a
/// process-wide table (under its lock, so one test's `mkdir` never races another's `rmdir`).
pub struct Cgroups {
    pub root: PathBuf,
    /// Directories this value holds a count on, outermost first.
    held: Vec<PathBuf>,
}

/// Per directory: how many [`Cgroups`] hold it, and whether a test of this process created it.
fn held() -> &'static Mutex<BTreeMap<PathBuf, (usize, bool)>> {
    static HELD: OnceLock<Mutex<BTreeMap<PathBuf, (usize, bool)>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

impl Cgroups {
    /// Nothing held yet, under the cgroup v2 mount.
    pub fn new() -> Cgroups {
        Cgroups {
            root: cgroup2_mount(),
            held: Vec::new(),
        }
    }

    /// Creates `rel` under the cgroup v2 root (the components that do not exist yet).
    pub fn make(&mut self, rel: &str) -> PathBuf {
        let mut table = held().lock().unwrap_or_else(|e| e.into_inner());
        let mut dir = self.root.clone();
        for comp in rel.split('/') {
            dir.push(comp);
            let entry = table.entry(dir.clone()).or_insert((0, false));
            if entry.0 == 0 {
                entry.1 = match std::fs::create_dir(&dir) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                    Err(e) => panic!("mkdir {}: {e}", dir.display()),
                };
            }
            entry.0 += 1;
            self.held.push(dir.clone());
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let mut table = held().lock().unwrap_or_else(|e| e.into_inner());
        for dir in self.held.iter().rev() {
            let Some(entry) = table.get_mut(dir) else {
                continue;
            };
            entry.0 -= 1;
            if entry.0 > 0 {
                continue;
            }
            let created = entry.1;
            table.remove(dir);
            if !created {
                continue;
            }
            // A cgroup is removable once its last process has been reaped.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Makes the child join the cgroup `dir` before it executes the program (writing 0 to
/// `cgroup.procs` moves the writer), so the process is in place before anything can see it.
pub fn join_cgroup_at_exec(cmd: &mut Command, dir: &Path) {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    // SAFETY: between fork and exec the hook only calls async-signal-safe functions (open, write,
    // close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
}

/// 64 hex digits (a container id) and a UUID (a pod uid), distinct per run and per `n`.
pub fn ids(n: u64) -> (String, String) {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32)
        ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let id = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        next(),
        next(),
        next(),
        next()
    );
    let u = format!("{:016x}{:016x}", next(), next());
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &u[0..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..32]
    );
    (id, uid)
}
