//! The `goheap` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use goheap::discovery::{self, ProcessState};
use goheap::error::{exit_code, Refusal, EXIT_CODES_HELP};
use goheap::profiler::{ProfileRequest, Profiler};

#[derive(Parser)]
#[command(
    name = "goheap",
    version,
    about = "Read a running Go process's heap profile from outside: no code change, no restart, no pprof endpoint",
    long_about = "goheap reads the Go runtime's own memory-profile buckets (runtime.mbuckets) out of a running \
process through /proc/PID/mem and writes the pprof heap profile the runtime itself would write for \
/debug/pprof/heap. It needs CAP_SYS_PTRACE over the target (root has it).",
    after_help = EXIT_CODES_HELP
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
    /// Write the heap profile of one Go process (gzipped pprof) and print a summary.
    #[command(after_help = EXIT_CODES_HELP)]
    Profile(ProfileArgs),
    /// List the Go processes on this machine and whether goheap can read them.
    #[command(after_help = EXIT_CODES_HELP)]
    Ps(PsArgs),
    /// Run the node agent: watch every Go process, serve /metrics and pprof over HTTP.
    Agent(goheap::agent::AgentArgs),
}

#[derive(Args)]
struct ProfileArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pid: i32,
    /// Output file (`-` for stdout). Default: goheap-<name>-<pid>-<unix time>.pb.gz in the current directory.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Refuse stripped binaries whose runtime globals were found from code references only (no
    /// .symtab or debug file).
    #[arg(long)]
    require_symtab: bool,
    /// Do not print the summary.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
struct PsArgs {
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list processes goheap is not allowed to inspect (they may or may not be Go).
    #[arg(long)]
    all: bool,
}

fn main() -> ExitCode {
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
        Command::Profile(args) => run_profile(&cli.proc_root, args),
        Command::Ps(args) => run_ps(&cli.proc_root, args),
        Command::Agent(args) => {
            goheap::agent::run(cli.proc_root.clone(), args).map_err(Failure::Other)
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

enum Failure {
    Refused(Refusal),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn run_profile(proc_root: &std::path::Path, args: ProfileArgs) -> Result<(), Failure> {
    let mut profiler = Profiler::new(proc_root.to_path_buf());
    let outcome = profiler
        .profile(&ProfileRequest {
            pid: args.pid,
            require_symbol_table: args.require_symtab,
        })
        .map_err(Failure::Refused)?;
    if !outcome.layout_tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range (1.19–1.27); the layout self-check passed, but check the result",
            outcome.go_version
        );
    }
    if let Some(w) = &outcome.warning {
        eprintln!("goheap: warning: partial profile: {w}");
    }
    let bytes = outcome.profile.encode_gzip();
    let dest = match &args.output {
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdout()
                .lock()
                .write_all(&bytes)
                .map_err(|e| Failure::Other(e.into()))?;
            None
        }
        Some(p) => Some(p.clone()),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let name: String = outcome
                .process_name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            Some(PathBuf::from(format!(
                "goheap-{name}-{}-{now}.pb.gz",
                args.pid
            )))
        }
    };
    if let Some(path) = &dest {
        std::fs::write(path, &bytes)
            .map_err(|e| Failure::Other(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    }
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", outcome.summary_text());
        if let Some(path) = &dest {
            let _ = writeln!(
                err,
                "wrote {} ({} bytes); open with: go tool pprof {}",
                path.display(),
                bytes.len(),
                path.display()
            );
        }
    }
    Ok(())
}

fn run_ps(proc_root: &std::path::Path, args: PsArgs) -> Result<(), Failure> {
    let all = discovery::scan(proc_root);
    let denied = all
        .iter()
        .filter(|p| p.state == ProcessState::PermissionDenied)
        .count();
    let rows: Vec<_> = all
        .into_iter()
        .filter(|p| args.all || p.state != ProcessState::PermissionDenied)
        .collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows).map_err(|e| Failure::Other(e.into()))?;
        let _ = writeln!(out);
    } else {
        let _ = writeln!(
            out,
            "{:>8}  {:<19} {:<10} {:<15} BINARY",
            "PID", "STATE", "GO", "METHOD"
        );
        for r in &rows {
            let _ = writeln!(
                out,
                "{:>8}  {:<19} {:<10} {:<15} {}{}",
                r.pid,
                r.state.as_str(),
                r.go_version.as_deref().unwrap_or("?"),
                r.method.as_deref().unwrap_or("-"),
                r.binary,
                r.detail
                    .as_ref()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    if denied > 0 && !args.all {
        let hint = if nix::unistd::geteuid().is_root() {
            "not even root may read them: another user namespace, or a kernel policy"
        } else {
            "run as root or with CAP_SYS_PTRACE"
        };
        eprintln!("goheap: {denied} processes could not be inspected (permission denied; {hint}); --all lists them");
    }
    Ok(())
}
