//! `goheap ps`: the Go processes on this machine and whether goheap can read them.

use std::io::Write;

use clap::Args;

use super::Failure;
use crate::target::access::Denial;
use crate::target::discovery::{self, ProcessState};
use crate::target::select::Selector;

#[derive(Args)]
pub(crate) struct PsArgs {
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also list processes goheap is not allowed to inspect (they may or may not be Go).
    #[arg(long)]
    pub all: bool,
    /// Only processes whose comm or executable path matches this regex.
    #[arg(long, value_name = "REGEX", conflicts_with = "container")]
    pub name: Option<String>,
    /// Only processes in a container whose id starts with these hex digits (from the cgroup).
    #[arg(long, value_name = "ID-PREFIX")]
    pub container: Option<String>,
}

pub(crate) fn run(proc_root: &std::path::Path, args: PsArgs) -> Result<(), Failure> {
    let filter = Selector::from_args(None, args.name.as_deref(), args.container.as_deref())
        .map_err(Failure::Select)?;
    let mut all = discovery::scan(proc_root);
    if let Some(f) = &filter {
        all.retain(|row| f.matches_row(proc_root, row));
    }
    let denied_pids: Vec<i32> = all
        .iter()
        .filter(|p| p.state == ProcessState::PermissionDenied)
        .map(|p| p.pid)
        .collect();
    let denied = denied_pids.len();
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
        // goheap's own credentials and namespace decide for all of them alike.
        let hint = match Denial::diagnose(proc_root, denied_pids[0]) {
            Denial::NoPtraceCapability { root: false } => "run as root or with CAP_SYS_PTRACE",
            d => d.short(),
        };
        eprintln!("goheap: {denied} processes could not be inspected (permission denied; {hint}); --all lists them");
    }
    Ok(())
}
