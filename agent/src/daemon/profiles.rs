//! Profiles served over HTTP and written to `--output-dir`: the current heap profile (exactly what
//! `goheap profile` writes) and delta profiles (growth between two reads).

use std::path::Path;

use crate::binary::CachedBinary;
use crate::error::Refusal;
use crate::profile::oneshot;
use crate::runtime::snapshot::HeapSnapshot;
use crate::target::maps::MemoryMap;

use super::tracker;

/// One fresh read of a process: snapshot, maps and load bias.
pub struct FreshRead {
    pub snapshot: HeapSnapshot,
    pub map: MemoryMap,
    pub bias: u64,
}

/// Reads `pid` now (a full walk, independent of the collector's state).
pub fn read_now(proc_root: &Path, pid: i32, cached: &CachedBinary) -> Result<FreshRead, Refusal> {
    let (snapshot, map, bias) = oneshot::read_process(proc_root, pid, &cached.info)?;
    Ok(FreshRead {
        snapshot,
        map,
        bias,
    })
}

use crate::profile::oneshot::build_profile;

/// The current heap profile of `pid`, as `goheap profile` writes it (gzipped).
pub fn heap(proc_root: &Path, pid: i32, cached: &CachedBinary) -> Result<Vec<u8>, Refusal> {
    let r = read_now(proc_root, pid, cached)?;
    let p = build_profile(
        pid,
        cached,
        &r.snapshot.records(),
        r.snapshot.mem_profile_rate,
        &r.map,
        r.bias,
    )?;
    Ok(p.encode_gzip())
}

/// The delta profile between an earlier and a later read of the same process (gzipped).
pub fn delta(
    pid: i32,
    cached: &CachedBinary,
    earlier: &FreshRead,
    later: &FreshRead,
) -> Result<Vec<u8>, Refusal> {
    let records = tracker::snapshot_delta(&earlier.snapshot, &later.snapshot);
    let p = build_profile(
        pid,
        cached,
        &records,
        later.snapshot.mem_profile_rate,
        &later.map,
        later.bias,
    )?;
    Ok(p.encode_gzip())
}
