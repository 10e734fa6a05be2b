//! Fuzz harness of goheap's parsers of untrusted input.
//!
//! One entry point per fuzz target (`buildinfo`, `maps`, `pclntab`, `coderef`, `elf_open`,
//! `bucket_walk`, `pprof_decode`, `goroutines`), each taking the fuzzer's bytes. The same file is compiled into
//! `agent/tests/fuzz_regressions.rs` (by `#[path]`), so stored crashing inputs replay through exactly
//! the code the fuzzer ran, on stable Rust. It depends only on `goheap`, `pprof_proto` and `object`,
//! and shares the tests' support module (`agent/tests/support/mod.rs`: Go versions, fixture paths,
//! the seeded RNG).
//!
//! The binary-format targets are structure-aware: instead of feeding megabytes of raw bytes, an input
//! picks one of a few real Go fixture binaries (loaded once) and describes byte patches at
//! fuzzer-chosen offsets inside chosen regions (`.gopclntab`, data sections, `.symtab`, section
//! headers, the machine code of the runtime functions `coderef` decodes, ...). See [`PatchedBinary`].
#![allow(clippy::missing_panics_doc)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use goheap::binary::coderef::FunctionRanges;
use goheap::runtime::layout::RuntimeLayout;
use goheap::runtime::walk::{check_layout, memprofile_records, BucketWalker};
use goheap::runtime::GoVersion;
use goheap::symbolize::pclntab::Pclntab;
use goheap::target::maps::MemoryMap;
use goheap::target::memory::{MemoryError, ReadRequest, ReadStats, RemoteMemory};
use object::{Object, ObjectSection};

#[path = "../../tests/support/mod.rs"]
mod support;

pub use support::{fixtures_dir, XorShift};
use support::{GO_1_19, GO_1_22, GO_1_23, GO_1_25, GO_1_27};

/// Every target, by name (the directory names under `regressions/` and `corpus/`).
pub const TARGETS: &[&str] = &[
    "buildinfo",
    "maps",
    "pclntab",
    "coderef",
    "elf_open",
    "bucket_walk",
    "pprof_decode",
    "goroutines",
];

/// Runs target `name` on `data`; panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "buildinfo" => buildinfo(data),
        "maps" => maps(data),
        "pclntab" => pclntab(data),
        "coderef" => coderef(data),
        "elf_open" => elf_open(data),
        "bucket_walk" => bucket_walk(data),
        "pprof_decode" => pprof_decode(data),
        "goroutines" => goroutines(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Input reading

/// Reads fixed-size fields from the front of the fuzzer's bytes; zeros once they run out.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let s = self.bytes(2);
        b[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(b)
    }
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let s = self.bytes(4);
        b[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(b)
    }
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture binaries

/// Fixture builds the binary targets mutate: (Go version, build mode). Small heapfixture builds,
/// covering both pclntab magics, PIE relocations, a stripped binary and arm64.
pub const FIXTURES: &[(&str, &str)] = &[
    (GO_1_19, "default"),
    (GO_1_22, "pie"),
    (GO_1_23, "stripped"),
    (GO_1_27, "default"),
    (GO_1_25, "arm64"),
    (GO_1_27, "pie"),
];

/// The runtime functions `coderef` decodes (their bytes form the `Region::RuntimeCode` region).
pub const CODEREF_FUNCTIONS: &[&str] = &[
    "runtime.MemProfile",
    "runtime.memProfileInternal",
    "runtime.mProf_Flush",
    "runtime.mProf_FlushLocked",
    "runtime.mProf_Malloc",
    "runtime.profilealloc",
    "runtime.schedinit",
    "runtime.stkbucket",
    "runtime.init",
];

/// Path of one heapfixture build; panics telling how to build it when missing.
pub fn fixture_path(version: &str, mode: &str) -> PathBuf {
    let p = fixtures_dir()
        .join("heapfixture")
        .join(version)
        .join(mode)
        .join("heapfixture");
    assert!(
        p.exists(),
        "fixture {} is missing: run fixtures/build.sh",
        p.display()
    );
    p
}

/// Regions of a binary a patch can aim at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Region {
    WholeFile = 0,
    /// ELF header and program headers (first 4 KiB).
    Headers,
    /// The section header table.
    SectionHeaders,
    Gopclntab,
    /// `.noptrdata` and `.data` (moduledata lives there).
    Data,
    GoBuildinfo,
    Symtab,
    Strtab,
    /// Machine code of [`CODEREF_FUNCTIONS`].
    RuntimeCode,
    /// `.rela.dyn`/`.rela` (PIE relocations the moduledata search uses).
    Rela,
    /// Notes (`.note.go.buildid`, `.note.gnu.build-id`).
    Notes,
}

const REGION_COUNT: u8 = 11;

/// One fixture binary, loaded once, with the file ranges of each [`Region`] and what the unpatched
/// binary's pclntab knows (for choosing PCs and names the fuzzer can reach).
pub struct Fixture {
    pub name: String,
    pub bytes: Vec<u8>,
    pub regions: Vec<Vec<Range<usize>>>,
    /// `[entry, end)` of every function, unrelocated.
    pub funcs: Vec<(u64, u64)>,
    pub names: Vec<String>,
    pub ranges: HashMap<String, Range<u64>>,
    pub text_start: u64,
}

impl Fixture {
    fn load(version: &str, mode: &str) -> Fixture {
        let path = fixture_path(version, mode);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tab = Pclntab::parse(&bytes).unwrap_or_else(|e| {
            panic!("{}: pclntab of the unpatched fixture: {e}", path.display())
        });
        let mut funcs = Vec::new();
        let mut names = Vec::new();
        let mut ranges = HashMap::new();
        for f in tab.funcs() {
            funcs.push((f.entry, f.end));
            if CODEREF_FUNCTIONS.contains(&f.name.as_str()) {
                ranges.insert(f.name.clone(), f.entry..f.end);
            }
            names.push(f.name);
        }
        let mut regions: Vec<Vec<Range<usize>>> = vec![Vec::new(); REGION_COUNT as usize];
        let len = bytes.len();
        regions[Region::WholeFile as usize].push(0..len);
        regions[Region::Headers as usize].push(0..len.min(4096));
        let file = object::File::parse(bytes.as_slice()).expect("fixture is an ELF file");
        if let object::File::Elf64(elf) = &file {
            let shoff = elf.elf_header().e_shoff.get(elf.endian()) as usize;
            if shoff < len {
                regions[Region::SectionHeaders as usize].push(shoff..len);
            }
        }
        for s in file.sections() {
            let Some((off, size)) = s.file_range() else {
                continue;
            };
            let r = off as usize..(off + size) as usize;
            let name = s.name().unwrap_or("");
            let region = match name {
                ".gopclntab" => Region::Gopclntab,
                ".noptrdata" | ".data" => Region::Data,
                ".go.buildinfo" => Region::GoBuildinfo,
                ".symtab" => Region::Symtab,
                ".strtab" => Region::Strtab,
                ".rela" | ".rela.dyn" => Region::Rela,
                n if n.starts_with(".note") => Region::Notes,
                _ => continue,
            };
            regions[region as usize].push(r);
        }
        if let Some(text) = file.section_by_name(".text") {
            if let Some((off, _)) = text.file_range() {
                for r in ranges.values() {
                    let start = off + (r.start - text.address());
                    let end = off + (r.end - text.address());
                    regions[Region::RuntimeCode as usize].push(start as usize..end as usize);
                }
            }
        }
        for rs in &mut regions {
            rs.retain(|r| r.start < r.end && r.end <= len);
            rs.sort_by_key(|r| r.start);
        }
        Fixture {
            name: format!("{version}/{mode}"),
            bytes,
            regions,
            funcs,
            names,
            ranges,
            text_start: tab.text_start(),
        }
    }

    /// The file offset `off` lands on inside `region` (taken modulo the region's total size), or
    /// `None` when this fixture has no such region.
    fn locate(&self, region: u8, off: u32) -> Option<(usize, usize)> {
        let rs = self.regions.get(usize::from(region % REGION_COUNT))?;
        let total: usize = rs.iter().map(|r| r.len()).sum();
        if total == 0 {
            return None;
        }
        let mut o = off as usize % total;
        for r in rs {
            if o < r.len() {
                return Some((r.start + o, r.end));
            }
            o -= r.len();
        }
        None
    }
}

/// The loaded fixtures (panics telling to build them when missing).
pub fn fixtures() -> &'static [Fixture] {
    static F: OnceLock<Vec<Fixture>> = OnceLock::new();
    F.get_or_init(|| FIXTURES.iter().map(|(v, m)| Fixture::load(v, m)).collect())
}

/// A binary built from an input: a fixture with patches applied, or raw bytes.
///
/// Input format: byte 0 selects the fixture (`% FIXTURES.len()`); `0xff` means "the rest of the
/// input is the whole file" (raw mode, for small hand-made ELF files). Byte 1: number of patches
/// (`% 16`), bit 7 set = truncate the file at the offset in the following u32. Then each patch is
/// `[region u8][offset u32][len u8][len bytes]`: bit 7 of `region` XORs instead of overwriting. Bytes
/// after the patches are returned as `tail` for the target's own use (PCs, names, ...).
pub struct PatchedBinary<'a> {
    pub fixture: Option<&'static Fixture>,
    pub bytes: Vec<u8>,
    pub tail: Cursor<'a>,
}

pub fn patched_binary(data: &[u8]) -> PatchedBinary<'_> {
    let mut c = Cursor::new(data);
    let sel = c.u8();
    if sel == 0xff {
        return PatchedBinary {
            fixture: None,
            bytes: c.rest().to_vec(),
            tail: Cursor::new(&[]),
        };
    }
    let all = fixtures();
    let fx = &all[usize::from(sel) % all.len()];
    let mut bytes = fx.bytes.clone();
    let hdr = c.u8();
    let truncate = (hdr & 0x80 != 0).then(|| c.u32());
    for _ in 0..(hdr & 0x0f) {
        let region = c.u8();
        let off = c.u32();
        let len = usize::from(c.u8());
        let patch = c.bytes(len);
        let Some((at, end)) = fx.locate(region & 0x7f, off) else {
            continue;
        };
        let n = patch.len().min(end - at);
        let dst = &mut bytes[at..at + n];
        if region & 0x80 != 0 {
            for (d, s) in dst.iter_mut().zip(patch) {
                *d ^= s;
            }
        } else {
            dst.copy_from_slice(&patch[..n]);
        }
    }
    if let Some(t) = truncate {
        let l = bytes.len();
        bytes.truncate(t as usize % (l + 1));
    }
    PatchedBinary {
        fixture: Some(fx),
        bytes,
        tail: c,
    }
}

/// Encodes patches in the [`PatchedBinary`] format (seed corpus and the deterministic test loop).
pub fn encode_patches(fixture: u8, truncate: Option<u32>, patches: &[(u8, u32, &[u8])]) -> Vec<u8> {
    let mut v = vec![fixture];
    v.push((patches.len() as u8 & 0x0f) | if truncate.is_some() { 0x80 } else { 0 });
    if let Some(t) = truncate {
        v.extend_from_slice(&t.to_le_bytes());
    }
    for (region, off, bytes) in patches {
        v.push(*region);
        v.extend_from_slice(&off.to_le_bytes());
        v.push(bytes.len().min(255) as u8);
        v.extend_from_slice(&bytes[..bytes.len().min(255)]);
    }
    v
}

/// A PC chosen from the tail: mostly inside (or just around) a real function of the fixture.
fn pick_pc(c: &mut Cursor<'_>, fx: Option<&Fixture>) -> u64 {
    let sel = c.u8();
    let v = c.u32();
    match (fx, sel % 4) {
        (Some(fx), 0..=2) if !fx.funcs.is_empty() => {
            let (entry, end) = fx.funcs[v as usize % fx.funcs.len()];
            let span = end.saturating_sub(entry).max(1) + 2;
            entry.wrapping_add(u64::from(sel) % span).wrapping_sub(1)
        }
        (Some(fx), _) => fx.text_start.wrapping_add(u64::from(v)),
        (None, _) => u64::from(v) | (u64::from(sel) << 32),
    }
}

// ---------------------------------------------------------------------------------------------
// Targets

/// `buildinfo::parse_version` and both Go version string parsers.
pub fn buildinfo(data: &[u8]) {
    let _ = goheap::binary::buildinfo::parse_version(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = GoVersion::parse(s);
        let _ = goheap::runtime::GoVersion::parse(s);
    }
}

/// `MemoryMap::parse` then `is_readable`, `load_bias` and `executable_mappings_of`.
///
/// Input: 48 bytes of query parameters (address, length, device, inode, two segments) then the text.
pub fn maps(data: &[u8]) {
    let mut c = Cursor::new(data);
    let addr = c.u64();
    let len = c.u64();
    let dev = (c.u32(), c.u32());
    let inode = c.u64();
    let seg = |off: u64, vaddr: u64| goheap::binary::LoadSegment {
        offset: off,
        vaddr,
        filesz: 0x1000,
        memsz: 0x1000,
        flags: 5,
    };
    let segments = [seg(c.u64(), c.u64()), seg(0, 0x400000)];
    let text = String::from_utf8_lossy(c.rest());
    let Some(map) = MemoryMap::parse(&text) else {
        return;
    };
    let _ = map.is_readable(addr, len);
    for m in map.mappings.iter().take(64) {
        let _ = map.is_readable(m.start, m.end.wrapping_sub(m.start));
        let _ = map.is_readable(m.start.wrapping_add(len % 4096), len);
        let _ = map.load_bias(m.dev, m.inode, &segments);
    }
    let _ = map.load_bias(dev, inode, &segments);
    let _ = map.executable_mappings_of(dev, inode).count();
}

/// `Pclntab::parse` of a patched fixture, then every lookup and a `LocationBuilder` over PC stacks
/// taken from the input's tail.
pub fn pclntab(data: &[u8]) {
    let PatchedBinary {
        fixture,
        bytes,
        mut tail,
    } = patched_binary(data);
    let Ok(tab) = Pclntab::parse(&bytes) else {
        return;
    };
    let _ = tab.funcs().take(1 << 16).count();
    let mut pcs = Vec::new();
    while !tail.is_empty() && pcs.len() < 256 {
        pcs.push(pick_pc(&mut tail, fixture));
    }
    if pcs.is_empty() {
        if let Some(fx) = fixture {
            pcs.extend(fx.funcs.iter().step_by(97).map(|f| f.0 + 1));
        }
    }
    for &pc in &pcs {
        let _ = tab.func_for_pc(pc);
        let _ = tab.func_name_for_pc(pc);
        let _ = tab.frame_at(pc);
    }
    let _ = tab.frames_for_pcs(&pcs);
    let _ = tab.expand_final_inline_frame(&pcs);
    if let Some(fx) = fixture {
        for &pc in pcs.iter().take(16) {
            let name = &fx.names[pc as usize % fx.names.len()];
            let _ = tab.func_by_name(name);
        }
    }
    let _ = tab.func_by_name("runtime.mbuckets");
    let mut lb = goheap::symbolize::locations::LocationBuilder::new(&tab);
    for stk in pcs.chunks(32) {
        let _ = lb.append_heap_sample(stk);
        let _ = lb.append_locs_for_stack(stk);
    }
    let _ = lb.finish();
}

/// Function ranges of the unpatched fixture with fuzzer-chosen overrides.
struct FuzzRanges {
    base: HashMap<String, Range<u64>>,
    overrides: HashMap<&'static str, Option<Range<u64>>>,
}

impl FunctionRanges for FuzzRanges {
    fn function_range(&self, name: &str) -> Option<Range<u64>> {
        match self.overrides.get(name) {
            Some(r) => r.clone(),
            None => self.base.get(name).cloned(),
        }
    }
}

/// `coderef::recover_runtime_addresses` over a patched fixture, with function ranges from the
/// unpatched pclntab, some of them replaced by the tail: `[name u8][mode u8][a u32][b u32]`.
pub fn coderef(data: &[u8]) {
    let PatchedBinary {
        fixture,
        bytes,
        mut tail,
    } = patched_binary(data);
    let mut overrides = HashMap::new();
    while !tail.is_empty() && overrides.len() < 8 {
        let name = CODEREF_FUNCTIONS[usize::from(tail.u8()) % CODEREF_FUNCTIONS.len()];
        let mode = tail.u8();
        let a = tail.u32();
        let b = tail.u32();
        let orig = fixture.and_then(|f| f.ranges.get(name).cloned());
        let r = match (mode % 4, orig) {
            (0, _) => None,
            (1, Some(o)) => {
                Some(o.start.wrapping_add(u64::from(a % 64))..o.end.wrapping_sub(u64::from(b % 64)))
            }
            (2, Some(o)) => Some(o.start..o.start.wrapping_add(u64::from(b))),
            _ => Some(u64::from(a) << (mode >> 3)..u64::from(b) << (mode >> 3)),
        };
        overrides.insert(name, r);
    }
    let funcs = FuzzRanges {
        base: fixture.map(|f| f.ranges.clone()).unwrap_or_default(),
        overrides,
    };
    let _ = goheap::binary::coderef::recover_runtime_addresses(&bytes, &funcs);
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(bytes: &[u8]) -> Option<TempFile> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let p = dir.join(format!(
        "goheap-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, bytes).ok()?;
    Some(TempFile(p))
}

/// `GoBinary::open` on a patched fixture written to a temp file, then the streaming `.symtab` scan,
/// section reads, `debugfile::debug_link_info` and `runtime_symbols_from_debug_file`.
pub fn elf_open(data: &[u8]) {
    let PatchedBinary {
        bytes, mut tail, ..
    } = patched_binary(data);
    let _ = goheap::binary::debugfile::debug_link_info(&bytes);
    let Some(tmp) = temp_file(&bytes) else {
        return;
    };
    let _ = goheap::binary::locate::runtime_symbols_from_debug_file(&tmp.0);
    let Ok(bin) = goheap::binary::GoBinary::open(&tmp.0) else {
        return;
    };
    let _ = bin.symtab_location();
    if let Ok(Some((syms, _))) = bin.runtime_symbols_from_symtab() {
        let _ = bin.read_initialized(syms.mem_profile_rate, 8);
    }
    for name in [
        ".gopclntab",
        ".go.buildinfo",
        ".noptrdata",
        ".note.go.buildid",
    ] {
        let _ = bin.read_section(name, 1 << 20);
        if let Some(s) = bin.section(name) {
            let _ = bin.section_containing(s.address);
        }
    }
    let addr = tail.u64();
    let _ = bin.read_initialized(addr, usize::from(tail.u8() % 10));
    let mut buf = [0u8; 64];
    let _ = bin.read_file_at(&mut buf, tail.u64());
}

/// A fake target address space: `image` mapped at `base`, nothing else.
pub struct FakeMemory {
    pub base: u64,
    pub image: Vec<u8>,
}

impl RemoteMemory for FakeMemory {
    fn pid(&self) -> i32 {
        1
    }
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let unmapped = MemoryError::Unmapped {
            pid: 1,
            addr,
            len: buf.len(),
        };
        let Some(off) = addr.checked_sub(self.base) else {
            return Err(unmapped);
        };
        let Some(src) = usize::try_from(off).ok().and_then(|o| self.image.get(o..)) else {
            return Err(unmapped);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
    fn stats(&self) -> ReadStats {
        ReadStats::default()
    }
}

/// Base addresses of the fake image: a Go heap arena address, a low one, and the very top of the
/// address space (pointer arithmetic there overflows).
const BUCKET_BASES: &[u64] = &[0xc000_000000, 0x1000, 0x7fff_ffff_0000];

/// Layouts by Go version: 1.19 (32 frames, byte counters), 1.23 (1026 frames), 1.27 (count-only).
pub fn bucket_layouts() -> [RuntimeLayout; 3] {
    [(1, 19), (1, 23), (1, 27)]
        .map(|(major, minor)| RuntimeLayout::for_version(&GoVersion::new(major, minor)))
}

/// Header of a `bucket_walk` input: `[flags u8][head offset u32][cycle u32][rate u64]`, then the image.
/// flags: bits 0–1 layout, bit 2 use a `MemoryMap` of the image, bits 3–4 base, bit 5 top-of-space base.
pub const BUCKET_HEADER: usize = 17;

/// `BucketWalker::walk` and `walk_until` over a fuzzed image, then a `RecordPlan` re-read, `check_layout`,
/// `memprofile_records` and `heap_profile::record_values`.
pub fn bucket_walk(data: &[u8]) {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let head_off = c.u32();
    let cycle = c.u32();
    let rate = c.u64() as i64;
    let image = c.rest().to_vec();
    let layout = bucket_layouts()[usize::from(flags & 3) % 3];
    let base = if flags & 0x20 != 0 {
        // The last page-aligned address range that fits the image below 2^64.
        (u64::MAX - image.len() as u64) & !0xfff
    } else {
        BUCKET_BASES[usize::from((flags >> 3) & 3) % BUCKET_BASES.len()]
    };
    let mem = FakeMemory { base, image };
    let map_text = format!(
        "{:x}-{:x} rw-p 00000000 00:00 0 [heap]\n",
        base,
        base.saturating_add(mem.image.len() as u64)
    );
    let map = MemoryMap::parse(&map_text);
    let map = if flags & 4 != 0 { map.as_ref() } else { None };
    let walker = BucketWalker::new(&mem, layout, map);
    let head = base.wrapping_add(u64::from(head_off));
    let Ok(walk) = walker.walk(head) else {
        return;
    };
    let _ = walker.walk_until(head, |a| a % 3 == 0);
    let mut extra_buf = [0u8; 8];
    let mut extra = [ReadRequest {
        addr: head,
        buf: &mut extra_buf,
        got: 0,
    }];
    // The agent's steady re-read: a coalescing plan over the walked buckets (with the fuzzed map,
    // or an empty one), then a prepend of the newest half.
    let empty = MemoryMap::default();
    let plan_map = map.unwrap_or(&empty);
    for gap in [0, goheap::runtime::records::DEFAULT_COALESCE_GAP] {
        let mut plan = goheap::runtime::records::RecordPlan::new(gap);
        let half = walk.buckets.len() / 2;
        plan.rebuild(&walk.buckets[half..], &layout, plan_map);
        plan.prepend(half, &walk.buckets, &layout, plan_map);
        let mut buckets = walk.buckets.clone();
        let _ = plan.read_into(
            &mem,
            &mut extra,
            None,
            &mut buckets,
            &layout,
            goheap::runtime::records::ChangeLog::default(),
        );
        let mut ages = Vec::new();
        let log = goheap::runtime::records::ChangeLog {
            ages: Some(&mut ages),
            cycle_extra: Some(extra.len().saturating_sub(1)),
        };
        let _ = plan.read_into(&mem, &mut extra, None, &mut buckets[half..], &layout, log);
        assert!(ages.len() <= buckets.len() - half);
    }
    let _ = check_layout(&layout, "go1.fuzz", &walk.buckets);
    let cycle = (cycle & 1 == 0).then_some(cycle >> 1);
    for r in memprofile_records(&walk.buckets, cycle) {
        let _ = goheap::profile::heap::record_values(&r, rate, &layout);
        let _ = goheap::profile::heap::record_values(&r, 512 * 1024, &layout);
    }
}

/// `pprof_proto::Profile::decode` and `flat_samples` (plus the string/type accessors and the CLI's
/// `heap_profile::summarize`).
pub fn pprof_decode(data: &[u8]) {
    let Ok(p) = pprof_proto::Profile::decode_with_limit(data, 64 << 20) else {
        return;
    };
    let _ = p.sample_types();
    let _ = p.sample_type_names();
    let _ = p.period_type_strings();
    let _ = p.flat_samples();
    let _ = p.flat_samples_with_limit(16);
    let _ = goheap::profile::summary::summarize(&p, 10);
    let _ = p.encode_plain();
}

// ---------------------------------------------------------------------------------------------
// Seeds and a deterministic mutator (seed corpus; the stable-Rust loop in fuzz_regressions.rs)

/// Values that tend to break bounds checks.
const INTERESTING: &[u64] = &[
    0,
    1,
    7,
    8,
    0x7f,
    0x80,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX,
    u64::MAX - 7,
];

/// Mutates `input` in place: byte flips, interesting words, copies, inserts and truncation.
pub fn mutate(rng: &mut XorShift, input: &mut Vec<u8>, max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next_u64() as u8;
            }
            2 if len >= 8 => {
                let i = rng.below(len - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = if rng.below(2) == 0 { v } else { v.swap_bytes() };
                let n = [1, 2, 4, 8][rng.below(4)];
                input[i..i + n].copy_from_slice(&w.to_le_bytes()[..n]);
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let n = rng.below(64).min(len - from);
                let chunk = input[from..from + n].to_vec();
                let to = rng.below(len);
                let m = n.min(len - to);
                input[to..to + m].copy_from_slice(&chunk[..m]);
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                input.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let n = rng.below(len);
                input.truncate(n.max(1));
            }
            _ if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(32).min(len - i);
                input.drain(i..i + n);
            }
            _ => input.push(rng.next_u64() as u8),
        }
    }
    input.truncate(max_len);
}

/// Random patches in the [`PatchedBinary`] format: a few, mostly small, often interesting words.
pub fn random_patches(rng: &mut XorShift) -> Vec<u8> {
    let fixture = rng.below(FIXTURES.len()) as u8;
    let n = 1 + rng.below(4);
    let mut owned: Vec<(u8, u32, Vec<u8>)> = Vec::new();
    for _ in 0..n {
        let region =
            rng.below(REGION_COUNT as usize) as u8 | if rng.below(4) == 0 { 0x80 } else { 0 };
        let off = rng.next_u64() as u32;
        let bytes = match rng.below(3) {
            0 => INTERESTING[rng.below(INTERESTING.len())].to_le_bytes()[..4 << rng.below(2)]
                .to_vec(),
            1 => vec![rng.next_u64() as u8],
            _ => (0..rng.below(32)).map(|_| rng.next_u64() as u8).collect(),
        };
        owned.push((region, off, bytes));
    }
    let truncate = (rng.below(16) == 0).then(|| rng.next_u64() as u32);
    let patches: Vec<(u8, u32, &[u8])> = owned
        .iter()
        .map(|(r, o, b)| (*r, *o, b.as_slice()))
        .collect();
    let mut v = encode_patches(fixture, truncate, &patches);
    for _ in 0..rng.below(24) {
        v.push(rng.next_u64() as u8);
    }
    v
}

/// A well-formed bucket list for `layout_index` at base selector `base_sel` (flags bits 3–4):
/// `n` buckets of `nstk` frames each, linked by `allnext`, with consistent counters.
pub fn bucket_image(layout_index: u8, base_sel: u8, use_map: bool, n: usize, nstk: u64) -> Vec<u8> {
    let layout = bucket_layouts()[usize::from(layout_index) % 3];
    let base = BUCKET_BASES[usize::from(base_sel) % BUCKET_BASES.len()];
    let bucket_len = layout.record_offset(nstk) + layout.record_size();
    let mut image = vec![0u8; 64 + n * bucket_len as usize];
    let put = |img: &mut Vec<u8>, off: u64, v: u64| {
        img[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
    };
    for i in 0..n {
        let at = 64 + i as u64 * bucket_len;
        let next = if i + 1 < n { base + at + bucket_len } else { 0 };
        put(&mut image, at + 8, next);
        put(&mut image, at + 16, 1);
        put(&mut image, at + 24, 0x1234 + i as u64);
        let size = 16 << (i % 6);
        put(&mut image, at + 32, size);
        put(&mut image, at + 40, nstk);
        for f in 0..nstk {
            put(
                &mut image,
                at + 48 + 8 * f,
                0x401000 + 0x40 * (i as u64 + f),
            );
        }
        let rec = at + layout.record_offset(nstk);
        let words = layout.cycle_size / 8;
        for cyc in 0..4u64 {
            let allocs = 3 + i as u64 + cyc;
            let frees = cyc;
            let w = rec + cyc * words * 8;
            put(&mut image, w, allocs);
            put(&mut image, w + 8, frees);
            if layout.cycle_has_bytes {
                put(&mut image, w + 16, allocs * size);
                put(&mut image, w + 24, frees * size);
            }
        }
    }
    let flags = (layout_index % 3) | if use_map { 4 } else { 0 } | ((base_sel & 3) << 3);
    let mut v = vec![flags];
    v.extend_from_slice(&64u32.to_le_bytes());
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&(512u64 * 1024).to_le_bytes());
    v.extend_from_slice(&image);
    v
}

/// A small but complete pprof heap profile, plain protobuf.
pub fn sample_profile() -> Vec<u8> {
    use pprof_proto::{FrameLine, MappingInfo, ProfileBuilder, SampleLabel};
    let mut b = ProfileBuilder::new();
    b.add_sample_type("alloc_objects", "count")
        .add_sample_type("alloc_space", "bytes")
        .add_sample_type("inuse_objects", "count")
        .add_sample_type("inuse_space", "bytes")
        .set_period_type("space", "bytes")
        .set_period(512 * 1024)
        .add_comment("fuzz seed");
    let m = b.mapping(&MappingInfo {
        memory_start: 0x400000,
        memory_limit: 0x800000,
        filename: "/bin/heapfixture",
        build_id: "abc",
        has_functions: true,
        ..Default::default()
    });
    let f1 = b.function("main.alloc", "main.alloc", "/src/main.go", 10);
    let f2 = b.function("main.main", "main.main", "/src/main.go", 3);
    let l1 = b
        .location(
            0x401000,
            Some(m),
            0x401000,
            &[
                FrameLine {
                    function: f1,
                    line: 12,
                    column: 0,
                },
                FrameLine {
                    function: f2,
                    line: 5,
                    column: 0,
                },
            ],
        )
        .expect("location");
    let l2 = b
        .location(
            0x402000,
            Some(m),
            0x402000,
            &[FrameLine {
                function: f2,
                line: 7,
                column: 0,
            }],
        )
        .expect("location");
    b.add_sample(
        &[l1, l2],
        &[1, 2, 3, 4],
        &[SampleLabel::Num {
            key: "bytes",
            value: 64,
            unit: "",
        }],
    )
    .expect("sample");
    b.add_sample(
        &[l2],
        &[5, 6, 7, 8],
        &[SampleLabel::Str {
            key: "k",
            value: "v",
        }],
    )
    .expect("sample");
    b.build().encode_plain()
}

/// Seed inputs per target.
pub mod seeds {
    use super::*;

    pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
        TARGETS.iter().map(|t| (*t, for_target(t))).collect()
    }

    pub fn for_target(target: &str) -> Vec<Vec<u8>> {
        match target {
            "buildinfo" => fixtures()
                .iter()
                .filter_map(|f| {
                    let (a, e) = f.locate(Region::GoBuildinfo as u8, 0)?;
                    Some(f.bytes[a..e.min(a + 4096)].to_vec())
                })
                .collect(),
            "maps" => {
                let text = std::fs::read("/proc/self/maps").unwrap_or_default();
                let mut v = vec![0u8; 48];
                v.extend_from_slice(&text);
                vec![v]
            }
            "pclntab" | "coderef" | "elf_open" => {
                let mut v = Vec::new();
                for i in 0..FIXTURES.len() as u8 {
                    v.push(encode_patches(i, None, &[]));
                    for region in 0..REGION_COUNT {
                        v.push(encode_patches(i, None, &[(region, 0x40, &[0xff; 4])]));
                    }
                }
                v
            }
            "bucket_walk" => {
                let mut v = Vec::new();
                for l in 0..3 {
                    for (n, nstk) in [(1, 0), (3, 2), (8, 5), (2, 32)] {
                        v.push(bucket_image(l, 0, l == 1, n, nstk));
                    }
                }
                v.push(bucket_image(0, 1, true, 4, 3));
                v.push(bucket_image(2, 2, false, 4, 3));
                v
            }
            "pprof_decode" => {
                let plain = sample_profile();
                let gz = pprof_proto::Profile::decode(&plain)
                    .expect("seed decodes")
                    .encode_gzip();
                vec![plain, gz]
            }
            "goroutines" => goroutine_seeds(),
            other => panic!("unknown fuzz target {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Goroutines: fuzzed `allgs`, `g` structs and stacks

/// Where the `goroutines` target maps its regions (a binary's data, then Go-heap addresses as a
/// real process has them): `runtime.allgs` (slice header, 24 bytes) and `runtime.allglen` (8) at
/// [`G_GLOBALS`], the `[]*g` array at [`G_ARRAY`], the `g` structs at [`G_STRUCTS`], the stack
/// bytes at [`G_STACK`].
pub const G_GLOBALS: u64 = 0x5_0000;
pub const G_ARRAY: u64 = 0xc000_010000;
pub const G_STRUCTS: u64 = 0xc000_100000;
pub const G_STACK: u64 = 0xc000_800000;

/// One configuration the `goroutines` target reads with: a real fixture's pclntab (unwinding,
/// system-goroutine test, symbolization) and the table layout of its release and arch.
pub struct GConfig {
    pub name: String,
    pub tab: Pclntab,
    /// Entries of every function of `tab`, unrelocated (for seeds).
    pub funcs: Vec<u64>,
    pub version: GoVersion,
    pub layout: goheap::goroutine::layout::GLayout,
    pub uses_lr: bool,
    /// Load bias the target is read with (PIE configurations).
    pub bias: u64,
}

/// (program, Go version, mode, arm64, bias): Go 1.19 (no `parentGoid`), 1.22 PIE relocated, 1.23
/// stripped, 1.27, arm64 (link register).
const G_CONFIGS: &[(&str, &str, &str, bool, u64)] = &[
    ("goroutines", GO_1_19, "default", false, 0),
    ("goroutines", GO_1_22, "pie", false, 0x5555_5555_0000),
    ("goroutines", GO_1_23, "stripped", false, 0),
    ("goroutines", GO_1_27, "default", false, 0),
    ("heapfixture", GO_1_25, "arm64", true, 0),
];

/// The loaded configurations (panics telling to build the fixtures when missing).
pub fn goroutine_configs() -> &'static [GConfig] {
    static C: OnceLock<Vec<GConfig>> = OnceLock::new();
    C.get_or_init(|| {
        G_CONFIGS
            .iter()
            .map(|&(program, v, mode, arm64, bias)| {
                let path = fixtures_dir()
                    .join(program)
                    .join(v)
                    .join(mode)
                    .join(program);
                let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("fixture {}: {e}; run fixtures/build.sh", path.display())
                });
                let tab = Pclntab::parse(&bytes)
                    .unwrap_or_else(|e| panic!("{}: pclntab: {e}", path.display()));
                let funcs = tab.funcs().map(|f| f.entry).collect();
                let version = GoVersion::parse(&format!("go{v}")).expect("fixture version");
                let arch = if arm64 {
                    goheap::binary::elf::Arch::Arm64
                } else {
                    goheap::binary::elf::Arch::Amd64
                };
                GConfig {
                    name: format!("{program} {v} {mode}"),
                    tab,
                    funcs,
                    version,
                    layout: goheap::goroutine::layout::GLayout::for_version(&version, arch),
                    uses_lr: arm64,
                    bias,
                }
            })
            .collect()
    })
}

/// A fake address space of a few regions, one of whose bytes may flip between the first and the
/// second batch of `g` header reads (a goroutine that ran meanwhile).
pub struct GMemory {
    pub regions: Vec<(u64, std::cell::RefCell<Vec<u8>>)>,
    /// (region index, byte offset) XORed with 0xff before the second `read_batch`.
    pub flip: Option<(usize, usize)>,
    pub batches: std::cell::Cell<u32>,
}

impl RemoteMemory for GMemory {
    fn pid(&self) -> i32 {
        1
    }
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        for (base, bytes) in &self.regions {
            let bytes = bytes.borrow();
            let Some(off) = addr.checked_sub(*base) else {
                continue;
            };
            let Some(src) = usize::try_from(off).ok().and_then(|o| bytes.get(o..)) else {
                continue;
            };
            if src.is_empty() {
                continue;
            }
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            return Ok(n);
        }
        Err(MemoryError::Unmapped {
            pid: 1,
            addr,
            len: buf.len(),
        })
    }
    fn read_batch(&self, reqs: &mut [ReadRequest<'_>]) -> Result<(), MemoryError> {
        let n = self.batches.get();
        self.batches.set(n.saturating_add(1));
        if n == 1 {
            if let Some((_, bytes)) = self.flip.and_then(|(r, _)| self.regions.get(r)) {
                let o = self.flip.map_or(0, |(_, o)| o);
                if let Some(b) = bytes.borrow_mut().get_mut(o) {
                    *b ^= 0xff;
                }
            }
        }
        for r in reqs.iter_mut() {
            r.got = self.read_partial(r.addr, r.buf).unwrap_or(0);
        }
        Ok(())
    }
    fn stats(&self) -> ReadStats {
        ReadStats::default()
    }
}

/// Header of a `goroutines` input: `[flags u8][globals 32 bytes][array len u16][g structs len u16]
/// [flip offset u16]`, then the array bytes, the `g` structs' bytes and (the rest) the stack bytes.
/// flags: bits 0–2 the configuration ([`goroutine_configs`], modulo their number), bit 3 flip the
/// `g` structs' byte at the flip offset between the two header reads.
pub const G_HEADER: usize = 1 + 32 + 2 + 2 + 2;

/// `read::read_goroutines` and `read::count_states` over fuzzed `allgs`/`g`/stack memory with a
/// real layout and pclntab, then `profile::build`, `profile::text` and `profile::leak_report` of
/// the snapshot. Asserts the reader's invariants: at most `allglen` goroutines (kept, dropped and
/// invalid together), unique goids, at most `max_frames` PCs per stack, running goroutines not
/// unwound, and a profile counting every user goroutine once.
pub fn goroutines(data: &[u8]) {
    use goheap::goroutine::{layout::GStatus, profile, read};
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let globals = c.bytes(32).to_vec();
    let arr_len = usize::from(c.u16());
    let gs_len = usize::from(c.u16());
    let flip = usize::from(c.u16());
    let arr = c.bytes(arr_len).to_vec();
    let gs = c.bytes(gs_len).to_vec();
    let stack = c.rest().to_vec();
    let configs = goroutine_configs();
    let cfg = &configs[usize::from(flags & 7) % configs.len()];
    let flip = (flags & 8 != 0 && !gs.is_empty()).then(|| (2, flip % gs.len()));
    let mem = GMemory {
        regions: [
            (G_GLOBALS, globals),
            (G_ARRAY, arr),
            (G_STRUCTS, gs),
            (G_STACK, stack),
        ]
        .into_iter()
        .map(|(a, v)| (a, std::cell::RefCell::new(v)))
        .collect(),
        flip,
        batches: std::cell::Cell::new(0),
    };
    let t = read::GoroutineTarget {
        mem: &mem,
        pclntab: &cfg.tab,
        layout: cfg.layout,
        version: cfg.version,
        uses_lr: cfg.uses_lr,
        allgs: G_GLOBALS,
        allglen: G_GLOBALS + 24,
        bias: cfg.bias,
    };
    let limits = read::GoroutineLimits::for_version(&cfg.version);
    if let Ok(states) = read::count_states(&t, &limits) {
        let n: i64 = states.values().sum();
        assert!(n >= 0 && n as u64 <= limits.max_goroutines, "{states:?}");
    }
    mem.batches.set(0);
    let Ok(snap) = read::read_goroutines(&t, &limits) else {
        return;
    };
    assert!(snap.allglen <= limits.max_goroutines);
    assert!(
        (snap.goroutines.len() + snap.changed + snap.invalid) as u64 <= snap.allglen,
        "{}: {} kept + {} changed + {} invalid of allglen {}",
        cfg.name,
        snap.goroutines.len(),
        snap.changed,
        snap.invalid,
        snap.allglen
    );
    let mut ids = std::collections::HashSet::new();
    for g in &snap.goroutines {
        assert!(
            ids.insert(g.goid),
            "{}: goid {} kept twice",
            cfg.name,
            g.goid
        );
        assert!(g.stack.len() <= limits.max_frames, "{}", cfg.name);
        if g.status == GStatus::Running {
            assert!(g.stack.is_empty() && g.unwind.is_none(), "{}", cfg.name);
        } else {
            assert!(g.unwind.is_some(), "{}", cfg.name);
        }
    }
    let p = profile::build(&snap, &cfg.tab, cfg.bias, &[], 0);
    let Ok(samples) = p.flat_samples() else {
        panic!(
            "{}: goheap's own goroutine profile does not read back",
            cfg.name
        );
    };
    let total: i64 = samples
        .iter()
        .map(|s| s.values.first().copied().unwrap_or(0))
        .sum();
    assert_eq!(total, snap.user().count() as i64, "{}", cfg.name);
    let text = profile::text(&snap, &cfg.tab, &cfg.version, true);
    assert!(text.ends_with("invalid\n"), "{}", cfg.name);
    let _ = profile::leak_report(&snap, &cfg.tab, &cfg.version);
}

/// A plausible `goroutines` input for configuration `cfg`: `n` goroutines (waiting, runnable,
/// running, in a syscall, dead) with bounds around the stack region, saved SP inside it, saved PC
/// and start PC in real functions; the stack a mix of real return PCs and junk.
pub fn goroutine_image(rng: &mut XorShift, cfg_index: u8, n: usize, stack_len: usize) -> Vec<u8> {
    let configs = goroutine_configs();
    let cfg = &configs[usize::from(cfg_index) % configs.len()];
    let l = cfg.layout;
    let size = l.size as usize;
    let pc = |rng: &mut XorShift| {
        cfg.funcs[rng.below(cfg.funcs.len())]
            .wrapping_add(cfg.bias)
            .wrapping_add(1 + rng.below(48) as u64)
    };
    let mut globals = Vec::with_capacity(32);
    for w in [G_ARRAY, n as u64, n as u64, n as u64] {
        globals.extend_from_slice(&w.to_le_bytes());
    }
    let arr: Vec<u8> = (0..n as u64)
        .flat_map(|i| (G_STRUCTS + i * l.size).to_le_bytes())
        .collect();
    let mut gs = vec![0u8; n * size];
    let put = |g: &mut [u8], off: u64, v: u64| {
        g[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    for (i, g) in gs.chunks_exact_mut(size).enumerate() {
        let status: u32 = [4, 4, 4, 1, 2, 3, 6][rng.below(7)];
        g[l.atomicstatus as usize..l.atomicstatus as usize + 4]
            .copy_from_slice(&status.to_le_bytes());
        put(g, l.goid, 1 + i as u64);
        put(g, l.stack_lo, G_STACK);
        put(g, l.stack_hi, G_STACK + stack_len as u64);
        put(
            g,
            l.sched_sp,
            G_STACK + (rng.below(stack_len / 8) * 8) as u64,
        );
        put(g, l.sched_pc, pc(rng));
        if status == 3 {
            put(
                g,
                l.syscallsp,
                G_STACK + (rng.below(stack_len / 8) * 8) as u64,
            );
            put(g, l.syscallpc, pc(rng));
        }
        g[l.waitreason as usize] = rng.below(40) as u8;
        put(g, l.waitsince, rng.next_u64() >> 2);
        if let Some(o) = l.parent_goid {
            put(g, o, 1);
        }
        put(g, l.gopc, pc(rng));
        put(g, l.startpc, pc(rng) & !0xf);
    }
    let stack: Vec<u8> = (0..stack_len / 8)
        .flat_map(|_| {
            if rng.below(2) == 0 {
                pc(rng)
            } else {
                G_STACK + rng.below(stack_len) as u64
            }
            .to_le_bytes()
        })
        .collect();
    let mut v = vec![cfg_index];
    v.extend_from_slice(&globals);
    v.extend_from_slice(&(arr.len() as u16).to_le_bytes());
    v.extend_from_slice(&(gs.len() as u16).to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&arr);
    v.extend_from_slice(&gs);
    v.extend_from_slice(&stack);
    v
}

/// Seeds of the `goroutines` target: every configuration, a few sizes, with and without a flip.
fn goroutine_seeds() -> Vec<Vec<u8>> {
    let mut rng = XorShift(0x6f72_6f75_7469_6e65);
    let mut v = Vec::new();
    for cfg in 0..G_CONFIGS.len() as u8 {
        for (n, stack_len) in [(1, 256), (4, 1024), (12, 2048)] {
            v.push(goroutine_image(&mut rng, cfg, n, stack_len));
        }
        let mut flipped = goroutine_image(&mut rng, cfg, 3, 512);
        flipped[0] |= 8;
        v.push(flipped);
        // allgs naming one g twice (its goid must be kept once), and allglen past the slice.
        let mut twice = goroutine_image(&mut rng, cfg, 3, 512);
        twice.copy_within(G_HEADER..G_HEADER + 8, G_HEADER + 8);
        v.push(twice);
        let mut long = goroutine_image(&mut rng, cfg, 2, 256);
        long[1 + 24..1 + 32].copy_from_slice(&3u64.to_le_bytes());
        v.push(long);
    }
    v
}
