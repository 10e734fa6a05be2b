//! goheap: read a running Go process's heap profile from outside.
//!
//! The pipeline, one folder per stage (see `ARCHITECTURE.md` at the repository root):
//!
//! - [`target`] — the process from outside: procfs, maps and load bias, remote memory, discovery;
//! - [`binary`] — the executable on disk: ELF headers, build info, symbol table, debug files, code
//!   references, and the one place that decides how the runtime's globals are located;
//! - [`runtime`] — all Go-version knowledge: [`runtime::version::GoVersion`], the per-version rules,
//!   the bucket layout and walk, and one consistent read of a process ([`runtime::snapshot`]);
//! - [`symbolize`] — `.gopclntab` and the runtime's way of turning PCs into frames and locations;
//! - [`profile`] — the pprof heap profile `writeHeapProto` would write, summaries, one-shot profiling;
//! - [`daemon`] — `goheap agent`; [`cli`] — the other subcommands.
//!
//! [`error`] holds the refusals every stage shares, with their exit codes.

pub mod binary;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod goroutine;
pub mod profile;
pub mod runtime;
pub mod symbolize;
pub mod target;
