//! Opening a process for reading: its executable (with failures mapped to refusals), its maps, the
//! PIE load bias, and the runtime addresses of the globals goheap reads.

use std::path::Path;

use crate::binary::{BinaryError, BinaryInfo, GoBinary, RuntimeSymbols};
use crate::error::Refusal;
use crate::target::access::Denial;
use crate::target::maps::{split_dev, MemoryMap};
use crate::target::memory::MemoryError;
use crate::target::procfs::{
    exe_target, process_ended, process_flags, zombie_parent, ProcPaths, PF_KTHREAD,
};

/// Opens the executable of `pid` and maps failures to refusals.
pub fn open_binary(paths: &ProcPaths) -> Result<GoBinary, Refusal> {
    let pid = paths.pid;
    if !paths.dir().exists() {
        return Err(Refusal::NoSuchProcess { pid });
    }
    let exe = paths.exe();
    match GoBinary::open(&exe) {
        Ok(b) => Ok(b),
        Err(BinaryError::Io { source, .. }) => match source.kind() {
            std::io::ErrorKind::PermissionDenied => Err(permission_denied(
                &paths.root,
                pid,
                exe.display().to_string(),
            )),
            std::io::ErrorKind::NotFound => {
                // Kernel threads have no exe; neither do user processes that are exiting (their
                // memory is already released) or zombies.
                match process_flags(&paths.root, pid) {
                    None => Err(Refusal::NoSuchProcess { pid }),
                    Some(flags) if flags & PF_KTHREAD != 0 => Err(Refusal::NotGo {
                        pid,
                        exe: "(no executable: kernel thread)".into(),
                    }),
                    Some(_) => Err(exited(&paths.root, pid)),
                }
            }
            _ => Err(Refusal::NotGo {
                pid,
                exe: format!("{} ({source})", exe.display()),
            }),
        },
        Err(
            e @ (BinaryError::NotGo(_)
            | BinaryError::NotElf(..)
            | BinaryError::Not64Bit(_)
            | BinaryError::TooManySections(_)),
        ) => Err(Refusal::NotGo {
            pid,
            exe: exe_target(paths).unwrap_or_else(|| e.to_string()),
        }),
        Err(e @ BinaryError::BuildInfo(..)) => Err(Refusal::UnsupportedVersion {
            pid,
            version: "unknown".into(),
            detail: e.to_string(),
        }),
        Err(e @ BinaryError::Symtab(..)) => Err(Refusal::NoSymbols {
            exe: exe.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

/// Where a process's globals are at run time, for one read.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeAddresses {
    /// Runtime address = ELF virtual address + bias.
    pub bias: u64,
    pub mbuckets: u64,
    pub mem_profile_rate: u64,
    pub mprof_cycle: Option<u64>,
}

impl RuntimeAddresses {
    pub fn new(symbols: &RuntimeSymbols, bias: u64) -> RuntimeAddresses {
        RuntimeAddresses {
            bias,
            mbuckets: symbols.mbuckets.wrapping_add(bias),
            mem_profile_rate: symbols.mem_profile_rate.wrapping_add(bias),
            mprof_cycle: symbols.mprof_cycle.map(|a| a.wrapping_add(bias)),
        }
    }
}

/// Computes the load bias of `info`'s executable in the process from its maps.
pub fn load_bias(info: &BinaryInfo, map: &MemoryMap) -> Option<u64> {
    if !info.binary.is_pie {
        return Some(0);
    }
    let dev = split_dev(info.binary.identity.dev);
    map.load_bias(dev, info.binary.identity.ino, &info.binary.segments)
}

/// The refusal for access to `what` of `pid` denied by the kernel, saying why (see
/// [`Denial::diagnose`]).
pub fn permission_denied(proc_root: &Path, pid: i32, what: String) -> Refusal {
    Refusal::PermissionDenied {
        pid,
        what,
        why: Denial::diagnose(proc_root, pid).advice(pid),
    }
}

/// The refusal for a process that has exited: [`Refusal::Zombie`] while its parent has not reaped
/// it, else [`Refusal::ProcessExited`].
pub fn exited(proc_root: &Path, pid: i32) -> Refusal {
    match zombie_parent(proc_root, pid) {
        Some(parent) => Refusal::Zombie { pid, parent },
        None => Refusal::ProcessExited { pid },
    }
}

/// Maps a memory error of process `pid` to a refusal.
pub fn memory_refusal(pid: i32, e: MemoryError, proc_root: &Path) -> Refusal {
    match e {
        MemoryError::ProcessGone(_) => exited(proc_root, pid),
        MemoryError::PermissionDenied(_) => {
            permission_denied(proc_root, pid, format!("{}/{pid}/mem", proc_root.display()))
        }
        other => {
            if process_ended(proc_root, pid) {
                exited(proc_root, pid)
            } else {
                Refusal::Corrupt {
                    pid,
                    detail: other.to_string(),
                }
            }
        }
    }
}

/// A process opened for reading: its memory, its maps and where its runtime globals are.
pub struct OpenedProcess {
    pub mem: crate::target::memory::VmReader,
    pub map: MemoryMap,
    pub addrs: RuntimeAddresses,
}

impl OpenedProcess {
    /// Opens `pid` (running `info`'s binary) for reading: memory reader, maps, PIE load bias.
    pub fn open(proc_root: &Path, pid: i32, info: &BinaryInfo) -> Result<OpenedProcess, Refusal> {
        let symbols = info.symbols.as_ref().ok_or_else(|| Refusal::NoSymbols {
            exe: info.binary.path.display().to_string(),
            detail: info.symbols_error.clone().unwrap_or_default(),
        })?;
        let mem = crate::target::memory::VmReader::open(proc_root, pid)
            .map_err(|e| memory_refusal(pid, e, proc_root))?;
        let map = MemoryMap::read(proc_root, pid).map_err(|e| match e {
            crate::target::maps::MapsError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                permission_denied(
                    proc_root,
                    pid,
                    format!("{}/{pid}/maps", proc_root.display()),
                )
            }
            _ => exited(proc_root, pid),
        })?;
        let bias = load_bias(info, &map).ok_or_else(|| Refusal::Corrupt {
            pid,
            detail: "the executable's mapping is not in /proc/PID/maps (cannot compute the PIE load bias)".into(),
        })?;
        Ok(OpenedProcess {
            mem,
            map,
            addrs: RuntimeAddresses::new(symbols, bias),
        })
    }
}
