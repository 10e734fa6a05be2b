//! `goheap profile` written as something other than the plain pprof file: a flame graph
//! (`--format svg|folded`), a pprof with another default sample type (`--sample-index`), or with
//! the summary as JSON on stdout (`--json`). The plain pprof (the default) is written by
//! `profile.rs` as it is built; these outputs need the whole profile first, so this path builds it
//! in memory.

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
    /// Print the summary as JSON on stdout instead of text on stderr (the profile is still
    /// written; not with `-o -`).
    #[arg(long)]
    pub json: bool,
}

/// `goheap profile --json`.
#[derive(serde::Serialize)]
struct JsonSummary<'a> {
    pid: i32,
    process_name: &'a str,
    binary: String,
    go_version: &'a str,
    go_version_tested: bool,
    symbols: &'static str,
    buckets: usize,
    mem_profile_rate: u64,
    /// Set when the walk stopped early (partial profile).
    warning: Option<&'a str>,
    /// Sums over all samples, scaled estimates as in the profile.
    alloc_objects: i64,
    alloc_space: i64,
    inuse_objects: i64,
    inuse_space: i64,
    /// Leaf functions by flat alloc_space, largest first.
    top_alloc_space: Vec<JsonFunction<'a>>,
    format: &'static str,
    output: Option<String>,
    output_bytes: usize,
}

#[derive(serde::Serialize)]
struct JsonFunction<'a> {
    function: &'a str,
    alloc_space: i64,
    percent: f64,
}

pub(crate) fn run(proc_root: &Path, cmd: ProfileCmd) -> Result<(), Failure> {
    if cmd.json && cmd.base.output.as_deref() == Some(Path::new("-")) {
        use clap::CommandFactory;
        let mut cli = super::Cli::command();
        cli.build();
        let profile_cmd = cli
            .find_subcommand_mut("profile")
            .expect("the profile subcommand");
        profile_cmd
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--json prints the summary on stdout: write the profile to a file (-o FILE), not to stdout",
            )
            .exit();
    }
    let targets = cmd.base.target.resolve(proc_root)?;
    let dests = output::destinations(
        cmd.base.output.as_deref(),
        &targets,
        "",
        cmd.render.format.extension(),
    )?;
    let streamed =
        cmd.render.format == Format::Pprof && cmd.render.sample_index.is_none() && !cmd.json;
    let one = |pid: i32, dest: Option<std::path::PathBuf>| {
        if streamed {
            profile::run(proc_root, pid, dest, &cmd.base).map(|()| None)
        } else {
            run_one(proc_root, pid, dest, &cmd)
        }
    };
    if targets.len() == 1 {
        let (t, dest) = (&targets[0], dests.into_iter().next().flatten());
        if let Some(j) = one(t.pid, dest)? {
            print_json(&j)?;
        }
        return Ok(());
    }
    // Several processes: each is profiled in turn; a failure is reported and the others go on.
    let mut first_failure = None;
    let mut json = Vec::new();
    for (t, dest) in targets.iter().zip(dests) {
        match one(t.pid, dest) {
            Ok(j) => json.extend(j),
            Err(f) => {
                let code = super::report(&f);
                first_failure.get_or_insert(code);
            }
        }
    }
    if cmd.json {
        print_json(&serde_json::Value::Array(json))?;
    }
    match first_failure {
        None => Ok(()),
        Some(code) => Err(Failure::Reported(code)),
    }
}

fn print_json(j: &serde_json::Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(j).map_err(|e| Failure::Other(e.into()))?;
    output::write_to(None, format!("{text}\n").as_bytes())
}

/// One process's profile into `dest` (stdout when `None`): a flame graph, folded stacks or a
/// pprof with another default sample type; with `--json` the summary is returned, not printed.
fn run_one(
    proc_root: &Path,
    pid: i32,
    dest: Option<std::path::PathBuf>,
    cmd: &ProfileCmd,
) -> Result<Option<serde_json::Value>, Failure> {
    let args = &cmd.base;
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
    let summary = (!args.quiet || cmd.json).then(|| summarize(&profile, 5));
    let title = format!("goheap profile: {process_name} (pid {pid})");
    let bytes = output::render(profile, &cmd.render, &title)?;
    let format = cmd.render.format;
    output::write_to(dest.as_deref(), &bytes)?;
    if let (true, Some(s)) = (cmd.json, &summary) {
        let j = JsonSummary {
            pid,
            process_name: &process_name,
            binary: procfs::exe_target(&paths).unwrap_or_default(),
            go_version: &info.binary.go_version_raw,
            go_version_tested: info.layout.tested,
            symbols: crate::binary::locate::method_name(info),
            buckets: snapshot.buckets.len(),
            mem_profile_rate: snapshot.mem_profile_rate,
            warning: snapshot.warning.as_deref(),
            alloc_objects: s.alloc_objects,
            alloc_space: s.alloc_bytes,
            inuse_objects: s.inuse_objects,
            inuse_space: s.inuse_bytes,
            top_alloc_space: s
                .top_alloc
                .iter()
                .map(|(f, b)| JsonFunction {
                    function: f,
                    alloc_space: *b,
                    percent: if s.alloc_bytes > 0 {
                        100.0 * *b as f64 / s.alloc_bytes as f64
                    } else {
                        0.0
                    },
                })
                .collect(),
            format: match format {
                Format::Pprof => "pprof",
                Format::Svg => "svg",
                Format::Folded => "folded",
            },
            output: dest.as_ref().map(|p| p.display().to_string()),
            output_bytes: bytes.len(),
        };
        return Ok(Some(
            serde_json::to_value(&j).map_err(|e| Failure::Other(e.into()))?,
        ));
    }
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
    Ok(None)
}
