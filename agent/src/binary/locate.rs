//! The one place that decides how a binary's runtime globals are located: `.symtab`, then a separate
//! debug file, then code references; and the per-binary facts every process of it shares.

use std::fs::File;
use std::path::Path;

use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness, ReadCache};

use crate::binary::elf::{BinaryError, GoBinary};
use crate::binary::symtab::{ScanStats, SymbolTable, SymtabLocation};
use crate::runtime::layout::RuntimeLayout;
use crate::target::procfs::TargetView;

/// Runtime globals goheap looks up in `.symtab`.
pub const SYM_MBUCKETS: &str = "runtime.mbuckets";
pub const SYM_MEM_PROFILE_RATE: &str = "runtime.MemProfileRate";
pub const SYM_DISABLE_MEMORY_PROFILING: &str = "runtime.disableMemoryProfiling";
pub const SYM_MPROF_CYCLE: &str = "runtime.mProfCycle";
/// Goroutine globals: `allgs []*g` and `allglen uintptr` (runtime/proc.go).
pub const SYM_ALLGS: &str = "runtime.allgs";
pub const SYM_ALLGLEN: &str = "runtime.allglen";

/// Addresses (unrelocated) of the goroutine globals, and how they were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoroutineSymbols {
    /// `runtime.allgs`, a slice header (ptr, len, cap).
    pub allgs: u64,
    /// `runtime.allglen`.
    pub allglen: u64,
    pub method: LocateMethod,
}

impl GoBinary {
    /// Finds `runtime.allgs` and `runtime.allglen` in `.symtab`, else (stripped binaries) by
    /// code references ([`crate::binary::coderef::recover_goroutine_globals`]); the error says
    /// why not.
    pub fn goroutine_symbols(&self) -> Result<GoroutineSymbols, String> {
        let Some(loc) = self.symtab_location() else {
            let map = crate::symbolize::symbolizer::map_binary(self)
                .map_err(|e| format!("stripped: no .symtab; {e}"))?;
            let pclntab = crate::symbolize::pclntab::Pclntab::parse_mapped(map.clone())
                .map_err(|e| format!("stripped: no .symtab; .gopclntab: {e}"))?;
            let ranges = PclntabRanges::resolve_names(
                &pclntab,
                crate::binary::coderef::GOROUTINE_FUNCTIONS_USED,
            );
            drop(pclntab);
            let found = crate::binary::coderef::recover_goroutine_globals(&map, &ranges)
                .map_err(|e| format!("stripped: no .symtab; code references: {e}"))?;
            return Ok(GoroutineSymbols {
                allgs: found.allgs,
                allglen: found.allglen,
                method: LocateMethod::CodeReference,
            });
        };
        let table = SymbolTable::find(&self.file, loc, &[SYM_ALLGS, SYM_ALLGLEN])
            .map_err(|e| BinaryError::Symtab(self.path.display().to_string(), e).to_string())?;
        match (table.get(SYM_ALLGS), table.get(SYM_ALLGLEN)) {
            (Some(a), Some(l)) => Ok(GoroutineSymbols {
                allgs: a.value,
                allglen: l.value,
                method: LocateMethod::Symtab,
            }),
            _ => Err(".symtab lacks runtime.allgs or runtime.allglen".into()),
        }
    }
}

/// GC globals: `memstats mstats` and `gcController gcControllerState` (runtime/mstats.go,
/// mgcpacer.go).
pub const SYM_MEMSTATS: &str = "runtime.memstats";
pub const SYM_GC_CONTROLLER: &str = "runtime.gcController";

/// Addresses (unrelocated) of the GC globals' first bytes, and how they were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSymbols {
    pub memstats: u64,
    pub gc_controller: u64,
    pub method: LocateMethod,
}

impl GoBinary {
    /// Finds `runtime.memstats` and `runtime.gcController` in `.symtab`, else (stripped binaries)
    /// by code references ([`crate::binary::coderef::recover_gc_globals`], fitted with the
    /// offsets `layout` of the binary's release); the error says why not.
    pub fn gc_symbols(
        &self,
        layout: &crate::goroutine::gc_layout::GcLayout,
    ) -> Result<GcSymbols, String> {
        let Some(loc) = self.symtab_location() else {
            let map = crate::symbolize::symbolizer::map_binary(self)
                .map_err(|e| format!("stripped: no .symtab; {e}"))?;
            let pclntab = crate::symbolize::pclntab::Pclntab::parse_mapped(map.clone())
                .map_err(|e| format!("stripped: no .symtab; .gopclntab: {e}"))?;
            let ranges =
                PclntabRanges::resolve_names(&pclntab, crate::binary::coderef::GC_FUNCTIONS_USED);
            drop(pclntab);
            let found = crate::binary::coderef::recover_gc_globals(
                &map,
                &ranges,
                &layout.mstats.offsets(),
                &layout.controller.offsets(),
            )
            .map_err(|e| format!("stripped: no .symtab; code references: {e}"))?;
            return Ok(GcSymbols {
                memstats: found.memstats,
                gc_controller: found.gc_controller,
                method: LocateMethod::CodeReference,
            });
        };
        let table = SymbolTable::find(&self.file, loc, &[SYM_MEMSTATS, SYM_GC_CONTROLLER])
            .map_err(|e| BinaryError::Symtab(self.path.display().to_string(), e).to_string())?;
        match (table.get(SYM_MEMSTATS), table.get(SYM_GC_CONTROLLER)) {
            (Some(m), Some(g)) => Ok(GcSymbols {
                memstats: m.value,
                gc_controller: g.value,
                method: LocateMethod::Symtab,
            }),
            _ => Err(".symtab lacks runtime.memstats or runtime.gcController".into()),
        }
    }
}

/// Addresses of the runtime globals (unrelocated ELF virtual addresses), and how they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSymbols {
    pub mbuckets: u64,
    pub mem_profile_rate: u64,
    pub disable_memory_profiling: Option<u64>,
    pub mprof_cycle: Option<u64>,
    /// `symtab`, `debug-file` or `code-reference`.
    pub method: LocateMethod,
}

/// How the runtime globals were located.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocateMethod {
    Symtab,
    DebugFile,
    CodeReference,
}

impl LocateMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LocateMethod::Symtab => "symtab",
            LocateMethod::DebugFile => "debug-file",
            LocateMethod::CodeReference => "code-reference",
        }
    }

    /// Whether an address found this way is proven enough to be written to (force mode).
    pub fn proven_by_symbols(self) -> bool {
        matches!(self, LocateMethod::Symtab | LocateMethod::DebugFile)
    }
}

impl GoBinary {
    /// Looks up the runtime globals in this file's `.symtab` (streaming, fixed memory).
    /// `Ok(None)` when the binary has no `.symtab` or lacks `runtime.mbuckets`.
    pub fn runtime_symbols_from_symtab(
        &self,
    ) -> Result<Option<(RuntimeSymbols, ScanStats)>, BinaryError> {
        let Some(loc) = self.symtab_location() else {
            return Ok(None);
        };
        scan_runtime_symbols(&self.file, loc, &self.path, LocateMethod::Symtab)
    }
}

/// Scans `.symtab` at `loc` of `file` for the runtime globals; `Ok(None)` if `runtime.mbuckets` or
/// `runtime.MemProfileRate` is missing.
fn scan_runtime_symbols(
    file: &File,
    loc: SymtabLocation,
    path: &Path,
    method: LocateMethod,
) -> Result<Option<(RuntimeSymbols, ScanStats)>, BinaryError> {
    let names = [
        SYM_MBUCKETS,
        SYM_MEM_PROFILE_RATE,
        SYM_DISABLE_MEMORY_PROFILING,
        SYM_MPROF_CYCLE,
    ];
    let table = SymbolTable::find(file, loc, &names)
        .map_err(|e| BinaryError::Symtab(path.display().to_string(), e))?;
    let (Some(mb), Some(rate)) = (table.get(SYM_MBUCKETS), table.get(SYM_MEM_PROFILE_RATE)) else {
        return Ok(None);
    };
    Ok(Some((
        RuntimeSymbols {
            mbuckets: mb.value,
            mem_profile_rate: rate.value,
            disable_memory_profiling: table.get(SYM_DISABLE_MEMORY_PROFILING).map(|s| s.value),
            mprof_cycle: table.get(SYM_MPROF_CYCLE).map(|s| s.value),
            method,
        },
        table.stats,
    )))
}

/// The runtime globals from a separate debug file (which has `.symtab` but usually no loadable data),
/// reading only its headers and, streaming, its symbol table.
pub fn runtime_symbols_from_debug_file(path: &Path) -> Result<Option<RuntimeSymbols>, BinaryError> {
    let display = path.display().to_string();
    let io = |source| BinaryError::Io {
        path: display.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let loc = {
        let cache = ReadCache::new(&file);
        let header = elf::FileHeader64::<Endianness>::parse(&cache)
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?;
        let endian = header
            .endian()
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?;
        let table = header
            .sections(endian, &cache)
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?;
        let found = table
            .iter()
            .enumerate()
            .find(|(_, sh)| sh.sh_type(endian) == elf::SHT_SYMTAB);
        let Some((_, symtab)) = found else {
            return Ok(None);
        };
        let Some(strtab) = table.iter().nth(symtab.sh_link(endian) as usize) else {
            return Ok(None);
        };
        SymtabLocation {
            symtab_offset: symtab.sh_offset(endian),
            symtab_size: symtab.sh_size(endian),
            strtab_offset: strtab.sh_offset(endian),
            strtab_size: strtab.sh_size(endian),
            little_endian: matches!(endian, Endianness::Little),
        }
    };
    Ok(scan_runtime_symbols(&file, loc, path, LocateMethod::DebugFile)?.map(|(s, _)| s))
}

/// Static facts about a process's executable, shared by every process of the same binary.
#[derive(Debug)]
pub struct BinaryInfo {
    pub binary: GoBinary,
    pub layout: RuntimeLayout,
    pub symbols: Option<RuntimeSymbols>,
    /// Why `symbols` is `None`.
    pub symbols_error: Option<String>,
    /// The linker's `runtime.disableMemoryProfiling`, read from the file image.
    pub linker_disabled_profiling: Option<bool>,
}

impl BinaryInfo {
    /// Inspects an executable: Go version, layout, runtime symbol addresses.
    pub fn inspect(binary: GoBinary, view: Option<&TargetView>) -> BinaryInfo {
        let layout = crate::runtime::rules::VersionRules::for_version(binary.go_version).layout;
        let (symbols, symbols_error) = match locate_symbols(&binary, view) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        let linker_disabled_profiling = symbols
            .as_ref()
            .and_then(|s| s.disable_memory_profiling)
            .and_then(|a| binary.read_initialized(a, 1))
            .map(|v| v != 0);
        BinaryInfo {
            binary,
            layout,
            symbols,
            symbols_error,
            linker_disabled_profiling,
        }
    }
}

/// Finds the runtime globals: `.symtab` first; for stripped binaries a separate debug file (by build
/// ID or `.gnu_debuglink`, looked up inside the target's root), then references in the runtime's
/// machine code (`.gopclntab` names the functions, their instructions name the globals).
fn locate_symbols(binary: &GoBinary, view: Option<&TargetView>) -> Result<RuntimeSymbols, String> {
    match binary.runtime_symbols_from_symtab() {
        Ok(Some((s, _))) => return Ok(s),
        Ok(None) => {}
        Err(e) => return Err(e.to_string()),
    }
    let stripped = if binary.symtab_location().is_none() {
        "stripped: no .symtab"
    } else {
        ".symtab lacks runtime.mbuckets"
    };
    // The mapping (file-backed pages) lives only while the globals are located; nothing read
    // from it is kept but the addresses.
    let map =
        crate::symbolize::symbolizer::map_binary(binary).map_err(|e| format!("{stripped}; {e}"))?;
    let exe_path = view
        .map(|v| v.exe_path.clone())
        .unwrap_or_else(|| binary.path.clone());
    let root = view.map(|v| v.root.as_path());
    if let Ok(Some(df)) = crate::binary::debugfile::find_debug_file_for_image(&exe_path, &map, root)
    {
        if let Ok(Some(s)) = runtime_symbols_from_debug_file(&df.path) {
            return Ok(s);
        }
    }
    let pclntab = crate::symbolize::pclntab::Pclntab::parse_mapped(map.clone())
        .map_err(|e| format!("{stripped}; no debug file; .gopclntab: {e}"))?;
    let ranges = PclntabRanges::resolve(&pclntab);
    drop(pclntab);
    let found = crate::binary::coderef::recover_runtime_addresses(&map, &ranges)
        .map_err(|e| format!("{stripped}; no debug file; code references: {e}"))?;
    tracing::debug!(exe = %exe_path.display(), evidence = ?found.evidence, "runtime globals recovered from code references");
    let symbols = RuntimeSymbols {
        mbuckets: found.mbuckets,
        mem_profile_rate: found.mem_profile_rate,
        disable_memory_profiling: found.disable_memory_profiling,
        mprof_cycle: found.mprof_cycle,
        method: crate::binary::LocateMethod::CodeReference,
    };
    Ok(symbols)
}

/// The ranges of the functions code-reference recovery decodes, resolved from `.gopclntab` in one
/// bounded scan (no name index, nothing of the table kept).
struct PclntabRanges(Vec<(&'static str, std::ops::Range<u64>)>);

impl PclntabRanges {
    fn resolve(pclntab: &crate::symbolize::pclntab::Pclntab) -> PclntabRanges {
        Self::resolve_names(pclntab, crate::binary::coderef::FUNCTIONS_USED)
    }

    fn resolve_names(
        pclntab: &crate::symbolize::pclntab::Pclntab,
        names: &'static [&'static str],
    ) -> PclntabRanges {
        let found = pclntab.funcs_named(names);
        PclntabRanges(
            names
                .iter()
                .zip(found)
                .filter_map(|(n, f)| f.map(|f| (*n, f.entry..f.end)))
                .collect(),
        )
    }
}

impl crate::binary::coderef::FunctionRanges for PclntabRanges {
    fn function_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.clone())
    }
}

/// `LocateMethod` name for displays.
pub fn method_name(info: &BinaryInfo) -> &'static str {
    info.symbols
        .as_ref()
        .map(|s| s.method.as_str())
        .unwrap_or("none")
}
