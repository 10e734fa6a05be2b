//! The one vocabulary for what goheap can do with a process, shared by `goheap ps`, the agent's
//! `/processes`, its `goheap_agent_processes{state}` gauge and its state-change log lines.

use serde::Serialize;

use crate::error::Refusal;

/// What goheap can do with a process. Serialized (JSON, metric labels, logs) in kebab-case, as
/// [`ProcessState::as_str`] spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    /// Seen by the agent, not read yet.
    Found,
    /// Runtime globals located and `MemProfileRate` non-zero: profiles can be read.
    Readable,
    /// `runtime.MemProfileRate` is 0 (the linker's `disableMemoryProfiling`, or the program set it).
    ProfilingDisabled,
    /// No symbol table and no other evidence for the runtime's globals.
    NoSymbolTable,
    /// The kernel refused access (`CAP_SYS_PTRACE` over the target is needed).
    PermissionDenied,
    /// A Go version or binary goheap cannot read (or outside the tested range: tried with a warning).
    Unsupported,
    /// The last read failed for another reason (the detail says which); retried next cycle.
    Error,
    /// The agent runs with `--go-heap-profiler=disabled`: nothing is read.
    Disabled,
}

impl ProcessState {
    /// Every state, in gauge order.
    pub const ALL: [ProcessState; 8] = [
        ProcessState::Found,
        ProcessState::Readable,
        ProcessState::ProfilingDisabled,
        ProcessState::NoSymbolTable,
        ProcessState::PermissionDenied,
        ProcessState::Unsupported,
        ProcessState::Error,
        ProcessState::Disabled,
    ];

    /// The kebab-case name (`readable`, `profiling-disabled`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Found => "found",
            ProcessState::Readable => "readable",
            ProcessState::ProfilingDisabled => "profiling-disabled",
            ProcessState::NoSymbolTable => "no-symbol-table",
            ProcessState::PermissionDenied => "permission-denied",
            ProcessState::Unsupported => "unsupported",
            ProcessState::Error => "error",
            ProcessState::Disabled => "disabled",
        }
    }

    /// The state a refusal leaves a process in.
    pub fn of_refusal(r: &Refusal) -> ProcessState {
        match r {
            Refusal::ProfilingDisabled { .. } => ProcessState::ProfilingDisabled,
            Refusal::NoSymbols { .. } | Refusal::NoGoroutineSymbols { .. } => {
                ProcessState::NoSymbolTable
            }
            Refusal::PermissionDenied { .. } => ProcessState::PermissionDenied,
            Refusal::UnsupportedVersion { .. } => ProcessState::Unsupported,
            Refusal::NoSuchProcess { .. }
            | Refusal::ProcessExited { .. }
            | Refusal::Zombie { .. }
            | Refusal::NotGo { .. }
            | Refusal::Corrupt { .. } => ProcessState::Error,
        }
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_serde() {
        for s in ProcessState::ALL {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
    }
}
