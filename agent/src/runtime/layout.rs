//! Version-specific layouts of the Go runtime's memory-profile buckets (`src/runtime/mprof.go`) and
//! the heap-profile rules of `src/runtime/pprof/protomem.go`, Go 1.19–1.27.
//!
//! ```text
//! bucket (48 bytes on 64-bit)          then           then
//! next *bucket | allnext *bucket |     stk [nstk]uintptr   memRecord { active, future[3] memRecordCycle }
//! typ bucketType | hash | size | nstk
//! ```
//! `memRecordCycle` is `{allocs, frees, alloc_bytes, free_bytes uintptr}` (32 bytes) up to Go 1.26;
//! Go 1.27 shrank it to `{allocs, frees uintptr}` (16 bytes): bytes are `count × bucket.size`.

use crate::runtime::version::GoVersion;

/// `bucketType` value of memory-profile buckets (`memProfile bucketType = 1 + iota`).
pub const MEM_PROFILE_BUCKET: u64 = 1;
/// Offsets inside the 48-byte bucket header.
pub const OFF_ALLNEXT: u64 = 8;
pub const OFF_TYP: u64 = 16;
pub const OFF_HASH: u64 = 24;
pub const OFF_SIZE: u64 = 32;
pub const OFF_NSTK: u64 = 40;
/// `len(memRecord{}.future)`.
pub const FUTURE_CYCLES: usize = 3;

/// How to read buckets and shape the profile for one Go version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeLayout {
    /// Bytes of the bucket header before the stack (48 on 64-bit).
    pub header_size: u64,
    /// Largest `nstk` the runtime can store (`maxStack` = 32 up to 1.22, `maxProfStackDepth` = 1024
    /// since 1.23, plus the 1.26+ slack of 2 frames).
    pub max_stack: u64,
    /// Size of one `memRecordCycle`.
    pub cycle_size: u64,
    /// Whether cycles store byte counters (≤ 1.26) or only counts (1.27+).
    pub cycle_has_bytes: bool,
    /// `writeHeapProto` scales by the bucket's object size and always labels `bytes` (1.27+), instead
    /// of `AllocBytes / AllocObjects` with the label only when non-zero (≤ 1.26).
    pub object_size_records: bool,
    /// Whether goheap was tested with this version (outside: try, but warn).
    pub tested: bool,
}

impl RuntimeLayout {
    /// The layout for `v` (versions outside 1.19–1.27 get the nearest known layout, `tested: false`).
    pub fn for_version(v: &GoVersion) -> RuntimeLayout {
        let minor = if v.major == 1 { v.minor } else { u32::MAX };
        let tested = v.is_tested();
        let cycle_has_bytes = minor < 27;
        RuntimeLayout {
            header_size: 48,
            max_stack: if minor <= 22 { 32 } else { 1024 + 2 },
            cycle_size: if cycle_has_bytes { 32 } else { 16 },
            cycle_has_bytes,
            object_size_records: minor >= 27,
            tested,
        }
    }

    /// Size of the whole `memRecord` (active + future cycles).
    pub fn record_size(&self) -> u64 {
        self.cycle_size * (1 + FUTURE_CYCLES as u64)
    }

    /// Offset of the memRecord from the bucket start, for `nstk` frames.
    pub fn record_offset(&self, nstk: u64) -> u64 {
        self.header_size + 8 * nstk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> GoVersion {
        GoVersion::parse(s).unwrap()
    }

    #[test]
    fn layouts_follow_versions() {
        let l19 = RuntimeLayout::for_version(&v("go1.19.8"));
        assert_eq!(
            (l19.max_stack, l19.cycle_size, l19.record_size()),
            (32, 32, 128)
        );
        assert!(l19.tested);
        let l23 = RuntimeLayout::for_version(&v("go1.23.9"));
        assert_eq!(l23.max_stack, 1026);
        let l27 = RuntimeLayout::for_version(&v("go1.27.3"));
        assert_eq!((l27.cycle_size, l27.record_size()), (16, 64));
        assert!(l27.object_size_records && !l27.cycle_has_bytes && l27.tested);
        assert!(!RuntimeLayout::for_version(&v("go1.28.0")).tested);
        assert!(!RuntimeLayout::for_version(&v("go1.18.1")).tested);
    }
}
