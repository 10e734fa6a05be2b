//! `goheap profile`: one heap profile of one process, written to a file, with a summary.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::profile::oneshot::{ProfileRequest, Profiler};

#[derive(Args)]
pub(crate) struct ProfileArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pub pid: i32,
    /// Output file (`-` for stdout). Default: goheap-<name>-<pid>-<unix time>.pb.gz in the current directory.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Refuse stripped binaries whose runtime globals were found from code references only (no
    /// .symtab or debug file).
    #[arg(long)]
    pub require_symtab: bool,
    /// Do not print the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub(crate) fn run(proc_root: &std::path::Path, args: ProfileArgs) -> Result<(), Failure> {
    let mut profiler = Profiler::new(proc_root.to_path_buf());
    let outcome = profiler
        .profile(&ProfileRequest {
            pid: args.pid,
            require_symbol_table: args.require_symtab,
        })
        .map_err(Failure::Refused)?;
    if !outcome.layout_tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range ({}); the layout self-check passed, but check the result",
            outcome.go_version,
            crate::runtime::version::SUPPORTED_RANGE
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
