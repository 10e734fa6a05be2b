//! Profiles served over HTTP and written to `--output-dir`: the current heap profile (exactly what
//! `goheap profile` writes) and delta profiles (growth between two reads).

use std::path::Path;

use pprof_proto::Profile;

use crate::binary::CachedBinary;
use crate::error::Refusal;
use crate::profile::heap::{self, HeapProfileOptions};
use crate::profile::oneshot;
use crate::runtime::snapshot::HeapSnapshot;
use crate::runtime::walk::MemProfileRecord;
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

/// Builds a profile from `records` with the process's symbolizer and mappings.
pub fn build(
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
    heap::build(records, rate, &symbolizer, &opts).map_err(|e| Refusal::Corrupt {
        pid,
        detail: e.to_string(),
    })
}

/// The current heap profile of `pid`, as `goheap profile` writes it (gzipped).
pub fn heap(proc_root: &Path, pid: i32, cached: &CachedBinary) -> Result<Vec<u8>, Refusal> {
    let r = read_now(proc_root, pid, cached)?;
    let p = build(
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
    let p = build(
        pid,
        cached,
        &records,
        later.snapshot.mem_profile_rate,
        &later.map,
        later.bias,
    )?;
    Ok(p.encode_gzip())
}
