//! Finding Go processes on the machine (`goheap ps`, the agent's scan of `/proc`).

use std::path::Path;

use serde::Serialize;

use crate::binary::{BinaryCache, BinaryInfo};
use crate::error::Refusal;
use crate::target::access::Denial;
use crate::target::memory::RemoteMemory;
use crate::target::open::{memory_refusal, OpenedProcess};
use crate::target::procfs::{self, ProcPaths};
pub use crate::target::state::ProcessState;

/// One row of `goheap ps`.
#[derive(Debug, Clone, Serialize)]
pub struct GoProcessSummary {
    pub pid: i32,
    /// Path of the executable as the process sees it (`/proc/PID/exe` link target).
    pub binary: String,
    pub go_version: Option<String>,
    pub state: ProcessState,
    /// How the runtime globals were located (`symtab`, `debug-file`, `code-reference`), if they were.
    pub method: Option<String>,
    /// Details for states other than readable.
    pub detail: Option<String>,
}

/// All numeric entries of `proc_root`, ascending.
pub fn list_pids(proc_root: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir(proc_root)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Classifies one process: its executable (inspected once per binary through `binaries`), then its
/// live `runtime.MemProfileRate` (one 8-byte read), which alone says whether profiling is on: the
/// program or force mode may have set it whatever the linker decided, and a program may set it to 0
/// itself. `None` if it is not a Go process or is gone.
pub fn summarize(
    binaries: &mut BinaryCache,
    proc_root: &Path,
    pid: i32,
) -> Option<GoProcessSummary> {
    let paths = ProcPaths::new(proc_root, pid);
    let binary_path = procfs::exe_target(&paths).unwrap_or_default();
    match binaries.get(&paths) {
        Ok(cached) => {
            let info = &cached.info;
            let rate = if info.symbols.is_some() {
                match live_mem_profile_rate(proc_root, pid, info) {
                    Ok(rate) => Some(rate),
                    Err(
                        Refusal::NoSuchProcess { .. }
                        | Refusal::ProcessExited { .. }
                        | Refusal::Zombie { .. },
                    ) => return None,
                    Err(r) => {
                        let mut row = summary_from_info(pid, binary_path, info, None);
                        row.state = ProcessState::of_refusal(&r);
                        row.detail = Some(r.to_string());
                        return Some(row);
                    }
                }
            } else {
                None
            };
            Some(summary_from_info(pid, binary_path, info, rate))
        }
        Err(Refusal::PermissionDenied { .. }) => Some(GoProcessSummary {
            pid,
            binary: if binary_path.is_empty() {
                format!("[{}]", procfs::comm(proc_root, pid).unwrap_or_default())
            } else {
                binary_path
            },
            go_version: None,
            state: ProcessState::PermissionDenied,
            method: None,
            detail: Some(Denial::diagnose(proc_root, pid).short().into()),
        }),
        Err(Refusal::UnsupportedVersion { detail, .. }) => Some(GoProcessSummary {
            pid,
            binary: binary_path,
            go_version: None,
            state: ProcessState::Unsupported,
            method: None,
            detail: Some(detail),
        }),
        Err(_) => None,
    }
}

/// Reads `runtime.MemProfileRate` of `pid` now.
pub fn live_mem_profile_rate(
    proc_root: &Path,
    pid: i32,
    info: &BinaryInfo,
) -> Result<u64, Refusal> {
    let p = OpenedProcess::open(proc_root, pid, info)?;
    p.mem
        .read_u64(p.addrs.mem_profile_rate)
        .map_err(|e| memory_refusal(pid, e, proc_root))
}

/// The `ps` row for a process whose binary was inspected and whose live `MemProfileRate` is `rate`
/// (`None`: not read, because the runtime's globals were not located).
pub fn summary_from_info(
    pid: i32,
    binary: String,
    info: &BinaryInfo,
    rate: Option<u64>,
) -> GoProcessSummary {
    let linker_disabled = info.linker_disabled_profiling == Some(true);
    let (state, detail) = if info.symbols.is_none() {
        (ProcessState::NoSymbolTable, info.symbols_error.clone())
    } else if rate == Some(0) {
        // The linker's flag, when set, is why the rate is 0; else the program set it.
        let why = if linker_disabled {
            "linker set runtime.disableMemoryProfiling"
        } else {
            "runtime.MemProfileRate is 0"
        };
        (ProcessState::ProfilingDisabled, Some(why.to_string()))
    } else if !info.layout.tested {
        (
            ProcessState::Unsupported,
            Some(format!(
                "{} is outside the tested range {}; goheap will try",
                info.binary.go_version_raw,
                crate::runtime::version::SUPPORTED_RANGE
            )),
        )
    } else if let (true, Some(rate)) = (linker_disabled, rate) {
        (
            ProcessState::Readable,
            Some(format!(
                "runtime.MemProfileRate set to {rate} at run time; the linker had set runtime.disableMemoryProfiling"
            )),
        )
    } else {
        (ProcessState::Readable, None)
    };
    GoProcessSummary {
        pid,
        binary,
        go_version: Some(info.binary.go_version_raw.clone()),
        state,
        method: info.symbols.as_ref().map(|s| s.method.as_str().to_string()),
        detail,
    }
}

/// Every Go process under `proc_root`, except goheap itself.
pub fn scan(proc_root: &Path) -> Vec<GoProcessSummary> {
    let me = std::process::id() as i32;
    let mut binaries = BinaryCache::default();
    list_pids(proc_root)
        .into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| summarize(&mut binaries, proc_root, p))
        .collect()
}
