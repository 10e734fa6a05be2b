//! A Go executable on disk: what kind of ELF it is, its Go version, its sections and load segments, and
//! the addresses of the runtime globals goheap reads.
//!
//! Only headers are read when opening (`object::ReadCache` reads ranges on demand); `.symtab` is
//! scanned with [`crate::binary::symtab::SymbolTable`] in fixed memory. Open targets through `/proc/PID/exe` so
//! binaries in other mount namespaces (containers) resolve.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, ReadCache};

use crate::binary::buildinfo::{self, BuildInfoError};
use crate::binary::hex;
use crate::binary::symtab::{SymtabError, SymtabLocation};
use crate::runtime::version::GoVersion;

/// Sections are refused beyond this count (a Go binary has ~40; cgo binaries ~60).
const MAX_SECTIONS: usize = 4096;

/// Errors opening or inspecting an executable.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not an ELF file or a malformed one: {1}")]
    NotElf(String, object::Error),
    #[error("{0}: only 64-bit ELF executables are supported")]
    Not64Bit(String),
    #[error("{0}: not a Go binary (no .go.buildinfo section)")]
    NotGo(String),
    #[error("{0}: unreadable Go build info: {1}")]
    BuildInfo(String, BuildInfoError),
    #[error("{0}: too many sections")]
    TooManySections(String),
    #[error("{0}: {1}")]
    Symtab(String, SymtabError),
}

/// Identity of a binary file for caching per-binary work: two processes of the same file share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BinaryIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl BinaryIdentity {
    pub fn of(meta: &std::fs::Metadata) -> BinaryIdentity {
        BinaryIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// One section header, as far as goheap cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    pub index: usize,
    pub kind: u32,
    pub address: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
}

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// CPU architecture of the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
    Other,
}

/// A Go executable, opened and inspected.
#[derive(Debug)]
pub struct GoBinary {
    pub path: PathBuf,
    pub file: File,
    pub identity: BinaryIdentity,
    pub arch: Arch,
    /// `ET_DYN`: position independent, loaded at a bias found in `/proc/PID/maps`.
    pub is_pie: bool,
    pub little_endian: bool,
    pub go_version: GoVersion,
    /// The version string exactly as `.go.buildinfo` records it (`go1.22rc1`, `devel go1.24-abc …`).
    pub go_version_raw: String,
    pub sections: Vec<SectionInfo>,
    pub segments: Vec<LoadSegment>,
    /// GNU build ID (hex) if present.
    pub gnu_build_id: Option<String>,
    /// Go build ID (from `.note.go.buildid`) if present.
    pub go_build_id: Option<String>,
}

/// Most section headers [`gnu_build_id`] looks at, and the most note bytes it reads per section.
const BUILD_ID_MAX_SECTIONS: usize = MAX_SECTIONS;
const BUILD_ID_MAX_NOTES: u64 = 64 << 10;

/// The GNU build ID (hex) of any 64-bit ELF file (a shared library, say), read as the Go runtime's
/// `elfBuildID` reads it for its heap profiles' mappings: the first `NT_GNU_BUILD_ID` note named
/// `GNU` in an `SHT_NOTE` section. Bounded reads; `None` if there is none or the file is not ELF64.
pub fn gnu_build_id(file: &File) -> Option<String> {
    let mut h = [0u8; 64];
    if file.read_at(&mut h, 0).ok()? != 64 || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return None;
    }
    let le = match h[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let u16_at = |b: &[u8], o: usize| -> Option<u64> {
        let b: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(u64::from(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |b: &[u8], o: usize| -> Option<u64> {
        let b: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |b: &[u8], o: usize| -> Option<u64> {
        let b: [u8; 8] = b.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let shoff = u64_at(&h, 40)?;
    if u16_at(&h, 58)? != 64 {
        return None;
    }
    let shnum = (u16_at(&h, 60)? as usize).min(BUILD_ID_MAX_SECTIONS);
    let mut table = vec![0u8; shnum * 64];
    if file.read_at(&mut table, shoff).ok()? != table.len() {
        return None;
    }
    for sh in table.chunks_exact(64) {
        if u32_at(sh, 4)? != u64::from(elf::SHT_NOTE) {
            continue;
        }
        let (off, size) = (u64_at(sh, 24)?, u64_at(sh, 32)?.min(BUILD_ID_MAX_NOTES));
        let mut notes = vec![0u8; size as usize];
        let n = file.read_at(&mut notes, off).ok()?;
        notes.truncate(n);
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at)? as usize;
            let descsz = u32_at(&notes, at + 4)? as usize;
            let kind = u32_at(&notes, at + 8)?;
            let desc = at
                .checked_add(12)?
                .checked_add(namesz.checked_add(3)? & !3)?;
            let next = desc.checked_add(descsz.checked_add(3)? & !3)?;
            if namesz == 4
                && kind == u64::from(elf::NT_GNU_BUILD_ID)
                && notes.get(at + 12..at + 16) == Some(b"GNU\0")
            {
                return notes.get(desc..desc.checked_add(descsz)?).map(hex);
            }
            at = next;
        }
    }
    None
}

impl GoBinary {
    /// Opens `path` (e.g. `/proc/PID/exe`) and reads its headers and Go version.
    pub fn open(path: &Path) -> Result<GoBinary, BinaryError> {
        let display = path.display().to_string();
        let io = |source| BinaryError::Io {
            path: display.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        Self::from_file(path, file, &meta)
    }

    fn from_file(
        path: &Path,
        file: File,
        meta: &std::fs::Metadata,
    ) -> Result<GoBinary, BinaryError> {
        let display = path.display().to_string();
        let identity = BinaryIdentity::of(meta);
        let cache = ReadCache::new(&file);
        // Only the file header, section headers, section names and program headers are read:
        // `ElfFile::parse` would also load `.symtab`/`.strtab` (tens of MB for big binaries).
        let header = match elf::FileHeader64::<Endianness>::parse(&cache) {
            Ok(h) => h,
            Err(e) => {
                // A 32-bit ELF parses as an error here; say so precisely.
                let mut ident = [0u8; 5];
                if file.read_at(&mut ident, 0).ok() == Some(5)
                    && &ident[..4] == b"\x7fELF"
                    && ident[4] == 1
                {
                    return Err(BinaryError::Not64Bit(display));
                }
                return Err(BinaryError::NotElf(display, e));
            }
        };
        let endian = header
            .endian()
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?;
        let is_pie = header.e_type(endian) == elf::ET_DYN;
        let arch = match header.e_machine(endian) {
            elf::EM_X86_64 => Arch::Amd64,
            elf::EM_AARCH64 => Arch::Arm64,
            _ => Arch::Other,
        };
        let table = header
            .sections(endian, &cache)
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?;
        if table.len() > MAX_SECTIONS {
            return Err(BinaryError::TooManySections(display));
        }
        let mut sections = Vec::with_capacity(table.len());
        for (index, sh) in table.iter().enumerate() {
            let name = table
                .section_name(endian, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            sections.push(SectionInfo {
                name,
                index,
                kind: sh.sh_type(endian),
                address: sh.sh_addr(endian),
                offset: sh.sh_offset(endian),
                size: sh.sh_size(endian),
                link: sh.sh_link(endian),
            });
        }
        let mut segments = Vec::new();
        for ph in header
            .program_headers(endian, &cache)
            .map_err(|e| BinaryError::NotElf(display.clone(), e))?
        {
            if ph.p_type(endian) == elf::PT_LOAD {
                segments.push(LoadSegment {
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    flags: ph.p_flags(endian),
                });
            }
        }
        drop(cache);
        let little_endian = matches!(endian, Endianness::Little);
        let mut bin = GoBinary {
            path: path.to_path_buf(),
            file,
            identity,
            arch,
            is_pie,
            little_endian,
            go_version: GoVersion::new(0, 0),
            go_version_raw: String::new(),
            sections,
            segments,
            gnu_build_id: None,
            go_build_id: None,
        };
        let bi = bin
            .section(".go.buildinfo")
            .cloned()
            .ok_or_else(|| BinaryError::NotGo(display.clone()))?;
        let mut head = vec![0u8; buildinfo::VERSION_PREFIX_LEN.min(bi.size as usize)];
        let n = bin
            .read_file_at(&mut head, bi.offset)
            .map_err(|source| BinaryError::Io {
                path: display.clone(),
                source,
            })?;
        head.truncate(n);
        (bin.go_version, bin.go_version_raw) = buildinfo::parse_version(&head)
            .map_err(|e| BinaryError::BuildInfo(display.clone(), e))?;
        bin.gnu_build_id = bin.read_note(".note.gnu.build-id").map(|d| hex(&d));
        bin.go_build_id = bin
            .read_note(".note.go.buildid")
            .map(|d| String::from_utf8_lossy(&d).into_owned());
        Ok(bin)
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The section containing virtual address `addr`, if any (allocated sections only).
    pub fn section_containing(&self, addr: u64) -> Option<&SectionInfo> {
        self.sections
            .iter()
            .find(|s| s.address != 0 && addr >= s.address && addr - s.address < s.size)
    }

    /// Reads file bytes at `offset`; returns how many were read (short at EOF).
    pub fn read_file_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Reads the whole of a (small, bounded) section.
    pub fn read_section(&self, name: &str, max_len: u64) -> Option<Vec<u8>> {
        let s = self.section(name)?;
        if s.kind == elf::SHT_NOBITS || s.size > max_len {
            return None;
        }
        let mut buf = vec![0u8; s.size as usize];
        let n = self.read_file_at(&mut buf, s.offset).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// The descriptor of the first note in a note section (bounded to 4 KiB).
    fn read_note(&self, name: &str) -> Option<Vec<u8>> {
        let data = self.read_section(name, 4096)?;
        let rd = |o: usize| -> Option<u32> {
            let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
            Some(if self.little_endian {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            })
        };
        let namesz = rd(0)? as usize;
        let descsz = rd(4)? as usize;
        let desc_off = 12usize.checked_add(namesz.checked_add(3)? & !3)?;
        data.get(desc_off..desc_off.checked_add(descsz)?)
            .map(|d| d.to_vec())
    }

    /// Where `.symtab` and its string table are, if the binary has them.
    pub fn symtab_location(&self) -> Option<SymtabLocation> {
        let symtab = self.sections.iter().find(|s| s.kind == elf::SHT_SYMTAB)?;
        let strtab = self.sections.get(symtab.link as usize)?;
        if strtab.kind != elf::SHT_STRTAB || symtab.size == 0 {
            return None;
        }
        Some(SymtabLocation {
            symtab_offset: symtab.offset,
            symtab_size: symtab.size,
            strtab_offset: strtab.offset,
            strtab_size: strtab.size,
            little_endian: self.little_endian,
        })
    }

    /// Reads a little integer stored in the file image at virtual address `addr` (for initialized data
    /// such as `runtime.disableMemoryProfiling`); `None` for `.bss`/unmapped addresses.
    pub fn read_initialized(&self, addr: u64, len: usize) -> Option<u64> {
        if len > 8 {
            return None;
        }
        let s = self.section_containing(addr)?;
        if s.kind == elf::SHT_NOBITS {
            return Some(0);
        }
        let mut buf = [0u8; 8];
        let n = self
            .read_file_at(&mut buf[..len], s.offset.checked_add(addr - s.address)?)
            .ok()?;
        if n != len {
            return None;
        }
        Some(if self.little_endian {
            u64::from_le_bytes(buf)
        } else {
            u64::from_be_bytes(buf)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::Object;

    /// The same build ID as the `object` crate's full ELF parse, for a shared library and a Go
    /// executable; none for a file that is not ELF.
    #[test]
    fn gnu_build_id_of_any_elf() {
        for path in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/usr/bin/etcd",
        ] {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            let want = object::File::parse(&*data)
                .unwrap()
                .build_id()
                .unwrap()
                .map(hex);
            let got = gnu_build_id(&File::open(path).unwrap());
            assert_eq!(got, want, "{path}");
            if path.contains("libc") {
                assert!(got.is_some(), "Debian's libc has a build ID");
            }
        }
        assert_eq!(gnu_build_id(&File::open("/etc/passwd").unwrap()), None);
    }
}
