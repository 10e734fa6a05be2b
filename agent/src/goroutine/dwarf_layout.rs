//! Derives [`GLayout`] (the byte offsets of `runtime.g`, `runtime.gobuf` and `runtime.stack`) from
//! a Go binary's own DWARF with `gimli`. This is the generator of the checked-in table
//! (`goheap goroutine-layout FILE…` prints its rows) and what a target with DWARF uses instead of
//! the table.
//!
//! Everything read here is untrusted: sections are size-capped before they are decompressed, the
//! DIE walk is bounded, and a member offset must lie inside its struct's `DW_AT_byte_size`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use object::{Object, ObjectSection};

use crate::goroutine::layout::GLayout;

/// Largest DWARF section goheap decompresses or reads (bytes). Go's own `.debug_info` for a large
/// server is ~30 MiB.
pub const MAX_DWARF_SECTION: u64 = 256 << 20;
/// Most DIEs visited before giving up (a large Go binary has a few million).
const MAX_DIES: u64 = 50_000_000;

/// Why no layout could be derived.
#[derive(Debug, thiserror::Error)]
pub enum DwarfLayoutError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not an ELF file: {1}")]
    NotElf(String, object::Error),
    #[error("{0} has no DWARF (.debug_info); built with -ldflags=-w or stripped")]
    NoDwarf(String),
    #[error("DWARF section {0} is larger than {MAX_DWARF_SECTION} bytes or malformed")]
    Section(String),
    #[error("DWARF of {0}: {1}")]
    Gimli(String, gimli::Error),
    #[error("DWARF of {path} lacks {what}")]
    Missing { path: String, what: String },
}

/// The members of one struct type: name → byte offset, and the struct's byte size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructMembers {
    pub byte_size: u64,
    pub members: Vec<(String, u64)>,
}

impl StructMembers {
    /// Offset of member `name`, if present.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| *o)
    }
}

/// Struct types the layout needs, by DWARF name.
pub const STRUCTS: &[&str] = &["runtime.g", "runtime.gobuf", "runtime.stack"];

/// Reads the struct types named in `names` from the DWARF of the ELF file at `path`.
pub fn read_structs(
    path: &Path,
    names: &[&str],
) -> Result<HashMap<String, StructMembers>, DwarfLayoutError> {
    let disp = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| DwarfLayoutError::Io(disp.clone(), e))?;
    // SAFETY: the file is mapped read-only and private; goheap only reads it. A concurrent
    // truncation of the file could raise SIGBUS, as for every mapped executable goheap reads
    // (the binaries are those of running processes, which are not rewritten in place).
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DwarfLayoutError::Io(disp.clone(), e))?;
    let obj = object::File::parse(&*map).map_err(|e| DwarfLayoutError::NotElf(disp.clone(), e))?;
    if obj.section_by_name(".debug_info").is_none() && obj.section_by_name(".zdebug_info").is_none()
    {
        return Err(DwarfLayoutError::NoDwarf(disp));
    }
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, DwarfLayoutError> {
        section_data(&obj, id.name())
    };
    let owned = gimli::DwarfSections::load(load)?;
    let dwarf = owned.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found: HashMap<String, StructMembers> = HashMap::new();
    let mut dies: u64 = 0;
    let gerr = |e| DwarfLayoutError::Gimli(disp.clone(), e);
    let mut units = dwarf.units();
    'units: while let Some(header) = units.next().map_err(gerr)? {
        let unit = dwarf.unit(header).map_err(gerr)?;
        let mut entries = unit.entries();
        // The struct whose members are being collected, and its DIE depth.
        let mut current: Option<(String, isize)> = None;
        let mut depth: isize = 0;
        while let Some((delta, entry)) = entries.next_dfs().map_err(gerr)? {
            dies += 1;
            if dies > MAX_DIES {
                break 'units;
            }
            depth += delta;
            if let Some((_, d)) = &current {
                if depth <= *d {
                    current = None;
                }
            }
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let Some(name) = attr_name(&dwarf, &unit, entry) else {
                        continue;
                    };
                    if names.contains(&name.as_str()) && !found.contains_key(&name) {
                        let size = attr_u64(entry, gimli::DW_AT_byte_size).unwrap_or(0);
                        found.insert(
                            name.clone(),
                            StructMembers {
                                byte_size: size,
                                members: Vec::new(),
                            },
                        );
                        current = Some((name, depth));
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((sname, d)) = &current else {
                        continue;
                    };
                    if depth != d + 1 {
                        continue;
                    }
                    let (Some(name), Some(off)) = (
                        attr_name(&dwarf, &unit, entry),
                        attr_u64(entry, gimli::DW_AT_data_member_location),
                    ) else {
                        continue;
                    };
                    if let Some(s) = found.get_mut(sname) {
                        if off < s.byte_size && s.members.len() < 4096 {
                            s.members.push((name, off));
                        }
                    }
                }
                _ => {}
            }
            if current.is_none() && found.len() == names.len() {
                break 'units;
            }
        }
    }
    Ok(found)
}

/// Derives the goroutine layout from the DWARF of the ELF file at `path`.
pub fn layout_from_dwarf(path: &Path) -> Result<GLayout, DwarfLayoutError> {
    let structs = read_structs(path, STRUCTS)?;
    let disp = path.display().to_string();
    let missing = |what: &str| DwarfLayoutError::Missing {
        path: disp.clone(),
        what: what.to_string(),
    };
    let g = structs
        .get("runtime.g")
        .ok_or_else(|| missing("runtime.g"))?;
    let gobuf = structs
        .get("runtime.gobuf")
        .ok_or_else(|| missing("runtime.gobuf"))?;
    let stack = structs
        .get("runtime.stack")
        .ok_or_else(|| missing("runtime.stack"))?;
    let gm = |n: &str| g.get(n).ok_or_else(|| missing(&format!("runtime.g.{n}")));
    let bm = |n: &str| {
        gobuf
            .get(n)
            .ok_or_else(|| missing(&format!("runtime.gobuf.{n}")))
    };
    let sm = |n: &str| {
        stack
            .get(n)
            .ok_or_else(|| missing(&format!("runtime.stack.{n}")))
    };
    let sched = gm("sched")?;
    let stk = gm("stack")?;
    Ok(GLayout {
        size: g.byte_size,
        stack_lo: stk + sm("lo")?,
        stack_hi: stk + sm("hi")?,
        m: gm("m")?,
        sched_sp: sched + bm("sp")?,
        sched_pc: sched + bm("pc")?,
        sched_lr: sched + bm("lr")?,
        sched_bp: sched + bm("bp")?,
        syscallsp: gm("syscallsp")?,
        syscallpc: gm("syscallpc")?,
        atomicstatus: gm("atomicstatus")?,
        goid: gm("goid")?,
        waitsince: gm("waitsince")?,
        waitreason: gm("waitreason")?,
        parent_goid: g.get("parentGoid"),
        gopc: gm("gopc")?,
        startpc: gm("startpc")?,
    })
}

fn attr_name<R: gimli::Reader>(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, R>,
) -> Option<String> {
    let v = entry.attr_value(gimli::DW_AT_name).ok()??;
    let s = dwarf.attr_string(unit, v).ok()?;
    let s = s.to_string_lossy().ok()?;
    (s.len() <= 1024).then(|| s.into_owned())
}

fn attr_u64<R: gimli::Reader>(
    entry: &gimli::DebuggingInformationEntry<'_, '_, R>,
    at: gimli::DwAt,
) -> Option<u64> {
    match entry.attr_value(at).ok()?? {
        gimli::AttributeValue::Udata(v) => Some(v),
        gimli::AttributeValue::Data1(v) => Some(v.into()),
        gimli::AttributeValue::Data2(v) => Some(v.into()),
        gimli::AttributeValue::Data4(v) => Some(v.into()),
        gimli::AttributeValue::Data8(v) => Some(v),
        gimli::AttributeValue::Sdata(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

/// The bytes of DWARF section `name` (`.debug_*`), decompressed when stored compressed (ELF
/// `SHF_COMPRESSED` or Go's older `.zdebug_*`); empty when absent.
fn section_data<'d>(obj: &object::File<'d>, name: &str) -> Result<Cow<'d, [u8]>, DwarfLayoutError> {
    let sec = obj.section_by_name(name).or_else(|| {
        name.strip_prefix(".debug_")
            .and_then(|rest| obj.section_by_name(&format!(".zdebug_{rest}")))
    });
    let Some(sec) = sec else {
        return Ok(Cow::Borrowed(&[]));
    };
    let bad = || DwarfLayoutError::Section(name.to_string());
    let cd = sec.compressed_data().map_err(|_| bad())?;
    match cd.format {
        object::CompressionFormat::None => {
            if cd.data.len() as u64 > MAX_DWARF_SECTION {
                return Err(bad());
            }
            Ok(Cow::Borrowed(cd.data))
        }
        object::CompressionFormat::Zlib => {
            if cd.uncompressed_size > MAX_DWARF_SECTION {
                return Err(bad());
            }
            let mut out = Vec::with_capacity(cd.uncompressed_size as usize);
            flate2::read::ZlibDecoder::new(cd.data)
                .take(MAX_DWARF_SECTION)
                .read_to_end(&mut out)
                .map_err(|_| bad())?;
            Ok(Cow::Owned(out))
        }
        _ => Err(bad()),
    }
}
