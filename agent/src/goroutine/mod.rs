//! Goroutines of a running Go process, read from outside: `runtime.allgs`, each `g`'s status,
//! wait reason, creation site and — for goroutines not running — its stack, unwound from the
//! saved context with the pclntab's SP-delta tables. The target is never stopped.
//!
//! - [`layout`] — offsets of `g`/`gobuf`/`stack` per release and arch (checked-in table), status
//!   and wait-reason vocabularies; [`dwarf_layout`] derives the same from a binary's DWARF;
//! - [`read`] — reading and validating every `g`, unwinding the stacks;
//! - [`profile`] — the pprof goroutine profile (`debug=0`), the `debug=2`-like text, folded stacks.

pub mod dwarf_layout;
pub mod gc;
pub mod gc_layout;
pub mod layout;
pub mod profile;
pub mod read;
pub mod waitreasons;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::binary::{BinaryIdentity, CachedBinary};
use crate::error::Refusal;
use crate::goroutine::layout::GLayout;
use crate::goroutine::read::{
    GoroutineLimits, GoroutineReadError, GoroutineSnapshot, GoroutineTarget,
};
use crate::profile::heap::{HeapProfileOptions, ProfileMapping};
use crate::symbolize::symbolizer::Symbolizer;
use crate::target::open::{exited, load_bias, memory_refusal, permission_denied};
use crate::target::procfs::ProcPaths;

/// Where a binary's goroutine layout came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The checked-in table row of its release (stripped binaries).
    Table,
}

/// The layout for `cached`'s binary: its DWARF's when it has DWARF, else the table's; derived once
/// per binary identity for the life of the process.
pub fn layout_for(cached: &CachedBinary) -> (GLayout, LayoutSource) {
    static DERIVED: OnceLock<Mutex<HashMap<BinaryIdentity, Option<GLayout>>>> = OnceLock::new();
    let bin = &cached.info.binary;
    let map = DERIVED.get_or_init(Default::default);
    let known = map.lock().ok().and_then(|m| m.get(&bin.identity).copied());
    let derived = match known {
        Some(d) => d,
        None => {
            let d = dwarf_layout::layout_from_dwarf(&bin.path).ok();
            if let Ok(mut m) = map.lock() {
                if m.len() > 1024 {
                    m.clear();
                }
                m.insert(bin.identity, d);
            }
            d
        }
    };
    match derived {
        Some(l) => (l, LayoutSource::Dwarf),
        None => (
            GLayout::for_version(&bin.go_version, bin.arch),
            LayoutSource::Table,
        ),
    }
}

/// Per-binary goroutine facts: where `allgs`/`allglen` are and the `g` layout; located once per
/// binary identity for the life of the process (the error says why they could not be located).
pub fn binary_facts(
    cached: &CachedBinary,
) -> Result<
    (
        crate::binary::locate::GoroutineSymbols,
        GLayout,
        LayoutSource,
    ),
    String,
> {
    type Facts = Result<crate::binary::locate::GoroutineSymbols, String>;
    static FOUND: OnceLock<Mutex<HashMap<BinaryIdentity, Facts>>> = OnceLock::new();
    let bin = &cached.info.binary;
    let map = FOUND.get_or_init(Default::default);
    let known = map.lock().ok().and_then(|m| m.get(&bin.identity).cloned());
    let syms = match known {
        Some(s) => s,
        None => {
            let s = bin.goroutine_symbols();
            if let Ok(mut m) = map.lock() {
                if m.len() > 1024 {
                    m.clear();
                }
                m.insert(bin.identity, s.clone());
            }
            s
        }
    }?;
    let (layout, source) = layout_for(cached);
    Ok((syms, layout, source))
}

/// Every goroutine of one process, read once, with what is needed to symbolize and emit it.
pub struct ProcessGoroutines {
    pub snapshot: GoroutineSnapshot,
    pub symbolizer: Arc<Symbolizer>,
    pub bias: u64,
    pub mappings: Vec<ProfileMapping>,
    pub time_nanos: i64,
    pub layout_source: LayoutSource,
}

impl ProcessGoroutines {
    /// The pprof goroutine profile ([`profile::build`]).
    pub fn profile(&self) -> pprof_proto::Profile {
        profile::build(
            &self.snapshot,
            self.symbolizer.pclntab(),
            self.bias,
            &self.mappings,
            self.time_nanos,
        )
    }
}

/// Reads the goroutines of `pid` (running `cached`'s binary): locate `allgs`, open the memory,
/// read and unwind. Refuses as the heap profile does (no such process, permission, not Go, …).
pub fn read_process(
    proc_root: &Path,
    pid: i32,
    cached: &CachedBinary,
) -> Result<ProcessGoroutines, Refusal> {
    let info = &cached.info;
    let bin = &info.binary;
    let (syms, layout, layout_source) =
        binary_facts(cached).map_err(|detail| Refusal::NoGoroutineSymbols {
            exe: bin.path.display().to_string(),
            detail,
        })?;
    let symbolizer = cached.symbolizer().map_err(|detail| Refusal::Corrupt {
        pid,
        detail: format!("cannot read .gopclntab: {detail}"),
    })?;
    let mem = crate::target::memory::VmReader::open(proc_root, pid)
        .map_err(|e| memory_refusal(pid, e, proc_root))?;
    let map = crate::target::maps::MemoryMap::read(proc_root, pid).map_err(|e| match e {
        crate::target::maps::MapsError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            permission_denied(
                proc_root,
                pid,
                format!("{}/{pid}/maps", proc_root.display()),
            )
        }
        _ => exited(proc_root, pid),
    })?;
    let bias = load_bias(info, &map).ok_or_else(|| Refusal::Corrupt {
        pid,
        detail:
            "the executable's mapping is not in /proc/PID/maps (cannot compute the PIE load bias)"
                .into(),
    })?;
    let target = GoroutineTarget {
        mem: &mem,
        pclntab: symbolizer.pclntab(),
        layout,
        version: bin.go_version,
        uses_lr: bin.arch == crate::binary::elf::Arch::Arm64,
        allgs: syms.allgs.wrapping_add(bias),
        allglen: syms.allglen.wrapping_add(bias),
        bias,
    };
    let limits = GoroutineLimits::for_version(&bin.go_version);
    let snapshot = read::read_goroutines(&target, &limits).map_err(|e| match e {
        GoroutineReadError::Memory(m) => memory_refusal(pid, m, proc_root),
        GoroutineReadError::Corrupt(detail) => Refusal::Corrupt {
            pid,
            detail: format!("goroutines: {detail}"),
        },
    })?;
    let opts = HeapProfileOptions::for_binary(info, bias, &map);
    let _ = ProcPaths::new(proc_root, pid);
    Ok(ProcessGoroutines {
        snapshot,
        symbolizer,
        bias,
        mappings: opts.mappings,
        time_nanos: opts.time_nanos,
        layout_source,
    })
}

/// Goroutines of a process by state (user goroutines only, as `runtime.NumGoroutine` counts them),
/// from the `g` headers alone (no stacks): what the agent exports each cycle. `mem` is the
/// process's memory, `bias` its load bias.
pub fn count_states(
    mem: &dyn crate::target::memory::RemoteMemory,
    cached: &CachedBinary,
    bias: u64,
) -> Result<std::collections::BTreeMap<&'static str, i64>, String> {
    let (syms, layout, _) = binary_facts(cached)?;
    let symbolizer = cached.symbolizer()?;
    let bin = &cached.info.binary;
    let target = GoroutineTarget {
        mem,
        pclntab: symbolizer.pclntab(),
        layout,
        version: bin.go_version,
        uses_lr: bin.arch == crate::binary::elf::Arch::Arm64,
        allgs: syms.allgs.wrapping_add(bias),
        allglen: syms.allglen.wrapping_add(bias),
        bias,
    };
    let limits = GoroutineLimits::for_version(&bin.go_version);
    read::count_states(&target, &limits).map_err(|e| e.to_string())
}

/// Where `cached`'s binary keeps its GC state ([`gc::GcLocation::of`]), located once per binary
/// identity for the life of the process.
pub fn gc_location(cached: &CachedBinary) -> Result<gc::GcLocation, String> {
    type Found = Result<gc::GcLocation, String>;
    static FOUND: OnceLock<Mutex<HashMap<BinaryIdentity, Found>>> = OnceLock::new();
    let bin = &cached.info.binary;
    let map = FOUND.get_or_init(Default::default);
    if let Some(f) = map.lock().ok().and_then(|m| m.get(&bin.identity).cloned()) {
        return f;
    }
    let f = gc::GcLocation::of(bin);
    if let Ok(mut m) = map.lock() {
        if m.len() > 1024 {
            m.clear();
        }
        m.insert(bin.identity, f.clone());
    }
    f
}
