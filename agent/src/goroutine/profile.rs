//! The goroutine profile as `pprof.Lookup("goroutine").WriteTo(w, 0)` writes it (`printCountProfile`:
//! sample type goroutine/count, period type goroutine/count, period 1, one sample per distinct
//! stack with its count, stacks sorted by count, locations as `appendLocsForStack` makes them), and
//! a text form like `debug=2`.

use std::collections::HashMap;
use std::fmt::Write as _;

use pprof_proto::{
    FrameLine, FunctionId, LocationId, MappingId, MappingInfo, Profile, ProfileBuilder,
};

use crate::goroutine::layout::{wait_reason, GStatus};
use crate::goroutine::read::{Goroutine, GoroutineSnapshot};
use crate::profile::heap::ProfileMapping;
use crate::runtime::version::GoVersion;
use crate::symbolize::locations::{LocationBuilder, LOOKUP_TRIED};
use crate::symbolize::pclntab::Pclntab;

/// The stack a goroutine contributes to the profile: its unwound return PCs, or — running
/// goroutines, whose stack cannot be read without stopping them — its start function alone.
pub fn profile_stack(g: &Goroutine) -> Vec<u64> {
    if g.status == GStatus::Running {
        vec![g.startpc.wrapping_add(1)]
    } else {
        g.stack.to_vec()
    }
}

/// Builds the pprof goroutine profile of the user goroutines of `snap`. `bias` relocates
/// addresses into the target's space (locations carry runtime addresses, as the runtime's own).
/// Running goroutines get the label `state=running` (their one frame is their start function).
pub fn build(
    snap: &GoroutineSnapshot,
    pclntab: &Pclntab,
    bias: u64,
    mappings: &[ProfileMapping],
    time_nanos: i64,
) -> Profile {
    // printCountProfile: count per distinct stack, first occurrence kept; then sorted by count
    // (descending), ties by the key text.
    let mut count: HashMap<(Vec<u64>, bool), i64> = HashMap::new();
    let mut order: Vec<(Vec<u64>, bool)> = Vec::new();
    for g in snap.user() {
        let key = (profile_stack(g), g.status == GStatus::Running);
        let c = count.entry(key.clone()).or_insert(0);
        if *c == 0 {
            order.push(key);
        }
        *c += 1;
    }
    let text = |k: &(Vec<u64>, bool)| {
        let mut s = String::from("@");
        for pc in &k.0 {
            let _ = write!(s, " {:#x}", pc.wrapping_add(bias));
        }
        s
    };
    order.sort_by(|a, b| count[b].cmp(&count[a]).then_with(|| text(a).cmp(&text(b))));

    let mut b = ProfileBuilder::new();
    b.set_period_type("goroutine", "count");
    b.set_period(1);
    b.add_sample_type("goroutine", "count");
    b.set_time_nanos(time_nanos);
    let mapping_ids: Vec<MappingId> = mappings
        .iter()
        .map(|m| {
            b.mapping(&MappingInfo {
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.offset,
                filename: &m.file,
                build_id: &m.build_id,
                has_functions: false,
                has_filenames: false,
                has_line_numbers: false,
                has_inline_frames: false,
            })
        })
        .collect();
    let mut flags = vec![0u8; mappings.len()];
    let mut locs = LocationBuilder::new(pclntab);
    let mut function_ids: Vec<FunctionId> = Vec::new();
    let mut location_ids: Vec<LocationId> = Vec::new();
    for key in &order {
        let ids = locs.append_locs_for_stack(&key.0);
        for f in &locs.functions()[function_ids.len()..] {
            function_ids.push(b.function(&f.name, &f.system_name, &f.filename, f.start_line));
        }
        for l in &locs.locations()[location_ids.len()..] {
            let addr = l.address.wrapping_add(bias);
            let lines: Vec<FrameLine> = l
                .lines
                .iter()
                .filter_map(|ln| {
                    let i = usize::try_from(ln.function_id.checked_sub(1)?).ok()?;
                    function_ids.get(i).map(|&function| FrameLine {
                        function,
                        line: ln.line,
                        column: 0,
                    })
                })
                .collect();
            let mapping = mappings
                .iter()
                .position(|m| m.start <= addr && addr < m.end)
                .map(|i| {
                    flags[i] |= l.symbolize_result;
                    mapping_ids[i]
                });
            // Location ids come from the LocationBuilder in order; a failure here would only
            // mean a duplicate id, which the builder cannot produce.
            if let Ok(id) = b.location(l.id, mapping, addr, &lines) {
                location_ids.push(id);
            }
        }
        let stack: Vec<LocationId> = ids
            .iter()
            .filter_map(|&id| {
                location_ids
                    .get(usize::try_from(id.checked_sub(1)?).ok()?)
                    .copied()
            })
            .collect();
        let labels: &[pprof_proto::SampleLabel<'_>] = if key.1 {
            &[pprof_proto::SampleLabel::Str {
                key: "state",
                value: "running",
            }]
        } else {
            &[]
        };
        let _ = b.add_sample(&stack, &[count[key]], labels);
    }
    for (&id, &f) in mapping_ids.iter().zip(&flags) {
        if f == LOOKUP_TRIED {
            let _ = b.set_mapping_flags(id, true, false, false, false);
        }
    }
    b.build()
}

/// `goroutine N [STATE]:` text of every user goroutine (system goroutines too with `all`), like
/// `debug=2`: state (wait reason while waiting), minutes blocked when known, frames with
/// `file:line`, and `created by F in goroutine N` with the creating goroutine.
pub fn text(snap: &GoroutineSnapshot, pclntab: &Pclntab, version: &GoVersion, all: bool) -> String {
    let mut out = String::new();
    let mut gs: Vec<&Goroutine> = snap
        .goroutines
        .iter()
        .filter(|g| all || !g.system)
        .collect();
    gs.sort_by_key(|g| g.goid);
    for g in gs {
        let _ = writeln!(
            out,
            "goroutine {} [{}]:",
            g.goid,
            state_text(g, version, snap.monotonic_ns)
        );
        if g.status == GStatus::Running {
            let _ = writeln!(
                out,
                "\t(running: stack not read; the process is never stopped)"
            );
        }
        for &pc in g.stack.iter() {
            let Some(f) = pclntab.frame_at(pc) else {
                let _ = writeln!(out, "?()\n\t?:0 pc={pc:#x}");
                continue;
            };
            let _ = writeln!(
                out,
                "{}(...)\n\t{}:{} +{:#x}",
                f.function,
                f.file,
                f.line,
                pc.saturating_sub(1).saturating_sub(f.entry)
            );
        }
        // printcreatedby: not for the main goroutine (created by the runtime's bootstrap).
        if let Some(f) = pclntab.frame_at(g.gopc).filter(|_| g.goid != 1) {
            let by = match g.parent_goid {
                Some(p) if p != 0 => format!(" in goroutine {p}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "created by {}{by}\n\t{}:{} +{:#x}",
                f.function,
                f.file,
                f.line,
                g.gopc.saturating_sub(f.entry)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "# {} goroutines ({} user), {} dropped (changed while read), {} invalid",
        snap.goroutines.len(),
        snap.user().count(),
        snap.changed,
        snap.invalid
    );
    out
}

/// Minutes `g` has been blocked, as the runtime prints them (`(nanotime() - waitsince) / 60e9`),
/// `None` when `waitsince` is unset or the goroutine is not blocked.
pub fn waited_ns(g: &Goroutine, now_ns: i64) -> Option<i64> {
    let blocked = matches!(
        g.status,
        GStatus::Waiting | GStatus::Syscall | GStatus::Leaked
    );
    (blocked && g.waitsince > 0).then(|| now_ns.saturating_sub(g.waitsince).max(0))
}

/// `STATE` of `goroutine N [STATE]`: the wait reason while waiting, `, N minutes` when ≥ 1.
pub fn state_text(g: &Goroutine, v: &GoVersion, now_ns: i64) -> String {
    let mut s = match g.status {
        GStatus::Waiting | GStatus::Leaked => wait_reason(v, g.wait_reason)
            .filter(|r| !r.is_empty())
            .unwrap_or(g.status.as_str())
            .to_string(),
        st => st.as_str().to_string(),
    };
    if g.raw_status & crate::goroutine::layout::G_SCAN != 0 {
        s.push_str(" (scan)");
    }
    if let Some(ns) = waited_ns(g, now_ns) {
        let min = ns / 60_000_000_000;
        if min >= 1 {
            let _ = write!(s, ", {min} minutes");
        }
    }
    s
}

/// The leak view: the (already filtered) user goroutines of `snap` grouped by creation site and
/// stack, largest group first; each group with its count, the shortest and longest known wait,
/// its state, and its stack.
pub fn leak_report(snap: &GoroutineSnapshot, pclntab: &Pclntab, version: &GoVersion) -> String {
    let mut groups: HashMap<(u64, Vec<u64>), Vec<&Goroutine>> = HashMap::new();
    for g in snap.user() {
        groups
            .entry((g.gopc, g.stack.to_vec()))
            .or_default()
            .push(g);
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::new();
    let total: usize = groups.iter().map(|g| g.1.len()).sum();
    let _ = writeln!(
        out,
        "{total} goroutines blocked, in {} groups (creation site, stack)",
        groups.len()
    );
    for ((gopc, stack), gs) in &groups {
        let now = snap.monotonic_ns;
        let waits: Vec<i64> = gs.iter().filter_map(|g| waited_ns(g, now)).collect();
        let (lo, hi) = (
            waits.iter().min().copied().unwrap_or(0),
            waits.iter().max().copied().unwrap_or(0),
        );
        let created = pclntab
            .frame_at(*gopc)
            .map(|f| format!("{} at {}:{}", f.function, f.file, f.line))
            .unwrap_or_else(|| format!("{gopc:#x}"));
        let _ = writeln!(
            out,
            "\n{} goroutines [{}], blocked {}–{} s, created by {created}",
            gs.len(),
            state_text(gs[0], version, i64::MIN),
            lo / 1_000_000_000,
            hi / 1_000_000_000
        );
        for &pc in stack {
            match pclntab.frame_at(pc) {
                Some(f) => {
                    let _ = writeln!(out, "\t{} {}:{}", f.function, f.file, f.line);
                }
                None => {
                    let _ = writeln!(out, "\t? {pc:#x}");
                }
            }
        }
    }
    out
}
