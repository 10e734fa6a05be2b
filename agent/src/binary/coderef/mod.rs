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

mod amd64;
mod arm64;

use object::{Object, ObjectSection};

/// Default value of `runtime.MemProfileRate` in every supported Go version (`512 * 1024` bytes).
pub const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// Upper bound on the size of one function we are willing to decode (bytes). The largest runtime
/// functions we look at are a few KiB; anything bigger means a corrupt function table.
pub const MAX_FUNCTION_SIZE: u64 = 1 << 20;

/// How many instructions after the `disableMemoryProfiling` byte load the `MemProfileRate` store may
/// appear (Go 1.19 arm64 needs 6: TST, ORR, CSEL, ADRP, ADD, STR).
const DISABLE_TO_STORE_WINDOW: usize = 8;

/// Every runtime function whose machine code the recovery may decode (so a caller can resolve them
/// all in one pass over its function table).
pub const FUNCTIONS_USED: &[&str] = &[
    "runtime.memProfileInternal",
    "runtime.MemProfile",
    "runtime.mProf_FlushLocked",
    "runtime.stkbucket",
    "runtime.profilealloc",
    "runtime.schedinit",
    "runtime.init",
    "runtime.mProf_Malloc",
    "runtime.mProf_Flush",
];

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
pub(super) enum Access {
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
pub(super) struct GlobalRef {
    /// Referenced virtual address.
    target: u64,
    access: Access,
    /// Bytes accessed (0 for [`Access::Address`] or unknown).
    size: u8,
}

/// What we keep of one decoded instruction.
#[derive(Debug, Clone, Copy)]
pub(super) struct InsnSummary {
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
        Arch::Amd64 => amd64::decode(code, range.start),
        Arch::Arm64 => arm64::decode(code, range.start),
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

// ---------------------------------------------------------------------------------------------
// Goroutine globals

/// Runtime functions whose code locates the goroutine globals.
pub const GOROUTINE_FUNCTIONS_USED: &[&str] = &[
    "runtime.allgadd",
    "runtime.forEachG",
    "runtime.forEachGRace",
];

/// `runtime.allgs` (a `[]*g` slice header) and `runtime.allglen` recovered from machine code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredGoroutineGlobals {
    pub allgs: u64,
    pub allglen: u64,
    /// Human-readable description of each reference that supports the result.
    pub evidence: Vec<String>,
}

/// Recovers `runtime.allgs` and `runtime.allglen` from `runtime.allgadd`
/// (`allgs = append(allgs, gp)`; `atomic.Storeuintptr(&allglen, len(allgs))`), corroborated by
/// `runtime.forEachG` (which ranges over `allgs`) or `runtime.forEachGRace` (which loads
/// `allglen`):
///
/// * `allgs` is the only global whose three words (ptr, len, cap) `allgadd` references, all in a
///   NOBITS section;
/// * `allglen` is the only 8-byte global `allgadd` writes but never loads, apart from the slice
///   (`allgptr`, the other one it writes, is also loaded for the `&allgs[0] != allgptr` check).
pub fn recover_goroutine_globals(
    elf: &[u8],
    funcs: &dyn FunctionRanges,
) -> Result<RecoveredGoroutineGlobals, CodeRefError> {
    let image = Image::parse(elf)?;
    let mut evidence = Vec::new();
    let add = require_function(&image, funcs, "runtime.allgadd")?;
    let all = add.targets(&image);
    let slices: BTreeSet<u64> = all
        .iter()
        .copied()
        .filter(|a| {
            all.contains(&a.wrapping_add(8))
                && all.contains(&a.wrapping_add(16))
                && image.is_bss(*a)
        })
        .collect();
    let [allgs] = slices.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(CodeRefError::NotIdentified {
            what: "runtime.allgs",
            detail: format!(
                "{} references {} globals with three consecutive words {}, expected one",
                add.name,
                slices.len(),
                fmt_set(&slices)
            ),
        });
    };
    evidence.push(format!(
        "allgs {allgs:#x} ({}): the only slice header (ptr, len, cap) {} references",
        image.section_name(allgs),
        add.name
    ));
    let fields = [allgs, allgs + 8, allgs + 16];
    // allglen: allgadd takes its address for the atomic store (amd64 LEA + XCHG, arm64 ADRP/ADD +
    // STLR) and never loads it; forEachGRace (atomicAllG) loads it as an 8-byte word, next to
    // allgptr, which allgadd does load (for `&allgs[0] != allgptr`).
    let loaded = add.targets_accessed(&image, Access::Load, 8);
    let race = require_function(&image, funcs, "runtime.forEachGRace")?;
    let race_loads = race.targets_accessed(&image, Access::Load, 8);
    let candidates: BTreeSet<u64> = all
        .iter()
        .copied()
        .filter(|a| !fields.contains(a) && !loaded.contains(a) && image.is_bss(*a))
        .filter(|a| race_loads.contains(a))
        .collect();
    let [allglen] = candidates.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(CodeRefError::NotIdentified {
            what: "runtime.allglen",
            detail: format!(
                "globals {} references but never loads, and {} loads as 8-byte words: {}, expected one",
                add.name,
                race.name,
                fmt_set(&candidates)
            ),
        });
    };
    evidence.push(format!(
        "allglen {allglen:#x}: referenced but never loaded by {}, loaded by {}",
        add.name, race.name
    ));
    // Corroboration: forEachG ranges over allgs (arm64 may load ptr and len with one LDP, seen
    // as a reference to the header's address).
    let each = require_function(&image, funcs, "runtime.forEachG")?;
    let t = each.targets(&image);
    if !(t.contains(&allgs) || t.contains(&(allgs + 8))) {
        return Err(CodeRefError::Disagreement {
            what: "runtime.allgs",
            detail: format!(
                "{} does not reference allgs {allgs:#x} found in {}",
                each.name, add.name
            ),
        });
    }
    evidence.push(format!("allgs {allgs:#x}: {} references it", each.name));
    Ok(RecoveredGoroutineGlobals {
        allgs,
        allglen,
        evidence,
    })
}

/// Runtime functions whose code references `runtime.memstats` fields (GC bookkeeping at the end of
/// every cycle; `ReadMemStats`/`debug.ReadGCStats`, linked only when the program uses them).
pub const MEMSTATS_FUNCTIONS: &[&str] = &[
    "runtime.gcMarkTermination",
    "runtime.readmemstats_m",
    "runtime.readGCStats_m",
];

/// Runtime functions whose code references `runtime.gcController` fields directly (not through a
/// method's receiver): the pacer commit, GC start and the allocator's initialisation.
pub const GC_CONTROLLER_FUNCTIONS: &[&str] = &[
    "runtime.gcControllerCommit",
    "runtime.gcMarkTermination",
    "runtime.gcPaceScavenger",
    "runtime.gcStart",
    "runtime.mallocinit",
    "runtime.gcinit",
    "runtime.(*mheap).grow",
    "runtime.gcTrigger.test",
];

/// Every function [`recover_gc_globals`] may decode.
pub const GC_FUNCTIONS_USED: &[&str] = &[
    "runtime.gcMarkTermination",
    "runtime.readmemstats_m",
    "runtime.readGCStats_m",
    "runtime.gcControllerCommit",
    "runtime.gcStart",
    "runtime.mallocinit",
    "runtime.gcinit",
    "runtime.(*mheap).grow",
    "runtime.gcTrigger.test",
    "runtime.gcPaceScavenger",
];

/// `runtime.memstats` and `runtime.gcController` (their start addresses) recovered from machine
/// code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredGcGlobals {
    pub memstats: u64,
    pub gc_controller: u64,
    /// Human-readable description of each reference that supports the result.
    pub evidence: Vec<String>,
}

/// Fewest distinct fields of a struct the code must reference at one base address.
const MIN_FIELDS_FITTED: usize = 3;
/// How many more fields the chosen base must explain than any other base.
const MIN_MARGIN: usize = 2;

/// The base address `B` of a global of a struct type such that the most distinct `offsets` of that
/// struct, `B + offset`, are referenced by `functions`' code, all inside one writable data section.
/// It must reference at least [`MIN_FIELDS_FITTED`] fields, [`MIN_MARGIN`] more than any other base.
/// With `anchors`, only those addresses are candidate bases. Returns the base, its field count,
/// the next best count and the functions that reference it.
fn fit_struct_base(
    image: &Image<'_>,
    functions: &[DecodedFunction],
    offsets: &[u64],
    anchors: Option<&BTreeSet<u64>>,
    what: &'static str,
) -> Result<(u64, usize, usize, Vec<String>), CodeRefError> {
    let max_off = offsets.iter().copied().max().unwrap_or(0);
    let per_fn: Vec<BTreeSet<u64>> = functions.iter().map(|f| f.targets(image)).collect();
    let all: BTreeSet<u64> = per_fn.iter().flatten().copied().collect();
    let mut candidates: BTreeSet<u64> = BTreeSet::new();
    for &t in &all {
        for &o in offsets {
            if let Some(b) = t.checked_sub(o) {
                candidates.insert(b);
            }
        }
    }
    let mut scored: Vec<(usize, u64)> = candidates
        .into_iter()
        .filter(|b| anchors.is_none_or(|a| a.contains(b)))
        .filter(|&b| {
            image.section_of(b).is_some_and(|s| {
                s.global_data && b.checked_add(max_off).is_some_and(|e| s.addrs.contains(&e))
            })
        })
        .map(|b| {
            let mut seen: Vec<u64> = offsets
                .iter()
                .copied()
                .filter(|&o| all.contains(&(b + o)))
                .collect();
            seen.dedup();
            (seen.len(), b)
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    let best = scored.first().copied().unwrap_or((0, 0));
    let runner_up = scored.get(1).map_or(0, |s| s.0);
    if best.0 < MIN_FIELDS_FITTED || best.0 < runner_up + MIN_MARGIN {
        let top: Vec<String> = scored
            .iter()
            .take(4)
            .map(|(n, b)| format!("{b:#x}: {n} fields"))
            .collect();
        return Err(CodeRefError::NotIdentified {
            what,
            detail: format!(
                "no single base address explains at least {MIN_FIELDS_FITTED} field references, {MIN_MARGIN} more than any other, of {} (best: {})",
                functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                top.join("; ")
            ),
        });
    }
    let users = functions
        .iter()
        .zip(&per_fn)
        .filter(|(_, t)| offsets.iter().any(|&o| t.contains(&(best.1 + o))))
        .map(|(f, _)| f.name.clone())
        .collect();
    Ok((best.1, best.0, runner_up, users))
}

/// Recovers `runtime.memstats` and `runtime.gcController` from the code of the functions in
/// [`MEMSTATS_FUNCTIONS`] and [`GC_CONTROLLER_FUNCTIONS`] present in the binary, given the field
/// offsets of their types (`memstats_offsets`, `controller_offsets`: the table row of the binary's
/// release, [`crate::goroutine::gc_layout::GcLayout`]): each global is the one base address at
/// which the code references the most distinct fields of its type (at least three), all in one
/// writable data section; `memstats` must put `numgc` (`memstats_offsets[0]`) on a global
/// `runtime.gcMarkTermination` accesses as 4 bytes, `runtime.gcController` must also be referenced at its own address by
/// `runtime.gcControllerCommit` (the receiver of the methods it calls). `runtime.gcMarkTermination`
/// and `runtime.gcControllerCommit` are required; the two globals must differ.
pub fn recover_gc_globals(
    elf: &[u8],
    funcs: &dyn FunctionRanges,
    memstats_offsets: &[u64],
    controller_offsets: &[u64],
) -> Result<RecoveredGcGlobals, CodeRefError> {
    let image = Image::parse(elf)?;
    let decode_all =
        |names: &[&str], required: &str| -> Result<Vec<DecodedFunction>, CodeRefError> {
            let mut out = vec![require_function(&image, funcs, required)?];
            for n in names.iter().filter(|n| **n != required) {
                if let Some(f) = decode_function(&image, funcs, n)? {
                    out.push(f);
                }
            }
            Ok(out)
        };
    let ms_fns = decode_all(MEMSTATS_FUNCTIONS, "runtime.gcMarkTermination")?;
    let gc_fns = decode_all(GC_CONTROLLER_FUNCTIONS, "runtime.gcControllerCommit")?;
    // gcMarkTermination increments memstats.numgc, a uint32: the base must put numgc on a global
    // it accesses as 4 bytes (readmemstats_m copies the pause arrays, whose interior references
    // fit shifted bases as well as the true one).
    let numgc_off = memstats_offsets.first().copied().unwrap_or(0);
    let numgc_bases: BTreeSet<u64> = ms_fns[0]
        .global_refs(&image)
        .filter(|(_, _, g)| g.size == 4)
        .filter_map(|(_, _, g)| g.target.checked_sub(numgc_off))
        .collect();
    let (memstats, n_ms, r_ms, ms_users) = fit_struct_base(
        &image,
        &ms_fns,
        memstats_offsets,
        Some(&numgc_bases),
        "runtime.memstats",
    )?;
    // gcControllerCommit calls methods on gcController (commit, trigger, revise): it takes the
    // global's own address as the receiver, which singles it out from other structs whose
    // consecutive fields gcMarkTermination also references (runtime.work).
    let receivers = gc_fns[0].targets(&image);
    let (gc_controller, n_gc, r_gc, gc_users) = fit_struct_base(
        &image,
        &gc_fns,
        controller_offsets,
        Some(&receivers),
        "runtime.gcController",
    )?;
    if memstats == gc_controller {
        return Err(CodeRefError::Disagreement {
            what: "runtime.gcController",
            detail: format!("fitted at the same address as runtime.memstats {memstats:#x}"),
        });
    }
    Ok(RecoveredGcGlobals {
        memstats,
        gc_controller,
        evidence: vec![
            format!(
                "memstats {memstats:#x} ({}): {n_ms} (next best {r_ms}) of {} mstats fields referenced by {}",
                image.section_name(memstats),
                memstats_offsets.len(),
                ms_users.join(", ")
            ),
            format!(
                "gcController {gc_controller:#x} ({}): {n_gc} (next best {r_gc}) of {} gcControllerState fields referenced by {}",
                image.section_name(gc_controller),
                controller_offsets.len(),
                gc_users.join(", ")
            ),
        ],
    })
}
