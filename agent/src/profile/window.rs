//! Recording a window of one process (`goheap record`): the allocations it made between two reads,
//! as `/debug/pprof/allocs?seconds=N` gives them, with the in-use state at the end.
//!
//! The process is read with the agent's [`IncrementalReader`] (after the first walk, one batched
//! re-read of the known buckets plus a walk of the new head), the window's growth is the agent's
//! [`tracker::snapshot_delta`] of the reads at both ends (what `/debug/pprof/allocs?seconds=N`
//! serves), and the running total shown while recording is the agent's [`DeltaTracker`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pprof_proto::Profile;

use crate::binary::{BinaryCache, BinaryInfo, CachedBinary};
use crate::daemon::tracker::{self, DeltaTracker, IncrementalReader};
use crate::error::{Hex, Refusal};
use crate::profile::oneshot::build_profile;
use crate::runtime::snapshot::{check_mem_profile_rate, HeapSnapshot, DEFAULT_MEM_PROFILE_RATE};
use crate::runtime::walk::MemProfileRecord;
use crate::target::memory::{write_u64_proven, RemoteMemory, VmReader};
use crate::target::open::{memory_refusal, OpenedProcess};
use crate::target::procfs::ProcPaths;

/// Time one read may spend walking buckets before it continues on the next read (the CLI reads one
/// process, so this only bounds how long a progress line can lag behind).
const WALK_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);
/// Reads of a list still incomplete after this many rounds give up with a warning.
const MAX_COMPLETION_ROUNDS: usize = 1000;

/// One process being recorded: its binary, its incremental reader and a delta tracker.
pub struct Recorder {
    pub pid: i32,
    proc_root: PathBuf,
    pub cached: Arc<CachedBinary>,
    reader: IncrementalReader<VmReader>,
    deltas: DeltaTracker,
    bias: u64,
    /// Run-time address of `runtime.MemProfileRate`.
    mem_profile_rate_addr: u64,
    /// The tracker's total at the start of the window.
    base_total: u64,
}

/// What [`Recorder::enable_profiling`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableOutcome {
    /// `runtime.MemProfileRate` already held this (non-zero) sampling period: nothing was written.
    AlreadyOn(u64),
    /// It held 0, and [`DEFAULT_MEM_PROFILE_RATE`] (bytes per sample) was written at this run-time
    /// address and read back.
    Written { addr: u64 },
}

/// What [`Recorder::progress`] reports while recording.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Buckets known after the last read.
    pub buckets: usize,
    /// Scaled bytes allocated since the window started, as of the last read.
    pub allocated_bytes: u64,
}

impl Recorder {
    /// Opens `pid` for recording (its binary through `cache`). With `require_symbol_table`, refuses a
    /// binary whose runtime globals were located from code references only.
    pub fn open(
        proc_root: &Path,
        pid: i32,
        cache: &mut BinaryCache,
        require_symbol_table: bool,
    ) -> Result<Recorder, Refusal> {
        let paths = ProcPaths::new(proc_root, pid);
        let cached = cache.get(&paths)?;
        let info = &cached.info;
        if require_symbol_table {
            require_symtab(info)?;
        }
        let p = OpenedProcess::open(proc_root, pid, info)?;
        let bias = p.addrs.bias;
        let mut reader = IncrementalReader::new(p.mem, p.map, p.addrs, info.layout);
        reader.walk_budget = WALK_BUDGET;
        Ok(Recorder {
            pid,
            proc_root: proc_root.to_path_buf(),
            cached,
            reader,
            deltas: DeltaTracker::default(),
            bias,
            mem_profile_rate_addr: p.addrs.mem_profile_rate,
            base_total: 0,
        })
    }

    /// `--enable-profiling`: when the live `runtime.MemProfileRate` is 0, writes
    /// [`DEFAULT_MEM_PROFILE_RATE`] there — the one write goheap makes into a target, under force
    /// mode's rule: only at an address proven by a symbol table (`.symtab` or a debug file). A
    /// binary located from code references alone is refused with [`Refusal::ProfilingDisabled`]
    /// (`force_works: false`, whose line says why and what to do), unless `from_code` (the
    /// separate `--enable-profiling-from-code`) accepts a recovered address that passes every
    /// check of [`Recorder::code_reference_evidence`]. A non-zero rate is never written. Call
    /// before the first read.
    pub fn enable_profiling(&mut self, from_code: bool) -> Result<EnableOutcome, Refusal> {
        let info = &self.cached.info;
        let addr = self.mem_profile_rate_addr;
        let refuse = |e| memory_refusal(self.pid, e, &self.proc_root);
        let rate = self.reader.mem.read_u64(addr).map_err(refuse)?;
        if rate != 0 {
            return Ok(EnableOutcome::AlreadyOn(rate));
        }
        let proven = info
            .symbols
            .as_ref()
            .is_some_and(|s| s.method.proven_by_symbols());
        if !proven {
            if !from_code {
                // The refusal of a disabled rate where force cannot write (it says why).
                check_mem_profile_rate(self.pid, rate, info)?;
                return Err(Refusal::Corrupt {
                    pid: self.pid,
                    detail: "runtime.MemProfileRate read 0 but was not refused".into(),
                });
            }
            if let Err(why) = self.code_reference_evidence() {
                return Err(Refusal::ProfilingDisabled {
                    pid: self.pid,
                    reason: format!(
                        "--enable-profiling-from-code refused: {why}, so the recovered address of runtime.MemProfileRate is not safe to write"
                    ),
                    force_works: false,
                });
            }
        }
        // An 8-byte word in a mapping the process can read (the executable's data segment).
        if !self.reader.map().is_readable(addr, 8) {
            return Err(Refusal::Corrupt {
                pid: self.pid,
                detail: format!(
                    "runtime.MemProfileRate's address {} is not mapped in the process",
                    Hex(addr)
                ),
            });
        }
        write_u64_proven(&self.proc_root, self.pid, addr, DEFAULT_MEM_PROFILE_RATE)
            .map_err(refuse)?;
        let now = self.reader.mem.read_u64(addr).map_err(refuse)?;
        if now != DEFAULT_MEM_PROFILE_RATE {
            return Err(Refusal::Corrupt {
                pid: self.pid,
                detail: format!(
                    "wrote {DEFAULT_MEM_PROFILE_RATE} into runtime.MemProfileRate at {} but read back {now}",
                    Hex(addr)
                ),
            });
        }
        Ok(EnableOutcome::Written { addr })
    }

    /// Whether an address of `runtime.MemProfileRate` recovered from code references (no symbol
    /// table) may be written by `--enable-profiling-from-code`; `Err` says which check failed.
    /// Every one must hold, besides what the recovery itself required (two independent references
    /// agreeing: the 8-byte store in `schedinit`/`runtime.init` right after the load of a bool,
    /// and `profilealloc`'s 8-byte load):
    /// 1. that bool, `runtime.disableMemoryProfiling`, was recovered at its own address, and the
    ///    file holds `true` there (the linker disabled profiling);
    /// 2. the live bool is still 1 in the process;
    /// 3. the file holds the default 524288 at the rate's address (`.noptrdata`, Go ≥ 1.20), or,
    ///    for Go 1.19 where it lives in `.noptrbss`, the recovery found the initialiser storing
    ///    that constant;
    /// 4. the live rate is 0 (the caller read it).
    pub fn code_reference_evidence(&self) -> Result<(), String> {
        let info = &self.cached.info;
        let Some(symbols) = info.symbols.as_ref() else {
            return Err("the runtime's globals were not located".into());
        };
        let Some(flag) = symbols.disable_memory_profiling else {
            return Err("no disableMemoryProfiling test before a MemProfileRate store was found in the runtime's code (only one code reference locates the rate)".into());
        };
        if info.linker_disabled_profiling != Some(true) {
            return Err("the file does not hold true in runtime.disableMemoryProfiling (the linker did not disable profiling: the program set the rate to 0 itself, and goheap does not override that without a symbol table)".into());
        }
        let flag_at = flag.wrapping_add(self.bias);
        match self.reader.mem.read_u64(flag_at).map(|v| v & 0xff) {
            Ok(1) => {}
            Ok(v) => {
                return Err(format!(
                    "runtime.disableMemoryProfiling at its recovered address {} holds {v} in the process, not 1",
                    Hex(flag_at)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "runtime.disableMemoryProfiling at its recovered address {} cannot be read: {e}",
                    Hex(flag_at)
                ))
            }
        }
        let file_rate = info.binary.read_initialized(symbols.mem_profile_rate, 8);
        let go_1_19 = info.binary.go_version.minor < 20;
        let default_in_file = file_rate == Some(DEFAULT_MEM_PROFILE_RATE);
        let zero_bss_1_19 = go_1_19 && file_rate == Some(0);
        if !(default_in_file || zero_bss_1_19) {
            return Err(format!(
                "the file holds {file_rate:?} at the recovered address {} of runtime.MemProfileRate, not the default {DEFAULT_MEM_PROFILE_RATE}",
                Hex(symbols.mem_profile_rate)
            ));
        }
        Ok(())
    }

    /// Reads the process once (cheap after the first read). Returns a warning when the list could
    /// not be read whole.
    pub fn read(&mut self) -> Result<Option<String>, Refusal> {
        let out = self.reader.read(&self.cached.info, &self.proc_root)?;
        self.deltas.update_from(&mut self.reader);
        Ok(out.warning)
    }

    /// Reads until every bucket of the list was read and every known counter re-read in this
    /// round (a time-limited walk continues where it stopped). Returns the last warning, if any.
    pub fn read_complete(&mut self) -> Result<Option<String>, Refusal> {
        let mut warning = None;
        for _ in 0..MAX_COMPLETION_ROUNDS {
            let out = self.reader.read(&self.cached.info, &self.proc_root)?;
            self.deltas.update_from(&mut self.reader);
            if out.warning.is_some() {
                warning = out.warning;
            }
            if !self.reader.incomplete() && out.unreadable_records == 0 {
                return Ok(warning);
            }
        }
        Ok(Some(format!(
            "the bucket list was still not read whole after {MAX_COMPLETION_ROUNDS} reads"
        )))
    }

    /// Marks the start of the window: [`Progress::allocated_bytes`] counts from here.
    pub fn start_window(&mut self) {
        self.base_total = self.deltas.alloc_bytes_total;
    }

    pub fn progress(&self) -> Progress {
        Progress {
            buckets: self.reader.buckets().len(),
            allocated_bytes: self
                .deltas
                .alloc_bytes_total
                .saturating_sub(self.base_total),
        }
    }

    /// The last read as a snapshot.
    pub fn snapshot(&self) -> HeapSnapshot {
        self.reader.snapshot()
    }

    /// The profile of the window between `start` (a snapshot taken at its start) and the last read:
    /// alloc_* the growth, inuse_* the state at the end. `time_nanos` and `duration_nanos` are
    /// the caller's to set.
    pub fn window_profile(&self, start: &HeapSnapshot) -> Result<Profile, Refusal> {
        let end = self.snapshot();
        let records = window_records(start, &end);
        build_profile(
            self.pid,
            &self.cached,
            &records,
            end.mem_profile_rate,
            self.reader.map(),
            self.bias,
        )
    }
}

/// `--require-symtab`: refuses a binary whose runtime globals were located from code references
/// only (no `.symtab` or debug file).
pub fn require_symtab(info: &BinaryInfo) -> Result<(), Refusal> {
    match &info.symbols {
        Some(s) if !s.method.proven_by_symbols() => Err(Refusal::NoSymbols {
            exe: info.binary.path.display().to_string(),
            detail: format!(
                "stripped: located by {} only, and --require-symtab was given",
                s.method.as_str()
            ),
        }),
        _ => Ok(()),
    }
}

/// The records of a window from its two snapshots: allocations and frees are the growth between
/// them ([`tracker::snapshot_delta`], what the agent's `/debug/pprof/allocs?seconds=N` uses), and
/// the frees are set so that allocations − frees is what is in use at the end (so the profile's
/// inuse_* values are the state at the end, its alloc_* values the window's growth). Records with
/// neither growth nor anything in use are left out. In `end`'s order.
pub fn window_records(start: &HeapSnapshot, end: &HeapSnapshot) -> Vec<MemProfileRecord> {
    let growth = tracker::snapshot_delta(start, end);
    // A bucket is unique by (object size, stack) in the runtime (`stkbucket`).
    let grown: HashMap<(u64, &[u64]), &MemProfileRecord> = growth
        .iter()
        .map(|r| ((r.object_size, r.stack.as_slice()), r))
        .collect();
    end.records()
        .into_iter()
        .filter_map(|r| {
            let inuse_objects = r.alloc_objects.wrapping_sub(r.free_objects);
            let inuse_bytes = r.alloc_bytes.wrapping_sub(r.free_bytes);
            let (alloc_objects, alloc_bytes) = grown
                .get(&(r.object_size, r.stack.as_slice()))
                .map(|g| (g.alloc_objects, g.alloc_bytes))
                .unwrap_or((0, 0));
            if alloc_objects == 0 && inuse_objects == 0 && inuse_bytes == 0 {
                return None;
            }
            Some(MemProfileRecord {
                object_size: r.object_size,
                alloc_objects,
                free_objects: alloc_objects.wrapping_sub(inuse_objects),
                alloc_bytes,
                free_bytes: alloc_bytes.wrapping_sub(inuse_bytes),
                stack: r.stack,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::walk::{Cycle, MemRecord, RawBucket};

    fn bucket(addr: u64, size: u64, allocs: u64, frees: u64) -> RawBucket {
        RawBucket {
            addr,
            size,
            stack: vec![0x401000 + addr],
            record: MemRecord {
                active: Cycle {
                    allocs,
                    frees,
                    alloc_bytes: allocs * size,
                    free_bytes: frees * size,
                },
                future: [Cycle::default(); 3],
            },
        }
    }

    fn snap(buckets: Vec<RawBucket>) -> HeapSnapshot {
        HeapSnapshot {
            mem_profile_rate: 1,
            cycle: None,
            buckets,
            warning: None,
            resume_at: None,
        }
    }

    #[test]
    fn growth_in_alloc_and_end_state_in_use() {
        let start = snap(vec![bucket(0x10, 8, 10, 4), bucket(0x20, 16, 5, 5)]);
        let end = snap(vec![
            bucket(0x30, 32, 3, 1),
            bucket(0x10, 8, 12, 9),
            bucket(0x20, 16, 5, 5),
        ]);
        let w = window_records(&start, &end);
        // 0x20 neither grew nor holds anything: left out.
        assert_eq!(w.len(), 2);
        // New bucket: all of it is growth; 2 in use.
        assert_eq!((w[0].alloc_objects, w[0].alloc_bytes), (3, 96));
        assert_eq!(w[0].alloc_objects - w[0].free_objects, 2);
        assert_eq!(w[0].alloc_bytes - w[0].free_bytes, 64);
        // Grew by 2 allocations; in use at the end 12 - 9 = 3 (more than the window allocated).
        assert_eq!((w[1].alloc_objects, w[1].alloc_bytes), (2, 16));
        assert_eq!(w[1].alloc_objects - w[1].free_objects, 3);
        assert_eq!(w[1].alloc_bytes - w[1].free_bytes, 24);
    }

    #[test]
    fn an_idle_window_has_no_growth() {
        let s = snap(vec![bucket(0x10, 8, 10, 4), bucket(0x20, 16, 5, 5)]);
        let w = window_records(&s, &s.clone());
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].alloc_objects, w[0].alloc_bytes), (0, 0));
        assert_eq!(w[0].alloc_objects - w[0].free_objects, 6);
    }
}
