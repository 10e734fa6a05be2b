//! A Go process seen from outside: its executable, where its runtime globals are, and one consistent
//! read of its memory-profile buckets.

use std::path::{Path, PathBuf};

use crate::binary::{BinaryError, GoBinary, RuntimeSymbols};
use crate::buckets::{self, BucketWalker, MemProfileRecord, RawBucket, WalkError, WalkLimits};
use crate::error::Refusal;
use crate::layout::RuntimeLayout;
use crate::maps::{split_dev, MemoryMap};
use crate::memory::{MemoryError, RemoteMemory};

/// The default `runtime.MemProfileRate` (one sample per 512 KiB).
pub const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// Static facts about a process's executable, shared by every process of the same binary.
#[derive(Debug)]
pub struct BinaryInfo {
    pub binary: GoBinary,
    pub layout: RuntimeLayout,
    pub symbols: Option<RuntimeSymbols>,
    /// Why `symbols` is `None`.
    pub symbols_error: Option<String>,
    /// The linker's `runtime.disableMemoryProfiling`, read from the file image.
    pub linker_disabled_profiling: Option<bool>,
    /// `.gopclntab` if locating the globals already parsed it (stripped binaries), so the
    /// symbolizer takes it instead of parsing the file again.
    pub parsed_pclntab: std::sync::Mutex<Option<crate::pclntab::Pclntab>>,
}

impl BinaryInfo {
    /// Inspects an executable: Go version, layout, runtime symbol addresses.
    pub fn inspect(binary: GoBinary, view: Option<&TargetView>) -> BinaryInfo {
        let layout = RuntimeLayout::for_version(&binary.go_version);
        let (symbols, symbols_error, parsed_pclntab) = match locate_symbols(&binary, view) {
            Ok((s, p)) => (Some(s), None, p),
            Err(e) => (None, Some(e), None),
        };
        let linker_disabled_profiling = symbols
            .as_ref()
            .and_then(|s| s.disable_memory_profiling)
            .and_then(|a| binary.read_initialized(a, 1))
            .map(|v| v != 0);
        BinaryInfo {
            binary,
            layout,
            symbols,
            symbols_error,
            linker_disabled_profiling,
            parsed_pclntab: std::sync::Mutex::new(parsed_pclntab),
        }
    }
}

/// Finds the runtime globals: `.symtab` first; for stripped binaries a separate debug file (by build
/// ID or `.gnu_debuglink`, looked up inside the target's root), then references in the runtime's
/// machine code (`.gopclntab` names the functions, their instructions name the globals).
fn locate_symbols(
    binary: &GoBinary,
    view: Option<&TargetView>,
) -> Result<(RuntimeSymbols, Option<crate::pclntab::Pclntab>), String> {
    match binary.runtime_symbols_from_symtab() {
        Ok(Some((s, _))) => return Ok((s, None)),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    let stripped = if binary.symtab_location().is_none() {
        "stripped: no .symtab"
    } else {
        ".symtab lacks runtime.mbuckets"
    };
    // SAFETY: read-only private mapping of an executable that is running (so it cannot be truncated:
    // ETXTBSY); only read inside this function.
    let map = unsafe { memmap2::Mmap::map(&binary.file) }
        .map_err(|e| format!("{stripped}; mapping the binary: {e}"))?;
    let exe_path = view
        .map(|v| v.exe_path.clone())
        .unwrap_or_else(|| binary.path.clone());
    let root = view.map(|v| v.root.as_path());
    if let Ok(Some(df)) = crate::debugfile::find_debug_file_for_image(&exe_path, &map, root) {
        if let Ok(Some(s)) = crate::binary::runtime_symbols_from_debug_file(&df.path) {
            return Ok((s, None));
        }
    }
    let pclntab = crate::pclntab::Pclntab::parse(&map)
        .map_err(|e| format!("{stripped}; no debug file; .gopclntab: {e}"))?;
    let found = crate::coderef::recover_runtime_addresses(&map, &PclntabRanges(&pclntab))
        .map_err(|e| format!("{stripped}; no debug file; code references: {e}"))?;
    tracing::debug!(exe = %exe_path.display(), evidence = ?found.evidence, "runtime globals recovered from code references");
    let symbols = RuntimeSymbols {
        mbuckets: found.mbuckets,
        mem_profile_rate: found.mem_profile_rate,
        disable_memory_profiling: found.disable_memory_profiling,
        mprof_cycle: found.mprof_cycle,
        method: crate::binary::LocateMethod::CodeReference,
    };
    Ok((symbols, Some(pclntab)))
}

/// Function ranges from `.gopclntab`, for code-reference recovery.
struct PclntabRanges<'a>(&'a crate::pclntab::Pclntab);

impl crate::coderef::FunctionRanges for PclntabRanges<'_> {
    fn function_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        self.0.func_by_name(name).map(|f| f.entry..f.end)
    }
}

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

/// `PF_KTHREAD` in the flags of `/proc/PID/stat` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

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
            std::io::ErrorKind::PermissionDenied => Err(Refusal::PermissionDenied {
                pid,
                what: exe.display().to_string(),
            }),
            std::io::ErrorKind::NotFound => {
                // Kernel threads have no exe; neither do user processes that are exiting (their
                // memory is already released) or zombies.
                match process_flags(&paths.root, pid) {
                    None => Err(Refusal::NoSuchProcess { pid }),
                    Some(flags) if flags & PF_KTHREAD != 0 => Err(Refusal::NotGo {
                        pid,
                        exe: "(no executable: kernel thread)".into(),
                    }),
                    Some(_) => Err(Refusal::ProcessExited { pid }),
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

/// Where `/proc/PID/exe` points (as the target sees it), for messages.
pub fn exe_target(paths: &ProcPaths) -> Option<String> {
    std::fs::read_link(paths.exe())
        .ok()
        .map(|p| p.display().to_string())
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

/// One read of a process's heap-profile state.
#[derive(Debug, Clone)]
pub struct HeapSnapshot {
    /// `runtime.MemProfileRate` as read from the target (the profile's period), bytes.
    pub mem_profile_rate: u64,
    /// Decoded `mProfCycle` (cycle number), if located.
    pub cycle: Option<u32>,
    pub buckets: Vec<RawBucket>,
    /// Set when the walk stopped early (partial result).
    pub warning: Option<String>,
    /// Set when the walk stopped at its deadline: where to continue (see [`crate::buckets::Walk`]).
    pub resume_at: Option<u64>,
}

impl HeapSnapshot {
    /// The records `runtime.MemProfile(p, true)` would return now.
    pub fn records(&self) -> Vec<MemProfileRecord> {
        buckets::memprofile_records(&self.buckets, self.cycle)
    }
}

/// Maps a memory error of process `pid` to a refusal.
pub fn memory_refusal(pid: i32, e: MemoryError, proc_root: &Path) -> Refusal {
    match e {
        MemoryError::ProcessGone(_) => Refusal::ProcessExited { pid },
        MemoryError::PermissionDenied(_) => Refusal::PermissionDenied {
            pid,
            what: format!("{}/{pid}/mem", proc_root.display()),
        },
        other => {
            if process_ended(proc_root, pid) {
                Refusal::ProcessExited { pid }
            } else {
                Refusal::Corrupt {
                    pid,
                    detail: other.to_string(),
                }
            }
        }
    }
}

/// Reads the bucket list once: MemProfileRate, mProfCycle, then the walk from `runtime.mbuckets`.
pub fn read_snapshot<M: RemoteMemory + ?Sized>(
    mem: &M,
    info: &BinaryInfo,
    addrs: &RuntimeAddresses,
    map: Option<&MemoryMap>,
    proc_root: &Path,
) -> Result<HeapSnapshot, Refusal> {
    read_snapshot_within(mem, info, addrs, map, proc_root, WalkLimits::default())
}

/// [`read_snapshot`] with explicit walk limits (e.g. a deadline: the snapshot is then partial and
/// says where to resume).
pub fn read_snapshot_within<M: RemoteMemory + ?Sized>(
    mem: &M,
    info: &BinaryInfo,
    addrs: &RuntimeAddresses,
    map: Option<&MemoryMap>,
    proc_root: &Path,
    limits: WalkLimits,
) -> Result<HeapSnapshot, Refusal> {
    let pid = mem.pid();
    let merr = |e| memory_refusal(pid, e, proc_root);
    let rate = mem.read_u64(addrs.mem_profile_rate).map_err(merr)?;
    check_mem_profile_rate(pid, rate, info)?;
    let cycle = match addrs.mprof_cycle {
        Some(a) => Some(mem.read_u32(a).map_err(merr)? >> 1),
        None => None,
    };
    let head = mem.read_u64(addrs.mbuckets).map_err(merr)?;
    let mut walker = BucketWalker::new(mem, info.layout, map);
    walker.limits = limits;
    let walk = walker
        .walk(head)
        .map_err(|e| walk_refusal(pid, e, info, proc_root))?;
    buckets::check_layout(&info.layout, &info.binary.go_version.raw, &walk.buckets)
        .map_err(|e| walk_refusal(pid, e, info, proc_root))?;
    Ok(HeapSnapshot {
        mem_profile_rate: rate,
        cycle,
        buckets: walk.buckets,
        warning: walk.warning,
        resume_at: walk.resume_at,
    })
}

/// Checks a `runtime.MemProfileRate` value read from process `pid`: 0 means profiling is disabled
/// (saying whether the linker did it); an address recovered from code references alone must also
/// hold a plausible sampling period (live validation).
pub fn check_mem_profile_rate(pid: i32, rate: u64, info: &BinaryInfo) -> Result<(), Refusal> {
    if rate == 0 || rate > i64::MAX as u64 {
        let reason = if info.linker_disabled_profiling == Some(true) {
            "the linker set runtime.disableMemoryProfiling because nothing references runtime.MemProfile".to_string()
        } else {
            format!("runtime.MemProfileRate is {}", rate as i64)
        };
        return Err(Refusal::ProfilingDisabled { pid, reason });
    }
    // Live validation of addresses recovered from code references (no symbol table vouches for
    // them): the rate must be a plausible sampling period and the head must lead to well-formed
    // memory-profile buckets (the bucket walk refuses a bad first bucket).
    let from_code = info
        .symbols
        .as_ref()
        .map(|s| !s.method.proven_by_symbols())
        .unwrap_or(false);
    if from_code && rate > 1 << 40 {
        return Err(Refusal::Corrupt {
            pid,
            detail: format!("the MemProfileRate address recovered from code references holds {rate}, not a sampling rate"),
        });
    }
    Ok(())
}

/// Maps a walk error to a refusal.
pub fn walk_refusal(pid: i32, e: WalkError, info: &BinaryInfo, proc_root: &Path) -> Refusal {
    match e {
        WalkError::Memory(m) => memory_refusal(pid, m, proc_root),
        WalkError::LayoutMismatch { .. } => Refusal::UnsupportedVersion {
            pid,
            version: info.binary.go_version.raw.clone(),
            detail: e.to_string(),
        },
        WalkError::BadBucket { .. } if !info.layout.tested => Refusal::UnsupportedVersion {
            pid,
            version: info.binary.go_version.raw.clone(),
            detail: e.to_string(),
        },
        WalkError::BadBucket { .. } => {
            if process_ended(proc_root, pid) {
                Refusal::ProcessExited { pid }
            } else {
                Refusal::Corrupt {
                    pid,
                    detail: e.to_string(),
                }
            }
        }
    }
}

/// `LocateMethod` name for displays.
pub fn method_name(info: &BinaryInfo) -> &'static str {
    info.symbols
        .as_ref()
        .map(|s| s.method.as_str())
        .unwrap_or("none")
}

/// A process opened for reading: its memory, its maps and where its runtime globals are.
pub struct OpenedProcess {
    pub mem: crate::memory::VmReader,
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
        let mem = crate::memory::VmReader::open(proc_root, pid)
            .map_err(|e| memory_refusal(pid, e, proc_root))?;
        let map = MemoryMap::read(proc_root, pid).map_err(|e| match e {
            crate::maps::MapsError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Refusal::PermissionDenied {
                    pid,
                    what: format!("{}/{pid}/maps", proc_root.display()),
                }
            }
            _ => Refusal::ProcessExited { pid },
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
        child.wait().unwrap();
    }
}
