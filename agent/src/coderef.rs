//! Recover the addresses of the Go runtime's memory-profile globals from machine code, for binaries
//! without `.symtab` (linked with `-ldflags=-s -w`, or stripped by a distribution).
//!
//! `.gopclntab` survives stripping, so runtime *functions* can still be found by name (see
//! [`FunctionRanges`]). The globals those functions touch are found by decoding their machine code
//! (amd64: RIP-relative / absolute memory operands and `LEA`; arm64: `ADRP` + `ADD`/`LDR`/`STR`/`LDAR`
//! pairs) and picking the right global by *structure*, with several independent references that must
//! agree:
//!
//! * `runtime.mbuckets`: the only global that `runtime.mProf_FlushLocked` reads, and the only global
//!   both `runtime.stkbucket` (which links new buckets into it) and the memory-profile reader
//!   (`runtime.MemProfile` before Go 1.23, `runtime.memProfileInternal` from 1.23) reference. It must
//!   be pointer data in a `NOBITS` section (`.bss`).
//! * `runtime.MemProfileRate` and `runtime.disableMemoryProfiling`: the runtime turns profiling off
//!   with "load the linker-set bool, branch/select, store an 8-byte word into MemProfileRate" (in
//!   `runtime.schedinit` from Go 1.20, in the package initialiser `runtime.init` for Go 1.19). The
//!   stored global must also be 8-byte-loaded by `runtime.profilealloc`, and must hold its default
//!   value 524288 (512 KiB) in the file (Go ≥ 1.20, `.noptrdata`) or be initialised with the
//!   immediate 524288 in the same code (Go 1.19, where it lives in `.noptrbss`).
//! * `runtime.mProfCycle` (optional): the global that `runtime.mProf_Malloc` loads as a 4-byte word and
//!   that `runtime.mProf_Flush` (and the reader, when present) also reference.
//!
//! All addresses are unrelocated ELF virtual addresses; the caller adds the load bias for PIE.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;

use iced_x86::{
    Decoder, DecoderOptions, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};
use object::{Object, ObjectSection};

/// Default value of `runtime.MemProfileRate` in every supported Go version (`512 * 1024` bytes).
pub const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// Upper bound on the size of one function we are willing to decode (bytes). The largest runtime
/// functions we look at are a few KiB; anything bigger means a corrupt function table.
pub const MAX_FUNCTION_SIZE: u64 = 1 << 20;

/// How many instructions after the `disableMemoryProfiling` byte load the `MemProfileRate` store may
/// appear (Go 1.19 arm64 needs 6: TST, ORR, CSEL, ADRP, ADD, STR).
const DISABLE_TO_STORE_WINDOW: usize = 8;

/// Looks up the address range of a function by its Go symbol name (e.g. `runtime.stkbucket`).
///
/// Implemented by the `.gopclntab` parser for stripped binaries; tests implement it with `.symtab`.
pub trait FunctionRanges {
    /// `[entry, end)` of function `name` in unrelocated ELF virtual addresses, or `None` when the
    /// binary has no such function.
    fn function_range(&self, name: &str) -> Option<Range<u64>>;
}

/// Addresses of the runtime globals goheap needs, as unrelocated ELF virtual addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredAddresses {
    /// `runtime.mbuckets`: head of the memory-profile bucket list (an 8-byte pointer).
    pub mbuckets: u64,
    /// `runtime.MemProfileRate`: an 8-byte `int`.
    pub mem_profile_rate: u64,
    /// `runtime.mProfCycle`: a 4-byte cycle counter, when it could be identified unambiguously.
    pub mprof_cycle: Option<u64>,
    /// `runtime.disableMemoryProfiling`: a 1-byte bool, when it could be identified.
    pub disable_memory_profiling: Option<u64>,
    /// Human-readable description of each reference that supports the result.
    pub evidence: Vec<String>,
}

/// Why the runtime globals could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum CodeRefError {
    /// The input is not an ELF file `object` can parse.
    #[error("not a parsable ELF file: {0}")]
    Elf(String),
    /// Only little-endian x86-64 and AArch64 are decoded.
    #[error("unsupported architecture {0} (supported: x86_64, aarch64)")]
    UnsupportedArchitecture(String),
    /// A function needed as evidence is not in the function table.
    #[error("function {0} not found in the function table")]
    MissingFunction(String),
    /// A function's range does not lie inside file-backed executable bytes, or is implausibly large.
    #[error("function {name} has an invalid range {start:#x}..{end:#x}: {reason}")]
    BadFunctionRange {
        /// Function name.
        name: String,
        /// Claimed entry address.
        start: u64,
        /// Claimed end address.
        end: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The code did not single out one global for `what`.
    #[error("could not identify {what}: {detail}")]
    NotIdentified {
        /// Which global.
        what: &'static str,
        /// Candidates found and why they were rejected.
        detail: String,
    },
    /// Independent references point at different globals.
    #[error("references disagree on {what}: {detail}")]
    Disagreement {
        /// Which global.
        what: &'static str,
        /// The conflicting candidates.
        detail: String,
    },
}

/// How an instruction uses a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The value is read.
    Load,
    /// The value is overwritten.
    Store,
    /// Read and written by one instruction (atomic add, CAS, `ADD mem, reg`).
    ReadModifyWrite,
    /// Only the address is computed (`LEA`, arm64 `ADRP`+`ADD`).
    Address,
}

/// One reference from an instruction to a fixed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GlobalRef {
    /// Referenced virtual address.
    target: u64,
    access: Access,
    /// Bytes accessed (0 for [`Access::Address`] or unknown).
    size: u8,
}

/// What we keep of one decoded instruction.
#[derive(Debug, Clone, Copy)]
struct InsnSummary {
    /// Address of the instruction.
    addr: u64,
    /// Fixed-address memory reference, if any.
    global: Option<GlobalRef>,
    /// Immediate operand / materialised constant, if any.
    immediate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    Amd64,
    Arm64,
}

/// One allocated ELF section.
#[derive(Debug, Clone)]
struct SectionInfo {
    name: String,
    /// Virtual address range.
    addrs: Range<u64>,
    /// Byte range in the file; `None` for `NOBITS` sections and for sections cut off by truncation.
    file: Option<Range<usize>>,
    /// `SHT_NOBITS` (`.bss`, `.noptrbss`): no bytes in the file, zero-initialised.
    nobits: bool,
    executable: bool,
    /// Writable, non-TLS, non-executable: where Go globals live.
    global_data: bool,
}

/// The parts of the ELF file the analysis needs.
struct Image<'a> {
    data: &'a [u8],
    arch: Arch,
    sections: Vec<SectionInfo>,
}

impl<'a> Image<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, CodeRefError> {
        let file = object::File::parse(data).map_err(|e| CodeRefError::Elf(e.to_string()))?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(CodeRefError::Elf(format!(
                "{:?} file, not ELF",
                file.format()
            )));
        }
        if !file.is_little_endian() || !file.is_64() {
            return Err(CodeRefError::UnsupportedArchitecture(format!(
                "{:?} (big-endian or 32-bit)",
                file.architecture()
            )));
        }
        let arch = match file.architecture() {
            object::Architecture::X86_64 => Arch::Amd64,
            object::Architecture::Aarch64 => Arch::Arm64,
            other => return Err(CodeRefError::UnsupportedArchitecture(format!("{other:?}"))),
        };
        let mut sections = Vec::new();
        for section in file.sections() {
            let object::SectionFlags::Elf { sh_flags } = section.flags() else {
                continue;
            };
            let flags = u32::try_from(sh_flags).unwrap_or(u32::MAX);
            if flags & object::elf::SHF_ALLOC == 0 || section.size() == 0 {
                continue;
            }
            let Some(end) = section.address().checked_add(section.size()) else {
                continue;
            };
            let file_range = match section.file_range() {
                Some((offset, size)) => {
                    let start = usize::try_from(offset).ok();
                    let len = usize::try_from(size).ok();
                    match (start, len) {
                        (Some(start), Some(len)) => match start.checked_add(len) {
                            Some(stop) if stop <= data.len() => Some(start..stop),
                            _ => None,
                        },
                        _ => None,
                    }
                }
                None => None,
            };
            let nobits = section.file_range().is_none();
            let executable = flags & object::elf::SHF_EXECINSTR != 0;
            let global_data = flags & object::elf::SHF_WRITE != 0
                && !executable
                && flags & object::elf::SHF_TLS == 0;
            sections.push(SectionInfo {
                name: section.name().unwrap_or("?").to_string(),
                addrs: section.address()..end,
                file: file_range,
                nobits,
                executable,
                global_data,
            });
        }
        Ok(Image {
            data,
            arch,
            sections,
        })
    }

    fn section_of(&self, addr: u64) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.addrs.contains(&addr))
    }

    /// True if `addr` lies in a section where Go places writable globals.
    fn is_global_data(&self, addr: u64) -> bool {
        self.section_of(addr).is_some_and(|s| s.global_data)
    }

    /// True if `addr` lies in a writable `NOBITS` section (`.bss`, `.noptrbss`).
    fn is_bss(&self, addr: u64) -> bool {
        self.section_of(addr)
            .is_some_and(|s| s.global_data && s.nobits)
    }

    fn section_name(&self, addr: u64) -> &str {
        self.section_of(addr).map_or("?", |s| s.name.as_str())
    }

    /// The `len` bytes stored in the file at `addr`, if they are all file-backed in one section.
    fn file_bytes(&self, addr: u64, len: usize) -> Option<&'a [u8]> {
        let section = self.section_of(addr)?;
        let file = section.file.as_ref()?;
        let offset_in_section = usize::try_from(addr.checked_sub(section.addrs.start)?).ok()?;
        let start = file.start.checked_add(offset_in_section)?;
        let stop = start.checked_add(len)?;
        if stop > file.end {
            return None;
        }
        self.data.get(start..stop)
    }

    /// The 8-byte little-endian word stored in the file at `addr`, if `addr` is file-backed.
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let bytes: [u8; 8] = self.file_bytes(addr, 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }

    /// The byte stored in the file at `addr`, if `addr` is file-backed.
    fn read_u8(&self, addr: u64) -> Option<u8> {
        self.file_bytes(addr, 1)?.first().copied()
    }

    /// Machine code of `range`, which must lie inside one file-backed executable section.
    fn code(&self, name: &str, range: &Range<u64>) -> Result<&'a [u8], CodeRefError> {
        let bad = |reason| CodeRefError::BadFunctionRange {
            name: name.to_string(),
            start: range.start,
            end: range.end,
            reason,
        };
        if range.end <= range.start {
            return Err(bad("empty or reversed"));
        }
        if range.end - range.start > MAX_FUNCTION_SIZE {
            return Err(bad("larger than MAX_FUNCTION_SIZE"));
        }
        let section = self
            .section_of(range.start)
            .ok_or_else(|| bad("not inside any allocated section"))?;
        if !section.executable {
            return Err(bad("not inside an executable section"));
        }
        let file = section
            .file
            .as_ref()
            .ok_or_else(|| bad("section has no file bytes"))?;
        if range.end > section.addrs.end {
            return Err(bad("extends past the end of its section"));
        }
        let start = usize::try_from(range.start - section.addrs.start)
            .ok()
            .and_then(|o| file.start.checked_add(o));
        let len = usize::try_from(range.end - range.start).ok();
        let (Some(start), Some(len)) = (start, len) else {
            return Err(bad("offset overflow"));
        };
        let stop = start
            .checked_add(len)
            .ok_or_else(|| bad("offset overflow"))?;
        if stop > file.end {
            return Err(bad("extends past the section's file bytes"));
        }
        self.data
            .get(start..stop)
            .ok_or_else(|| bad("outside the file"))
    }
}

/// Decoded code of one named function.
struct DecodedFunction {
    name: String,
    insns: Vec<InsnSummary>,
}

impl DecodedFunction {
    /// References to writable globals, in instruction order.
    fn global_refs<'s>(
        &'s self,
        image: &'s Image<'_>,
    ) -> impl Iterator<Item = (usize, u64, GlobalRef)> + 's {
        self.insns.iter().enumerate().filter_map(move |(i, insn)| {
            let g = insn.global?;
            image.is_global_data(g.target).then_some((i, insn.addr, g))
        })
    }

    /// Distinct writable globals referenced in any way.
    fn targets(&self, image: &Image<'_>) -> BTreeSet<u64> {
        self.global_refs(image).map(|(_, _, g)| g.target).collect()
    }

    /// Distinct writable globals accessed with `access` and `size` bytes.
    fn targets_accessed(&self, image: &Image<'_>, access: Access, size: u8) -> BTreeSet<u64> {
        self.global_refs(image)
            .filter(|(_, _, g)| g.access == access && g.size == size)
            .map(|(_, _, g)| g.target)
            .collect()
    }
}

fn decode_function(
    image: &Image<'_>,
    funcs: &dyn FunctionRanges,
    name: &str,
) -> Result<Option<DecodedFunction>, CodeRefError> {
    let Some(range) = funcs.function_range(name) else {
        return Ok(None);
    };
    let code = image.code(name, &range)?;
    let insns = match image.arch {
        Arch::Amd64 => decode_amd64(code, range.start),
        Arch::Arm64 => decode_arm64(code, range.start),
    };
    Ok(Some(DecodedFunction {
        name: name.to_string(),
        insns,
    }))
}

fn require_function(
    image: &Image<'_>,
    funcs: &dyn FunctionRanges,
    name: &str,
) -> Result<DecodedFunction, CodeRefError> {
    decode_function(image, funcs, name)?.ok_or_else(|| CodeRefError::MissingFunction(name.into()))
}

// ---------------------------------------------------------------------------------------------
// amd64

fn decode_amd64(code: &[u8], ip: u64) -> Vec<InsnSummary> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let mut info = InstructionInfoFactory::new();
    let mut out = Vec::with_capacity(code.len() / 4);
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            continue;
        }
        let mut global = None;
        let mut immediate = None;
        for op in 0..insn.op_count() {
            match insn.op_kind(op) {
                OpKind::Memory => {
                    if matches!(insn.segment_prefix(), Register::FS | Register::GS) {
                        continue;
                    }
                    let target = if insn.is_ip_rel_memory_operand() {
                        Some(insn.ip_rel_memory_address())
                    } else if insn.memory_base() == Register::None
                        && insn.memory_index() == Register::None
                    {
                        Some(insn.memory_displacement64())
                    } else {
                        None
                    };
                    if let Some(target) = target {
                        let access = amd64_access(&mut info, &insn, op);
                        let size = if access == Access::Address {
                            0
                        } else {
                            u8::try_from(insn.memory_size().size()).unwrap_or(0)
                        };
                        global = Some(GlobalRef {
                            target,
                            access,
                            size,
                        });
                    }
                }
                OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64 => immediate = insn.try_immediate(op).ok(),
                _ => {}
            }
        }
        out.push(InsnSummary {
            addr: insn.ip(),
            global,
            immediate,
        });
    }
    out
}

/// Classifies the memory operand `op` of `insn` from iced's per-operand access table.
fn amd64_access(info: &mut InstructionInfoFactory, insn: &Instruction, op: u32) -> Access {
    if insn.mnemonic() == Mnemonic::Lea {
        return Access::Address;
    }
    match info.info(insn).try_op_access(op) {
        Ok(OpAccess::Read | OpAccess::CondRead) => Access::Load,
        Ok(OpAccess::Write | OpAccess::CondWrite) => Access::Store,
        Ok(OpAccess::ReadWrite | OpAccess::ReadCondWrite) => Access::ReadModifyWrite,
        _ => Access::Address,
    }
}

// ---------------------------------------------------------------------------------------------
// arm64 (A64). Go's linker always materialises a global's address with an `ADRP` immediately
// followed by the instruction that completes it (`ADD`, or a load/store with the low 12 bits as
// offset); an `ADD` may in turn be followed by a zero-offset load/store/atomic on that register.
// Only those adjacent pairs/triples are tracked.

/// A register known to hold an address for the next instruction only.
#[derive(Debug, Clone, Copy)]
struct KnownBase {
    reg: u32,
    addr: u64,
    /// True for `ADRP` (4 KiB page, low bits come from the next instruction).
    page: bool,
}

fn decode_arm64(code: &[u8], pc0: u64) -> Vec<InsnSummary> {
    let mut out = Vec::with_capacity(code.len() / 4);
    let mut base: Option<KnownBase> = None;
    for (i, word) in code.chunks_exact(4).enumerate() {
        let Some(pc) = u64::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(4))
            .and_then(|o| pc0.checked_add(o))
        else {
            break;
        };
        let w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let mut global = None;
        let mut next_base = None;
        let immediate = arm64_immediate(w);

        if let Some(adrp) = arm64_adrp(w, pc) {
            next_base = Some(KnownBase {
                reg: adrp.0,
                addr: adrp.1,
                page: true,
            });
        } else if let Some(b) = base {
            if let Some((rd, rn, imm)) = arm64_add_imm(w) {
                if rn == b.reg && b.page {
                    let target = b.addr.wrapping_add(imm);
                    global = Some(GlobalRef {
                        target,
                        access: Access::Address,
                        size: 0,
                    });
                    next_base = Some(KnownBase {
                        reg: rd,
                        addr: target,
                        page: false,
                    });
                }
            } else if let Some(m) = arm64_memory(w) {
                if m.rn == b.reg {
                    global = Some(GlobalRef {
                        target: b.addr.wrapping_add(m.offset),
                        access: m.access,
                        size: m.size,
                    });
                }
            }
        }
        out.push(InsnSummary {
            addr: pc,
            global,
            immediate,
        });
        base = next_base;
    }
    out
}

/// `ADRP Xd, label` → (d, page address).
fn arm64_adrp(w: u32, pc: u64) -> Option<(u32, u64)> {
    if w & 0x9F00_0000 != 0x9000_0000 {
        return None;
    }
    let rd = w & 31;
    let immlo = u64::from((w >> 29) & 3);
    let immhi = u64::from((w >> 5) & 0x7_FFFF);
    let imm21 = (immhi << 2) | immlo;
    // Sign-extend 21 bits, then scale by 4 KiB pages.
    let offset = (((imm21 << 43) as i64) >> 43).wrapping_mul(4096);
    Some((rd, (pc & !0xFFF).wrapping_add(offset as u64)))
}

/// 64-bit `ADD Xd, Xn, #imm{, LSL #12}` → (d, n, imm).
fn arm64_add_imm(w: u32) -> Option<(u32, u32, u64)> {
    if w & 0xFF80_0000 != 0x9100_0000 {
        return None;
    }
    let shift = (w >> 22) & 1;
    let imm = u64::from((w >> 10) & 0xFFF) << (12 * shift);
    Some((w & 31, (w >> 5) & 31, imm))
}

/// A load/store with a base register and immediate offset.
struct Arm64Memory {
    rn: u32,
    offset: u64,
    access: Access,
    size: u8,
}

fn arm64_memory(w: u32) -> Option<Arm64Memory> {
    let rn = (w >> 5) & 31;
    // LDR/STR (unsigned scaled 12-bit offset), general and SIMD&FP registers.
    if w & 0x3B00_0000 == 0x3900_0000 {
        let size_bits = w >> 30;
        let opc = (w >> 22) & 3;
        let simd = (w >> 26) & 1 == 1;
        let (bytes, access) = if simd {
            let bytes = if size_bits == 0 && opc & 2 != 0 {
                16
            } else {
                1u8 << size_bits
            };
            let access = if opc & 1 == 0 {
                Access::Store
            } else {
                Access::Load
            };
            (bytes, access)
        } else {
            if size_bits == 3 && opc == 2 {
                return None; // PRFM
            }
            let access = if opc == 0 {
                Access::Store
            } else {
                Access::Load
            };
            (1u8 << size_bits, access)
        };
        let offset = u64::from((w >> 10) & 0xFFF) * u64::from(bytes);
        return Some(Arm64Memory {
            rn,
            offset,
            access,
            size: bytes,
        });
    }
    // LDP/STP (signed offset), general registers.
    if w & 0x3BC0_0000 == 0x2900_0000 || w & 0x3BC0_0000 == 0x2940_0000 {
        if (w >> 26) & 1 == 1 {
            return None;
        }
        let reg_bytes: u8 = if w >> 31 == 1 { 8 } else { 4 };
        let imm7 = (((w >> 15) & 0x7F) << 25) as i32 >> 25;
        let offset = i64::from(imm7) * i64::from(reg_bytes);
        let access = if (w >> 22) & 1 == 1 {
            Access::Load
        } else {
            Access::Store
        };
        return Some(Arm64Memory {
            rn,
            offset: offset as u64,
            access,
            size: reg_bytes * 2,
        });
    }
    // Load/store exclusive and ordered (LDAR, STLR, LDAXR, STLXR, CAS…), base register only.
    if w & 0x3F00_0000 == 0x0800_0000 {
        let size = 1u8 << (w >> 30);
        let o2 = (w >> 23) & 1;
        let o1 = (w >> 21) & 1;
        let load = (w >> 22) & 1;
        let access = if o2 == 1 && o1 == 1 {
            Access::ReadModifyWrite // CAS family
        } else if load == 1 {
            Access::Load
        } else {
            Access::Store
        };
        return Some(Arm64Memory {
            rn,
            offset: 0,
            access,
            size,
        });
    }
    // LSE atomic memory operations (LDADD, SWP, …).
    if w & 0x3F20_0C00 == 0x3820_0000 {
        return Some(Arm64Memory {
            rn,
            offset: 0,
            access: Access::ReadModifyWrite,
            size: 1u8 << (w >> 30),
        });
    }
    None
}

/// Constant materialised by `MOVZ` or by `ORR Rd, ZR, #bitmask` (the `MOV` alias).
fn arm64_immediate(w: u32) -> Option<u64> {
    // MOVZ (32/64-bit)
    if w & 0x7F80_0000 == 0x5280_0000 {
        let hw = (w >> 21) & 3;
        return Some(u64::from((w >> 5) & 0xFFFF) << (16 * hw));
    }
    // ORR (immediate) with Rn = ZR
    if w & 0x7F80_0000 == 0x3200_0000 && (w >> 5) & 31 == 31 {
        let sf = w >> 31;
        let n = (w >> 22) & 1;
        let immr = (w >> 16) & 0x3F;
        let imms = (w >> 10) & 0x3F;
        return arm64_decode_bitmask(n, imms, immr, if sf == 1 { 64 } else { 32 });
    }
    None
}

/// A64 `DecodeBitMasks` for logical immediates (returns the `wmask`).
fn arm64_decode_bitmask(n: u32, imms: u32, immr: u32, datasize: u32) -> Option<u64> {
    let combined = (n << 6) | (!imms & 0x3F);
    if combined == 0 {
        return None;
    }
    let len = 31 - combined.leading_zeros(); // highest set bit
    if len < 1 {
        return None;
    }
    let esize = 1u32 << len;
    if esize > datasize {
        return None;
    }
    let levels = esize - 1;
    let s = imms & levels;
    let r = immr & levels;
    if s == levels {
        return None; // reserved
    }
    let ones: u64 = (1u64 << (s + 1)) - 1;
    let emask: u64 = if esize == 64 {
        u64::MAX
    } else {
        (1u64 << esize) - 1
    };
    let elem = if r == 0 {
        ones
    } else {
        ((ones >> r) | (ones << (esize - r))) & emask
    };
    let mut value = 0u64;
    let mut pos = 0;
    while pos < datasize {
        value |= elem << pos;
        pos += esize;
    }
    Some(value)
}

// ---------------------------------------------------------------------------------------------
// Recovery

fn fmt_set(set: &BTreeSet<u64>) -> String {
    let mut s = String::from("{");
    for (i, a) in set.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{a:#x}");
    }
    s.push('}');
    s
}

/// Recovers `runtime.mbuckets`, `runtime.MemProfileRate` and, when unambiguous, `runtime.mProfCycle`
/// and `runtime.disableMemoryProfiling` from the machine code of runtime functions in `elf`.
///
/// `funcs` supplies function ranges (from `.gopclntab` or `.symtab`). Every candidate is backed by
/// at least two independent references; the reasoning is returned in
/// [`RecoveredAddresses::evidence`].
pub fn recover_runtime_addresses(
    elf: &[u8],
    funcs: &dyn FunctionRanges,
) -> Result<RecoveredAddresses, CodeRefError> {
    let image = Image::parse(elf)?;
    let mut evidence = Vec::new();

    // The memory-profile reader: `runtime.memProfileInternal` (Go ≥ 1.23) or `runtime.MemProfile`.
    // It is absent when the linker dead-code-eliminated memory profiling.
    let reader = match decode_function(&image, funcs, "runtime.memProfileInternal")? {
        Some(f) if !f.targets(&image).is_empty() => Some(f),
        _ => decode_function(&image, funcs, "runtime.MemProfile")?
            .filter(|f| !f.targets(&image).is_empty()),
    };

    let mbuckets = recover_mbuckets(&image, funcs, reader.as_ref(), &mut evidence)?;
    let (mem_profile_rate, disable_memory_profiling) =
        recover_mem_profile_rate(&image, funcs, &mut evidence)?;
    let mprof_cycle = recover_mprof_cycle(&image, funcs, reader.as_ref(), &mut evidence)?;

    Ok(RecoveredAddresses {
        mbuckets,
        mem_profile_rate,
        mprof_cycle,
        disable_memory_profiling,
        evidence,
    })
}

fn recover_mbuckets(
    image: &Image<'_>,
    funcs: &dyn FunctionRanges,
    reader: Option<&DecodedFunction>,
    evidence: &mut Vec<String>,
) -> Result<u64, CodeRefError> {
    const WHAT: &str = "runtime.mbuckets";
    // 1. mProf_FlushLocked walks the list: its only global is mbuckets, read as an 8-byte word.
    let flush = require_function(image, funcs, "runtime.mProf_FlushLocked")?;
    let flush_targets = flush.targets(image);
    let [only] = flush_targets.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(CodeRefError::NotIdentified {
            what: WHAT,
            detail: format!(
                "{} references {} globals {}, expected exactly one",
                flush.name,
                flush_targets.len(),
                fmt_set(&flush_targets)
            ),
        });
    };
    if !flush
        .targets_accessed(image, Access::Load, 8)
        .contains(&only)
    {
        return Err(CodeRefError::NotIdentified {
            what: WHAT,
            detail: format!("{} does not load {only:#x} as an 8-byte word", flush.name),
        });
    }
    if !image.is_bss(only) {
        return Err(CodeRefError::NotIdentified {
            what: WHAT,
            detail: format!(
                "{only:#x} from {} is in {}, expected a NOBITS data section",
                flush.name,
                image.section_name(only)
            ),
        });
    }
    evidence.push(format!(
        "mbuckets {only:#x} ({}): the only global of {} (8-byte load)",
        image.section_name(only),
        flush.name
    ));

    // 2. stkbucket links new buckets into it; the reader walks it. Their common global is mbuckets.
    let stk = require_function(image, funcs, "runtime.stkbucket")?;
    let stk_targets = stk.targets(image);
    match reader {
        Some(reader) => {
            let reader_loads = reader.targets_accessed(image, Access::Load, 8);
            let common: BTreeSet<u64> = stk_targets
                .intersection(&reader_loads)
                .copied()
                .filter(|a| image.is_bss(*a))
                .collect();
            if common.len() != 1 || !common.contains(&only) {
                return Err(CodeRefError::Disagreement {
                    what: WHAT,
                    detail: format!(
                        "{} says {only:#x}, but {} ∩ {} (8-byte loads, .bss) = {}",
                        flush.name,
                        stk.name,
                        reader.name,
                        fmt_set(&common)
                    ),
                });
            }
            evidence.push(format!(
                "mbuckets {only:#x}: the only .bss global both {} and {} (8-byte load) reference",
                stk.name, reader.name
            ));
        }
        None => {
            if !stk_targets.contains(&only) {
                return Err(CodeRefError::Disagreement {
                    what: WHAT,
                    detail: format!(
                        "{} says {only:#x}, which {} does not reference",
                        flush.name, stk.name
                    ),
                });
            }
            evidence.push(format!(
                "mbuckets {only:#x}: also referenced by {}; weaker evidence: no memory-profile \
                 reader (runtime.MemProfile/memProfileInternal) in the binary, memory profiling \
                 was probably disabled by the linker",
                stk.name
            ));
        }
    }
    Ok(only)
}

/// A "load bool D; branch/select; store 8-byte word M" sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DisableStore {
    flag: u64,
    rate: u64,
    /// Constants materialised between the load and the store.
    immediates: Vec<u64>,
    function: String,
    at: u64,
}

fn find_disable_stores(image: &Image<'_>, f: &DecodedFunction) -> Vec<DisableStore> {
    let mut found = Vec::new();
    for (i, insn) in f.insns.iter().enumerate() {
        let Some(g) = insn.global else { continue };
        if g.access != Access::Load || g.size != 1 || !image.is_global_data(g.target) {
            continue;
        }
        let mut immediates = Vec::new();
        for next in f.insns.iter().skip(i + 1).take(DISABLE_TO_STORE_WINDOW) {
            if let Some(imm) = next.immediate {
                immediates.push(imm);
            }
            let Some(h) = next.global else { continue };
            if h.access == Access::Address {
                continue;
            }
            if h.access == Access::Store && h.size == 8 && image.is_global_data(h.target) {
                found.push(DisableStore {
                    flag: g.target,
                    rate: h.target,
                    immediates: immediates.clone(),
                    function: f.name.clone(),
                    at: insn.addr,
                });
            }
            break;
        }
    }
    found
}

fn recover_mem_profile_rate(
    image: &Image<'_>,
    funcs: &dyn FunctionRanges,
    evidence: &mut Vec<String>,
) -> Result<(u64, Option<u64>), CodeRefError> {
    const WHAT: &str = "runtime.MemProfileRate";
    // 1. profilealloc reads MemProfileRate (8-byte load).
    let alloc = require_function(image, funcs, "runtime.profilealloc")?;
    let alloc_loads = alloc.targets_accessed(image, Access::Load, 8);

    // 2. "if disableMemoryProfiling { MemProfileRate = 0 }" in schedinit (Go ≥ 1.20), or
    //    "MemProfileRate = defaultMemProfileRate(512*1024)" in the runtime package initialiser (1.19).
    let mut stores = Vec::new();
    for name in ["runtime.schedinit", "runtime.init"] {
        if let Some(f) = decode_function(image, funcs, name)? {
            stores.extend(find_disable_stores(image, &f));
        }
    }
    stores.retain(|s| alloc_loads.contains(&s.rate));
    let pairs: BTreeSet<(u64, u64)> = stores.iter().map(|s| (s.flag, s.rate)).collect();

    if pairs.len() > 1 {
        return Err(CodeRefError::Disagreement {
            what: WHAT,
            detail: format!("several bool-load/rate-store sequences match: {pairs:x?}"),
        });
    }
    // After the check above every remaining store names the same (flag, rate) pair.
    if let Some(store) = stores.first() {
        let (flag, rate) = (store.flag, store.rate);
        evidence.push(format!(
            "MemProfileRate {rate:#x} ({}): 8-byte store after loading bool {flag:#x} ({}) in {} at \
             {:#x}; also 8-byte-loaded by {}",
            image.section_name(rate),
            image.section_name(flag),
            store.function,
            store.at,
            alloc.name
        ));
        check_default_rate(image, rate, Some(store), evidence)?;
        let initial = match image.read_u8(flag) {
            Some(0) => "false in the file",
            Some(1) => "true in the file: the linker disabled memory profiling",
            Some(_) => {
                return Err(CodeRefError::NotIdentified {
                    what: "runtime.disableMemoryProfiling",
                    detail: format!("candidate {flag:#x} holds a non-bool byte in the file"),
                })
            }
            None if image.is_bss(flag) => "zero-initialised (false)",
            None => "initial value unreadable",
        };
        evidence.push(format!(
            "disableMemoryProfiling {flag:#x} ({}): the bool tested before that store; {initial}",
            image.section_name(flag)
        ));
        return Ok((rate, Some(flag)));
    }

    // Fallback: no disable sequence found. Accept profilealloc's single 8-byte global only if the
    // file holds the default rate there.
    let with_default: Vec<u64> = alloc_loads
        .iter()
        .copied()
        .filter(|a| image.read_u64(*a) == Some(DEFAULT_MEM_PROFILE_RATE))
        .collect();
    match with_default[..] {
        [rate] => {
            evidence.push(format!(
                "MemProfileRate {rate:#x} ({}): weaker evidence: the only 8-byte global {} loads \
                 that holds {DEFAULT_MEM_PROFILE_RATE} in the file; no disableMemoryProfiling \
                 sequence found in runtime.schedinit/runtime.init",
                image.section_name(rate),
                alloc.name
            ));
            Ok((rate, None))
        }
        _ => Err(CodeRefError::NotIdentified {
            what: WHAT,
            detail: format!(
                "no disableMemoryProfiling store sequence, and {} 8-byte loads {} hold the default \
                 rate at {}",
                alloc.name,
                fmt_set(&alloc_loads),
                fmt_set(&with_default.iter().copied().collect())
            ),
        }),
    }
}

/// The default rate must be visible: as the initial value in the file (Go ≥ 1.20) or as the
/// constant stored by the initialiser (Go 1.19, where the variable is in `.noptrbss`).
fn check_default_rate(
    image: &Image<'_>,
    rate: u64,
    store: Option<&DisableStore>,
    evidence: &mut Vec<String>,
) -> Result<(), CodeRefError> {
    const WHAT: &str = "runtime.MemProfileRate";
    if let Some(value) = image.read_u64(rate) {
        if value != DEFAULT_MEM_PROFILE_RATE {
            return Err(CodeRefError::NotIdentified {
                what: WHAT,
                detail: format!(
                    "candidate {rate:#x} holds {value} in the file, expected \
                     {DEFAULT_MEM_PROFILE_RATE}"
                ),
            });
        }
        evidence.push(format!(
            "MemProfileRate {rate:#x}: file holds the default {DEFAULT_MEM_PROFILE_RATE}"
        ));
        return Ok(());
    }
    if store.is_some_and(|s| s.immediates.contains(&DEFAULT_MEM_PROFILE_RATE)) {
        evidence.push(format!(
            "MemProfileRate {rate:#x}: zero-initialised in the file; the initialiser selects the \
             constant {DEFAULT_MEM_PROFILE_RATE} before storing it (Go 1.19 layout)"
        ));
        return Ok(());
    }
    Err(CodeRefError::NotIdentified {
        what: WHAT,
        detail: format!(
            "candidate {rate:#x} ({}) neither holds {DEFAULT_MEM_PROFILE_RATE} in the file nor is \
             initialised with it",
            image.section_name(rate)
        ),
    })
}

fn recover_mprof_cycle(
    image: &Image<'_>,
    funcs: &dyn FunctionRanges,
    reader: Option<&DecodedFunction>,
    evidence: &mut Vec<String>,
) -> Result<Option<u64>, CodeRefError> {
    let Some(malloc) = decode_function(image, funcs, "runtime.mProf_Malloc")? else {
        evidence.push("mProfCycle: runtime.mProf_Malloc not found".into());
        return Ok(None);
    };
    let Some(flush) = decode_function(image, funcs, "runtime.mProf_Flush")? else {
        evidence.push("mProfCycle: runtime.mProf_Flush not found".into());
        return Ok(None);
    };
    let mut candidates: BTreeSet<u64> = malloc
        .targets_accessed(image, Access::Load, 4)
        .intersection(&flush.targets(image))
        .copied()
        .collect();
    let mut sources = format!("{} (4-byte load) ∩ {}", malloc.name, flush.name);
    if let Some(reader) = reader {
        candidates = candidates
            .intersection(&reader.targets(image))
            .copied()
            .collect();
        let _ = write!(sources, " ∩ {}", reader.name);
    }
    match candidates.iter().copied().collect::<Vec<_>>()[..] {
        [cycle] => {
            evidence.push(format!(
                "mProfCycle {cycle:#x} ({}): the only global in {sources}",
                image.section_name(cycle)
            ));
            Ok(Some(cycle))
        }
        _ => {
            evidence.push(format!(
                "mProfCycle not identified: {sources} = {}",
                fmt_set(&candidates)
            ));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_bitmask_immediate_524288() {
        // ORR X0, XZR, #0x80000 as emitted by Go 1.19 (b26d03e0).
        assert_eq!(arm64_immediate(0xb26d03e0), Some(0x80000));
        // MOVZ W0, #1, LSL #16
        assert_eq!(arm64_immediate(0x52a00020), Some(0x10000));
    }

    #[test]
    fn arm64_adrp_and_ldr() {
        // ADRP R27, 1810432(PC) at 0x57438 ; MOVBU 2864(R27), R0
        let (rd, page) = arm64_adrp(0xd0000ddb, 0x57438).expect("adrp");
        assert_eq!(rd, 27);
        assert_eq!(page, 0x57000 + 1810432);
        let m = arm64_memory(0x396cc360).expect("ldrb");
        assert_eq!(
            (m.rn, m.offset, m.size, m.access),
            (27, 2864, 1, Access::Load)
        );
        // MOVD ZR, 1512(R27): STR XZR, [X27, #1512]
        let m = arm64_memory(0xf902f77f).expect("str");
        assert_eq!(
            (m.rn, m.offset, m.size, m.access),
            (27, 1512, 8, Access::Store)
        );
        // LDARW (R4), R4
        let m = arm64_memory(0x88dffc84).expect("ldar");
        assert_eq!((m.rn, m.offset, m.size, m.access), (4, 0, 4, Access::Load));
    }
}
