//! One-shot profiling of a process: locate → read → walk → symbolize → build, with per-binary work
//! cached (so the agent, which profiles many processes of one binary, scans each binary once).

use std::path::PathBuf;

use pprof_proto::Profile;

use crate::binary::{BinaryCache, BinaryInfo, CachedBinary};
use crate::error::Refusal;
use crate::profile::heap::{self, HeapProfileOptions};
use crate::runtime::snapshot::{self, HeapSnapshot};
use crate::runtime::walk::MemProfileRecord;
use crate::target::maps::MemoryMap;
use crate::target::memory::RemoteMemory;
use crate::target::open;
use crate::target::procfs::{self, ProcPaths};

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
    pub summary: crate::profile::summary::ProfileSummary,
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
        let profile = build_profile(
            pid,
            &cached,
            &snapshot.records(),
            snapshot.mem_profile_rate,
            &map,
            bias,
        )?;
        let summary = crate::profile::summary::summarize(&profile, 5);
        Ok(ProfileOutcome {
            pid,
            process_name: procfs::comm(&self.proc_root, pid).unwrap_or_else(|| "process".into()),
            binary_path: procfs::exe_target(&paths).unwrap_or_default(),
            go_version: info.binary.go_version_raw.clone(),
            layout_tested: info.layout.tested,
            method: crate::binary::locate::method_name(info),
            buckets: snapshot.buckets.len(),
            warning: snapshot.warning,
            profile,
            summary,
        })
    }
}

/// Builds the heap profile of `records` (read from process `pid`, running `cached`'s binary at load
/// `bias`) with that binary's symbolizer and the process's mappings; the one place the CLI and the
/// agent turn records into a profile.
pub fn build_profile(
    pid: i32,
    cached: &CachedBinary,
    records: &[MemProfileRecord],
    rate: u64,
    map: &MemoryMap,
    bias: u64,
) -> Result<Profile, Refusal> {
    let symbolizer = cached.symbolizer().map_err(|detail| Refusal::Corrupt {
        pid,
        detail: format!("cannot read .gopclntab: {detail}"),
    })?;
    let opts = HeapProfileOptions::for_binary(&cached.info, bias, map);
    let built = heap::build(records, rate, &symbolizer, &opts).map_err(|e| Refusal::Corrupt {
        pid,
        detail: e.to_string(),
    });
    symbolizer.release_pages();
    built
}

/// Opens the process's memory and reads one snapshot. Returns the snapshot, the maps and the bias.
pub fn read_process(
    proc_root: &std::path::Path,
    pid: i32,
    info: &BinaryInfo,
) -> Result<(HeapSnapshot, MemoryMap, u64), Refusal> {
    let p = open::OpenedProcess::open(proc_root, pid, info)?;
    let snapshot = snapshot::read_snapshot(
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
