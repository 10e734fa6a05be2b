//! The process from outside through procfs: its paths, liveness, identity across pid reuse, name,
//! and the executable as the process sees it.

use std::path::{Path, PathBuf};

/// How the target sees its own executable: the path `/proc/PID/exe` points to, and its root
/// directory (`/proc/PID/root`), to find debug files inside containers.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub exe_path: PathBuf,
    pub root: PathBuf,
}

impl TargetView {
    pub fn of(paths: &ProcPaths) -> Option<TargetView> {
        Some(TargetView {
            exe_path: std::fs::read_link(paths.exe()).ok()?,
            root: paths.dir().join("root"),
        })
    }
}

/// Proc-fs paths of one process.
#[derive(Debug, Clone)]
pub struct ProcPaths {
    pub root: PathBuf,
    pub pid: i32,
}

impl ProcPaths {
    pub fn new(proc_root: &Path, pid: i32) -> ProcPaths {
        ProcPaths {
            root: proc_root.to_path_buf(),
            pid,
        }
    }
    pub fn dir(&self) -> PathBuf {
        self.root.join(self.pid.to_string())
    }
    pub fn exe(&self) -> PathBuf {
        self.dir().join("exe")
    }
}

/// Process start time in clock ticks since boot (field 22 of `/proc/PID/stat`): with the pid it
/// identifies a process across pid reuse.
pub fn start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is gone, a zombie, or exiting (`PF_EXITING`): a failed read of such a process is
/// its exit, not corrupt data.
pub fn process_ended(proc_root: &Path, pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) else {
        return true;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return true;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0
}

/// The parent of `pid` if `pid` is a zombie (state `Z` in `/proc/PID/stat`: it exited and its
/// parent has not reaped it yet), `None` if it is not one or is gone.
pub fn zombie_parent(proc_root: &Path, pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if fields.next()? != "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// `PF_KTHREAD` in the flags of `/proc/PID/stat` (include/linux/sched.h).
pub const PF_KTHREAD: u64 = 0x0020_0000;

/// The kernel's task flags (field 9 of `/proc/PID/stat`), `None` if the process is gone.
pub fn process_flags(proc_root: &Path, pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(6)?
        .parse()
        .ok()
}

/// The short command name (`/proc/PID/comm`).
pub fn comm(proc_root: &Path, pid: i32) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Where `/proc/PID/exe` points (as the target sees it), for messages.
pub fn exe_target(paths: &ProcPaths) -> Option<String> {
    std::fs::read_link(paths.exe())
        .ok()
        .map(|p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_and_identity_from_proc() {
        let root = Path::new("/proc");
        let me = std::process::id() as i32;
        assert!(!process_ended(root, me));
        assert!(
            process_ended(root, 1 << 23),
            "a pid above pid_max cannot exist"
        );
        assert!(start_time(root, me).is_some());
        assert_eq!(process_flags(root, me).map(|f| f & PF_KTHREAD), Some(0));
        // A zombie: a child that exited and was not reaped yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let t0 = std::time::Instant::now();
        while !process_ended(root, pid) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            root.join(pid.to_string()).exists(),
            "still a zombie, not reaped"
        );
        assert_eq!(zombie_parent(root, pid), Some(me));
        assert_eq!(zombie_parent(root, me), None);
        child.wait().unwrap();
        assert_eq!(zombie_parent(root, pid), None);
    }
}
