//! `goheap record`: the allocations of one process during a window (like
//! `/debug/pprof/allocs?seconds=N`), written as a pprof profile.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::output::{self, RenderArgs, SampleIndex};
use super::Failure;
use crate::binary::BinaryCache;
use crate::error::Refusal;
use crate::profile::summary::{human_bytes, summarize};
use crate::profile::window::Recorder;

#[derive(Args)]
pub(crate) struct RecordArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pub pid: i32,
    /// Length of the window, 100ms to 24h (30s, 2m, 500ms; a bare number is seconds). Ctrl-C ends
    /// it early and still writes the profile.
    #[arg(long, short = 'd', default_value = "30s", value_parser = crate::daemon::parse_duration)]
    pub duration: Duration,
    /// Output file (`-` for stdout). Default: goheap-allocs-<name>-<pid>-<unix time>.<pb.gz|svg|folded>
    /// in the current directory.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Refuse stripped binaries whose runtime globals were found from code references only (no
    /// .symtab or debug file).
    #[arg(long)]
    pub require_symtab: bool,
    /// When the target's runtime.MemProfileRate is 0 (the linker disabled heap profiling), write
    /// 524288 into it in this one process before the window starts, only at an address a symbol
    /// table or debug file proves (refused for -s -w binaries); a non-zero rate is never written.
    #[arg(long)]
    pub enable_profiling: bool,
    /// Like --enable-profiling, and also for stripped (-s -w) binaries, at the address of
    /// runtime.MemProfileRate recovered from code references, when every check holds (two
    /// references agree, the file holds 524288 there, runtime.disableMemoryProfiling is true in
    /// the file and in the process, the live rate is 0); otherwise refused with the failed check.
    #[arg(long)]
    pub enable_profiling_from_code: bool,
    /// Print neither progress nor the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Set by SIGINT while a window is recorded.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT ends the window instead of the process while this lives; the previous action is restored
/// on drop.
struct SigintGuard(Option<nix::sys::signal::SigAction>);

impl SigintGuard {
    fn install() -> SigintGuard {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        STOP.store(false, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_sigint),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        SigintGuard(unsafe { sigaction(Signal::SIGINT, &action) }.ok())
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: restores the action that was installed before.
            let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, old) };
        }
    }
}

/// How often the process is read (and the progress line redrawn) during the window.
const TICK: Duration = Duration::from_secs(1);
/// How often the window checks for its end or Ctrl-C.
const POLL: Duration = Duration::from_millis(50);

pub(crate) fn run(proc_root: &Path, args: RecordArgs) -> Result<(), Failure> {
    let pid = args.pid;
    let mut cache = BinaryCache::default();
    let mut rec = Recorder::open(proc_root, pid, &mut cache, args.require_symtab)
        .map_err(Failure::Refused)?;
    let cached = rec.cached.clone();
    let info = &cached.info;
    let process_name =
        crate::target::procfs::comm(proc_root, pid).unwrap_or_else(|| "process".into());
    if !info.layout.tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range ({}); the layout self-check passed, but check the result",
            info.binary.go_version_raw,
            crate::runtime::version::SUPPORTED_RANGE
        );
    }
    // The symbol table is loaded before the window, so the window's end is written at once.
    rec.cached
        .symbolizer()
        .map_err(|detail| {
            Failure::Refused(Refusal::Corrupt {
                pid,
                detail: format!("cannot read .gopclntab: {detail}"),
            })
        })?
        .release_pages();

    if args.enable_profiling || args.enable_profiling_from_code {
        enable_profiling(&mut rec, args.enable_profiling_from_code, args.quiet)?;
    }
    let mut warnings: Vec<String> = Vec::new();
    let _sigint = SigintGuard::install();
    if let Some(w) = rec.read_complete().map_err(Failure::Refused)? {
        warnings.push(w);
    }
    rec.start_window();
    let start = rec.snapshot();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let mut next_tick = started + TICK;
    let mut ended_by: Option<String> = None;
    let mut exited = false;
    // The window ends at the last successful read.
    let mut last_read = (started, started_wall);
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        if elapsed >= args.duration {
            break;
        }
        if STOP.load(Ordering::SeqCst) {
            ended_by = Some("interrupted".into());
            break;
        }
        if now >= next_tick {
            next_tick += TICK;
            match rec.read() {
                Ok(w) => {
                    last_read = (Instant::now(), SystemTime::now());
                    warnings.extend(w);
                }
                Err(Refusal::ProcessExited { .. }) | Err(Refusal::NoSuchProcess { .. }) => {
                    ended_by = Some("the process exited".into());
                    exited = true;
                    break;
                }
                Err(r) => return Err(Failure::Refused(r)),
            }
            if progress {
                let p = rec.progress();
                let left = args.duration.saturating_sub(elapsed);
                eprint!(
                    "\r\x1b[Krecording pid {pid}: {} elapsed, {} left, {} buckets, {} allocated",
                    secs(elapsed),
                    secs(left),
                    p.buckets,
                    human_bytes(p.allocated_bytes.min(i64::MAX as u64) as i64)
                );
                let _ = std::io::stderr().flush();
            }
        }
        std::thread::sleep(POLL.min(args.duration.saturating_sub(elapsed)));
    }
    if !exited {
        match rec.read_complete() {
            Ok(w) => {
                last_read = (Instant::now(), SystemTime::now());
                warnings.extend(w);
            }
            Err(Refusal::ProcessExited { .. }) | Err(Refusal::NoSuchProcess { .. }) => {
                ended_by = Some("the process exited".into());
            }
            Err(r) => return Err(Failure::Refused(r)),
        }
    }
    let (ended, ended_wall) = last_read;
    let duration = ended.duration_since(started);
    if progress {
        eprint!("\r\x1b[K");
    }
    let mut profile = rec.window_profile(&start).map_err(Failure::Refused)?;
    profile.time_nanos = ended_wall
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    profile.duration_nanos = duration.as_nanos().min(i64::MAX as u128) as i64;
    // Like the runtime's allocs profile.
    output::set_default_sample_type(&mut profile, SampleIndex::AllocSpace);
    let s = summarize(&profile, 5);
    let title = format!(
        "goheap record: {process_name} (pid {pid}), {} window",
        secs(duration)
    );
    let bytes = output::render(profile, &args.render, &title)?;
    let format = args.render.format;
    let dest = output::destination(args.output.as_deref(), || {
        output::default_path("allocs-", &process_name, pid, format.extension())
    });
    output::write_to(dest.as_deref(), &bytes)?;
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        for w in &warnings {
            let _ = writeln!(err, "goheap: warning: partial profile: {w}");
        }
        let how = match &ended_by {
            Some(why) => format!(" (ended early: {why})"),
            None => String::new(),
        };
        let _ = writeln!(
            err,
            "pid {pid} ({process_name}), {}: recorded {}{how}\nallocated: {} in {} objects   in use at the end: {} in {} objects (scaled estimates)\ntop allocating functions during the window (alloc_space, flat):",
            info.binary.go_version_raw,
            secs(duration),
            human_bytes(s.alloc_bytes),
            s.alloc_objects,
            human_bytes(s.inuse_bytes),
            s.inuse_objects,
        );
        let _ = writeln!(
            err,
            "{}",
            output::top_lines(&s, "no sampled allocations in the window")
        );
        if let Some(path) = &dest {
            let _ = writeln!(err, "{}", output::wrote_line(path, bytes.len(), format));
        }
    }
    Ok(())
}

/// `--enable-profiling` (record and top; `from_code`: `--enable-profiling-from-code`): sets
/// `runtime.MemProfileRate` where it is 0 and says so on stderr (unless `quiet`).
pub(crate) fn enable_profiling(
    rec: &mut Recorder,
    from_code: bool,
    quiet: bool,
) -> Result<(), Failure> {
    use crate::profile::window::EnableOutcome;
    match rec.enable_profiling(from_code).map_err(Failure::Refused)? {
        EnableOutcome::Written { addr } if !quiet => eprintln!(
            "goheap: --enable-profiling: set runtime.MemProfileRate to 524288 in pid {} (it was 0; address {addr:#x}, located by {})",
            rec.pid,
            rec.cached
                .info
                .symbols
                .as_ref()
                .map(|s| s.method.as_str())
                .unwrap_or("symbol table")
        ),
        _ => {}
    }
    Ok(())
}

/// A duration for the progress line and summary: `12s`, `1m05s`, `2.5s` below ten seconds.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        let r = s.round() as u64;
        if r < 60 {
            format!("{r}s")
        } else {
            format!("{}m{:02}s", r / 60, r % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(secs(Duration::from_millis(2500)), "2.5s");
        assert_eq!(secs(Duration::from_secs(12)), "12s");
        assert_eq!(secs(Duration::from_secs(65)), "1m05s");
        assert_eq!(secs(Duration::from_millis(58_900)), "59s");
    }
}
