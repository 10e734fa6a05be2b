//! Streaming lookup of a few named symbols in an ELF `.symtab`, in memory that does not grow with the
//! size of the symbol or string table.
//!
//! A k3s-sized Go binary has an 11 MB `.symtab` and a larger `.strtab`; loading them to find four
//! symbols is wasteful when dozens of processes are watched. [`SymbolTable::find`] makes one sequential
//! pass over `.strtab`, noting the offsets where each wanted name (followed by NUL) occurs — any such
//! offset is a valid `st_name` for that exact name, even with suffix-merged string tables — and then one
//! sequential pass over `.symtab`, keeping defined symbols whose `st_name` is one of those offsets. Both
//! passes use one fixed [`CHUNK`]-byte buffer, so memory is O(wanted names), and syscalls are
//! `(strtab + symtab) / CHUNK`.

use std::os::unix::fs::FileExt;

/// Bytes read per `pread` during the scan.
pub const CHUNK: usize = 64 * 1024;
/// `Elf64_Sym` size.
const SYM64_SIZE: usize = 24;
/// At most this many occurrences of one name in `.strtab` are kept (a real table has one or two).
const MAX_OCCURRENCES: usize = 16;
/// Longest name that can be searched for.
pub const MAX_NAME_LEN: usize = 256;

/// Where `.symtab` and its string table live in the file (from the section headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymtabLocation {
    pub symtab_offset: u64,
    pub symtab_size: u64,
    pub strtab_offset: u64,
    pub strtab_size: u64,
    pub little_endian: bool,
}

/// A symbol found by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundSymbol {
    /// `st_value`: the unrelocated virtual address.
    pub value: u64,
    /// `st_size` in bytes.
    pub size: u64,
    /// `st_shndx`: the section the symbol is defined in.
    pub section_index: u16,
}

/// Errors of the streaming scan.
#[derive(Debug, thiserror::Error)]
pub enum SymtabError {
    #[error("reading the symbol table: {0}")]
    Io(#[from] std::io::Error),
    #[error("symbol name longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
    #[error("the symbol table is truncated at offset {0}")]
    Truncated(u64),
}

/// Counters of one scan, for benchmarks and self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    pub read_calls: u64,
    pub bytes_read: u64,
    pub symbols_seen: u64,
}

/// The result of a scan: for each wanted name, the symbol if found.
#[derive(Debug, Clone)]
pub struct SymbolTable {
    names: Vec<String>,
    found: Vec<Option<FoundSymbol>>,
    pub stats: ScanStats,
}

impl SymbolTable {
    /// Scans `.symtab` of `file` at `loc` for `names`. Reads use `file.read_at`; nothing else is
    /// allocated in proportion to the tables.
    pub fn find<F: FileExt>(
        file: &F,
        loc: SymtabLocation,
        names: &[&str],
    ) -> Result<SymbolTable, SymtabError> {
        if names.iter().any(|n| n.len() > MAX_NAME_LEN || n.is_empty()) {
            return Err(SymtabError::NameTooLong);
        }
        let mut stats = ScanStats::default();
        let mut buf = vec![0u8; CHUNK];
        let occurrences = scan_strtab(file, &loc, names, &mut buf, &mut stats)?;
        let mut found: Vec<Option<FoundSymbol>> = vec![None; names.len()];
        if occurrences.iter().any(|o| !o.is_empty()) {
            scan_symtab(file, &loc, &occurrences, &mut found, &mut buf, &mut stats)?;
        }
        Ok(SymbolTable {
            names: names.iter().map(|s| s.to_string()).collect(),
            found,
            stats,
        })
    }

    /// The symbol named `name`, if it was wanted and found.
    pub fn get(&self, name: &str) -> Option<FoundSymbol> {
        let i = self.names.iter().position(|n| n == name)?;
        self.found[i]
    }
}

/// Finds, for each name, the offsets in `.strtab` where `name\0` occurs.
fn scan_strtab<F: FileExt>(
    file: &F,
    loc: &SymtabLocation,
    names: &[&str],
    buf: &mut [u8],
    stats: &mut ScanStats,
) -> Result<Vec<Vec<u32>>, SymtabError> {
    let patterns: Vec<Vec<u8>> = names
        .iter()
        .map(|n| {
            let mut p = n.as_bytes().to_vec();
            p.push(0);
            p
        })
        .collect();
    let finders: Vec<memchr::memmem::Finder<'_>> =
        patterns.iter().map(memchr::memmem::Finder::new).collect();
    let overlap = patterns.iter().map(|p| p.len()).max().unwrap_or(1) - 1;
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
    // `pos` is the strtab offset of buf[0]; `carried` bytes at the start of buf repeat the previous tail.
    let mut pos: u64 = 0;
    let mut carried = 0usize;
    while pos + (carried as u64) < loc.strtab_size {
        let want = (buf.len() - carried).min((loc.strtab_size - pos - carried as u64) as usize);
        let got = read_full(
            file,
            &mut buf[carried..carried + want],
            loc.strtab_offset + pos + carried as u64,
            stats,
        )?;
        if got == 0 {
            return Err(SymtabError::Truncated(
                loc.strtab_offset + pos + carried as u64,
            ));
        }
        let filled = carried + got;
        let window = &buf[..filled];
        for (i, f) in finders.iter().enumerate() {
            for at in f.find_iter(window) {
                // Matches entirely inside the carried prefix were already reported.
                if at + patterns[i].len() <= carried {
                    continue;
                }
                let off = pos + at as u64;
                if let Ok(off) = u32::try_from(off) {
                    if out[i].len() < MAX_OCCURRENCES && !out[i].contains(&off) {
                        out[i].push(off);
                    }
                }
            }
        }
        let keep = overlap.min(filled);
        buf.copy_within(filled - keep..filled, 0);
        pos += (filled - keep) as u64;
        carried = keep;
        if filled < buf.len() && pos + carried as u64 >= loc.strtab_size {
            break;
        }
    }
    Ok(out)
}

/// One pass over `.symtab`, recording defined symbols whose name offset is a known occurrence.
fn scan_symtab<F: FileExt>(
    file: &F,
    loc: &SymtabLocation,
    occurrences: &[Vec<u32>],
    found: &mut [Option<FoundSymbol>],
    buf: &mut [u8],
    stats: &mut ScanStats,
) -> Result<(), SymtabError> {
    let total = loc.symtab_size - loc.symtab_size % SYM64_SIZE as u64;
    let per_read = (buf.len() / SYM64_SIZE) * SYM64_SIZE;
    let mut pos = 0u64;
    while pos < total {
        let want = per_read.min((total - pos) as usize);
        let got = read_full(file, &mut buf[..want], loc.symtab_offset + pos, stats)?;
        if got < want {
            return Err(SymtabError::Truncated(loc.symtab_offset + pos + got as u64));
        }
        for sym in buf[..want].chunks_exact(SYM64_SIZE) {
            stats.symbols_seen += 1;
            let rd32 = |b: &[u8]| {
                let a = [b[0], b[1], b[2], b[3]];
                if loc.little_endian {
                    u32::from_le_bytes(a)
                } else {
                    u32::from_be_bytes(a)
                }
            };
            let rd64 = |b: &[u8]| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                if loc.little_endian {
                    u64::from_le_bytes(a)
                } else {
                    u64::from_be_bytes(a)
                }
            };
            let name = rd32(&sym[0..4]);
            let shndx = {
                let a = [sym[6], sym[7]];
                if loc.little_endian {
                    u16::from_le_bytes(a)
                } else {
                    u16::from_be_bytes(a)
                }
            };
            if shndx == 0 {
                continue; // undefined
            }
            for (i, occ) in occurrences.iter().enumerate() {
                if found[i].is_none() && occ.contains(&name) {
                    found[i] = Some(FoundSymbol {
                        value: rd64(&sym[8..16]),
                        size: rd64(&sym[16..24]),
                        section_index: shndx,
                    });
                }
            }
        }
        if found.iter().all(|f| f.is_some()) {
            break;
        }
        pos += want as u64;
    }
    Ok(())
}

fn read_full<F: FileExt>(
    file: &F,
    buf: &mut [u8],
    offset: u64,
    stats: &mut ScanStats,
) -> Result<usize, SymtabError> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        stats.read_calls += 1;
        if n == 0 {
            break;
        }
        stats.bytes_read += n as u64;
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a fake file: strtab then symtab, with names placed to straddle chunk boundaries.
    fn fake(names: &[(&str, u64)], pad_before: usize) -> (tempfile_like::Tmp, SymtabLocation) {
        let mut strtab = vec![0u8];
        strtab.resize(1 + pad_before, b'x');
        strtab.push(0);
        let mut syms = vec![0u8; SYM64_SIZE]; // null symbol
        for (n, v) in names {
            let off = strtab.len() as u32;
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
            let mut s = [0u8; SYM64_SIZE];
            s[0..4].copy_from_slice(&off.to_le_bytes());
            s[4] = 1; // STT_OBJECT
            s[6..8].copy_from_slice(&5u16.to_le_bytes());
            s[8..16].copy_from_slice(&v.to_le_bytes());
            s[16..24].copy_from_slice(&8u64.to_le_bytes());
            syms.extend_from_slice(&s);
        }
        // a symbol whose name is a suffix inside another string: "xruntime.mbuckets" at off, real name at off+1
        let off = strtab.len() as u32;
        strtab.extend_from_slice(b"xruntime.decoy\0");
        let mut s = [0u8; SYM64_SIZE];
        s[0..4].copy_from_slice(&(off + 1).to_le_bytes());
        s[6..8].copy_from_slice(&5u16.to_le_bytes());
        s[8..16].copy_from_slice(&0x4242u64.to_le_bytes());
        syms.extend_from_slice(&s);
        let mut data = strtab.clone();
        let symtab_offset = data.len() as u64;
        data.extend_from_slice(&syms);
        let t = tempfile_like::Tmp::new(&data);
        let loc = SymtabLocation {
            symtab_offset,
            symtab_size: syms.len() as u64,
            strtab_offset: 0,
            strtab_size: strtab.len() as u64,
            little_endian: true,
        };
        (t, loc)
    }

    mod tempfile_like {
        pub struct Tmp(pub std::fs::File, pub std::path::PathBuf);
        impl Tmp {
            pub fn new(data: &[u8]) -> Tmp {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "goheap-symtab-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&p).unwrap();
                std::io::Write::write_all(&mut f, data).unwrap();
                Tmp(std::fs::File::open(&p).unwrap(), p)
            }
        }
        impl Drop for Tmp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.1);
            }
        }
    }

    #[test]
    fn finds_names_across_chunk_boundaries() {
        for pad in [0usize, 10, CHUNK - 20, CHUNK - 5, CHUNK, 3 * CHUNK + 7] {
            let (t, loc) = fake(
                &[
                    ("runtime.MemProfileRate", 0x1000),
                    ("runtime.mbuckets", 0x2000),
                ],
                pad,
            );
            let st = SymbolTable::find(
                &t.0,
                loc,
                &[
                    "runtime.mbuckets",
                    "runtime.MemProfileRate",
                    "runtime.nothere",
                    "runtime.decoy",
                ],
            )
            .unwrap();
            assert_eq!(
                st.get("runtime.mbuckets").map(|s| s.value),
                Some(0x2000),
                "pad {pad}"
            );
            assert_eq!(
                st.get("runtime.MemProfileRate").map(|s| s.value),
                Some(0x1000),
                "pad {pad}"
            );
            assert_eq!(st.get("runtime.nothere"), None);
            assert_eq!(
                st.get("runtime.decoy").map(|s| s.value),
                Some(0x4242),
                "suffix-merged name, pad {pad}"
            );
        }
    }

    #[test]
    fn truncated_tables_are_errors_not_panics() {
        let (t, loc) = fake(&[("runtime.mbuckets", 0x2000), ("runtime.other", 1)], 100);
        // .symtab claimed longer than the file: the pass must reach the end looking for the missing
        // name and report truncation.
        let mut long = loc;
        long.symtab_size += 10 * SYM64_SIZE as u64;
        let names = ["runtime.mbuckets", "runtime.other", "runtime.absent"];
        let err = SymbolTable::find(&t.0, long, &names);
        assert!(matches!(err, Err(SymtabError::Truncated(_))), "{err:?}");
        // .strtab claimed longer than the file.
        let mut long = loc;
        long.strtab_size = u64::MAX / 2;
        assert!(matches!(
            SymbolTable::find(&t.0, long, &names),
            Err(SymtabError::Truncated(_))
        ));
        // Names longer than the limit are refused up front.
        let huge = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            SymbolTable::find(&t.0, loc, &[huge.as_str()]),
            Err(SymtabError::NameTooLong)
        ));
    }
}
