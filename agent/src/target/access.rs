//! Why the kernel refused goheap access to a process, in words the user can act on.
//!
//! The kernel's `ptrace_may_access()` decides (for `/proc/PID/exe`, `/proc/PID/mem` and
//! `process_vm_readv`): a process of another user needs `CAP_SYS_PTRACE` *in the target's user
//! namespace* (or an ancestor of it), Yama's `ptrace_scope` may forbid more, and a security module
//! may veto. So "run as root" is not always the answer: the root of a user namespace has no
//! capabilities over processes outside it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The inode of the initial (host's) user namespace (`PROC_USER_INIT_INO` in the kernel's
/// `include/linux/proc_ns.h`, a fixed value).
pub const INIT_USER_NS_INODE: u64 = 0xEFFF_FFFD;
/// `CAP_SYS_PTRACE`.
const CAP_SYS_PTRACE: u32 = 19;

/// Why access to a process was denied, as far as goheap can tell from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// goheap lacks `CAP_SYS_PTRACE` (as a normal user, or as a root whose capability was dropped).
    NoPtraceCapability { root: bool },
    /// goheap has `CAP_SYS_PTRACE`, but only in its own user namespace, which is not the host's:
    /// its capabilities do not reach processes outside it. `target_ns` when it could be read.
    OwnUserNamespace { ours: u64, target_ns: Option<u64> },
    /// `kernel.yama.ptrace_scope` is 3: nobody may ptrace (or read the memory of) other processes.
    YamaNoAttach,
    /// Root with `CAP_SYS_PTRACE` in the host's user namespace and still refused: a security
    /// module (AppArmor, SELinux, Landlock, …) or a kernel policy.
    Policy,
}

impl Denial {
    /// Looks at goheap's own credentials and namespaces (and what can be seen of the target's).
    pub fn diagnose(proc_root: &Path, pid: i32) -> Denial {
        let root = nix::unistd::geteuid().is_root();
        let ptrace = own_effective_caps().is_some_and(|c| c & (1 << CAP_SYS_PTRACE) != 0);
        if !ptrace {
            return Denial::NoPtraceCapability { root };
        }
        if let Some(ours) = user_ns_inode(Path::new("/proc/self")) {
            if ours != INIT_USER_NS_INODE {
                let target_ns = user_ns_inode(&proc_root.join(pid.to_string()));
                return Denial::OwnUserNamespace { ours, target_ns };
            }
        }
        let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok();
        if yama.as_deref().map(str::trim) == Some("3") {
            return Denial::YamaNoAttach;
        }
        Denial::Policy
    }

    /// What to tell the user, after "permission denied reading process N (what): ".
    pub fn advice(&self, pid: i32) -> String {
        match self {
            Denial::NoPtraceCapability { root: false } => "goheap needs CAP_SYS_PTRACE over the target (run as root, or grant it: `sudo setcap cap_sys_ptrace+ep $(which goheap)`) and, for containers, the host PID namespace".into(),
            Denial::NoPtraceCapability { root: true } => "goheap runs as root but without CAP_SYS_PTRACE (dropped, e.g. by a container runtime: add the SYS_PTRACE capability), which reading another process needs".into(),
            Denial::OwnUserNamespace { ours, target_ns } => {
                let theirs = match target_ns {
                    Some(t) if t != ours => format!(" (user:[{t}])"),
                    _ => String::new(),
                };
                format!("root is not enough here: goheap runs in user namespace user:[{ours}], not the host's, and the root of a user namespace has no capabilities over process {pid}, which is in another user namespace{theirs}; run goheap in the host's user namespace (not under `unshare --user` or in a user-namespaced container)")
            }
            Denial::YamaNoAttach => "kernel.yama.ptrace_scope is 3, which forbids reading other processes' memory to everyone, root included (it can only be lowered by a reboot)".into(),
            Denial::Policy => "goheap has CAP_SYS_PTRACE in the host's user namespace, so a security module (AppArmor, SELinux, Landlock) or another kernel policy refused; check its log for goheap".into(),
        }
    }

    /// A few words for `goheap ps` (its detail column).
    pub fn short(&self) -> &'static str {
        match self {
            Denial::NoPtraceCapability { .. } => "CAP_SYS_PTRACE needed to read /proc/PID/exe",
            Denial::OwnUserNamespace { .. } => {
                "in another user namespace: goheap is root only of its own, not the host's"
            }
            Denial::YamaNoAttach => "kernel.yama.ptrace_scope=3 forbids it",
            Denial::Policy => {
                "refused by a security module or kernel policy, despite CAP_SYS_PTRACE"
            }
        }
    }
}

/// `CapEff` of goheap itself.
fn own_effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The inode of the user namespace of the process at `proc_dir` (`/proc/PID`), if visible.
fn user_ns_inode(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/user"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_the_cause() {
        let ns = Denial::OwnUserNamespace {
            ours: 4026532100,
            target_ns: None,
        };
        let a = ns.advice(7);
        assert!(
            a.contains("user:[4026532100]") && a.contains("process 7"),
            "{a}"
        );
        assert!(!a.contains("setcap"), "{a}");
        let user = Denial::NoPtraceCapability { root: false }.advice(7);
        assert!(user.contains("setcap"), "{user}");
    }

    #[test]
    fn own_credentials_are_readable() {
        // The test process can always see its own namespace and capabilities.
        assert!(own_effective_caps().is_some());
        assert!(user_ns_inode(Path::new("/proc/self")).is_some());
        // Access to oneself is never denied; whatever the diagnosis, it has advice.
        let d = Denial::diagnose(Path::new("/proc"), std::process::id() as i32);
        assert!(!d.advice(1).is_empty() && !d.short().is_empty());
    }
}
