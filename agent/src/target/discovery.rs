//! Finding Go processes on the machine (`goheap ps`, the agent's scan of `/proc`).

use std::path::Path;

use serde::Serialize;

use crate::binary::{BinaryCache, BinaryInfo};
use crate::error::Refusal;
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

/// Classifies one process without reading its memory (only its executable, inspected once per
/// binary through `binaries`). `None` if it is not a Go process or is gone.
pub fn summarize(
    binaries: &mut BinaryCache,
    proc_root: &Path,
    pid: i32,
) -> Option<GoProcessSummary> {
    let paths = ProcPaths::new(proc_root, pid);
    let binary_path = procfs::exe_target(&paths).unwrap_or_default();
    match binaries.get(&paths) {
        Ok(cached) => Some(summary_from_info(pid, binary_path, &cached.info)),
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
            detail: Some("CAP_SYS_PTRACE needed to read /proc/PID/exe".into()),
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

/// The `ps` row for a process whose binary was inspected.
pub fn summary_from_info(pid: i32, binary: String, info: &BinaryInfo) -> GoProcessSummary {
    let (state, detail) = if info.symbols.is_none() {
        (ProcessState::NoSymbolTable, info.symbols_error.clone())
    } else if info.linker_disabled_profiling == Some(true) {
        (
            ProcessState::ProfilingDisabled,
            Some("linker set runtime.disableMemoryProfiling".into()),
        )
    } else if !info.layout.tested {
        (
            ProcessState::Unsupported,
            Some(format!(
                "{} is outside the tested range {}; goheap will try",
                info.binary.go_version_raw,
                crate::runtime::version::SUPPORTED_RANGE
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
