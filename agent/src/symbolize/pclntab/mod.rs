//! Symbolization from a Go binary's `.gopclntab`, reproducing the Go runtime's own answers.
//!
//! [`Pclntab`] is parsed from the bytes of an ELF file (amd64 or arm64, little endian) built by Go
//! 1.19–1.27. It owns copies of exactly two regions of the file: the `.gopclntab` table
//! (`pcHeader` and everything after it) and the `go:func.*` funcdata region that holds inline trees
//! (from `moduledata.gofunc` to the end of the section containing it). Memory is therefore
//! proportional to those two regions, not to the whole file.
//!
//! The module data (`runtime.firstmoduledata`) is located without `.symtab`: it is the only
//! pointer-aligned word in an allocated data section whose value (or, for PIE binaries, whose
//! `R_*_RELATIVE` addend in a `SHT_RELA` section) equals the `pcHeader` address and whose
//! following slice pointers match the header's table offsets. From it we read `text` (the base for
//! function entry offsets) and `gofunc` (the base for funcdata offsets).
//!
//! All addresses accepted and returned are *unrelocated* ELF virtual addresses: callers subtract a
//! PIE load bias before asking and add it back afterwards.
//!
//! Runtime emulation (all names refer to the Go runtime sources of the matching version):
//! - [`Pclntab::frames_for_pcs`] = every `Frame` `runtime.CallersFrames(pcs)` yields;
//! - [`Pclntab::frame_at`] = the first of those for a one-element list;
//! - [`Pclntab::func_name_for_pc`] = `runtime.FuncForPC(pc).Name()`;
//! - [`Pclntab::expand_final_inline_frame`] = `runtime_expandFinalInlineFrame`;
//! - [`Frame::symbol_name`] = `runtime_FrameSymbolName`, [`Frame::start_line`] =
//!   `runtime_FrameStartLine`, [`Frame::function`] = `Frame.Function` (`funcNameForPrint` from 1.21).
//!
//! Version-dependent behaviour is selected by a [`GoVersion`], detected from `.go.buildinfo` (and
//! the pclntab magic / moduledata layout as fallback) and overridable with
//! [`Pclntab::set_go_version`].
//!
//! Not emulated: cgo symbolizer frames (non-Go PCs yield no frames, as in a binary without a cgo
//! symbolizer), and multiple text sections (`moduledata.textsectmap` with more than one entry, only
//! produced for very large ppc64/arm64 binaries).

use std::borrow::Cow;

use crate::runtime::rules::VersionRules;
pub use crate::runtime::version::GoVersion;
use std::collections::HashMap;

use object::read::elf::{ElfFile, SectionHeader};
use object::{Object, ObjectSection};

/// `pcHeader.magic` of Go 1.18 and 1.19.
pub const GO118_MAGIC: u32 = 0xffff_fff0;
/// `pcHeader.magic` of Go 1.20 and later.
pub const GO120_MAGIC: u32 = 0xffff_fff1;

/// `abi.PCDATA_InlTreeIndex`, identical in 1.19–1.27.
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `abi.FUNCDATA_InlTree`, identical in 1.19–1.27.
const FUNCDATA_INL_TREE: u32 = 3;
/// Upper bound on the number of inline-tree levels followed from one PC. Real binaries stay far
/// below this; it only stops cycles in corrupt inline trees.
const MAX_INLINE_DEPTH: usize = 1024;
/// Upper bound on the number of functions accepted from a header (larger than any real binary).
const MAX_FUNCS: u64 = 1 << 24;
/// Functions scanned between two hand-backs of a mapped table's pages in a linear scan.
const SCAN_RELEASE_EVERY: u32 = 4096;
/// How many moduledata words we may read (the largest layout uses fewer than 50 up to `gofunc`).
const MODULEDATA_WORDS: u64 = 64;

const R_X86_64_RELATIVE: u32 = 8;
const R_AARCH64_RELATIVE: u32 = 1027;

/// Errors from [`Pclntab::parse`].
#[derive(Debug, thiserror::Error)]
pub enum PclntabError {
    /// The input is not an ELF file `object` can read.
    #[error("not a readable ELF file: {0}")]
    Elf(#[from] object::Error),
    /// Only little-endian 64-bit amd64 and arm64 ELF files are supported.
    #[error("unsupported ELF architecture {0:?} (need 64-bit little-endian x86_64 or aarch64)")]
    UnsupportedArch(object::Architecture),
    /// No `.gopclntab` section.
    #[error("no .gopclntab section")]
    NoPclntabSection,
    /// The section exists but its bytes are not in the file (`SHT_NOBITS` or out of range).
    #[error("section {0} has no file data")]
    NoSectionData(&'static str),
    /// `pcHeader.magic` is not 0xfffffff0 (Go 1.18/1.19) or 0xfffffff1 (Go 1.20+).
    #[error("unsupported pclntab magic {0:#x}")]
    BadMagic(u32),
    /// A `pcHeader` field is inconsistent with the table it describes.
    #[error("invalid pcHeader: {0}")]
    BadHeader(&'static str),
    /// A structure extends past the end of the data that holds it.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// No `runtime.firstmoduledata` pointing at this pclntab was found in the data sections.
    #[error(
        "runtime.firstmoduledata not found (no data word or relocation refers to pcHeader {0:#x})"
    )]
    ModuleDataNotFound(u64),
    /// `moduledata.gofunc` does not point into an allocated section of the file.
    #[error("moduledata.gofunc {0:#x} is not inside a section with file data")]
    BadGoFunc(u64),
    /// The function table is not sorted by entry offset, or a function offset is out of range.
    #[error("invalid function table: {0}")]
    BadFuncTable(&'static str),
}

/// Pclntab layout generation, from `pcHeader.magic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// Magic 0xfffffff0: Go 1.18 and 1.19 (`_func` without `startLine`, 20-byte `inlinedCall`).
    Go118,
    /// Magic 0xfffffff1: Go 1.20+ (`_func.startLine`, 16-byte `inlinedCall`).
    Go120,
}

/// A function of the function table (a real, non-inlined function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncRef {
    /// Index into the function table.
    pub index: u32,
    /// Entry PC (unrelocated virtual address).
    pub entry: u64,
    /// Entry PC of the next function in the table (exclusive end).
    pub end: u64,
    /// Raw symbol name as stored in `funcnametab` (generic shapes not replaced). Unlike the
    /// runtime, this also names the first function of the table (name offset 0).
    pub name: String,
    /// Line of the `func` keyword; 0 for Go 1.19 binaries, which do not record it.
    pub start_line: i32,
    /// `_func.funcID` (version-specific numbering).
    pub func_id: u8,
}

/// One `runtime.Frame` as returned by `Frames.Next`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    /// `Frame.PC`: the PC that was looked up (ret-1 for return addresses).
    pub pc: u64,
    /// `Frame.Func != nil`: false for inlined frames and for the zero frame.
    pub has_func: bool,
    /// True if this frame is an inlined call (`Func == nil` for a Go PC).
    pub inlined: bool,
    /// `Frame.Function`: `funcNameForPrint(name)` from Go 1.21 on, the raw name in 1.19.
    pub function: String,
    /// `runtime_FrameSymbolName`: the raw symbol name (with shape type arguments).
    pub symbol_name: String,
    /// `Frame.File` ("?" when the file table has no entry).
    pub file: String,
    /// `Frame.Line` (0 when unknown).
    pub line: i64,
    /// `runtime_FrameStartLine` (0 for Go 1.19).
    pub start_line: i64,
    /// `Frame.Entry`: entry PC of the outermost real function.
    pub entry: u64,
    /// Whether the frame came from a Go function (`funcInfo.valid()`).
    pub valid: bool,
}

/// Decoded fixed part of one `_func` record.
#[derive(Clone, Copy, Debug)]
struct FuncInfo {
    /// Byte offset of the `_func` in [`Pclntab::data`].
    off: usize,
    entry: u64,
    name_off: i32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    start_line: i32,
    func_id: u8,
    nfuncdata: u8,
}

/// Position inside an inline tree: `inlineFrame` of runtime/symtabinl.go.
#[derive(Clone, Copy, Debug)]
struct InlineFrame {
    pc: u64,
    index: i32,
}

/// Source function of an inline frame: `srcFunc` of runtime/symtab.go.
#[derive(Clone, Copy, Debug)]
struct SrcFunc {
    name_off: i32,
    start_line: i32,
    func_id: u8,
}

/// One decoded `inlinedCall`.
#[derive(Clone, Copy, Debug)]
struct InlinedCall {
    func_id: u8,
    name_off: i32,
    parent_pc: i32,
    start_line: i32,
}

/// FuncID values the frame logic compares against; their numbering changes between releases, so
/// they are read from the functions themselves.
#[derive(Clone, Copy, Debug, Default)]
struct SpecialFuncIds {
    wrapper: Option<u8>,
    gopanic: Option<u8>,
    sigpanic: Option<u8>,
    panicwrap: Option<u8>,
}

/// A Go function table parsed from an ELF file. See the module documentation.
#[derive(Debug)]
pub struct Pclntab {
    /// `.gopclntab` bytes, starting at the `pcHeader`.
    data: Backing,
    /// Virtual address of the `pcHeader`.
    header_addr: u64,
    format: TableFormat,
    /// `pcHeader.minLC`: PC quantum (1 on amd64, 4 on arm64).
    quantum: u32,
    nfunc: u32,
    /// `moduledata.text`: base of `_func.entryOff`.
    text: u64,
    funcnametab: (usize, usize),
    cutab: (usize, usize),
    filetab: (usize, usize),
    pctab: (usize, usize),
    /// Start of `pclntable` (`ftab` followed by the `_func` records) in `data`; runs to the end.
    pcln_start: usize,
    /// `moduledata.gofunc`.
    gofunc: u64,
    /// Bytes from `gofunc` to the end of the section containing it.
    gofunc_data: Backing,
    /// Address of `runtime.firstmoduledata`.
    moduledata_addr: u64,
    /// The version rules symbolization follows (from [`Pclntab::set_go_version`] or inferred).
    rules: VersionRules,
    version_from_buildinfo: bool,
    ids: SpecialFuncIds,
    /// Function-table indices sorted by raw name, for [`Pclntab::func_by_name`]; built on its
    /// first call (symbolization never needs it).
    name_index: std::sync::OnceLock<Vec<u32>>,
}

/// The bytes of the ELF file a [`Pclntab`] reads: its own copy (tables parsed from a byte slice,
/// [`Pclntab::parse`]) or a range of a shared read-only mapping of the file
/// ([`Pclntab::parse_mapped`]): file-backed pages the kernel can drop and re-read, so a cached table
/// costs almost no anonymous memory.
#[derive(Debug)]
enum Backing {
    Owned(Vec<u8>),
    Mapped {
        map: std::sync::Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Owned(v) => v,
            // In range by construction (`Backing::of` checked it against the mapping).
            Backing::Mapped { map, start, len } => map.get(*start..*start + *len).unwrap_or(&[]),
        }
    }
}

impl Backing {
    /// `part` (a slice of `map`'s bytes) as a range of `map`, or a copy when `map` is `None`.
    fn of(part: &[u8], map: Option<&std::sync::Arc<memmap2::Mmap>>) -> Backing {
        if let Some(map) = map {
            let base = map.as_ptr() as usize;
            let start = (part.as_ptr() as usize).wrapping_sub(base);
            if start <= map.len() && part.len() <= map.len() - start {
                return Backing::Mapped {
                    map: map.clone(),
                    start,
                    len: part.len(),
                };
            }
        }
        Backing::Owned(part.to_vec())
    }

    fn anon_bytes(&self) -> usize {
        match self {
            Backing::Owned(v) => v.len(),
            Backing::Mapped { .. } => 0,
        }
    }
}

struct SectionInfo<'d> {
    name: String,
    addr: u64,
    size: u64,
    data: Option<&'d [u8]>,
    alloc: bool,
    exec: bool,
    is_rela: bool,
}

fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn rd_word(b: &[u8], off: usize, ptr_size: usize) -> Option<u64> {
    if ptr_size == 8 {
        rd_u64(b, off)
    } else {
        rd_u32(b, off).map(u64::from)
    }
}

mod frames;
mod header;
mod inline;
mod names;
mod pcvalue;
mod unwind;

pub use unwind::{StackWindow, UnwindEnd, UnwindStart, MAX_PHYSICAL_FRAMES};

pub use names::func_name_for_print;

impl Pclntab {
    /// Format of the table (from its magic).
    pub fn format(&self) -> TableFormat {
        self.format
    }

    /// Go release whose semantics are emulated (detected or set).
    pub fn go_version(&self) -> GoVersion {
        self.rules.version
    }

    /// The Go version recorded in `.go.buildinfo`, if it was readable.
    pub fn go_version_hint(&self) -> Option<GoVersion> {
        self.version_from_buildinfo.then_some(self.rules.version)
    }

    /// Overrides the emulated Go release (e.g. with the version from build info read elsewhere).
    /// The table format itself is fixed by the magic.
    pub fn set_go_version(&mut self, v: GoVersion) {
        self.rules = VersionRules::for_version(v);
    }

    /// Virtual address of the `pcHeader` (start of `.gopclntab`).
    pub fn header_addr(&self) -> u64 {
        self.header_addr
    }

    /// Virtual address of `runtime.firstmoduledata`.
    pub fn moduledata_addr(&self) -> u64 {
        self.moduledata_addr
    }

    /// `moduledata.gofunc` (address of `go:func.*`).
    pub fn gofunc_addr(&self) -> u64 {
        self.gofunc
    }

    /// `moduledata.text`: base address of function entry offsets.
    pub fn text_start(&self) -> u64 {
        self.text
    }

    /// Number of functions in the table.
    pub fn num_funcs(&self) -> u32 {
        self.nfunc
    }

    /// Anonymous (heap) bytes held by this table: copies of file data, the name index if built.
    pub fn owned_bytes(&self) -> usize {
        self.data.anon_bytes()
            + self.gofunc_data.anon_bytes()
            + self.name_index.get().map_or(0, |v| v.len() * 4)
    }

    /// Hands the resident pages of a mapped table back to the kernel (they are re-read from the
    /// file when next touched). No-op for a table that owns its bytes.
    pub fn release_pages(&self) {
        if let Backing::Mapped { map, .. } = &self.data {
            // SAFETY: the mapping is private, read-only and never written, so MADV_DONTNEED only
            // drops clean file-backed pages; later reads see the file's bytes again.
            let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Bytes of the file this table reads in place (mapped, file-backed; resident only while touched).
    pub fn mapped_bytes(&self) -> usize {
        self.data.len() + self.gofunc_data.len()
            - self.data.anon_bytes()
            - self.gofunc_data.anon_bytes()
    }

    fn func_header_size(&self) -> usize {
        match self.format {
            TableFormat::Go118 => 40,
            TableFormat::Go120 => 44,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pcvalue::readvarint;
    use super::*;

    #[test]
    fn print_names() {
        let v21 = GoVersion::new(1, 21);
        let v27 = GoVersion::new(1, 27);
        assert_eq!(
            func_name_for_print("main.f[go.shape.int]", v21),
            "main.f[...]"
        );
        assert_eq!(
            func_name_for_print("main.(*T[go.shape.int]).m[go.shape.string]", v21),
            "main.(*T[...]"
        );
        assert_eq!(
            func_name_for_print("main.(*T[go.shape.int]).m[go.shape.string]", v27),
            "main.(*T[...]).m[...]"
        );
        assert_eq!(
            func_name_for_print("main.f[x]", GoVersion::new(1, 19)),
            "main.f[x]"
        );
        assert_eq!(func_name_for_print("a]b[c", v27), "a]b[c");
    }

    #[test]
    fn varint() {
        assert_eq!(readvarint(&[0x05]), Some((1, 5)));
        assert_eq!(readvarint(&[0x80, 0x01]), Some((2, 128)));
        assert_eq!(readvarint(&[0x80, 0x80]), None);
    }
}
