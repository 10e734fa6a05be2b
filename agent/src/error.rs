//! Refusals and failures, each with its own process exit code and one line telling the user what to do.

use std::fmt;

/// Why goheap could not produce a profile for a process.
///
/// Every variant maps to a distinct exit code (see [`Refusal::exit_code`]) documented in `--help` and the
/// README, except [`Refusal::Zombie`]: a more precise [`Refusal::ProcessExited`], with its code 9. The `Display` text is the one line printed on stderr.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No process with this pid exists (or it exited before we looked).
    #[error("no such process: pid {pid} (check the pid with `goheap ps`)")]
    NoSuchProcess { pid: i32 },
    /// The process exited while we were reading it.
    #[error("process {pid} exited while goheap was reading it; nothing to profile")]
    ProcessExited { pid: i32 },
    /// The process is a zombie: it exited, and its parent has not reaped it (`wait`) yet. It shares
    /// exit code 9 with [`Refusal::ProcessExited`] (the outcome is the same: nothing left to read).
    #[error("process {pid} is a zombie: it exited and its parent (pid {parent}) has not reaped it yet; nothing to profile")]
    Zombie { pid: i32, parent: i32 },
    /// The kernel refused access to the process's memory or executable; `why` says why as far as
    /// goheap can tell, and what to do ([`crate::target::access::Denial`]).
    #[error("permission denied reading process {pid} ({what}): {why}")]
    PermissionDenied { pid: i32, what: String, why: String },
    /// The executable is not a Go program (no `.go.buildinfo`).
    #[error(
        "process {pid} ({exe}) is not a Go program (its executable has no .go.buildinfo section)"
    )]
    NotGo { pid: i32, exe: String },
    /// The executable is Go but the runtime's globals could not be located.
    #[error("cannot locate runtime.mbuckets in {exe}: the binary has no symbol table ({detail}); install its debug file under /usr/lib/debug/.build-id, or rebuild without -ldflags=-s")]
    NoSymbols { exe: String, detail: String },
    /// The goroutine globals (`runtime.allgs`, `runtime.allglen`) could not be located.
    #[error("cannot locate runtime.allgs in {exe} ({detail}); goroutines need the binary's symbol table: install its debug file under /usr/lib/debug/.build-id, or rebuild without -ldflags=-s")]
    NoGoroutineSymbols { exe: String, detail: String },
    /// The linker disabled memory profiling, or the program set MemProfileRate to 0. `force_works`:
    /// the address of `runtime.MemProfileRate` is proven by a symbol table, so force mode may write
    /// there (it never writes at an address recovered from code references alone).
    #[error("heap profiling is disabled in process {pid} ({reason}); {}", profiling_remedy(*.force_works))]
    ProfilingDisabled {
        pid: i32,
        reason: String,
        force_works: bool,
    },
    /// The Go version is outside what goheap understands and the memory did not check out.
    #[error(
        "unsupported Go version {version} in process {pid}: {detail} (goheap supports {})",
        crate::runtime::version::SUPPORTED_RANGE
    )]
    UnsupportedVersion {
        pid: i32,
        version: String,
        detail: String,
    },
    /// What was read from the target did not form a valid bucket list.
    #[error("inconsistent memory-profile data in process {pid}: {detail}")]
    Corrupt { pid: i32, detail: String },
}

impl Refusal {
    /// The process exit code for this refusal. 0 is success, 1 an unexpected error, 2 a usage error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Refusal::NoSuchProcess { .. } => exit_code::NO_SUCH_PROCESS,
            Refusal::NotGo { .. } => exit_code::NOT_GO,
            Refusal::PermissionDenied { .. } => exit_code::PERMISSION_DENIED,
            Refusal::NoSymbols { .. } => exit_code::NO_SYMBOLS,
            Refusal::NoGoroutineSymbols { .. } => exit_code::NO_GOROUTINE_SYMBOLS,
            Refusal::ProfilingDisabled { .. } => exit_code::PROFILING_DISABLED,
            Refusal::UnsupportedVersion { .. } => exit_code::UNSUPPORTED_VERSION,
            Refusal::ProcessExited { .. } | Refusal::Zombie { .. } => exit_code::PROCESS_EXITED,
            Refusal::Corrupt { .. } => exit_code::CORRUPT,
        }
    }

    /// A short machine-readable reason, used as a metric label and in `goheap ps --json`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoSuchProcess { .. } => "no_such_process",
            Refusal::NotGo { .. } => "not_go",
            Refusal::PermissionDenied { .. } => "permission_denied",
            Refusal::NoSymbols { .. } => "no_symbol_table",
            Refusal::NoGoroutineSymbols { .. } => "no_goroutine_symbols",
            Refusal::ProfilingDisabled { .. } => "profiling_disabled",
            Refusal::UnsupportedVersion { .. } => "unsupported",
            Refusal::ProcessExited { .. } => "exited",
            Refusal::Zombie { .. } => "zombie",
            Refusal::Corrupt { .. } => "corrupt",
        }
    }
}

/// What to do about disabled profiling. `force_works`: the address of `runtime.MemProfileRate` is
/// proven by a symbol table, so `--enable-profiling` (record, top) and the agent's force mode may
/// write there; otherwise the line says why neither writes and what would make them work.
pub(crate) fn profiling_remedy(force_works: bool) -> &'static str {
    if force_works {
        "rerun with --enable-profiling (`goheap record|top --enable-profiling`) to set it to 524288 in this process, run `goheap agent --go-heap-profiler=force` to enable it at runtime, or import runtime/pprof (or net/http/pprof) in the program"
    } else {
        "--enable-profiling and `--go-heap-profiler=force` cannot enable it here: this binary has no symbol table (built with -ldflags=-s), so the address of runtime.MemProfileRate comes from code references alone and goheap writes only at an address a symbol table proves; install the binary's debug file under /usr/lib/debug/.build-id or rebuild without -s -w (then --enable-profiling works), import runtime/pprof (or net/http/pprof) in the program, or accept the recovered address with --enable-profiling-from-code (goheap record|top: it writes only when the code references, the file and the live process agree)"
    }
}

/// Exit codes of the `goheap` binary.
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const INTERNAL: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NO_SUCH_PROCESS: i32 = 3;
    pub const NOT_GO: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 5;
    pub const NO_SYMBOLS: i32 = 6;
    pub const PROFILING_DISABLED: i32 = 7;
    pub const UNSUPPORTED_VERSION: i32 = 8;
    pub const PROCESS_EXITED: i32 = 9;
    pub const CORRUPT: i32 = 10;
    pub const OUTPUT: i32 = 11;
    pub const NO_MATCH: i32 = 12;
    pub const SEVERAL_MATCH: i32 = 13;
    // 11-13 are taken on main (output, no match, several matches).
    pub const NO_GOROUTINE_SYMBOLS: i32 = 14;
}

/// Every exit code of the `goheap` binary with its one-line meaning: the single source of the table
/// in `--help` ([`exit_codes_help`]) and in the README ([`exit_codes_markdown`]; a test requires the
/// README to contain exactly that table).
pub const EXIT_CODES: &[(i32, &str)] = &[
    (exit_code::OK, "success"),
    (exit_code::INTERNAL, "unexpected error"),
    (exit_code::USAGE, "usage error"),
    (exit_code::NO_SUCH_PROCESS, "no such process"),
    (exit_code::NOT_GO, "not a Go process"),
    (
        exit_code::PERMISSION_DENIED,
        "permission denied (CAP_SYS_PTRACE over the target is needed)",
    ),
    (
        exit_code::NO_SYMBOLS,
        "no symbol table to locate runtime.mbuckets",
    ),
    (
        exit_code::PROFILING_DISABLED,
        "heap profiling disabled in the target (MemProfileRate 0)",
    ),
    (
        exit_code::UNSUPPORTED_VERSION,
        "unsupported Go version (layout check failed)",
    ),
    (
        exit_code::PROCESS_EXITED,
        "process exited (during the read, or a zombie its parent has not reaped)",
    ),
    (exit_code::CORRUPT, "inconsistent memory-profile data"),
    (
        exit_code::OUTPUT,
        "the output file cannot be written (missing directory, not writable, disk full)",
    ),
    (
        exit_code::NO_MATCH,
        "no Go process matches --name / --container",
    ),
    (
        exit_code::SEVERAL_MATCH,
        "several Go processes match where one is needed",
    ),
    (
        exit_code::NO_GOROUTINE_SYMBOLS,
        "goroutines: no symbol table to locate runtime.allgs",
    ),
];

/// The exit-code table as printed after `--help`.
pub fn exit_codes_help() -> String {
    let mut s = String::from("Exit codes:");
    for (code, meaning) in EXIT_CODES {
        s.push_str(&format!("\n  {code:<2} {meaning}"));
    }
    s
}

/// The exit-code table as the README shows it (a Markdown table).
pub fn exit_codes_markdown() -> String {
    let mut s = String::from("| code | meaning |\n|---|---|\n");
    for (code, meaning) in EXIT_CODES {
        s.push_str(&format!("| {code} | {meaning} |\n"));
    }
    s
}

/// A hexadecimal address for messages.
pub struct Hex(pub u64);
impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
