//! One-shot profiling of a process: locate → read → walk → symbolize → build, with per-binary work
//! cached (so the agent, which profiles many processes of one binary, scans each binary once).
//! `goheap profile` reads a process ([`Profiler::read`]), then builds and writes its profile in
//! one pass ([`ProcessRead::write_gzip`]): the profile is never held, only its tables.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use pprof_proto::Profile;

use crate::binary::{BinaryCache, BinaryInfo, CachedBinary};
use crate::error::Refusal;
use crate::profile::heap::{self, HeapProfileError, HeapProfileOptions};
use crate::profile::summary::{ProfileSummary, SummaryBuilder};
use crate::runtime::snapshot::{self, HeapSnapshot};
use crate::runtime::walk::MemProfileRecord;
use crate::symbolize::symbolizer::Symbolizer;
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

/// What the CLI prints about a profile besides its summary.
pub struct ProfileOutcome {
    pub pid: i32,
    pub process_name: String,
    pub binary_path: String,
    pub go_version: String,
    pub layout_tested: bool,
    pub method: &'static str,
    pub buckets: usize,
    pub warning: Option<String>,
}

/// A process read, its profile not built yet: [`ProcessRead::write_gzip`] builds and writes it in
/// one pass. Holds the records and maps, never the profile.
pub struct ProcessRead {
    pub outcome: ProfileOutcome,
    cached: Arc<CachedBinary>,
    records: Vec<MemProfileRecord>,
    rate: u64,
    map: MemoryMap,
    bias: u64,
}

/// Why writing a profile failed after the process was read.
#[derive(Debug)]
pub enum WriteFailure {
    /// The profile could not be built (e.g. an unreadable `.gopclntab`).
    Refused(Refusal),
    /// Writing the output failed.
    Io(std::io::Error),
}

/// Top functions in the summary `goheap profile` prints.
pub const SUMMARY_TOP: usize = 5;

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

    /// Reads the heap-profile state of `req.pid`: everything that can refuse before any output.
    pub fn read(&mut self, req: &ProfileRequest) -> Result<ProcessRead, Refusal> {
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
        let (mut snapshot, map, bias) = read_process(&self.proc_root, pid, info)?;
        let records = take_records(&mut snapshot);
        let outcome = ProfileOutcome {
            pid,
            process_name: procfs::comm(&self.proc_root, pid).unwrap_or_else(|| "process".into()),
            binary_path: procfs::exe_target(&paths).unwrap_or_default(),
            go_version: info.binary.go_version_raw.clone(),
            layout_tested: info.layout.tested,
            method: crate::binary::locate::method_name(info),
            buckets: snapshot.buckets.len(),
            warning: snapshot.warning,
        };
        Ok(ProcessRead {
            outcome,
            cached,
            records,
            rate: snapshot.mem_profile_rate,
            map,
            bias,
        })
    }
}

impl ProcessRead {
    /// Builds the heap profile and writes it gzipped to `out` as it is built ([`heap::write`]);
    /// with `summary`, also computes the summary (totals and top functions, from ids). Returns
    /// `out`, the gzip stream finished.
    pub fn write_gzip<W: Write>(
        &self,
        out: W,
        summary: bool,
    ) -> Result<(W, Option<ProfileSummary>), WriteFailure> {
        let pid = self.outcome.pid;
        let symbolizer = symbolizer(pid, &self.cached).map_err(WriteFailure::Refused)?;
        let opts = HeapProfileOptions::for_binary(&self.cached.info, self.bias, &self.map);
        let mut sb = summary.then(SummaryBuilder::default);
        let written = heap::write(
            &self.records,
            self.rate,
            &symbolizer,
            &opts,
            pprof_proto::gzip_encoder(out),
            sb.as_mut(),
        );
        symbolizer.release_pages();
        let (gz, tables) = written.map_err(|e| match e {
            HeapProfileError::Io(io) => WriteFailure::Io(io),
            e => WriteFailure::Refused(Refusal::Corrupt {
                pid,
                detail: e.to_string(),
            }),
        })?;
        let summary = sb.map(|s| s.finish(&tables, SUMMARY_TOP));
        let out = gz.finish().map_err(WriteFailure::Io)?;
        Ok((out, summary))
    }

    /// The same profile, built in memory (what the agent serves; the tests compare the two forms).
    pub fn build(&self) -> Result<Profile, Refusal> {
        build_profile(
            self.outcome.pid,
            &self.cached,
            &self.records,
            self.rate,
            &self.map,
            self.bias,
        )
    }
}

/// The records of `snapshot` ([`HeapSnapshot::records`]), with the stacks moved out of its buckets
/// instead of copied (the buckets keep their counters, with empty stacks).
pub fn take_records(snapshot: &mut HeapSnapshot) -> Vec<MemProfileRecord> {
    let stacks: Vec<Vec<u64>> = snapshot
        .buckets
        .iter_mut()
        .map(|b| std::mem::take(&mut b.stack))
        .collect();
    let mut records = snapshot.records();
    for (r, s) in records.iter_mut().zip(stacks) {
        r.stack = s;
    }
    records
}

fn symbolizer(pid: i32, cached: &CachedBinary) -> Result<Arc<Symbolizer>, Refusal> {
    cached.symbolizer().map_err(|detail| Refusal::Corrupt {
        pid,
        detail: format!("cannot read .gopclntab: {detail}"),
    })
}

/// Builds the heap profile of `records` (read from process `pid`, running `cached`'s binary at load
/// `bias`) with that binary's symbolizer and the process's mappings; the one place the agent turns
/// records into a profile (`goheap profile` writes the same profile with
/// [`ProcessRead::write_gzip`]).
pub fn build_profile(
    pid: i32,
    cached: &CachedBinary,
    records: &[MemProfileRecord],
    rate: u64,
    map: &MemoryMap,
    bias: u64,
) -> Result<Profile, Refusal> {
    let symbolizer = symbolizer(pid, cached)?;
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
