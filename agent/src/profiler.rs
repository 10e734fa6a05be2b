//! One-shot profiling of a process: locate → read → walk → symbolize → build, with per-binary work
//! cached (so the agent, which profiles many processes of one binary, scans each binary once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use pprof_proto::Profile;

use crate::binary::BinaryIdentity;
use crate::error::Refusal;
use crate::heap_profile::{self, HeapProfileOptions};
use crate::maps::MemoryMap;
use crate::memory::RemoteMemory;
use crate::process::{self, BinaryInfo, HeapSnapshot, ProcPaths};
use crate::symbolizer::Symbolizer;

/// Per-binary state shared by all processes running that binary.
pub struct CachedBinary {
    pub info: BinaryInfo,
    /// Built lazily on the first profile (not needed for `ps` or metrics).
    symbolizer: std::sync::OnceLock<Result<Arc<Symbolizer>, String>>,
}

impl CachedBinary {
    pub fn new(info: BinaryInfo) -> CachedBinary {
        CachedBinary {
            info,
            symbolizer: std::sync::OnceLock::new(),
        }
    }

    /// The symbolizer of this binary (parsed once).
    pub fn symbolizer(&self) -> Result<Arc<Symbolizer>, String> {
        self.symbolizer
            .get_or_init(|| {
                let parsed = self
                    .info
                    .parsed_pclntab
                    .lock()
                    .ok()
                    .and_then(|mut p| p.take());
                match parsed {
                    Some(p) => Ok(Arc::new(Symbolizer::from_pclntab(
                        p,
                        &self.info.binary.go_version,
                    ))),
                    None => Symbolizer::open(&self.info.binary)
                        .map(Arc::new)
                        .map_err(|e| e.to_string()),
                }
            })
            .clone()
    }
}

/// Caches of per-binary work, keyed by file identity (device, inode, size, mtime).
#[derive(Default)]
pub struct BinaryCache {
    entries: HashMap<BinaryIdentity, Arc<CachedBinary>>,
    /// How many binaries were inspected (symbol-table scans), for self-metrics.
    pub scans: u64,
}

impl BinaryCache {
    /// The cached entry for the executable of `paths`, inspecting it if new.
    pub fn get(&mut self, paths: &ProcPaths) -> Result<Arc<CachedBinary>, Refusal> {
        // Cheap identity check through the magic link first.
        if let Ok(meta) = std::fs::metadata(paths.exe()) {
            if let Some(e) = self.entries.get(&BinaryIdentity::of(&meta)) {
                return Ok(e.clone());
            }
        }
        let bin = process::open_binary(paths)?;
        let id = bin.identity;
        let info = BinaryInfo::inspect(bin, process::TargetView::of(paths).as_ref());
        self.scans += 1;
        let entry = Arc::new(CachedBinary::new(info));
        self.entries.insert(id, entry.clone());
        Ok(entry)
    }

    /// Drops entries not in `keep`.
    pub fn retain(&mut self, keep: &std::collections::HashSet<BinaryIdentity>) {
        self.entries.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What to profile.
#[derive(Debug, Clone)]
pub struct ProfileRequest {
    pub pid: i32,
    /// Refuse unless the runtime globals were located by a symbol table (`.symtab` or a debug file),
    /// not by code references alone.
    pub require_symbol_table: bool,
}

/// A finished profile and what the CLI prints about it.
pub struct ProfileOutcome {
    pub pid: i32,
    pub process_name: String,
    pub binary_path: String,
    pub go_version: String,
    pub layout_tested: bool,
    pub method: &'static str,
    pub buckets: usize,
    pub warning: Option<String>,
    pub profile: Profile,
    pub summary: heap_profile::ProfileSummary,
}

impl ProfileOutcome {
    /// The human summary printed by `goheap profile`.
    pub fn summary_text(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "pid {} ({}), {}, symbols via {}\nbuckets read: {}   in use: {} in {} objects   allocated: {} in {} objects (scaled estimates)\ntop allocating functions (alloc_space, flat):",
            self.pid,
            self.binary_path,
            self.go_version,
            self.method,
            self.buckets,
            human_bytes(s.inuse_bytes),
            s.inuse_objects,
            human_bytes(s.alloc_bytes),
            s.alloc_objects
        );
        if s.top_alloc.is_empty() {
            out.push_str("\n  (no samples yet: the process has not allocated enough, or no GC has completed)");
        }
        for (name, bytes) in &s.top_alloc {
            let pct = if s.alloc_bytes > 0 {
                100.0 * *bytes as f64 / s.alloc_bytes as f64
            } else {
                0.0
            };
            out.push_str(&format!(
                "\n  {:>10} {:5.1}%  {}",
                human_bytes(*bytes),
                pct,
                name
            ));
        }
        out
    }
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Profiles processes; keeps per-binary caches between calls.
pub struct Profiler {
    pub proc_root: PathBuf,
    pub binaries: BinaryCache,
}

impl Profiler {
    pub fn new(proc_root: PathBuf) -> Profiler {
        Profiler {
            proc_root,
            binaries: BinaryCache::default(),
        }
    }

    /// Reads the heap profile of `req.pid`.
    pub fn profile(&mut self, req: &ProfileRequest) -> Result<ProfileOutcome, Refusal> {
        let pid = req.pid;
        let paths = ProcPaths::new(&self.proc_root, pid);
        let cached = self.binaries.get(&paths)?;
        let info = &cached.info;
        if req.require_symbol_table {
            if let Some(s) = &info.symbols {
                if !s.method.proven_by_symbols() {
                    return Err(Refusal::NoSymbols {
                        exe: info.binary.path.display().to_string(),
                        detail: format!(
                            "stripped: located by {} only, and --require-symtab was given",
                            s.method.as_str()
                        ),
                    });
                }
            }
        }
        let (snapshot, map, bias) = read_process(&self.proc_root, pid, info)?;
        let symbolizer = cached.symbolizer().map_err(|detail| Refusal::Corrupt {
            pid,
            detail: format!("cannot read .gopclntab: {detail}"),
        })?;
        let opts = HeapProfileOptions::for_binary(info, bias, &map);
        let profile = heap_profile::build(
            &snapshot.records(),
            snapshot.mem_profile_rate,
            &symbolizer,
            &opts,
        )
        .map_err(|e| Refusal::Corrupt {
            pid,
            detail: e.to_string(),
        })?;
        let summary = heap_profile::summarize(&profile, 5);
        Ok(ProfileOutcome {
            pid,
            process_name: process::comm(&self.proc_root, pid).unwrap_or_else(|| "process".into()),
            binary_path: process::exe_target(&paths).unwrap_or_default(),
            go_version: info.binary.go_version.raw.clone(),
            layout_tested: info.layout.tested,
            method: process::method_name(info),
            buckets: snapshot.buckets.len(),
            warning: snapshot.warning,
            profile,
            summary,
        })
    }
}

/// Opens the process's memory and reads one snapshot. Returns the snapshot, the maps and the bias.
pub fn read_process(
    proc_root: &std::path::Path,
    pid: i32,
    info: &BinaryInfo,
) -> Result<(HeapSnapshot, MemoryMap, u64), Refusal> {
    let p = process::OpenedProcess::open(proc_root, pid, info)?;
    let snapshot = process::read_snapshot(
        &p.mem as &dyn RemoteMemory,
        info,
        &p.addrs,
        Some(&p.map),
        proc_root,
    )?;
    let bias = p.addrs.bias;
    let map = p.map;
    Ok((snapshot, map, bias))
}
