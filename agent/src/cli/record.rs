//! `goheap record`: the allocations of one process during a window (like
//! `/debug/pprof/allocs?seconds=N`), written as a pprof profile.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::output::{self, RenderArgs, SampleIndex};
use super::{Failure, TargetArgs};
use crate::binary::BinaryCache;
use crate::error::Refusal;
use crate::profile::summary::{human_bytes, summarize};
use crate::profile::window::Recorder;
use crate::runtime::snapshot::HeapSnapshot;

#[derive(Args)]
pub(crate) struct RecordArgs {
    /// The process(es) to record; several (--name, --container) are recorded over the same window,
    /// one output file each.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Length of the window, 100ms to 24h (30s, 2m, 500ms; a bare number is seconds). Ctrl-C ends
    /// it early and still writes the profile.
    #[arg(long, short = 'd', default_value = "30s", value_parser = crate::daemon::parse_duration)]
    pub duration: Duration,
    /// Output file (`-` for stdout), or a directory (`DIR/`) to write the default names into.
    /// Default: goheap-allocs-<name>-<pid>-<unix time>.<pb.gz|svg|folded> in the current directory,
    /// one file per process. A file is only written whole (a temporary file renamed into place).
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

/// One process's window.
struct Window {
    pid: i32,
    process_name: String,
    rec: Recorder,
    /// The read at the window's start.
    start: Option<HeapSnapshot>,
    started: Instant,
    warnings: Vec<String>,
    ended_by: Option<String>,
    /// No further read: the process exited, or a read failed (then `failed` is set).
    done: bool,
    failed: bool,
    /// The last successful read, where the window ends.
    last_read: (Instant, SystemTime),
    dest: Option<PathBuf>,
}

/// Opens `pid` for recording and loads its symbol table, so the window's end is written at once.
fn prepare(
    proc_root: &Path,
    pid: i32,
    cache: &mut BinaryCache,
    args: &RecordArgs,
) -> Result<(Recorder, String), Failure> {
    let mut rec =
        Recorder::open(proc_root, pid, cache, args.require_symtab).map_err(Failure::Refused)?;
    let info = &rec.cached.info;
    let process_name =
        crate::target::procfs::comm(proc_root, pid).unwrap_or_else(|| "process".into());
    if !info.layout.tested {
        eprintln!(
            "goheap: warning: Go version {} is outside the tested range ({}); the layout self-check passed, but check the result",
            info.binary.go_version_raw,
            crate::runtime::version::SUPPORTED_RANGE
        );
    }
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
    Ok((rec, process_name))
}

pub(crate) fn run(proc_root: &Path, args: RecordArgs) -> Result<(), Failure> {
    let targets = args.target.resolve(proc_root)?;
    let dests = output::destinations(
        args.output.as_deref(),
        &targets,
        "allocs-",
        args.render.format.extension(),
    )?;
    let single = targets.len() == 1;
    // With several processes a failing one is reported and the others go on; the exit code is
    // the first failure's.
    let mut first_failure: Option<i32> = None;
    let fail = |f: Failure, first: &mut Option<i32>| -> Result<(), Failure> {
        if single {
            return Err(f);
        }
        let code = super::report(&f);
        first.get_or_insert(code);
        Ok(())
    };
    let mut cache = BinaryCache::default();
    let mut windows: Vec<Window> = Vec::new();
    for (t, dest) in targets.iter().zip(dests) {
        match prepare(proc_root, t.pid, &mut cache, &args) {
            Ok((rec, process_name)) => windows.push(Window {
                pid: t.pid,
                process_name,
                rec,
                start: None,
                started: Instant::now(),
                warnings: Vec::new(),
                ended_by: None,
                done: false,
                failed: false,
                last_read: (Instant::now(), SystemTime::now()),
                dest,
            }),
            Err(f) => fail(f, &mut first_failure)?,
        }
    }

    let _sigint = SigintGuard::install();
    for w in windows.iter_mut() {
        match w.rec.read_complete() {
            Ok(warn) => w.warnings.extend(warn),
            Err(r) => {
                w.done = true;
                w.failed = true;
                fail(Failure::Refused(r), &mut first_failure)?;
                continue;
            }
        }
        w.rec.start_window();
        w.start = Some(w.rec.snapshot());
        w.started = Instant::now();
        w.last_read = (w.started, SystemTime::now());
    }
    windows.retain(|w| !w.failed);
    if windows.is_empty() {
        return Err(Failure::Reported(
            first_failure.unwrap_or(crate::error::exit_code::INTERNAL),
        ));
    }
    let started = Instant::now();
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let mut next_tick = started + TICK;
    let mut interrupted = false;
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(started);
        if elapsed >= args.duration || windows.iter().all(|w| w.done) {
            break;
        }
        if STOP.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if now >= next_tick {
            next_tick += TICK;
            for w in windows.iter_mut().filter(|w| !w.done) {
                match w.rec.read() {
                    Ok(warn) => {
                        w.last_read = (Instant::now(), SystemTime::now());
                        w.warnings.extend(warn);
                    }
                    Err(Refusal::ProcessExited { .. }) | Err(Refusal::NoSuchProcess { .. }) => {
                        w.ended_by = Some("the process exited".into());
                        w.done = true;
                    }
                    Err(r) => {
                        w.done = true;
                        w.failed = true;
                        fail(Failure::Refused(r), &mut first_failure)?;
                    }
                }
            }
            if progress {
                let left = args.duration.saturating_sub(elapsed);
                let (buckets, bytes) = windows
                    .iter()
                    .filter(|w| !w.failed)
                    .map(|w| w.rec.progress())
                    .fold((0usize, 0u64), |(b, a), p| {
                        (b + p.buckets, a.saturating_add(p.allocated_bytes))
                    });
                let who = match windows.as_slice() {
                    [w] => format!("pid {}", w.pid),
                    ws => format!("{} processes", ws.len()),
                };
                eprint!(
                    "\r\x1b[Krecording {who}: {} elapsed, {} left, {buckets} buckets, {} allocated",
                    secs(elapsed),
                    secs(left),
                    human_bytes(bytes.min(i64::MAX as u64) as i64)
                );
                let _ = std::io::stderr().flush();
            }
        }
        std::thread::sleep(POLL.min(args.duration.saturating_sub(elapsed)));
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    for w in windows.iter_mut().filter(|w| !w.failed) {
        if interrupted && w.ended_by.is_none() {
            w.ended_by = Some("interrupted".into());
        }
        if w.done {
            continue;
        }
        match w.rec.read_complete() {
            Ok(warn) => {
                w.last_read = (Instant::now(), SystemTime::now());
                w.warnings.extend(warn);
            }
            Err(Refusal::ProcessExited { .. }) | Err(Refusal::NoSuchProcess { .. }) => {
                w.ended_by = Some("the process exited".into());
            }
            Err(r) => {
                w.failed = true;
                fail(Failure::Refused(r), &mut first_failure)?;
            }
        }
    }
    for w in windows.iter().filter(|w| !w.failed) {
        if let Err(f) = write_window(w, &args) {
            fail(f, &mut first_failure)?;
        }
    }
    match first_failure {
        None => Ok(()),
        Some(code) => Err(Failure::Reported(code)),
    }
}

/// Writes one window's profile to its destination and prints its summary.
fn write_window(w: &Window, args: &RecordArgs) -> Result<(), Failure> {
    let (pid, process_name) = (w.pid, &w.process_name);
    let Some(start) = &w.start else {
        return Ok(());
    };
    let (ended, ended_wall) = w.last_read;
    let duration = ended.duration_since(w.started);
    let mut profile = w.rec.window_profile(start).map_err(Failure::Refused)?;
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
    output::write_to(w.dest.as_deref(), &bytes)?;
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        for warn in &w.warnings {
            let _ = writeln!(err, "goheap: warning: partial profile: {warn}");
        }
        let how = match &w.ended_by {
            Some(why) => format!(" (ended early: {why})"),
            None => String::new(),
        };
        let _ = writeln!(
            err,
            "pid {pid} ({process_name}), {}: recorded {}{how}\nallocated: {} in {} objects   in use at the end: {} in {} objects (scaled estimates)\ntop allocating functions during the window (alloc_space, flat):",
            w.rec.cached.info.binary.go_version_raw,
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
        if let Some(path) = &w.dest {
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
