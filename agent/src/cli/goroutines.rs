//! `goheap goroutines`: the goroutines of one Go process; and the hidden `goheap goroutine-layout`,
//! the generator of [`crate::goroutine::layout::G_LAYOUTS`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::output::{self, Format};
use crate::cli::Failure;
use crate::goroutine::dwarf_layout::layout_from_dwarf;
use crate::goroutine::profile::{text, waited_ns};
use crate::profile::flamegraph::{self, Labels};
use crate::target::procfs::{self, ProcPaths};

/// Output of `goheap goroutines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GFormat {
    /// Gzipped pprof goroutine profile, as `pprof.Lookup("goroutine").WriteTo(w, 0)`.
    Pprof,
    /// Every goroutine like `debug=2`: state, wait reason, frames, creator.
    Text,
    /// Collapsed stacks, `root;...;leaf count` a line.
    Folded,
    /// Interactive SVG flame graph of the stacks.
    Svg,
}

/// `goheap goroutines`'s arguments.
#[derive(Args)]
pub struct GoroutinesArgs {
    /// The Go process.
    #[arg(long)]
    pid: i32,
    /// Output file (`-` = stdout). Default: stdout for text, else
    /// goheap-goroutines-NAME-PID-TIME.EXT in the current directory.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "pprof")]
    format: GFormat,
    /// Leak view: only goroutines blocked at least this long (e.g. 10m), grouped by creation
    /// site and stack, largest group first (text), or filtered (other formats). The runtime
    /// knows how long a goroutine has been blocked only through GCs: a GC that finds it blocked
    /// stamps `waitsince` with the time of the previous cycle's mark termination (nothing on the
    /// first cycle). So a goroutine qualifies only once a GC has seen it blocked, and its wait is
    /// over-estimated by at most one GC interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Text: also list the runtime's own goroutines.
    #[arg(long)]
    all: bool,
}

/// `goheap goroutines`.
pub fn run(proc_root: &Path, args: GoroutinesArgs) -> Result<(), Failure> {
    let paths = ProcPaths::new(proc_root, args.pid);
    let mut cache = crate::binary::BinaryCache::default();
    let cached = cache.get(&paths).map_err(Failure::Refused)?;
    let mut pg =
        crate::goroutine::read_process(proc_root, args.pid, &cached).map_err(Failure::Refused)?;
    if let Some(d) = args.since {
        let now = pg.snapshot.monotonic_ns;
        let min = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        pg.snapshot
            .goroutines
            .retain(|g| waited_ns(g, now).is_some_and(|w| w >= min));
    }
    let name = procfs::comm(proc_root, args.pid).unwrap_or_else(|| "process".into());
    let version = cached.info.binary.go_version;
    let pclntab = pg.symbolizer.pclntab();
    let (bytes, ext) = match args.format {
        GFormat::Text if args.since.is_some() => (
            crate::goroutine::profile::leak_report(&pg.snapshot, pclntab, &version).into_bytes(),
            "txt",
        ),
        GFormat::Text => (
            text(&pg.snapshot, pclntab, &version, args.all).into_bytes(),
            "txt",
        ),
        GFormat::Pprof => (pg.profile().encode_gzip(), Format::Pprof.extension()),
        GFormat::Folded | GFormat::Svg => {
            let f = flamegraph::fold(&pg.profile(), "goroutine")
                .map_err(|e| Failure::Other(e.into()))?;
            if args.format == GFormat::Folded {
                (flamegraph::folded_text(&f).into_bytes(), "folded")
            } else {
                let labels = Labels {
                    title: format!("goroutines of {name} (pid {})", args.pid),
                    subtitle: None,
                    count_name: "goroutines".into(),
                };
                (
                    flamegraph::svg(&f, &labels).map_err(|e| Failure::Other(e.into()))?,
                    "svg",
                )
            }
        }
    };
    let dest = match (&args.output, args.format) {
        (None, GFormat::Text) => None,
        (o, _) => output::destination(o.as_deref(), || {
            output::default_path("goroutines-", &name, args.pid, ext)
        }),
    };
    output::write_to(dest.as_deref(), &bytes)?;
    let s = &pg.snapshot;
    let user = s.user().count();
    let running = s
        .user()
        .filter(|g| g.status == crate::goroutine::layout::GStatus::Running)
        .count();
    if let Some(p) = &dest {
        eprintln!("wrote {} ({} bytes)", p.display(), bytes.len());
    }
    eprintln!(
        "pid {} ({name}): {user} goroutines ({running} running, stacks not read), {} runtime goroutines; {} dropped (changed while read), {} invalid",
        args.pid,
        s.goroutines.len() - user,
        s.changed,
        s.invalid
    );
    Ok(())
}

/// `goheap goroutine-layout FILE…` (hidden): prints the table rows derived from each binary's DWARF.
#[derive(Args)]
pub struct LayoutArgs {
    /// Go binaries with DWARF (not built with -ldflags=-w).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn layout(args: LayoutArgs) -> Result<(), Failure> {
    for f in &args.files {
        let bin = crate::binary::GoBinary::open(f)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{}: {e}", f.display())))?;
        let l = layout_from_dwarf(f).map_err(|e| Failure::Other(e.into()))?;
        let arch = crate::goroutine::layout::arch_name(bin.arch);
        println!(
            "    ({}, \"{arch}\", GLayout {{ size: {}, stack_lo: {}, stack_hi: {}, m: {}, sched_sp: {}, sched_pc: {}, sched_lr: {}, sched_bp: {}, syscallsp: {}, syscallpc: {}, atomicstatus: {}, goid: {}, waitsince: {}, waitreason: {}, parent_goid: {:?}, gopc: {}, startpc: {} }}), // {}",
            bin.go_version.minor, l.size, l.stack_lo, l.stack_hi, l.m, l.sched_sp, l.sched_pc, l.sched_lr,
            l.sched_bp, l.syscallsp, l.syscallpc, l.atomicstatus, l.goid, l.waitsince, l.waitreason,
            l.parent_goid, l.gopc, l.startpc, bin.go_version_raw
        );
    }
    Ok(())
}
