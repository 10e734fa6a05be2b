//! The `goheap` command line: argument parsing, dispatch to the subcommands, and the one place
//! that turns a refusal into its line on stderr and its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{exit_code, exit_codes_help, Refusal};

mod completions;
mod diff;
mod goroutines;
mod output;
mod profile;
mod profile_output;
mod ps;
mod record;

use completions::{CompletionsArgs, ManArgs};
use diff::DiffArgs;
use profile_output::ProfileCmd;
use ps::PsArgs;
use record::RecordArgs;

#[derive(Parser)]
#[command(
    name = "goheap",
    version,
    propagate_version = true,
    about = "Read a running Go process's heap profile from outside: no code change, no restart, no pprof endpoint",
    long_about = "goheap reads the Go runtime's own memory-profile buckets (runtime.mbuckets) out of a running \
process (read-only: process_vm_readv, or pread on /proc/PID/mem where that is refused) and writes the pprof heap profile the runtime itself would write for \
/debug/pprof/heap. It needs CAP_SYS_PTRACE over the target (root has it).",
    after_help = exit_codes_help()
)]
struct Cli {
    /// Where procfs is mounted (use the host's /proc from inside a container).
    #[arg(long, global = true, env = "GOHEAP_PROC_ROOT", default_value = "/proc")]
    proc_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the heap profile of one Go process (gzipped pprof, or a flame graph) and print a summary.
    #[command(after_help = exit_codes_help())]
    Profile(ProfileCmd),
    /// Record the allocations of one Go process during a window (like /debug/pprof/allocs?seconds=N).
    #[command(
        long_about = "Record the allocations of one Go process during a window, like the runtime's \
/debug/pprof/allocs?seconds=N: the process is read at the start and at the end of the window (and \
once a second in between, which is cheap), alloc_objects/alloc_space are what it allocated during \
the window, inuse_objects/inuse_space what is in use at its end. Values are the runtime's scaled \
estimates; the runtime publishes allocations at the end of each GC cycle, so both ends lag by up to \
one cycle. Ctrl-C ends the window early and still writes the profile.",
        after_help = exit_codes_help()
    )]
    Record(RecordArgs),
    /// Compare two profiles: a differential flame graph (growth red, shrinkage blue) or a pprof diff.
    #[command(
        long_about = "Compare two profiles (e.g. two `goheap profile` files of one program, or two \
`goheap record` windows): a differential flame graph (frames sized by NEW, red where a stack grew, \
blue where it shrank), differential folded stacks, or a pprof diff profile, NEW with BASE's values \
negated merged in, which `go tool pprof -top DIFF` shows as `go tool pprof -diff_base BASE NEW -top` \
does."
    )]
    Diff(DiffArgs),
    /// List the Go processes on this machine and whether goheap can read them.
    #[command(after_help = exit_codes_help())]
    Ps(PsArgs),
    /// Run the node agent: watch every Go process, serve /metrics and pprof over HTTP.
    Agent(crate::daemon::AgentArgs),
    /// Write the goroutines of one Go process: pprof goroutine profile, debug=2-like text, flame graph.
    #[command(after_help = exit_codes_help())]
    Goroutines(goroutines::GoroutinesArgs),
    /// Print the goroutine-layout table rows derived from Go binaries' DWARF (generator; see goroutine/layout.rs).
    #[command(hide = true)]
    GoroutineLayout(goroutines::LayoutArgs),
    /// Print a shell completion script (bash: `source <(goheap completions bash)`).
    Completions(CompletionsArgs),
    /// Print the manual page goheap(1) in roff (`goheap man | man -l -`), or write all pages.
    Man(ManArgs),
}

/// Parses the command line, runs the subcommand and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let result = match cli.command {
        Command::Profile(args) => profile_output::run(&cli.proc_root, args),
        Command::Record(args) => record::run(&cli.proc_root, args),
        Command::Diff(args) => diff::run(args),
        Command::Ps(args) => ps::run(&cli.proc_root, args),
        Command::Goroutines(args) => goroutines::run(&cli.proc_root, args),
        Command::GoroutineLayout(args) => goroutines::layout(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Agent(args) => {
            crate::daemon::run(cli.proc_root.clone(), args).map_err(Failure::Other)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(r)) => {
            eprintln!("goheap: {r}");
            ExitCode::from(r.exit_code() as u8)
        }
        Err(Failure::Other(e)) => {
            eprintln!("goheap: {e:#}");
            ExitCode::from(exit_code::INTERNAL as u8)
        }
    }
}

/// How a subcommand failed: a refusal (its own exit code) or anything else (exit 1).
pub(crate) enum Failure {
    Refused(Refusal),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}
