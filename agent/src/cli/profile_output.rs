//! `goheap profile` written as something other than the plain pprof file: a flame graph
//! (`--format svg|folded`) or a pprof with another default sample type (`--sample-index`). The
//! plain pprof (the default) is written by `profile.rs` as it is built; these outputs need the whole
//! profile first, so this path builds it in memory.

use std::io::Write;
use std::path::Path;

use clap::Args;

use super::output::{self, Format, RenderArgs};
use super::profile::{self, ProfileArgs};
use super::Failure;
use crate::binary::BinaryCache;
use crate::profile::oneshot::{build_profile, read_process};
use crate::profile::summary::{human_bytes, summarize};
use crate::target::procfs::{self, ProcPaths};

/// `goheap profile`'s arguments: the pprof ones and the output format.
#[derive(Args)]
pub(crate) struct ProfileCmd {
    #[command(flatten)]
    pub base: ProfileArgs,
    #[command(flatten)]
    pub render: RenderArgs,
}

pub(crate) fn run(proc_root: &Path, cmd: ProfileCmd) -> Result<(), Failure> {
    if cmd.render.format == Format::Pprof && cmd.render.sample_index.is_none() {
        return profile::run(proc_root, cmd.base);
    }
    let args = &cmd.base;
    let pid = args.pid;
    let paths = ProcPaths::new(proc_root, pid);
    let mut cache = BinaryCache::default();
    let cached = cache.get(&paths).map_err(Failure::Refused)?;
    let info = &cached.info;
    if args.require_symtab {
        crate::profile::window::require_symtab(info).map_err(Failure::Refused)?;
    }
    let (snapshot, map, bias) = read_process(proc_root, pid, info).map_err(Failure::Refused)?;
    if !info.layout.tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range ({}); the layout self-check passed, but check the result",
            info.binary.go_version_raw,
            crate::runtime::version::SUPPORTED_RANGE
        );
    }
    if let Some(w) = &snapshot.warning {
        eprintln!("goheap: warning: partial profile: {w}");
    }
    let profile = build_profile(
        pid,
        &cached,
        &snapshot.records(),
        snapshot.mem_profile_rate,
        &map,
        bias,
    )
    .map_err(Failure::Refused)?;
    let process_name = procfs::comm(proc_root, pid).unwrap_or_else(|| "process".into());
    let summary = (!args.quiet).then(|| summarize(&profile, 5));
    let title = format!("goheap profile: {process_name} (pid {pid})");
    let bytes = output::render(profile, &cmd.render, &title)?;
    let format = cmd.render.format;
    let dest = output::destination(args.output.as_deref(), || {
        output::default_path("", &process_name, pid, format.extension())
    });
    output::write_to(dest.as_deref(), &bytes)?;
    if let Some(s) = summary {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "pid {pid} ({}), {}, symbols via {}\nbuckets read: {}   in use: {} in {} objects   allocated: {} in {} objects (scaled estimates)\ntop allocating functions (alloc_space, flat):\n{}",
            procfs::exe_target(&paths).unwrap_or_default(),
            info.binary.go_version_raw,
            crate::binary::locate::method_name(info),
            snapshot.buckets.len(),
            human_bytes(s.inuse_bytes),
            s.inuse_objects,
            human_bytes(s.alloc_bytes),
            s.alloc_objects,
            output::top_lines(
                &s,
                "no samples yet: the process has not allocated enough, or no GC has completed"
            )
        );
        if let Some(path) = &dest {
            let _ = writeln!(err, "{}", output::wrote_line(path, bytes.len(), format));
        }
    }
    Ok(())
}
