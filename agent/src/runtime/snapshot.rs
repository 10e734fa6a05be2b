//! One consistent read of a process's memory-profile state: `MemProfileRate`, `mProfCycle`, the
//! bucket walk, and the checks that turn what was read into a snapshot or a refusal.

use std::path::Path;

use crate::binary::BinaryInfo;
use crate::error::Refusal;
use crate::runtime::walk::{
    self, BucketWalker, MemProfileRecord, RawBucket, WalkError, WalkLimits,
};
use crate::target::maps::MemoryMap;
use crate::target::memory::RemoteMemory;
use crate::target::open::{exited, memory_refusal, RuntimeAddresses};
use crate::target::procfs::process_ended;

/// The default `runtime.MemProfileRate` (one sample per 512 KiB).
pub const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;
/// One read of a process's heap-profile state.
#[derive(Debug, Clone)]
pub struct HeapSnapshot {
    /// `runtime.MemProfileRate` as read from the target (the profile's period), bytes.
    pub mem_profile_rate: u64,
    /// Decoded `mProfCycle` (cycle number), if located.
    pub cycle: Option<u32>,
    pub buckets: Vec<RawBucket>,
    /// Set when the walk stopped early (partial result).
    pub warning: Option<String>,
    /// Set when the walk stopped at its deadline: where to continue (see [`crate::runtime::walk::Walk`]).
    pub resume_at: Option<u64>,
}

impl HeapSnapshot {
    /// The records `runtime.MemProfile(p, true)` would return now.
    pub fn records(&self) -> Vec<MemProfileRecord> {
        walk::memprofile_records(&self.buckets, self.cycle)
    }
}

/// Reads the bucket list once: MemProfileRate, mProfCycle, then the walk from `runtime.mbuckets`.
pub fn read_snapshot<M: RemoteMemory + ?Sized>(
    mem: &M,
    info: &BinaryInfo,
    addrs: &RuntimeAddresses,
    map: Option<&MemoryMap>,
    proc_root: &Path,
) -> Result<HeapSnapshot, Refusal> {
    read_snapshot_within(mem, info, addrs, map, proc_root, WalkLimits::default())
}

/// [`read_snapshot`] with explicit walk limits (e.g. a deadline: the snapshot is then partial and
/// says where to resume).
pub fn read_snapshot_within<M: RemoteMemory + ?Sized>(
    mem: &M,
    info: &BinaryInfo,
    addrs: &RuntimeAddresses,
    map: Option<&MemoryMap>,
    proc_root: &Path,
    limits: WalkLimits,
) -> Result<HeapSnapshot, Refusal> {
    let pid = mem.pid();
    let merr = |e| memory_refusal(pid, e, proc_root);
    let rate = mem.read_u64(addrs.mem_profile_rate).map_err(merr)?;
    check_mem_profile_rate(pid, rate, info)?;
    let cycle = match addrs.mprof_cycle {
        Some(a) => Some(mem.read_u32(a).map_err(merr)? >> 1),
        None => None,
    };
    let head = mem.read_u64(addrs.mbuckets).map_err(merr)?;
    let mut walker = BucketWalker::new(mem, info.layout, map);
    walker.limits = limits;
    let walk = walker
        .walk(head)
        .map_err(|e| walk_refusal(pid, e, info, proc_root))?;
    walk::check_layout(&info.layout, &info.binary.go_version_raw, &walk.buckets)
        .map_err(|e| walk_refusal(pid, e, info, proc_root))?;
    Ok(HeapSnapshot {
        mem_profile_rate: rate,
        cycle,
        buckets: walk.buckets,
        warning: walk.warning,
        resume_at: walk.resume_at,
    })
}

/// Checks a `runtime.MemProfileRate` value read from process `pid`: 0 means profiling is disabled
/// (saying whether the linker did it); an address recovered from code references alone must also
/// hold a plausible sampling period (live validation).
pub fn check_mem_profile_rate(pid: i32, rate: u64, info: &BinaryInfo) -> Result<(), Refusal> {
    if rate == 0 || rate > i64::MAX as u64 {
        let reason = if info.linker_disabled_profiling == Some(true) {
            "the linker set runtime.disableMemoryProfiling because nothing references runtime.MemProfile".to_string()
        } else {
            format!("runtime.MemProfileRate is {}", rate as i64)
        };
        let force_works = info
            .symbols
            .as_ref()
            .is_some_and(|s| s.method.proven_by_symbols());
        return Err(Refusal::ProfilingDisabled {
            pid,
            reason,
            force_works,
        });
    }
    // Live validation of addresses recovered from code references (no symbol table vouches for
    // them): the rate must be a plausible sampling period and the head must lead to well-formed
    // memory-profile buckets (the bucket walk refuses a bad first bucket).
    let from_code = info
        .symbols
        .as_ref()
        .map(|s| !s.method.proven_by_symbols())
        .unwrap_or(false);
    if from_code && rate > 1 << 40 {
        return Err(Refusal::Corrupt {
            pid,
            detail: format!("the MemProfileRate address recovered from code references holds {rate}, not a sampling rate"),
        });
    }
    Ok(())
}

/// Maps a walk error to a refusal.
pub fn walk_refusal(pid: i32, e: WalkError, info: &BinaryInfo, proc_root: &Path) -> Refusal {
    match e {
        WalkError::Memory(m) => memory_refusal(pid, m, proc_root),
        WalkError::LayoutMismatch { .. } => Refusal::UnsupportedVersion {
            pid,
            version: info.binary.go_version_raw.clone(),
            detail: e.to_string(),
        },
        WalkError::BadBucket { .. } if !info.layout.tested => Refusal::UnsupportedVersion {
            pid,
            version: info.binary.go_version_raw.clone(),
            detail: e.to_string(),
        },
        WalkError::BadBucket { .. } => {
            if process_ended(proc_root, pid) {
                exited(proc_root, pid)
            } else {
                Refusal::Corrupt {
                    pid,
                    detail: e.to_string(),
                }
            }
        }
    }
}
