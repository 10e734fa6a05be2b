//! The `goheap` command line: argument parsing, dispatch to the subcommands, and the one place
//! that turns a refusal into its line on stderr and its exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{exit_code, exit_codes_help, Refusal};

mod completions;
mod diff;
mod gc_layout;
mod goroutines;
mod output;
mod profile;
mod profile_output;
mod ps;
mod record;
mod top;

use completions::{CompletionsArgs, ManArgs};
use diff::DiffArgs;
use profile_output::ProfileCmd;
use ps::PsArgs;
use record::RecordArgs;
use top::TopArgs;

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
    /// Write the heap profile of a Go process (gzipped pprof, or a flame graph) and print a summary;
    /// --name / --container: one file per matching process.
    #[command(after_help = exit_codes_help())]
    Profile(ProfileCmd),
    /// Record the allocations of a Go process during a window (like /debug/pprof/allocs?seconds=N);
    /// --name / --container: every matching process over the same window.
    #[command(
        long_about = "Record the allocations of a Go process (or of every process --name or \
--container chooses, over the same window, one file each) during a window, like the runtime's \
/debug/pprof/allocs?seconds=N: the process is read at the start and at the end of the window (and \
once a second in between, which is cheap), alloc_objects/alloc_space are what it allocated during \
the window, inuse_objects/inuse_space what is in use at its end. Values are the runtime's scaled \
estimates; the runtime publishes allocations at the end of each GC cycle, so both ends lag by up to \
one cycle. Ctrl-C ends the window early and still writes the profile.",
        after_help = exit_codes_help()
    )]
    Record(RecordArgs),
    /// A live view of one Go process's allocations by function (like py-spy top).
    #[command(
        long_about = "A live view of one Go process's allocations by function, like py-spy top: \
every --interval the process is read (cheaply, as `goheap record` does) and each function's \
allocation rate over the last interval (bytes/s and objects/s, flat and cumulative) and what it \
holds in use are shown, with the process's totals, Go version, MemProfileRate and GC cycles in the \
header. Values are the runtime's scaled estimates, published at the end of each GC cycle. Keys: 1-6 \
or s change the sort column, p or space pause, q quits. When stdout is not a terminal, or with \
--once, plain-text snapshots are printed, one per interval.",
        after_help = exit_codes_help()
    )]
    Top(TopArgs),
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
    Agent(Box<crate::daemon::AgentArgs>),
    /// Write the goroutines of one Go process: pprof goroutine profile, debug=2-like text, flame graph.
    #[command(after_help = exit_codes_help())]
    Goroutines(goroutines::GoroutinesArgs),
    /// Print the goroutine-layout table rows derived from Go binaries' DWARF (generator; see goroutine/layout.rs).
    #[command(hide = true)]
    GoroutineLayout(goroutines::LayoutArgs),
    /// Print the GC-layout table rows (runtime.mstats, runtime.gcControllerState offsets) derived from Go binaries' DWARF (generator; see goroutine/gc_layout.rs).
    #[command(hide = true)]
    GcLayout(gc_layout::GcLayoutArgs),
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
        Command::Top(args) => top::run(&cli.proc_root, args),
        Command::Diff(args) => diff::run(args),
        Command::Ps(args) => ps::run(&cli.proc_root, args),
        Command::Goroutines(args) => goroutines::run(&cli.proc_root, args),
        Command::GoroutineLayout(args) => goroutines::layout(args),
        Command::GcLayout(args) => gc_layout::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
        Command::Agent(args) => {
            crate::daemon::run(cli.proc_root.clone(), *args).map_err(Failure::Other)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => ExitCode::from(report(&f) as u8),
    }
}

/// Prints the failure's one line on stderr (unless already reported) and returns its exit code.
pub(crate) fn report(f: &Failure) -> i32 {
    match f {
        Failure::Refused(r) => {
            eprintln!("goheap: {r}");
            r.exit_code()
        }
        Failure::Select(e) => {
            eprintln!("goheap: {e}");
            e.exit_code()
        }
        Failure::Output(e) => {
            eprintln!("goheap: {e}");
            exit_code::OUTPUT
        }
        Failure::Usage(line) => {
            eprintln!("goheap: {line}");
            exit_code::USAGE
        }
        Failure::Reported(code) => *code,
        Failure::Other(e) => {
            eprintln!("goheap: {e:#}");
            exit_code::INTERNAL
        }
    }
}

/// Which processes `profile` and `record` work on: exactly one of `--pid`, `--name`, `--container`
/// (see [`crate::target::select`]).
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct TargetArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pub pid: Option<i32>,
    /// Every Go process whose comm or executable path matches this regex (unanchored; e.g.
    /// '^api-' or 'bin/api$'): one output file each.
    #[arg(long, value_name = "REGEX")]
    pub name: Option<String>,
    /// Every Go process in a container whose id starts with these hex digits (from its cgroup):
    /// one output file each.
    #[arg(long, value_name = "ID-PREFIX")]
    pub container: Option<String>,
}

impl TargetArgs {
    /// The selector these arguments give.
    pub(crate) fn selector(&self) -> Result<crate::target::select::Selector, Failure> {
        crate::target::select::Selector::from_args(
            self.pid,
            self.name.as_deref(),
            self.container.as_deref(),
        )
        .map_err(Failure::Select)?
        .ok_or_else(|| Failure::Usage("give --pid, --name or --container".into()))
    }

    /// The chosen processes (see [`crate::target::select::select`]).
    pub(crate) fn resolve(
        &self,
        proc_root: &std::path::Path,
    ) -> Result<Vec<crate::target::select::Target>, Failure> {
        crate::target::select::select(proc_root, &self.selector()?).map_err(Failure::Select)
    }
}

/// How a subcommand failed: a refusal, a selection or output failure (their own exit codes), a
/// usage error (2) or anything else (exit 1).
pub(crate) enum Failure {
    Refused(Refusal),
    /// No process, or several where one is needed, or a malformed selector.
    Select(crate::target::select::SelectError),
    /// The output file could not be written (exit 11).
    Output(output::OutputError),
    /// A combination of arguments that cannot work (exit 2); the line says what to do.
    Usage(String),
    /// Failures already printed (several processes); the exit code of the first.
    Reported(i32),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}
