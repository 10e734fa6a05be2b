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

/// A Go release, `major.minor` (patch releases never changed the emulated behaviour).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    /// Always 1 so far.
    pub major: u32,
    /// 19 for Go 1.19, 27 for Go 1.27.
    pub minor: u32,
}

impl GoVersion {
    /// `GoVersion { major, minor }`.
    pub const fn new(major: u32, minor: u32) -> Self {
        GoVersion { major, minor }
    }

    /// Parses `go1.21.13`, `go1.27`, `devel go1.27-abcdef ...`, `1.23.9`; `None` otherwise.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let owned;
        let s = if s.starts_with("1.") {
            owned = format!("go{s}");
            owned.as_str()
        } else {
            s
        };
        crate::buildinfo::GoVersion::parse(s).map(|v| GoVersion::new(v.major, v.minor))
    }

    fn at_least(self, minor: u32) -> bool {
        self >= GoVersion::new(1, minor)
    }
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
    data: Vec<u8>,
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
    gofunc_data: Vec<u8>,
    /// Address of `runtime.firstmoduledata`.
    moduledata_addr: u64,
    version: GoVersion,
    version_from_buildinfo: bool,
    ids: SpecialFuncIds,
    /// Function-table indices sorted by raw name, for [`Pclntab::func_by_name`].
    name_index: Vec<u32>,
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

/// NUL-terminated string starting at `off` in `b` (bounded by the end of `b`).
fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let s = b.get(off..)?;
    let n = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    s.get(..n)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `funcNamePiecesForPrint` + concatenation (`funcNameForPrint`), per version: Go 1.21–1.26 replace
/// the outermost bracket pair; Go 1.27 also handles a generic method of a generic type.
pub fn func_name_for_print(name: &str, version: GoVersion) -> Cow<'_, str> {
    if !version.at_least(21) {
        return Cow::Borrowed(name);
    }
    let b = name.as_bytes();
    let Some(i) = b.iter().position(|&c| c == b'[') else {
        return Cow::Borrowed(name);
    };
    // The runtime scans backwards for ']' and would fault if there is none; we return the name.
    let Some(j) = b.iter().rposition(|&c| c == b']') else {
        return Cow::Borrowed(name);
    };
    if j <= i {
        return Cow::Borrowed(name);
    }
    let head = &b[..i];
    let tail = &b[j + 1..];
    let interior = &b[i + 1..j];
    let simple = |mid: &[u8]| -> Cow<'_, str> {
        let mut v = Vec::with_capacity(head.len() + 5 + mid.len() + tail.len());
        v.extend_from_slice(head);
        v.extend_from_slice(b"[...]");
        v.extend_from_slice(mid);
        Cow::Owned(String::from_utf8_lossy(&v).into_owned())
    };
    if !version.at_least(27) || !interior.contains(&b'[') {
        return simple(tail);
    }
    let mut depth: i32 = 1;
    let (mut rbr, mut lbr): (isize, isize) = (-1, -1);
    for (k, &c) in interior.iter().enumerate() {
        // Go ranges over runes; '[' and ']' are ASCII so byte offsets agree.
        if c == b'[' {
            depth += 1;
            if depth != 1 {
                continue;
            }
            lbr = k as isize;
            break;
        }
        if c == b']' {
            depth -= 1;
            if depth < 0 {
                break;
            }
            if depth != 0 {
                continue;
            }
            rbr = k as isize;
        }
    }
    if depth == 1 {
        if rbr >= 0 && lbr > rbr {
            let mid = &interior[(rbr + 1) as usize..lbr as usize];
            let mut v = Vec::with_capacity(b.len());
            v.extend_from_slice(head);
            v.extend_from_slice(b"[...]");
            v.extend_from_slice(mid);
            v.extend_from_slice(b"[...]");
            v.extend_from_slice(tail);
            return Cow::Owned(String::from_utf8_lossy(&v).into_owned());
        }
        if rbr == -1 && lbr == -1 {
            return simple(tail);
        }
    }
    Cow::Borrowed(name)
}

/// Reads the Go version recorded in `.go.buildinfo` (with [`crate::buildinfo`]).
fn buildinfo_version(sections: &[SectionInfo<'_>]) -> Option<GoVersion> {
    let sec = sections.iter().find(|s| s.name == ".go.buildinfo")?;
    let v = crate::buildinfo::parse_version(sec.data?).ok()?;
    Some(GoVersion::new(v.major, v.minor))
}

impl Pclntab {
    /// Parses the pclntab of the ELF file `elf` (the whole file's bytes).
    pub fn parse(elf: &[u8]) -> Result<Pclntab, PclntabError> {
        let file = ElfFile::<object::elf::FileHeader64<object::Endianness>>::parse(elf)?;
        let arch = file.architecture();
        let reloc_type = match arch {
            object::Architecture::X86_64 => R_X86_64_RELATIVE,
            object::Architecture::Aarch64 => R_AARCH64_RELATIVE,
            other => return Err(PclntabError::UnsupportedArch(other)),
        };
        if !file.is_little_endian() {
            return Err(PclntabError::UnsupportedArch(arch));
        }
        let endian = file.endian();
        let mut sections = Vec::new();
        for s in file.sections() {
            let hdr = s.elf_section_header();
            let flags = hdr.sh_flags(endian);
            let sh_type = hdr.sh_type(endian);
            let data = if sh_type == object::elf::SHT_NOBITS {
                None
            } else {
                s.data().ok()
            };
            sections.push(SectionInfo {
                name: s.name().unwrap_or("").to_string(),
                addr: s.address(),
                size: s.size(),
                data,
                alloc: flags & u64::from(object::elf::SHF_ALLOC) != 0,
                exec: flags & u64::from(object::elf::SHF_EXECINSTR) != 0,
                is_rela: sh_type == object::elf::SHT_RELA,
            });
        }
        Self::from_sections(&sections, reloc_type)
    }

    fn from_sections(
        sections: &[SectionInfo<'_>],
        reloc_type: u32,
    ) -> Result<Pclntab, PclntabError> {
        let pcl = sections
            .iter()
            .find(|s| s.name == ".gopclntab" || s.name == ".data.rel.ro.gopclntab")
            .ok_or(PclntabError::NoPclntabSection)?;
        let data = pcl.data.ok_or(PclntabError::NoSectionData(".gopclntab"))?;
        let header_addr = pcl.addr;
        let magic = rd_u32(data, 0).ok_or(PclntabError::Truncated("pcHeader"))?;
        let format = match magic {
            GO118_MAGIC => TableFormat::Go118,
            GO120_MAGIC => TableFormat::Go120,
            m => return Err(PclntabError::BadMagic(m)),
        };
        let (pad1, pad2, min_lc, ptr_size) = match data.get(4..8) {
            Some(&[a, b, c, d]) => (a, b, c, d),
            _ => return Err(PclntabError::Truncated("pcHeader")),
        };
        if pad1 != 0 || pad2 != 0 {
            return Err(PclntabError::BadHeader("nonzero padding"));
        }
        if !matches!(min_lc, 1 | 2 | 4) {
            return Err(PclntabError::BadHeader("minLC not 1, 2 or 4"));
        }
        if ptr_size != 8 {
            return Err(PclntabError::BadHeader("ptrSize is not 8"));
        }
        let ps = usize::from(ptr_size);
        let word = |i: usize| -> Result<u64, PclntabError> {
            rd_word(data, 8 + i * ps, ps).ok_or(PclntabError::Truncated("pcHeader"))
        };
        let nfunc = word(0)?;
        if nfunc == 0 || nfunc > MAX_FUNCS {
            return Err(PclntabError::BadHeader("nfunc out of range"));
        }
        let nfunc = nfunc as u32;
        let header_text_start = word(2)?;
        let offs = [word(3)?, word(4)?, word(5)?, word(6)?, word(7)?];
        let len = data.len() as u64;
        for &o in &offs {
            if o < (8 + 8 * ps) as u64 || o > len {
                return Err(PclntabError::BadHeader("table offset outside section"));
            }
        }
        // Each table runs to the next table start (they are laid out in header order).
        let end_of = |start: u64| -> usize {
            offs.iter()
                .copied()
                .filter(|&o| o > start)
                .min()
                .unwrap_or(len) as usize
        };
        let tab = |i: usize| (offs[i] as usize, end_of(offs[i]));
        let pcln_start = offs[4] as usize;
        let ftab_bytes = (u64::from(nfunc) + 1) * 8;
        if (pcln_start as u64).saturating_add(ftab_bytes) > len {
            return Err(PclntabError::Truncated("function table"));
        }

        let (md_addr, md_words) = find_moduledata(sections, header_addr, &offs, reloc_type)?;
        let mdw = |i: usize| md_words.get(i).copied().unwrap_or(0);
        let text = mdw(22);
        let hinted = buildinfo_version(sections);
        // gofunc offset: 1.19 layout has no covctrs; 1.27 added typedesclen, itaboffset, itabsize.
        let go127_layout = match hinted {
            Some(v) => v.at_least(27),
            // typedesclen (a size) sits where 1.20–1.26 have etypes (an address >= types).
            None => format == TableFormat::Go120 && mdw(38) < mdw(37),
        };
        let gofunc_word = match format {
            TableFormat::Go118 => 38,
            TableFormat::Go120 if go127_layout => 43,
            TableFormat::Go120 => 40,
        };
        let gofunc = mdw(gofunc_word);
        if format == TableFormat::Go118 && header_text_start != 0 && header_text_start != text {
            return Err(PclntabError::BadHeader(
                "textStart differs from moduledata.text",
            ));
        }
        let gsec = sections
            .iter()
            .find(|s| s.alloc && s.data.is_some() && gofunc >= s.addr && gofunc - s.addr < s.size)
            .ok_or(PclntabError::BadGoFunc(gofunc))?;
        let gdata = gsec.data.ok_or(PclntabError::BadGoFunc(gofunc))?;
        let gofunc_data = gdata
            .get((gofunc - gsec.addr) as usize..)
            .ok_or(PclntabError::BadGoFunc(gofunc))?
            .to_vec();

        let version = hinted.unwrap_or(match format {
            TableFormat::Go118 => GoVersion::new(1, 19),
            TableFormat::Go120 if go127_layout => GoVersion::new(1, 27),
            TableFormat::Go120 => GoVersion::new(1, 26),
        });

        let mut tab_ = Pclntab {
            data: data.to_vec(),
            header_addr,
            format,
            quantum: u32::from(min_lc),
            nfunc,
            text,
            funcnametab: tab(0),
            cutab: tab(1),
            filetab: tab(2),
            pctab: tab(3),
            pcln_start,
            gofunc,
            gofunc_data,
            moduledata_addr: md_addr,
            version,
            version_from_buildinfo: hinted.is_some(),
            ids: SpecialFuncIds::default(),
            name_index: Vec::new(),
        };
        tab_.validate_ftab()?;
        tab_.build_name_index();
        let id_of = |t: &Pclntab, n: &str| t.func_by_name(n).map(|f| f.func_id);
        tab_.ids = SpecialFuncIds {
            // FuncIDWrapper directly follows FuncID_systemstack_switch in every release 1.19–1.27.
            wrapper: id_of(&tab_, "runtime.systemstack_switch").and_then(|x| x.checked_add(1)),
            gopanic: id_of(&tab_, "runtime.gopanic"),
            sigpanic: id_of(&tab_, "runtime.sigpanic"),
            panicwrap: id_of(&tab_, "runtime.panicwrap"),
        };
        Ok(tab_)
    }

    fn validate_ftab(&self) -> Result<(), PclntabError> {
        let mut prev = 0u32;
        let fsize = self.func_header_size();
        for i in 0..=self.nfunc {
            let (entry_off, func_off) = self.ftab(i).ok_or(PclntabError::Truncated("ftab"))?;
            if entry_off < prev {
                return Err(PclntabError::BadFuncTable("not sorted by entry offset"));
            }
            prev = entry_off;
            if i < self.nfunc {
                let start = self.pcln_start.checked_add(func_off as usize);
                let ok = start
                    .and_then(|s| s.checked_add(fsize))
                    .is_some_and(|e| e <= self.data.len());
                if !ok {
                    return Err(PclntabError::BadFuncTable("_func offset out of range"));
                }
            }
        }
        Ok(())
    }

    fn build_name_index(&mut self) {
        let mut idx: Vec<u32> = (0..self.nfunc).collect();
        idx.sort_by(|&a, &b| self.raw_name_of_index(a).cmp(self.raw_name_of_index(b)));
        self.name_index = idx;
    }

    fn raw_name_of_index(&self, i: u32) -> &[u8] {
        self.func_info(i)
            .map(|f| self.table_name_bytes(f.name_off))
            .unwrap_or(b"")
    }

    /// Format of the table (from its magic).
    pub fn format(&self) -> TableFormat {
        self.format
    }

    /// Go release whose semantics are emulated (detected or set).
    pub fn go_version(&self) -> GoVersion {
        self.version
    }

    /// The Go version recorded in `.go.buildinfo`, if it was readable.
    pub fn go_version_hint(&self) -> Option<GoVersion> {
        self.version_from_buildinfo.then_some(self.version)
    }

    /// Overrides the emulated Go release (e.g. with the version from build info read elsewhere).
    /// The table format itself is fixed by the magic.
    pub fn set_go_version(&mut self, v: GoVersion) {
        self.version = v;
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

    /// Bytes held by this table (pclntab copy + funcdata copy).
    pub fn owned_bytes(&self) -> usize {
        self.data.len() + self.gofunc_data.len() + self.name_index.len() * 4
    }

    fn func_header_size(&self) -> usize {
        match self.format {
            TableFormat::Go118 => 40,
            TableFormat::Go120 => 44,
        }
    }

    /// `ftab[i]` = (entryoff, funcoff).
    fn ftab(&self, i: u32) -> Option<(u32, u32)> {
        let off = self.pcln_start.checked_add(i as usize * 8)?;
        Some((rd_u32(&self.data, off)?, rd_u32(&self.data, off + 4)?))
    }

    fn func_info(&self, i: u32) -> Option<FuncInfo> {
        if i >= self.nfunc {
            return None;
        }
        let (_, func_off) = self.ftab(i)?;
        let off = self.pcln_start.checked_add(func_off as usize)?;
        let d = &self.data;
        let rd = |o: usize| rd_u32(d, off.checked_add(o)?);
        let (start_line, func_id, nfuncdata) = match self.format {
            TableFormat::Go118 => (0, *d.get(off.checked_add(36)?)?, *d.get(off + 39)?),
            TableFormat::Go120 => (
                rd(36)? as i32,
                *d.get(off.checked_add(40)?)?,
                *d.get(off + 43)?,
            ),
        };
        // The runtime computes entry from the _func's own entryOff (equal to ftab's).
        let own_entry_off = rd(0)?;
        Some(FuncInfo {
            off,
            entry: self.text.wrapping_add(u64::from(own_entry_off)),
            name_off: rd(4)? as i32,
            pcfile: rd(20)?,
            pcln: rd(24)?,
            npcdata: rd(28)?,
            cu_offset: rd(32)?,
            start_line,
            func_id,
            nfuncdata,
        })
    }

    fn func_ref(&self, i: u32) -> Option<FuncRef> {
        let f = self.func_info(i)?;
        let (end_off, _) = self.ftab(i + 1)?;
        Some(FuncRef {
            index: i,
            entry: f.entry,
            end: self.text.wrapping_add(u64::from(end_off)),
            name: lossy(self.table_name_bytes(f.name_off)),
            start_line: f.start_line,
            func_id: f.func_id,
        })
    }

    /// `findfunc`: index of the function containing `pc`.
    fn find_func_index(&self, pc: u64) -> Option<u32> {
        let (min_off, _) = self.ftab(0)?;
        let (max_off, _) = self.ftab(self.nfunc)?;
        let minpc = self.text.wrapping_add(u64::from(min_off));
        let maxpc = self.text.wrapping_add(u64::from(max_off));
        if pc < minpc || pc >= maxpc {
            return None;
        }
        let pc_off = (pc.wrapping_sub(self.text)) as u32;
        // Last i in [0, nfunc) with ftab[i].entryoff <= pc_off (the ftab is sorted, checked in parse).
        let (mut lo, mut hi) = (0u32, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let (e, _) = self.ftab(mid)?;
            if e <= pc_off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The function whose code contains `pc` (unrelocated address), as `findfunc` finds it.
    pub fn func_for_pc(&self, pc: u64) -> Option<FuncRef> {
        self.func_ref(self.find_func_index(pc)?)
    }

    /// The function whose raw symbol name is `name` (first in name order if duplicated).
    pub fn func_by_name(&self, name: &str) -> Option<FuncRef> {
        let key = name.as_bytes();
        let pos = self
            .name_index
            .partition_point(|&i| self.raw_name_of_index(i) < key);
        let &i = self.name_index.get(pos)?;
        if self.raw_name_of_index(i) == key {
            self.func_ref(i)
        } else {
            None
        }
    }

    /// Iterates over all functions of the table in entry order.
    pub fn funcs(&self) -> impl Iterator<Item = FuncRef> + '_ {
        (0..self.nfunc).filter_map(|i| self.func_ref(i))
    }

    /// `moduledata.funcName`: the runtime maps name offset 0 to "" (which hides the name of the
    /// first function of the table); see [`Pclntab::table_name_bytes`] for the stored name.
    fn name_bytes(&self, name_off: i32) -> &[u8] {
        if name_off == 0 {
            return b"";
        }
        self.table_name_bytes(name_off)
    }

    /// The name stored at `name_off` in `funcnametab`, offset 0 included.
    fn table_name_bytes(&self, name_off: i32) -> &[u8] {
        if name_off < 0 {
            return b"";
        }
        let (s, e) = self.funcnametab;
        let Some(t) = self.data.get(s..e) else {
            return b"";
        };
        cstr(t, name_off as usize).unwrap_or(b"")
    }

    /// `pcvalue(f, off, targetpc, strict=false)`: value of the table at `off` for `target`,
    /// -1 if absent or malformed.
    fn pcvalue(&self, f: &FuncInfo, off: u32, target: u64) -> i32 {
        if off == 0 {
            return -1;
        }
        let (s, e) = self.pctab;
        let Some(tab) = self.data.get(s..e) else {
            return -1;
        };
        let Some(mut p) = tab.get(off as usize..) else {
            return -1;
        };
        let mut pc = f.entry;
        let mut val: i32 = -1;
        // Every step consumes at least two bytes, so this loop ends within len(p)/2 steps.
        loop {
            let first = pc == f.entry;
            let Some((np, npc, nval)) = self.step(p, pc, val, first) else {
                return -1;
            };
            p = np;
            if target < npc {
                return nval;
            }
            pc = npc;
            val = nval;
        }
    }

    /// `step`: one (value delta, pc delta) pair. `None` at the end of the table or on truncation.
    fn step<'a>(
        &self,
        p: &'a [u8],
        pc: u64,
        val: i32,
        first: bool,
    ) -> Option<(&'a [u8], u64, i32)> {
        let b0 = *p.first()?;
        if b0 == 0 && !first {
            return None;
        }
        let (n, uvdelta) = readvarint(p)?;
        let val = val.wrapping_add((0u32.wrapping_sub(uvdelta & 1) ^ (uvdelta >> 1)) as i32);
        let p = p.get(n..)?;
        let (n, pcdelta) = readvarint(p)?;
        let p = p.get(n..)?;
        let pc = pc.wrapping_add(u64::from(pcdelta.wrapping_mul(self.quantum)));
        Some((p, pc, val))
    }

    fn pcdata_value(&self, f: &FuncInfo, table: u32, target: u64) -> i32 {
        if table >= f.npcdata {
            return -1;
        }
        let hs = self.func_header_size();
        let Some(off) = rd_u32(&self.data, f.off + hs + table as usize * 4) else {
            return -1;
        };
        self.pcvalue(f, off, target)
    }

    /// `funcdata(f, i)` as an offset into `gofunc_data`.
    fn funcdata_off(&self, f: &FuncInfo, i: u32) -> Option<usize> {
        if i >= u32::from(f.nfuncdata) {
            return None;
        }
        let hs = self.func_header_size();
        let p = f.off + hs + (f.npcdata as usize).checked_mul(4)? + i as usize * 4;
        let off = rd_u32(&self.data, p)?;
        if off == u32::MAX {
            return None;
        }
        Some(off as usize)
    }

    fn inlined_call(&self, tree: usize, index: i32) -> Option<InlinedCall> {
        let idx = usize::try_from(index).ok()?;
        let g = &self.gofunc_data;
        match self.format {
            TableFormat::Go118 => {
                let o = tree.checked_add(idx.checked_mul(20)?)?;
                Some(InlinedCall {
                    func_id: *g.get(o.checked_add(2)?)?,
                    name_off: rd_u32(g, o + 12)? as i32,
                    parent_pc: rd_u32(g, o + 16)? as i32,
                    start_line: 0,
                })
            }
            TableFormat::Go120 => {
                let o = tree.checked_add(idx.checked_mul(16)?)?;
                Some(InlinedCall {
                    func_id: *g.get(o)?,
                    name_off: rd_u32(g, o + 4)? as i32,
                    parent_pc: rd_u32(g, o + 8)? as i32,
                    start_line: rd_u32(g, o + 12)? as i32,
                })
            }
        }
    }

    /// `newInlineUnwinder(f, pc)`: inline tree offset and the innermost frame at `pc`.
    fn inline_unwinder(&self, f: &FuncInfo, pc: u64) -> (Option<usize>, InlineFrame) {
        match self.funcdata_off(f, FUNCDATA_INL_TREE) {
            None => (None, InlineFrame { pc, index: -1 }),
            Some(t) => (Some(t), self.inline_resolve(f, pc)),
        }
    }

    fn inline_resolve(&self, f: &FuncInfo, pc: u64) -> InlineFrame {
        InlineFrame {
            pc,
            index: self.pcdata_value(f, PCDATA_INL_TREE_INDEX, pc),
        }
    }

    /// `inlineUnwinder.next`. A corrupt tree entry ends the walk (pc 0).
    fn inline_next(&self, f: &FuncInfo, tree: Option<usize>, uf: InlineFrame) -> InlineFrame {
        if uf.index < 0 {
            return InlineFrame {
                pc: 0,
                index: uf.index,
            };
        }
        let Some(call) = tree.and_then(|t| self.inlined_call(t, uf.index)) else {
            return InlineFrame { pc: 0, index: -1 };
        };
        self.inline_resolve(f, f.entry.wrapping_add(call.parent_pc as i64 as u64))
    }

    /// `inlineUnwinder.srcFunc`. `None` if the tree entry is unreadable.
    fn src_func(&self, f: &FuncInfo, tree: Option<usize>, uf: InlineFrame) -> Option<SrcFunc> {
        if uf.index < 0 {
            return Some(SrcFunc {
                name_off: f.name_off,
                start_line: f.start_line,
                func_id: f.func_id,
            });
        }
        let c = self.inlined_call(tree?, uf.index)?;
        Some(SrcFunc {
            name_off: c.name_off,
            start_line: c.start_line,
            func_id: c.func_id,
        })
    }

    /// `funcline1(f, pc, false)`.
    fn funcline(&self, f: &FuncInfo, pc: u64) -> (String, i64) {
        let fileno = self.pcvalue(f, f.pcfile, pc);
        let line = self.pcvalue(f, f.pcln, pc);
        let (fs, fe) = self.filetab;
        if fileno == -1 || line == -1 || fileno as i64 >= (fe - fs) as i64 {
            return ("?".to_string(), 0);
        }
        (self.funcfile(f, fileno), i64::from(line))
    }

    fn funcfile(&self, f: &FuncInfo, fileno: i32) -> String {
        let (cs, ce) = self.cutab;
        let idx = f.cu_offset.wrapping_add(fileno as u32) as usize;
        let Some(fileoff) = self
            .data
            .get(cs..ce)
            .and_then(|t| rd_u32(t, idx.checked_mul(4)?))
        else {
            return "?".to_string();
        };
        if fileoff == u32::MAX {
            return "?".to_string();
        }
        let (fs, fe) = self.filetab;
        match self
            .data
            .get(fs..fe)
            .and_then(|t| cstr(t, fileoff as usize))
        {
            Some(s) => lossy(s),
            None => "?".to_string(),
        }
    }

    fn elide_wrapper_calling(&self, id: u8) -> bool {
        let ids = self.ids;
        !(Some(id) == ids.gopanic || Some(id) == ids.sigpanic || Some(id) == ids.panicwrap)
    }

    fn is_wrapper(&self, id: u8) -> bool {
        Some(id) == self.ids.wrapper
    }

    fn print_name(&self, raw: &[u8]) -> String {
        let s = String::from_utf8_lossy(raw);
        func_name_for_print(&s, self.version).into_owned()
    }

    /// `runtime.FuncForPC(pc).Name()`: no pc adjustment; the innermost inlined function at `pc`.
    /// Empty string when `pc` is not in a Go function (`FuncForPC` returns nil).
    pub fn func_name_for_pc(&self, pc: u64) -> String {
        let Some(i) = self.find_func_index(pc) else {
            return String::new();
        };
        let Some(f) = self.func_info(i) else {
            return String::new();
        };
        let (tree, uf) = self.inline_unwinder(&f, pc);
        let name_off = match self.src_func(&f, tree, uf) {
            Some(sf) => sf.name_off,
            None => return String::new(),
        };
        self.print_name(self.name_bytes(name_off))
    }

    /// What `runtime.CallersFrames([]uintptr{pc})` yields as its first frame, or `None` when `pc`
    /// is outside every Go function (the runtime then returns a zero `Frame`).
    pub fn frame_at(&self, pc: u64) -> Option<Frame> {
        self.frames_for_pcs(&[pc]).into_iter().next()
    }

    /// Every frame a full `runtime.CallersFrames(pcs)` walk yields (`Frames.Next` until `more`
    /// is false), including the Go 1.23+ insertion of absent virtual inline PCs.
    pub fn frames_for_pcs(&self, pcs: &[u64]) -> Vec<Frame> {
        let mut out = Vec::with_capacity(pcs.len());
        let mut callers = pcs;
        let mut next_pc: u64 = 0;
        // Each iteration consumes a caller or a pending nextPC; nextPC is set at most once per
        // consumed caller, so this runs at most 2*len(pcs) times.
        loop {
            let pc;
            if next_pc != 0 {
                pc = next_pc;
                next_pc = 0;
            } else if let Some((&first, rest)) = callers.split_first() {
                pc = first;
                callers = rest;
            } else {
                break;
            }
            let Some(f) = self.find_func_index(pc).and_then(|i| self.func_info(i)) else {
                continue;
            };
            let entry = f.entry;
            let pc = if pc > entry { pc - 1 } else { pc };
            let (tree, uf) = self.inline_unwinder(&f, pc);
            let Some(sf) = self.src_func(&f, tree, uf) else {
                continue;
            };
            let inlined = uf.index >= 0;
            if inlined && self.version.at_least(23) {
                let mut unext = self.inline_next(&f, tree, uf);
                let mut depth = 0;
                while unext.pc != 0 && depth < MAX_INLINE_DEPTH {
                    let Some(&c0) = callers.first() else { break };
                    if c0 == unext.pc.wrapping_add(1) {
                        break;
                    }
                    depth += 1;
                    let snext = self.src_func(&f, tree, unext);
                    if snext.is_some_and(|s| self.is_wrapper(s.func_id))
                        && self.elide_wrapper_calling(sf.func_id)
                    {
                        unext = self.inline_next(&f, tree, unext);
                        continue;
                    }
                    next_pc = unext.pc.wrapping_add(1);
                    break;
                }
            }
            let raw = self.name_bytes(sf.name_off);
            let (file, line) = self.funcline(&f, pc);
            out.push(Frame {
                pc,
                has_func: !inlined,
                inlined,
                function: self.print_name(raw),
                symbol_name: lossy(raw),
                file,
                line,
                start_line: i64::from(sf.start_line),
                entry,
                valid: true,
            });
        }
        out
    }

    /// `runtime_expandFinalInlineFrame(stk)`: if the last PC of `stk` is inside inlined code,
    /// replace it by the PCs (+1) of every logical frame of that inline stack, innermost first.
    pub fn expand_final_inline_frame(&self, stk: &[u64]) -> Vec<u64> {
        let mut out = stk.to_vec();
        let Some(&pc) = stk.last() else {
            return out;
        };
        let tracepc = pc.wrapping_sub(1);
        let Some(f) = self
            .find_func_index(tracepc)
            .and_then(|i| self.func_info(i))
        else {
            return out;
        };
        let (tree, uf) = self.inline_unwinder(&f, tracepc);
        if self.version.at_least(20) {
            if uf.index < 0 {
                return out;
            }
            let mut callee_id = 0u8; // FuncIDNormal
            out.pop();
            let mut uf = uf;
            let mut depth = 0;
            while uf.pc != 0 && depth < MAX_INLINE_DEPTH {
                depth += 1;
                let Some(sf) = self.src_func(&f, tree, uf) else {
                    break;
                };
                if !(self.is_wrapper(sf.func_id) && self.elide_wrapper_calling(callee_id)) {
                    out.push(uf.pc.wrapping_add(1));
                }
                callee_id = sf.func_id;
                uf = self.inline_next(&f, tree, uf);
            }
        } else {
            // Go 1.19: walk the tree directly; the outermost PC is always appended.
            let Some(tree) = tree else {
                return out;
            };
            let mut last_id = 0u8;
            out.pop();
            let (mut pc, mut tracepc) = (pc, tracepc);
            for _ in 0..MAX_INLINE_DEPTH {
                let ix = self.pcdata_value(&f, PCDATA_INL_TREE_INDEX, tracepc);
                if ix < 0 {
                    break;
                }
                let Some(call) = self.inlined_call(tree, ix) else {
                    break;
                };
                if !(self.is_wrapper(call.func_id) && self.elide_wrapper_calling(last_id)) {
                    out.push(pc);
                }
                last_id = call.func_id;
                tracepc = f.entry.wrapping_add(call.parent_pc as i64 as u64);
                pc = tracepc.wrapping_add(1);
            }
            out.push(pc);
        }
        out
    }
}

/// `readvarint`: (bytes read, value). `None` if the varint runs off the table.
fn readvarint(p: &[u8]) -> Option<(usize, u32)> {
    let mut v: u32 = 0;
    let mut shift: u32 = 0;
    for (n, &b) in p.iter().enumerate() {
        v |= u32::from(b & 0x7f).wrapping_shl(shift & 31);
        if b & 0x80 == 0 {
            return Some((n + 1, v));
        }
        shift = shift.wrapping_add(7);
    }
    None
}

/// Finds `runtime.firstmoduledata`: returns its address and its first [`MODULEDATA_WORDS`]
/// words with relocations applied.
fn find_moduledata(
    sections: &[SectionInfo<'_>],
    header_addr: u64,
    offs: &[u64; 5],
    reloc_type: u32,
) -> Result<(u64, Vec<u64>), PclntabError> {
    // RELATIVE relocations (PIE): r_offset -> addend.
    let relas: Vec<&[u8]> = sections
        .iter()
        .filter(|s| s.is_rela)
        .filter_map(|s| s.data)
        .collect();
    let relative_relocs = || {
        relas
            .iter()
            .flat_map(|d| d.chunks_exact(24))
            .filter_map(|e| {
                let off = rd_u64(e, 0)?;
                let info = rd_u64(e, 8)?;
                let addend = rd_u64(e, 16)?;
                ((info & 0xffff_ffff) as u32 == reloc_type).then_some((off, addend))
            })
    };
    let data_at = |addr: u64, len: u64| -> Option<&[u8]> {
        let s = sections.iter().find(|s| {
            s.alloc && !s.exec && s.data.is_some() && addr >= s.addr && addr - s.addr < s.size
        })?;
        let start = (addr - s.addr) as usize;
        let d = s.data?;
        d.get(start..start.checked_add(len as usize)?.min(d.len()))
    };
    let read_words = |md: u64, relocs: &HashMap<u64, u64>| -> Vec<u64> {
        let raw = data_at(md, MODULEDATA_WORDS * 8).unwrap_or(&[]);
        (0..MODULEDATA_WORDS)
            .map(|i| {
                let a = md + i * 8;
                relocs
                    .get(&a)
                    .copied()
                    .or_else(|| rd_u64(raw, i as usize * 8))
                    .unwrap_or(0)
            })
            .collect()
    };
    let plausible = |w: &[u64]| -> bool {
        let at = |i: usize| w.get(i).copied().unwrap_or(0);
        at(0) == header_addr
            && at(1) == header_addr.wrapping_add(offs[0])
            && at(4) == header_addr.wrapping_add(offs[1])
            && at(7) == header_addr.wrapping_add(offs[2])
            && at(10) == header_addr.wrapping_add(offs[3])
            && at(13) == header_addr.wrapping_add(offs[4])
    };
    let mut candidates: Vec<u64> = relative_relocs()
        .filter(|&(_, a)| a == header_addr)
        .map(|(o, _)| o)
        .collect();
    for s in sections.iter().filter(|s| s.alloc && !s.exec) {
        let Some(d) = s.data else { continue };
        if s.addr % 8 != 0 || s.name == ".gopclntab" {
            continue;
        }
        for (i, c) in d.chunks_exact(8).enumerate() {
            if rd_u64(c, 0) == Some(header_addr) {
                candidates.push(s.addr + i as u64 * 8);
            }
        }
    }
    candidates.sort_unstable();
    candidates.dedup();
    for md in candidates {
        let relocs: HashMap<u64, u64> = if relas.is_empty() {
            HashMap::new()
        } else {
            relative_relocs()
                .filter(|&(o, _)| o >= md && o < md + MODULEDATA_WORDS * 8)
                .collect()
        };
        let w = read_words(md, &relocs);
        if plausible(&w) {
            return Ok((md, w));
        }
    }
    Err(PclntabError::ModuleDataNotFound(header_addr))
}

#[cfg(test)]
mod tests {
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
    fn versions() {
        assert_eq!(GoVersion::parse("go1.21.13"), Some(GoVersion::new(1, 21)));
        assert_eq!(
            GoVersion::parse("devel go1.27-abc"),
            Some(GoVersion::new(1, 27))
        );
        assert_eq!(GoVersion::parse("1.19"), Some(GoVersion::new(1, 19)));
        assert_eq!(GoVersion::parse("xyz"), None);
    }

    #[test]
    fn varint() {
        assert_eq!(readvarint(&[0x05]), Some((1, 5)));
        assert_eq!(readvarint(&[0x80, 0x01]), Some((2, 128)));
        assert_eq!(readvarint(&[0x80, 0x80]), None);
    }
}
