//! `goheap top`: a live view of one Go process's allocations by function, like `py-spy top`.
//!
//! Every `--interval` the process is read with `goheap record`'s [`Recorder`] (the agent's
//! incremental reader: one batched re-read of the known buckets plus a walk of the new head), and
//! the interval's growth is [`Recorder::window_profile`] of the previous read: alloc_* the growth
//! (divided by the interval for rates), inuse_* the state at its end, as scaled estimates. On a
//! terminal the table is drawn with ratatui (keys change the sort column, pause, quit); otherwise,
//! or with `--once`, plain-text snapshots are printed, one per interval.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use pprof_proto::Profile;

use super::Failure;
use crate::binary::BinaryCache;
use crate::error::Refusal;
use crate::profile::summary::human_bytes;
use crate::profile::window::Recorder;
use crate::runtime::snapshot::HeapSnapshot;

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false).args(["pid", "name", "container"])))]
pub(crate) struct TopArgs {
    /// Process id of the Go program.
    #[arg(long, short = 'p')]
    pub pid: Option<i32>,
    /// The one Go process whose comm or executable path matches this regex (several matches are
    /// refused with their list: top shows one process).
    #[arg(long, value_name = "REGEX")]
    pub name: Option<String>,
    /// The one Go process in a container whose id starts with these hex digits (from its cgroup).
    #[arg(long, value_name = "ID-PREFIX")]
    pub container: Option<String>,
    /// Time between two reads (and refreshes), 100ms to 1h; rates are over the last interval.
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Print one plain-text snapshot (the allocations of one interval) and exit.
    #[arg(long)]
    pub once: bool,
    /// The column to sort by (on a terminal: keys 1-6, or s for the next one).
    #[arg(long, value_enum, default_value_t = SortKey::AllocBytes)]
    pub sort: SortKey,
    /// Rows of each plain-text snapshot (the terminal view shows as many as fit).
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Refuse stripped binaries whose runtime globals were found from code references only (no
    /// .symtab or debug file).
    #[arg(long)]
    pub require_symtab: bool,
    /// When the target's runtime.MemProfileRate is 0 (the linker disabled heap profiling), write
    /// 524288 into it in this one process first, only at an address a symbol table or debug file
    /// proves (refused for -s -w binaries); a non-zero rate is never written.
    #[arg(long)]
    pub enable_profiling: bool,
    /// Like --enable-profiling, and also for stripped (-s -w) binaries, at the address of
    /// runtime.MemProfileRate recovered from code references, when every check holds (see
    /// `goheap record --help`); otherwise refused with the failed check.
    #[arg(long)]
    pub enable_profiling_from_code: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::daemon::parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!("interval must be 100ms to 1h, got {s}"));
    }
    Ok(d)
}

/// The sortable columns, in the order of their keys (1-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SortKey {
    /// Bytes allocated per second by the function itself (flat).
    AllocBytes,
    /// Bytes allocated per second by the function and what it calls (cumulative).
    CumAllocBytes,
    /// Objects allocated per second by the function itself (flat).
    AllocObjects,
    /// Bytes in use allocated by the function itself (flat).
    InuseBytes,
    /// Objects in use allocated by the function itself (flat).
    InuseObjects,
    /// Bytes in use allocated by the function and what it calls (cumulative).
    CumInuseBytes,
}

impl SortKey {
    const ALL: [SortKey; 6] = [
        SortKey::AllocBytes,
        SortKey::CumAllocBytes,
        SortKey::AllocObjects,
        SortKey::InuseBytes,
        SortKey::InuseObjects,
        SortKey::CumInuseBytes,
    ];

    /// The column heading.
    fn heading(self) -> &'static str {
        match self {
            SortKey::AllocBytes => "ALLOC/s",
            SortKey::CumAllocBytes => "CUM ALLOC/s",
            SortKey::AllocObjects => "OBJECTS/s",
            SortKey::InuseBytes => "IN USE",
            SortKey::InuseObjects => "IN-USE OBJ",
            SortKey::CumInuseBytes => "CUM IN USE",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

/// One function's values over an interval. Rates are scaled bytes (objects) per second over the
/// interval; in-use values are scaled bytes (objects) at its end.
#[derive(Clone, Debug, Default)]
struct FnRow {
    name: String,
    /// [flat alloc B/s, cum alloc B/s, flat alloc objects/s, flat in-use B, flat in-use objects,
    /// cum in-use B], in [`SortKey::ALL`] order.
    values: [f64; 6],
}

/// One refresh: the interval's rows and totals.
#[derive(Clone, Debug, Default)]
struct Frame {
    /// 1 for the first interval.
    seq: u64,
    /// Length of the interval in seconds (between the two reads).
    seconds: f64,
    rows: Vec<FnRow>,
    /// Whole-process [alloc B/s, alloc objects/s, in-use B, in-use objects].
    totals: [f64; 4],
    mem_profile_rate: u64,
    /// Completed GC cycles as the runtime's `mProfCycle` counts them (`None` when `mProfCycle` was
    /// not located), and how many completed during the interval.
    gc_cycle: Option<u32>,
    gc_in_interval: Option<u32>,
    buckets: usize,
    warning: Option<String>,
}

/// Static facts for the header.
struct Header {
    pid: i32,
    name: String,
    exe: String,
    go_version: String,
}

impl Header {
    fn line(&self, f: &Frame) -> String {
        let gc = match (f.gc_cycle, f.gc_in_interval) {
            (Some(c), Some(d)) => format!("GC cycles {c} (+{d})"),
            (Some(c), None) => format!("GC cycles {c}"),
            _ => "GC cycles unknown".into(),
        };
        // The path last: a narrow terminal cuts it, not the numbers.
        format!(
            "pid {} ({})  {}  MemProfileRate {}  {gc}  buckets {}  {}",
            self.pid, self.name, self.go_version, f.mem_profile_rate, f.buckets, self.exe
        )
    }
}

fn totals_line(f: &Frame) -> String {
    format!(
        "allocating {}/s, {} objects/s   in use {} in {} objects   snapshot {} over {:.1}s (scaled estimates, published at each GC)",
        human_bytes(f.totals[0] as i64),
        f.totals[1].round() as i64,
        human_bytes(f.totals[2] as i64),
        f.totals[3].round() as i64,
        f.seq,
        f.seconds
    )
}

/// A value of column `k` for a table cell.
fn cell(k: SortKey, v: f64) -> String {
    match k {
        SortKey::AllocBytes | SortKey::CumAllocBytes => format!("{}/s", human_bytes(v as i64)),
        SortKey::AllocObjects => format!("{}", v.round() as i64),
        SortKey::InuseBytes | SortKey::CumInuseBytes => human_bytes(v as i64),
        SortKey::InuseObjects => format!("{}", v.round() as i64),
    }
}

/// Sorts rows by `key` (largest first, then by name).
fn sort_rows(rows: &mut [FnRow], key: SortKey) {
    let i = SortKey::ALL.iter().position(|k| *k == key).unwrap_or(0);
    rows.sort_by(|a, b| {
        b.values[i]
            .total_cmp(&a.values[i])
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Column width of the value columns in plain text.
const COL: usize = 13;

fn heading_line(sort: SortKey) -> String {
    let mut s = String::new();
    for k in SortKey::ALL {
        let h = if k == sort {
            format!("{}*", k.heading())
        } else {
            k.heading().to_string()
        };
        s.push_str(&format!("{h:>COL$}"));
    }
    s.push_str("  FUNCTION");
    s
}

fn row_line(r: &FnRow) -> String {
    let mut s = String::new();
    for (k, v) in SortKey::ALL.iter().zip(r.values) {
        s.push_str(&format!("{:>COL$}", cell(*k, v)));
    }
    s.push_str("  ");
    s.push_str(&r.name);
    s
}

/// The plain-text snapshot (`--once`, or stdout not a terminal).
fn plain(h: &Header, f: &Frame, sort: SortKey, limit: usize) -> String {
    let mut rows = f.rows.clone();
    sort_rows(&mut rows, sort);
    let mut out = format!(
        "{}\n{}\n{}\n",
        h.line(f),
        totals_line(f),
        heading_line(sort)
    );
    for r in rows.iter().take(limit) {
        out.push_str(&row_line(r));
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("  (no sampled allocations and nothing in use)\n");
    }
    if let Some(w) = &f.warning {
        out.push_str(&format!("warning: partial read: {w}\n"));
    }
    out
}

/// Rows by function from an interval's profile (alloc_* the interval's growth, inuse_* the state
/// at its end): flat is the leaf frame, cumulative every distinct function of the stack.
fn rows_of(p: &Profile, seconds: f64) -> Result<(Vec<FnRow>, [f64; 4]), String> {
    let samples = p.flat_samples().map_err(|e| e.to_string())?;
    let per_s = if seconds > 0.0 { 1.0 / seconds } else { 0.0 };
    let mut by: HashMap<&str, FnRow> = HashMap::new();
    let mut totals = [0f64; 4];
    for s in &samples {
        let v = |i: usize| s.values.get(i).copied().unwrap_or(0) as f64;
        let (ao, ab, io, ib) = (v(0), v(1), v(2), v(3));
        totals[0] += ab * per_s;
        totals[1] += ao * per_s;
        totals[2] += ib;
        totals[3] += io;
        let mut seen: Vec<&str> = Vec::new();
        for (depth, (name, _, _)) in s.stack.iter().enumerate() {
            let name = name.as_str();
            let row = by.entry(name).or_insert_with(|| FnRow {
                name: name.to_string(),
                ..FnRow::default()
            });
            if depth == 0 {
                row.values[0] += ab * per_s;
                row.values[2] += ao * per_s;
                row.values[3] += ib;
                row.values[4] += io;
            }
            if !seen.contains(&name) {
                seen.push(name);
                row.values[1] += ab * per_s;
                row.values[5] += ib;
            }
        }
    }
    Ok((by.into_values().collect(), totals))
}

/// Set by SIGINT/SIGTERM/SIGHUP while `top` runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP end `top` (so the terminal is restored) while this lives; the
/// previous actions are restored on drop.
struct SignalGuard(Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)>);

impl SignalGuard {
    fn install() -> SignalGuard {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        STOP.store(false, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if let Ok(prev) = unsafe { sigaction(sig, &action) } {
                old.push((sig, prev));
            }
        }
        SignalGuard(old)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, prev) in &self.0 {
            // SAFETY: restores the action that was installed before.
            let _ = unsafe { nix::sys::signal::sigaction(*sig, prev) };
        }
    }
}

/// The process being watched and the read at the start of the current interval.
struct Watch {
    rec: Recorder,
    prev: HeapSnapshot,
    prev_at: Instant,
    seq: u64,
}

/// What ended a read.
enum Sampled {
    Frame(Box<Frame>),
    Exited,
}

impl Watch {
    /// Reads the process and makes the frame of the interval since the previous read.
    fn sample(&mut self) -> Result<Sampled, Refusal> {
        let warning = match self.rec.read() {
            Ok(w) => w,
            Err(Refusal::ProcessExited { .. }) | Err(Refusal::NoSuchProcess { .. }) => {
                return Ok(Sampled::Exited)
            }
            Err(r) => return Err(r),
        };
        let now = Instant::now();
        let seconds = now.duration_since(self.prev_at).as_secs_f64();
        let profile = self.rec.window_profile(&self.prev)?;
        let end = self.rec.snapshot();
        let (rows, totals) = rows_of(&profile, seconds).map_err(|detail| Refusal::Corrupt {
            pid: self.rec.pid,
            detail,
        })?;
        self.seq += 1;
        let frame = Frame {
            seq: self.seq,
            seconds,
            rows,
            totals,
            mem_profile_rate: end.mem_profile_rate,
            gc_cycle: end.cycle,
            gc_in_interval: match (self.prev.cycle, end.cycle) {
                (Some(a), Some(b)) => Some(b.wrapping_sub(a)),
                _ => None,
            },
            buckets: end.buckets.len(),
            warning,
        };
        self.prev = end;
        self.prev_at = now;
        Ok(Sampled::Frame(Box::new(frame)))
    }
}

pub(crate) fn run(proc_root: &Path, args: TopArgs) -> Result<(), Failure> {
    let selector = crate::target::select::Selector::from_args(
        args.pid,
        args.name.as_deref(),
        args.container.as_deref(),
    )
    .map_err(Failure::Select)?
    .ok_or_else(|| Failure::Usage("give --pid, --name or --container".into()))?;
    let pid = crate::target::select::select_one(proc_root, &selector)
        .map_err(Failure::Select)?
        .pid;
    let mut cache = BinaryCache::default();
    let mut rec = Recorder::open(proc_root, pid, &mut cache, args.require_symtab)
        .map_err(Failure::Refused)?;
    let cached = rec.cached.clone();
    let info = &cached.info;
    let header = Header {
        pid,
        name: crate::target::procfs::comm(proc_root, pid).unwrap_or_else(|| "process".into()),
        exe: std::fs::read_link(proc_root.join(pid.to_string()).join("exe"))
            .unwrap_or_else(|_| info.binary.path.clone())
            .display()
            .to_string(),
        go_version: info.binary.go_version_raw.clone(),
    };
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
        super::record::enable_profiling(&mut rec, args.enable_profiling_from_code, false)?;
    }
    let _signals = SignalGuard::install();
    let first_warning = rec.read_complete().map_err(Failure::Refused)?;
    if let Some(w) = first_warning {
        eprintln!("goheap: warning: partial read: {w}");
    }
    let watch = Watch {
        prev: rec.snapshot(),
        rec,
        prev_at: Instant::now(),
        seq: 0,
    };
    if args.once || !std::io::stdout().is_terminal() {
        run_plain(watch, &header, &args)
    } else {
        run_tui(watch, &header, &args)
    }
}

/// Sleeps until `deadline` in short steps; false when a signal asked to stop.
fn sleep_until(deadline: Instant) -> bool {
    loop {
        if STOP.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

fn run_plain(mut watch: Watch, header: &Header, args: &TopArgs) -> Result<(), Failure> {
    let mut next = watch.prev_at + args.interval;
    let mut out = std::io::stdout();
    loop {
        if !sleep_until(next) {
            return Ok(());
        }
        next += args.interval;
        match watch.sample().map_err(Failure::Refused)? {
            Sampled::Exited => {
                let _ = writeln!(out, "process {} ({}) exited", header.pid, header.name);
                return Ok(());
            }
            Sampled::Frame(f) => {
                let text = plain(header, &f, args.sort, args.limit);
                if out.write_all(text.as_bytes()).is_err() || out.flush().is_err() {
                    // The reader went away (a closed pipe): nothing more to show.
                    return Ok(());
                }
                if args.once {
                    return Ok(());
                }
                let _ = writeln!(out);
            }
        }
    }
}

/// The terminal in raw mode on the alternate screen while this lives; restored on drop (every exit
/// path: q, Ctrl-C, a signal, an error, a panic's unwinding, the target's exit).
struct TerminalGuard {
    terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::Stdout>>,
}

impl TerminalGuard {
    fn enter() -> std::io::Result<TerminalGuard> {
        use ratatui::crossterm::{cursor, execute, terminal};
        terminal::enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, terminal::EnterAlternateScreen, cursor::Hide) {
            restore_terminal();
            return Err(e);
        }
        match ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }
}

fn restore_terminal() {
    use ratatui::crossterm::{cursor, execute, terminal};
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// What the terminal view shows.
struct View<'a> {
    header: &'a Header,
    frame: Option<Frame>,
    sort: SortKey,
    paused: bool,
    interval: Duration,
}

fn draw(f: &mut ratatui::Frame, v: &View) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::text::Line;
    use ratatui::widgets::{Cell, Paragraph, Row, Table};

    let [head, table_area, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let head_text = match &v.frame {
        Some(fr) => vec![Line::from(v.header.line(fr)), Line::from(totals_line(fr))],
        None => vec![
            Line::from(format!(
                "pid {} ({})  {}  {}",
                v.header.pid, v.header.name, v.header.go_version, v.header.exe
            )),
            Line::from(format!(
                "reading: the first interval ends in {:.1}s",
                v.interval.as_secs_f64()
            )),
        ],
    };
    f.render_widget(Paragraph::new(head_text), head);

    let headings = SortKey::ALL.iter().map(|k| {
        let c = Cell::from(if *k == v.sort {
            format!("{}*", k.heading())
        } else {
            k.heading().to_string()
        });
        if *k == v.sort {
            c.style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED))
        } else {
            c
        }
    });
    let head_row = Row::new(headings.chain([Cell::from("FUNCTION")]))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let mut rows = v.frame.as_ref().map(|f| f.rows.clone()).unwrap_or_default();
    sort_rows(&mut rows, v.sort);
    let visible = table_area.height.saturating_sub(1) as usize;
    let body = rows.iter().take(visible).map(|r| {
        Row::new(
            SortKey::ALL
                .iter()
                .zip(r.values)
                .map(|(k, x)| Cell::from(format!("{:>12}", cell(*k, x))))
                .chain([Cell::from(r.name.clone())]),
        )
    });
    let mut widths = vec![Constraint::Length(12); SortKey::ALL.len()];
    widths.push(Constraint::Min(20));
    f.render_widget(Table::new(body, widths).header(head_row), table_area);

    let state = if v.paused { "PAUSED  " } else { "" };
    let foot_text = format!(
        "{state}q quit  p/space pause  1-6 or s: sort column (now {})  refresh {:.1}s",
        v.sort.heading(),
        v.interval.as_secs_f64()
    );
    f.render_widget(
        Paragraph::new(foot_text).style(Style::default().add_modifier(Modifier::REVERSED)),
        foot,
    );
}

fn run_tui(mut watch: Watch, header: &Header, args: &TopArgs) -> Result<(), Failure> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let mut term = TerminalGuard::enter()
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot set up the terminal: {e}")))?;
    let mut view = View {
        header,
        frame: None,
        sort: args.sort,
        paused: false,
        interval: args.interval,
    };
    let mut latest: Option<Frame> = None;
    let mut next = watch.prev_at + args.interval;
    let mut dirty = true;
    let io = |e: std::io::Error| Failure::Other(anyhow::anyhow!("terminal: {e}"));
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        if dirty {
            term.terminal.draw(|f| draw(f, &view)).map_err(io)?;
            dirty = false;
        }
        let now = Instant::now();
        let wait = next
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        if event::poll(wait).map_err(io)? {
            match event::read().map_err(io)? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                            return Ok(())
                        }
                        KeyCode::Char('p') | KeyCode::Char(' ') => {
                            view.paused = !view.paused;
                            if !view.paused {
                                view.frame = latest.clone();
                            }
                        }
                        KeyCode::Char('s') | KeyCode::Tab => view.sort = view.sort.next(),
                        KeyCode::Char(c @ '1'..='6') => {
                            view.sort = SortKey::ALL[(c as u8 - b'1') as usize]
                        }
                        _ => {}
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if Instant::now() >= next {
            next += args.interval;
            // A refresh that fell far behind (a suspended terminal) starts again from now.
            if next < Instant::now() {
                next = Instant::now() + args.interval;
            }
            match watch.sample() {
                Ok(Sampled::Frame(f)) => {
                    latest = Some(*f);
                    if !view.paused {
                        view.frame = latest.clone();
                        dirty = true;
                    }
                }
                Ok(Sampled::Exited) => {
                    drop(term);
                    if let Some(f) = &view.frame {
                        print!("{}", plain(header, f, view.sort, args.limit));
                    }
                    println!("process {} ({}) exited", header.pid, header.name);
                    return Ok(());
                }
                Err(r) => {
                    drop(term);
                    return Err(Failure::Refused(r));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, values: [f64; 6]) -> FnRow {
        FnRow {
            name: name.into(),
            values,
        }
    }

    /// Flat values go to the leaf, cumulative ones to every distinct function of the stack once
    /// (a recursive frame is not counted twice); rates are per second of the interval.
    #[test]
    fn flat_and_cumulative_by_function() {
        use pprof_proto::{FrameLine, ProfileBuilder};
        let mut b = ProfileBuilder::new();
        for t in [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ] {
            b.add_sample_type(t, "count");
        }
        let loc = |b: &mut ProfileBuilder, key: u64, name: &str| {
            let function = b.function(name, name, "x.go", 1);
            b.location(
                key,
                None,
                key,
                &[FrameLine {
                    function,
                    line: 1,
                    column: 0,
                }],
            )
            .unwrap()
        };
        let (leaf, rec, main) = (
            loc(&mut b, 1, "leaf"),
            loc(&mut b, 2, "rec"),
            loc(&mut b, 3, "main"),
        );
        // leaf <- rec <- rec <- main: 4 objects, 400 B allocated, 100 B in use.
        b.add_sample(&[leaf, rec, rec, main], &[4, 400, 1, 100], &[])
            .unwrap();
        // rec <- main: 2 objects, 60 B allocated.
        b.add_sample(&[rec, main], &[2, 60, 0, 0], &[]).unwrap();
        let (rows, totals) = rows_of(&b.build(), 2.0).unwrap();
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap().values;
        assert_eq!(get("leaf"), [200.0, 200.0, 2.0, 100.0, 1.0, 100.0]);
        assert_eq!(get("rec"), [30.0, 230.0, 1.0, 0.0, 0.0, 100.0]);
        assert_eq!(get("main"), [0.0, 230.0, 0.0, 0.0, 0.0, 100.0]);
        assert_eq!(totals, [230.0, 3.0, 100.0, 1.0]);
    }

    #[test]
    fn sorting_follows_the_key() {
        let mut rows = vec![
            row("a", [1.0, 9.0, 0.0, 5.0, 0.0, 0.0]),
            row("b", [2.0, 2.0, 0.0, 1.0, 0.0, 0.0]),
        ];
        sort_rows(&mut rows, SortKey::AllocBytes);
        assert_eq!(rows[0].name, "b");
        sort_rows(&mut rows, SortKey::CumAllocBytes);
        assert_eq!(rows[0].name, "a");
        sort_rows(&mut rows, SortKey::InuseBytes);
        assert_eq!(rows[0].name, "a");
        assert_eq!(SortKey::CumInuseBytes.next(), SortKey::AllocBytes);
    }
}
