//! `/proc/PID/maps`: the target's mappings, used to compute the PIE load bias and to check that
//! pointers read from the target point into readable memory before they are followed.

use crate::binary::LoadSegment;

/// Refuse maps files with more mappings than this (the kernel default `vm.max_map_count` is 65530).
pub const MAX_MAPPINGS: usize = 1 << 18;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    /// Device (major, minor) as the kernel prints it.
    pub dev: (u32, u32),
    pub inode: u64,
    pub path: String,
}

/// Errors reading the maps file.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("reading /proc/{pid}/maps: {source}")]
    Io { pid: i32, source: std::io::Error },
    #[error("/proc/{0}/maps has too many mappings")]
    TooMany(i32),
}

/// The mappings of one process, sorted by start address.
#[derive(Debug, Clone, Default)]
pub struct MemoryMap {
    pub mappings: Vec<Mapping>,
    /// The process's root directory (`/proc/PID/root`) when read from procfs: its mapped files
    /// are found under it (inside a container they are not at the same path for the agent).
    pub root: Option<std::path::PathBuf>,
}

impl MemoryMap {
    /// Reads `/proc/PID/maps` under `proc_root` (normally `/proc`).
    pub fn read(proc_root: &std::path::Path, pid: i32) -> Result<MemoryMap, MapsError> {
        let dir = proc_root.join(pid.to_string());
        let text = std::fs::read_to_string(dir.join("maps"))
            .map_err(|source| MapsError::Io { pid, source })?;
        let mut map = Self::parse(&text).ok_or(MapsError::TooMany(pid))?;
        map.root = Some(dir.join("root"));
        Ok(map)
    }

    /// The GNU build ID of the file mapped by `m` (as the Go runtime puts it in its profiles'
    /// mappings): the file is looked up as the process sees it (under its root), else at the same
    /// path here, and used only if it is the mapped file itself (same device and inode).
    pub fn gnu_build_id_of(&self, m: &Mapping) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
        let rel = path.strip_prefix('/')?;
        let candidates = self
            .root
            .iter()
            .map(|r| r.join(rel))
            .chain(std::iter::once(std::path::PathBuf::from(path)));
        for p in candidates {
            let Ok(f) = std::fs::File::open(&p) else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            if meta.is_file() && meta.ino() == m.inode && split_dev(meta.dev()) == m.dev {
                return crate::binary::elf::gnu_build_id(&f);
            }
        }
        None
    }

    /// Parses maps text; malformed lines are skipped. `None` if there are too many lines.
    pub fn parse(text: &str) -> Option<MemoryMap> {
        let mut mappings = Vec::new();
        for line in text.lines() {
            if mappings.len() >= MAX_MAPPINGS {
                return None;
            }
            if let Some(m) = parse_line(line) {
                mappings.push(m);
            }
        }
        mappings.sort_by_key(|m| m.start);
        Some(MemoryMap {
            mappings,
            root: None,
        })
    }

    /// True when `[addr, addr+len)` lies in readable mappings without gaps.
    pub fn is_readable(&self, addr: u64, len: u64) -> bool {
        self.covered_by(addr, len, |m| m.readable)
    }

    /// True when `[addr, addr+len)` lies in readable *anonymous* mappings without gaps. The runtime
    /// allocates profile buckets with `persistentalloc` from anonymous memory, so a bucket pointer
    /// into a file mapping is garbage — and reading it could block on a slow or hung filesystem.
    pub fn is_anonymous_readable(&self, addr: u64, len: u64) -> bool {
        self.covered_by(addr, len, |m| m.readable && m.inode == 0)
    }

    /// The readable anonymous memory around `addr`: the maximal run of adjacent readable anonymous
    /// mappings containing it, as `[start, end)`. Reads batched beyond one bucket stay inside it.
    pub fn anonymous_range(&self, addr: u64) -> Option<(u64, u64)> {
        let ok = |m: &Mapping| m.readable && m.inode == 0;
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        let i = idx.checked_sub(1)?;
        let m = &self.mappings[i];
        if addr >= m.end || !ok(m) {
            return None;
        }
        let (mut start, mut end) = (m.start, m.end);
        let mut j = i;
        while j > 0 && self.mappings[j - 1].end == start && ok(&self.mappings[j - 1]) {
            j -= 1;
            start = self.mappings[j].start;
        }
        let mut k = i + 1;
        while k < self.mappings.len() && self.mappings[k].start == end && ok(&self.mappings[k]) {
            end = self.mappings[k].end;
            k += 1;
        }
        Some((start, end))
    }

    fn covered_by(&self, addr: u64, len: u64, ok: impl Fn(&Mapping) -> bool) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let mut cur = addr;
        // Index of the last mapping starting at or before addr.
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        if idx == 0 {
            return false;
        }
        for m in &self.mappings[idx - 1..] {
            if m.start > cur || !ok(m) {
                return false;
            }
            if m.end >= end {
                return true;
            }
            cur = m.end;
        }
        false
    }

    /// The load bias of the executable identified by `(dev, inode)`, given its `PT_LOAD` segments:
    /// runtime address = ELF virtual address + bias. Zero for non-PIE executables.
    pub fn load_bias(&self, dev: (u32, u32), inode: u64, segments: &[LoadSegment]) -> Option<u64> {
        const PAGE: u64 = 4096;
        // The mapping with the lowest file offset of this file.
        let m = self
            .mappings
            .iter()
            .filter(|m| m.inode == inode && m.dev == dev)
            .min_by_key(|m| (m.offset, m.start))?;
        // The segment whose page-aligned file offset equals the mapping's offset.
        let seg = segments
            .iter()
            .find(|s| s.offset & !(PAGE - 1) == m.offset)?;
        let seg_page_vaddr = seg.vaddr & !(PAGE - 1);
        Some(m.start.wrapping_sub(seg_page_vaddr))
    }

    /// Executable mappings of the file `(dev, inode)`: (start, end, offset, path), for pprof mappings.
    pub fn executable_mappings_of(
        &self,
        dev: (u32, u32),
        inode: u64,
    ) -> impl Iterator<Item = &Mapping> {
        self.mappings
            .iter()
            .filter(move |m| m.executable && m.inode == inode && m.dev == dev)
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut parts = line.splitn(6, ' ');
    let range = parts.next()?;
    let perms = parts.next()?;
    let offset = u64::from_str_radix(parts.next()?, 16).ok()?;
    let dev = parts.next()?;
    let inode = parts.next()?.parse::<u64>().ok()?;
    let path = parts.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    if end < start {
        return None;
    }
    let (maj, min) = dev.split_once(':')?;
    let dev = (
        u32::from_str_radix(maj, 16).ok()?,
        u32::from_str_radix(min, 16).ok()?,
    );
    let pb = perms.as_bytes();
    Some(Mapping {
        start,
        end,
        readable: pb.first() == Some(&b'r'),
        executable: pb.get(2) == Some(&b'x'),
        offset,
        dev,
        inode,
        path,
    })
}

/// Splits a `st_dev` value into the (major, minor) pair maps uses (Linux `new_encode_dev` layout).
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
555555554000-555555556000 r--p 00000000 fd:01 1234 /usr/bin/prog
555555556000-55555555a000 r-xp 00002000 fd:01 1234 /usr/bin/prog
55555555a000-55555555b000 rw-p 00006000 fd:01 1234 /usr/bin/prog
7ffff7dd3000-7ffff7dd5000 ---p 00000000 00:00 0
7ffff7dd5000-7ffff7df5000 rw-p 00000000 00:00 0 
garbage line
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn parses_and_checks_readability() {
        let m = MemoryMap::parse(SAMPLE).unwrap();
        assert_eq!(m.mappings.len(), 6);
        assert_eq!(m.mappings[0].path, "/usr/bin/prog");
        assert_eq!(m.mappings[0].dev, (0xfd, 1));
        assert!(
            m.is_readable(0x555555554000, 0x7000),
            "spans three adjacent readable mappings"
        );
        assert!(!m.is_readable(0x7ffff7dd3000, 8), "no read permission");
        assert!(m.is_readable(0x7ffff7dd5000, 0x20000));
        assert!(!m.is_readable(0x7ffff7dd5000, 0x20001), "runs off the end");
        assert!(!m.is_readable(0x1000, 8));
        assert!(!m.is_readable(u64::MAX - 2, 8));
        assert!(m.is_anonymous_readable(0x7ffff7dd5000, 0x20000));
        assert!(!m.is_anonymous_readable(0x555555554000, 8), "file-backed");
    }

    #[test]
    fn computes_pie_bias() {
        let m = MemoryMap::parse(SAMPLE).unwrap();
        let segs = [LoadSegment {
            vaddr: 0,
            memsz: 0x2000,
            offset: 0,
            filesz: 0x2000,
            flags: 4,
        }];
        assert_eq!(m.load_bias((0xfd, 1), 1234, &segs), Some(0x555555554000));
        let segs = [LoadSegment {
            vaddr: 0x400000,
            memsz: 0x2000,
            offset: 0,
            filesz: 0x2000,
            flags: 4,
        }];
        let nonpie = "00400000-00402000 r-xp 00000000 fd:01 99 /bin/x\n";
        assert_eq!(
            MemoryMap::parse(nonpie)
                .unwrap()
                .load_bias((0xfd, 1), 99, &segs),
            Some(0)
        );
        assert_eq!(m.load_bias((0xfd, 1), 4321, &segs), None);
    }

    #[test]
    fn splits_dev() {
        // makedev(253, 1)
        assert_eq!(split_dev((253 << 8) | 1), (253, 1));
        assert_eq!(split_dev(0x10302), (0x103, 2));
    }
}
