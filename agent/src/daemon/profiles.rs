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

/// `/debug/pprof/allocs?pid=N` without `seconds`: the heap profile (allocations since the process
/// started, in use now) opening as `alloc_space`, like Go's allocs handler, with `duration_nanos`
/// the process's age (the time its alloc_* values cover; 0 if unknown) (gzipped).
pub fn allocs(proc_root: &Path, pid: i32, cached: &CachedBinary) -> Result<Vec<u8>, Refusal> {
    let r = read_now(proc_root, pid, cached)?;
    let mut p = build_profile(
        pid,
        cached,
        &r.snapshot.records(),
        r.snapshot.mem_profile_rate,
        &r.map,
        r.bias,
    )?;
    p.duration_nanos = process_age(proc_root, pid)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0);
    set_alloc_space_default(&mut p);
    Ok(p.encode_gzip())
}

/// Makes pprof open the profile as `alloc_space` (its `default_sample_type`), as Go's allocs
/// profile does.
fn set_alloc_space_default(p: &mut pprof_proto::Profile) {
    let i = match p.string_table.iter().position(|t| t == "alloc_space") {
        Some(i) => i,
        None => {
            p.string_table.push("alloc_space".into());
            p.string_table.len() - 1
        }
    };
    p.default_sample_type = i as i64;
}

/// How long `pid` has been running: `/proc/uptime` minus its start time (clock ticks since boot).
pub fn process_age(proc_root: &Path, pid: i32) -> Option<std::time::Duration> {
    let uptime: f64 = std::fs::read_to_string(proc_root.join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let start_ticks = crate::target::procfs::start_time(proc_root, pid)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 || !uptime.is_finite() {
        return None;
    }
    let age = uptime - start_ticks as f64 / hz as f64;
    (age >= 0.0).then(|| std::time::Duration::from_secs_f64(age))
}

/// The delta profile between an earlier and a later read of the same process, `window` apart
/// (`/debug/pprof/allocs?seconds=N`): opens as `alloc_space`, `duration_nanos` = `window`
/// (gzipped).
pub fn delta(
    pid: i32,
    cached: &CachedBinary,
    earlier: &FreshRead,
    later: &FreshRead,
    window: std::time::Duration,
) -> Result<Vec<u8>, Refusal> {
    let records = tracker::snapshot_delta(&earlier.snapshot, &later.snapshot);
    let mut p = build_profile(
        pid,
        cached,
        &records,
        later.snapshot.mem_profile_rate,
        &later.map,
        later.bias,
    )?;
    p.duration_nanos = window.as_nanos().min(i64::MAX as u128) as i64;
    set_alloc_space_default(&mut p);
    Ok(p.encode_gzip())
}
