//! The table itself: parsing `pcHeader`, locating `runtime.firstmoduledata`, validating the
//! function table (`ftab`) and looking functions up by PC or name.

use super::names::lossy;
use super::*;

/// Reads the Go version recorded in `.go.buildinfo` (with [`crate::binary::buildinfo`]).
pub(super) fn buildinfo_version(sections: &[SectionInfo<'_>]) -> Option<GoVersion> {
    let sec = sections.iter().find(|s| s.name == ".go.buildinfo")?;
    crate::binary::buildinfo::parse_version(sec.data?)
        .ok()
        .map(|(v, _)| v)
}

impl Pclntab {
    /// Parses the pclntab of the ELF file `elf` (the whole file's bytes), copying the two regions
    /// it keeps.
    pub fn parse(elf: &[u8]) -> Result<Pclntab, PclntabError> {
        Self::parse_in(elf, None)
    }

    /// Parses the pclntab of a mapped ELF file, reading its tables in place from the mapping.
    pub fn parse_mapped(map: std::sync::Arc<memmap2::Mmap>) -> Result<Pclntab, PclntabError> {
        Self::parse_in(&map, Some(&map))
    }

    fn parse_in(
        elf: &[u8],
        map: Option<&std::sync::Arc<memmap2::Mmap>>,
    ) -> Result<Pclntab, PclntabError> {
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
        Self::from_sections(&sections, reloc_type, map)
    }

    pub(super) fn from_sections(
        sections: &[SectionInfo<'_>],
        reloc_type: u32,
        map: Option<&std::sync::Arc<memmap2::Mmap>>,
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
            Some(v) => VersionRules::for_version(v).moduledata_has_typedesclen,
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
        let gofunc_data = Backing::of(
            gdata
                .get((gofunc - gsec.addr) as usize..)
                .ok_or(PclntabError::BadGoFunc(gofunc))?,
            map,
        );

        let version = hinted.unwrap_or(match format {
            TableFormat::Go118 => GoVersion::new(1, 19),
            TableFormat::Go120 if go127_layout => GoVersion::new(1, 27),
            TableFormat::Go120 => GoVersion::new(1, 26),
        });

        let mut tab_ = Pclntab {
            data: Backing::of(data, map),
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
            rules: VersionRules::for_version(version),
            version_from_buildinfo: hinted.is_some(),
            ids: SpecialFuncIds::default(),
            name_index: std::sync::OnceLock::new(),
        };
        tab_.validate_ftab()?;
        let special = tab_.first_funcs_named(&[
            "runtime.systemstack_switch",
            "runtime.gopanic",
            "runtime.sigpanic",
            "runtime.panicwrap",
        ]);
        let (switch, gopanic, sigpanic, panicwrap) =
            (special[0], special[1], special[2], special[3]);
        let id_of = |i: Option<u32>| i.and_then(|i| tab_.func_ref(i)).map(|f| f.func_id);
        tab_.ids = SpecialFuncIds {
            // FuncIDWrapper directly follows FuncID_systemstack_switch in every release 1.19–1.27.
            wrapper: id_of(switch).and_then(|x| x.checked_add(1)),
            gopanic: id_of(gopanic),
            sigpanic: id_of(sigpanic),
            panicwrap: id_of(panicwrap),
        };
        Ok(tab_)
    }

    /// The first function-table index carrying each raw name, in one pass over the table (no
    /// index) that stops once every name is found. On a mapped table the pages read are handed back
    /// to the kernel every [`SCAN_RELEASE_EVERY`] functions, so the scan's resident cost does not
    /// grow with the table (the runtime's functions, which goheap looks for, come early in it).
    fn first_funcs_named(&self, names: &[&str]) -> Vec<Option<u32>> {
        let mut found = vec![None; names.len()];
        let mut left = names.len();
        for i in 0..self.nfunc {
            if left == 0 {
                break;
            }
            if i > 0 && i % SCAN_RELEASE_EVERY == 0 {
                self.release_pages();
            }
            let raw = self.raw_name_of_index(i);
            for (k, n) in names.iter().enumerate() {
                if found[k].is_none() && raw == n.as_bytes() {
                    found[k] = Some(i);
                    left -= 1;
                }
            }
        }
        self.release_pages();
        found
    }

    /// [`Pclntab::func_by_name`] for several names at once, in one bounded scan and without
    /// building the name index: for a few lookups in a table that is not kept.
    pub fn funcs_named(&self, names: &[&str]) -> Vec<Option<FuncRef>> {
        self.first_funcs_named(names)
            .into_iter()
            .map(|i| i.and_then(|i| self.func_ref(i)))
            .collect()
    }

    pub(super) fn validate_ftab(&self) -> Result<(), PclntabError> {
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

    fn name_index(&self) -> &[u32] {
        self.name_index.get_or_init(|| {
            let mut idx: Vec<u32> = (0..self.nfunc).collect();
            idx.sort_by(|&a, &b| self.raw_name_of_index(a).cmp(self.raw_name_of_index(b)));
            idx
        })
    }

    pub(super) fn raw_name_of_index(&self, i: u32) -> &[u8] {
        self.func_info(i)
            .map(|f| self.table_name_bytes(f.name_off))
            .unwrap_or(b"")
    }

    /// `ftab[i]` = (entryoff, funcoff).
    pub(super) fn ftab(&self, i: u32) -> Option<(u32, u32)> {
        let off = self.pcln_start.checked_add(i as usize * 8)?;
        Some((rd_u32(&self.data, off)?, rd_u32(&self.data, off + 4)?))
    }

    pub(super) fn func_info(&self, i: u32) -> Option<FuncInfo> {
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

    pub(super) fn func_ref(&self, i: u32) -> Option<FuncRef> {
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
    pub(super) fn find_func_index(&self, pc: u64) -> Option<u32> {
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
        let index = self.name_index();
        let pos = index.partition_point(|&i| self.raw_name_of_index(i) < key);
        let &i = index.get(pos)?;
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
}

/// Finds `runtime.firstmoduledata`: returns its address and its first [`MODULEDATA_WORDS`]
/// words with relocations applied.
pub(super) fn find_moduledata(
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
    let check = |md: u64| -> Option<Vec<u64>> {
        let relocs: HashMap<u64, u64> = if relas.is_empty() {
            HashMap::new()
        } else {
            relative_relocs()
                .filter(|&(o, _)| o >= md && o < md + MODULEDATA_WORDS * 8)
                .collect()
        };
        let w = read_words(md, &relocs);
        plausible(&w).then_some(w)
    };
    // PIE: the pointer to the pcHeader is a relocation.
    let mut from_relocs: Vec<u64> = relative_relocs()
        .filter(|&(_, a)| a == header_addr)
        .map(|(o, _)| o)
        .collect();
    from_relocs.sort_unstable();
    from_relocs.dedup();
    for md in from_relocs {
        if let Some(w) = check(md) {
            return Ok((md, w));
        }
    }
    // Else a word holding the pcHeader's address. The linker puts runtime.firstmoduledata in
    // .noptrdata (or .data, .data.rel.ro): those are scanned first, and the scan stops at the first
    // plausible candidate, so it rarely reads more than them (scanning .rodata and the dynamic
    // symbols too would make every page of them resident: tens of MiB for a large binary).
    let rank = |name: &str| match name {
        ".noptrdata" => 0,
        ".data" => 1,
        ".data.rel.ro" => 2,
        _ => 3,
    };
    let mut scan: Vec<&SectionInfo<'_>> = sections
        .iter()
        .filter(|s| s.alloc && !s.exec && s.data.is_some())
        .filter(|s| s.addr % 8 == 0 && s.name != ".gopclntab")
        .collect();
    scan.sort_by_key(|s| (rank(&s.name), s.addr));
    for s in scan {
        let Some(d) = s.data else { continue };
        for (i, c) in d.chunks_exact(8).enumerate() {
            if rd_u64(c, 0) == Some(header_addr) {
                let md = s.addr + i as u64 * 8;
                if let Some(w) = check(md) {
                    return Ok((md, w));
                }
            }
        }
    }
    Err(PclntabError::ModuleDataNotFound(header_addr))
}
