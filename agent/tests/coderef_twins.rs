//! Static recovery of runtime globals from stripped Go binaries ("twins").
//!
//! For every supported Go version and target, `tests/coderef/main.go` is built twice: normally and
//! with `-ldflags=-s -w`. The test checks that both builds have identical `.text` (so the unstripped
//! twin's `.symtab` function ranges describe the stripped twin's code), recovers the globals from the
//! stripped twin, and compares them with the unstripped twin's `.symtab`.
//!
//! Builds are cached under `$GOHEAP_CACHE/coderef-twins/<version>-<target>/` (default
//! `~/.cache/goheap`). Toolchains come from `fixtures/install-toolchains.sh`.

mod support;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use goheap::binary::coderef::{
    recover_runtime_addresses, FunctionRanges, RecoveredAddresses, DEFAULT_MEM_PROFILE_RATE,
};
use object::{Object, ObjectSection, ObjectSymbol};
use support::{
    cache_dir, go_tool, gocache, http_get, start_prometheus, Scratch, XorShift, DEBIAN_PROMETHEUS,
    GO_1_19, GO_1_21, GO_1_22, GO_1_23, GO_1_24, GO_1_25, GO_1_26, GO_1_27, GO_VERSIONS,
};

#[derive(Debug, Clone, Copy)]
enum Target {
    Amd64,
    Amd64Pie,
    Arm64,
    Arm64Pie,
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Target::Amd64 => "amd64",
            Target::Amd64Pie => "amd64-pie",
            Target::Arm64 => "arm64",
            Target::Arm64Pie => "arm64-pie",
        }
    }
}

/// The Go programs built into twins.
#[derive(Debug, Clone, Copy)]
enum Program {
    /// `tests/coderef`: reads its own heap profile, so memory profiling stays enabled.
    Profiling,
    /// `tests/coderef/noprof`: never reads a profile; the linker disables memory profiling.
    NoProfiling,
}

impl Program {
    fn dir(self) -> PathBuf {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coderef");
        match self {
            Program::Profiling => base,
            Program::NoProfiling => base.join("noprof"),
        }
    }

    fn cache_suffix(self) -> &'static str {
        match self {
            Program::Profiling => "",
            Program::NoProfiling => "-noprof",
        }
    }
}

/// FNV-1a of the Go sources, so an edited fixture is rebuilt.
fn source_fingerprint(program: Program) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for name in ["main.go", "go.mod"] {
        let bytes = std::fs::read(program.dir().join(name)).expect("read Go fixture source");
        for b in bytes.iter().chain(name.as_bytes()) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn go_build(program: Program, version: &str, target: Target, stripped: bool, out: &Path) {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new(go_tool(version));
    cmd.current_dir(program.dir())
        .arg("build")
        .arg("-trimpath")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", gocache(version))
        .env("GOOS", "linux")
        .env("CGO_ENABLED", "0");
    match target {
        Target::Amd64 => {
            cmd.env("GOARCH", "amd64");
        }
        Target::Amd64Pie => {
            cmd.env("GOARCH", "amd64").arg("-buildmode=pie");
        }
        Target::Arm64 => {
            cmd.env("GOARCH", "arm64");
        }
        Target::Arm64Pie => {
            cmd.env("GOARCH", "arm64").arg("-buildmode=pie");
        }
    }
    if stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg("-o").arg(&tmp).arg(".");
    let output = cmd.output().expect("run go build");
    assert!(
        output.status.success(),
        "go {version} build ({}) failed: {}",
        target.key(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, out).expect("move build into the cache");
}

/// Serialises twin builds: tests run in parallel, share cache paths, and the machine is small.
static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Returns (unstripped, stripped) builds, building them if the cache lacks them.
fn twins(version: &str, target: Target) -> (PathBuf, PathBuf) {
    program_twins(Program::Profiling, version, target)
}

/// Returns (unstripped, stripped) builds of `program`, building them if the cache lacks them.
fn program_twins(program: Program, version: &str, target: Target) -> (PathBuf, PathBuf) {
    let _guard = BUILD_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = cache_dir().join("coderef-twins").join(format!(
        "{version}-{}{}",
        target.key(),
        program.cache_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("create twin cache dir");
    let stamp = dir.join("source-fingerprint");
    let fingerprint = source_fingerprint(program);
    let plain = dir.join("plain");
    let stripped = dir.join("stripped");
    let fresh = std::fs::read_to_string(&stamp).ok().as_deref() == Some(fingerprint.as_str())
        && plain.is_file()
        && stripped.is_file();
    if !fresh {
        go_build(program, version, target, false, &plain);
        go_build(program, version, target, true, &stripped);
        std::fs::write(&stamp, &fingerprint).expect("write fingerprint");
    }
    (plain, stripped)
}

/// Function ranges and data symbols from an unstripped binary's `.symtab`.
struct SymtabFunctions {
    functions: HashMap<String, Range<u64>>,
    objects: HashMap<String, u64>,
}

impl SymtabFunctions {
    fn load(elf: &[u8]) -> Self {
        let file = object::File::parse(elf).expect("parse unstripped twin");
        let mut functions = HashMap::new();
        let mut objects = HashMap::new();
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            match sym.kind() {
                object::SymbolKind::Text if sym.size() > 0 => {
                    functions.insert(name.to_string(), sym.address()..sym.address() + sym.size());
                }
                object::SymbolKind::Data => {
                    objects.insert(name.to_string(), sym.address());
                }
                _ => {}
            }
        }
        assert!(
            functions.contains_key("runtime.stkbucket"),
            "unstripped twin has no runtime.stkbucket in .symtab"
        );
        SymtabFunctions { functions, objects }
    }

    fn object(&self, name: &str) -> u64 {
        *self
            .objects
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in .symtab"))
    }
}

impl FunctionRanges for SymtabFunctions {
    fn function_range(&self, name: &str) -> Option<Range<u64>> {
        self.functions.get(name).cloned()
    }
}

/// `.text` address, and bytes.
fn text_section(elf: &[u8]) -> (u64, Vec<u8>) {
    let file = object::File::parse(elf).expect("parse ELF");
    let text = file.section_by_name(".text").expect(".text section");
    (text.address(), text.data().expect(".text bytes").to_vec())
}

/// (name, address, size) of the allocated sections.
fn alloc_sections(elf: &[u8]) -> Vec<(String, u64, u64)> {
    let file = object::File::parse(elf).expect("parse ELF");
    file.sections()
        .filter(|s| s.address() != 0)
        .map(|s| (s.name().unwrap_or("?").to_string(), s.address(), s.size()))
        .collect()
}

/// Translates an address of the unstripped twin into the stripped twin: same section, same offset.
/// Needed because the Go 1.19 and 1.21 linkers (non-PIE) place `.shstrtab` inside the read-only
/// segment, so the shorter section-name table of the stripped build shifts the later sections.
fn translate(plain: &[(String, u64, u64)], stripped: &[(String, u64, u64)], addr: u64) -> u64 {
    let (name, start, size) = plain
        .iter()
        .find(|(_, start, size)| *start <= addr && addr < start + size)
        .unwrap_or_else(|| panic!("{addr:#x} is in no section of the unstripped twin"));
    let (_, twin_start, twin_size) = stripped
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("stripped twin has no {name}"));
    assert_eq!(size, twin_size, "{name} differs in size between the twins");
    twin_start + (addr - start)
}

fn check_twin(version: &str, target: Target) -> RecoveredAddresses {
    let (plain_path, stripped_path) = twins(version, target);
    let plain = std::fs::read(&plain_path).expect("read unstripped twin");
    let stripped = std::fs::read(&stripped_path).expect("read stripped twin");
    let what = format!("go {version} {}", target.key());

    // The stripped twin really has no symbols, and its code is identical to the unstripped one.
    let stripped_file = object::File::parse(&*stripped).expect("parse stripped twin");
    assert!(
        stripped_file.section_by_name(".symtab").is_none(),
        "{what}: stripped twin still has .symtab"
    );
    let (plain_text_addr, plain_text) = text_section(&plain);
    let (stripped_text_addr, stripped_text) = text_section(&stripped);
    assert_eq!(plain_text_addr, stripped_text_addr, "{what}: .text address");
    assert_eq!(plain_text.len(), stripped_text.len(), "{what}: .text size");
    let plain_sections = alloc_sections(&plain);
    let stripped_sections = alloc_sections(&stripped);
    let same_layout = plain_sections.iter().all(|s| stripped_sections.contains(s));
    if same_layout {
        // Same addresses for everything: the code must be byte-identical.
        assert!(plain_text == stripped_text, "{what}: .text bytes differ");
    } else {
        // Data moved: only PC-relative displacements may differ, so instruction boundaries (and
        // the function table) are the same; check the pclntab has the same size and address.
        eprintln!("{what}: data sections moved between twins; comparing section-relative");
        let pcln = |v: &[(String, u64, u64)]| v.iter().find(|s| s.0 == ".gopclntab").map(|s| s.2);
        assert_eq!(
            pcln(&plain_sections),
            pcln(&stripped_sections),
            "{what}: .gopclntab size"
        );
    }

    let symtab = SymtabFunctions::load(&plain);
    let recovered = recover_runtime_addresses(&stripped, &symtab)
        .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
    eprintln!("{what}: {recovered:#x?}");

    let expected = |name: &str| translate(&plain_sections, &stripped_sections, symtab.object(name));
    assert_eq!(
        recovered.mbuckets,
        expected("runtime.mbuckets"),
        "{what}: mbuckets"
    );
    assert_eq!(
        recovered.mem_profile_rate,
        expected("runtime.MemProfileRate"),
        "{what}: MemProfileRate"
    );
    assert_eq!(
        recovered.mprof_cycle,
        Some(expected("runtime.mProfCycle")),
        "{what}: mProfCycle"
    );
    assert_eq!(
        recovered.disable_memory_profiling,
        Some(expected("runtime.disableMemoryProfiling")),
        "{what}: disableMemoryProfiling"
    );
    recovered
}

fn check_version(version: &str) {
    for target in [
        Target::Amd64,
        Target::Amd64Pie,
        Target::Arm64,
        Target::Arm64Pie,
    ] {
        check_twin(version, target);
    }
}

#[test]
fn twins_go1_19() {
    check_version(GO_1_19);
}

#[test]
fn twins_go1_21() {
    check_version(GO_1_21);
}

#[test]
fn twins_go1_22() {
    check_version(GO_1_22);
}

#[test]
fn twins_go1_23() {
    check_version(GO_1_23);
}

#[test]
fn twins_go1_24() {
    check_version(GO_1_24);
}

#[test]
fn twins_go1_25() {
    check_version(GO_1_25);
}

#[test]
fn twins_go1_26() {
    check_version(GO_1_26);
}

#[test]
fn twins_go1_27() {
    check_version(GO_1_27);
}

/// Memory profiling disabled by the linker: no `runtime.MemProfile`/`memProfileInternal`, and
/// `runtime.disableMemoryProfiling` is initialised to true in the file. Recovery still works, says its
/// mbuckets evidence is weaker, and finds the flag.
#[test]
fn linker_disabled_memory_profiling() {
    for version in GO_VERSIONS {
        let (plain_path, stripped_path) =
            program_twins(Program::NoProfiling, version, Target::Amd64);
        let plain = std::fs::read(&plain_path).expect("read unstripped twin");
        let stripped = std::fs::read(&stripped_path).expect("read stripped twin");
        let symtab = SymtabFunctions::load(&plain);
        assert!(
            symtab.function_range("runtime.MemProfile").is_none()
                && symtab
                    .function_range("runtime.memProfileInternal")
                    .is_none(),
            "go {version}: the memory-profile reader was expected to be dead-code eliminated"
        );
        let recovered = recover_runtime_addresses(&stripped, &symtab)
            .unwrap_or_else(|e| panic!("go {version} noprof: {e}"));
        let plain_sections = alloc_sections(&plain);
        let stripped_sections = alloc_sections(&stripped);
        let expected =
            |name: &str| translate(&plain_sections, &stripped_sections, symtab.object(name));
        assert_eq!(
            recovered.mbuckets,
            expected("runtime.mbuckets"),
            "go {version}"
        );
        assert_eq!(
            recovered.mem_profile_rate,
            expected("runtime.MemProfileRate"),
            "go {version}"
        );
        assert_eq!(
            recovered.mprof_cycle,
            Some(expected("runtime.mProfCycle")),
            "go {version}"
        );
        let flag = recovered
            .disable_memory_profiling
            .unwrap_or_else(|| panic!("go {version}: disableMemoryProfiling not found"));
        assert_eq!(
            flag,
            expected("runtime.disableMemoryProfiling"),
            "go {version}"
        );
        let file = object::File::parse(&*stripped).expect("parse");
        let section = file
            .sections()
            .find(|s| s.address() <= flag && flag < s.address() + s.size())
            .expect("flag section");
        let value = section.data().expect("flag bytes")[(flag - section.address()) as usize];
        assert_eq!(value, 1, "go {version}: linker-set disableMemoryProfiling");
        assert!(
            recovered
                .evidence
                .iter()
                .any(|e| e.contains("weaker evidence")),
            "go {version}: {:#?}",
            recovered.evidence
        );
    }
}

/// Function ranges from goheap's own `.gopclntab` parser, as production uses for stripped binaries.
struct PclntabFunctions(goheap::symbolize::pclntab::Pclntab);

impl PclntabFunctions {
    fn load(elf: &[u8]) -> Self {
        PclntabFunctions(goheap::symbolize::pclntab::Pclntab::parse(elf).expect("parse .gopclntab"))
    }
}

impl FunctionRanges for PclntabFunctions {
    fn function_range(&self, name: &str) -> Option<Range<u64>> {
        self.0.func_by_name(name).map(|f| f.entry..f.end)
    }
}

/// The pclntab function ranges agree with `.symtab` on a twin, so they can be trusted for prometheus.
#[test]
fn pclntab_ranges_match_symtab() {
    let (plain, _) = twins(GO_1_19, Target::Amd64);
    let elf = std::fs::read(plain).expect("read twin");
    let symtab = SymtabFunctions::load(&elf);
    let pclntab = PclntabFunctions::load(&elf);
    for name in [
        "runtime.stkbucket",
        "runtime.mProf_FlushLocked",
        "runtime.profilealloc",
        "runtime.init",
    ] {
        // .symtab sizes exclude the alignment padding that pclntab ranges include.
        let from_pclntab = pclntab.function_range(name).expect("in pclntab");
        let from_symtab = symtab.function_range(name).expect("in symtab");
        assert_eq!(from_pclntab.start, from_symtab.start, "{name}");
        assert!(
            from_symtab.end <= from_pclntab.end && from_pclntab.end - from_symtab.end < 64,
            "{name}: {from_symtab:x?} vs {from_pclntab:x?}"
        );
    }
}

/// A distribution-stripped, cgo, externally linked Go 1.19 binary (Debian's prometheus). No symbol
/// table or debug file exists for it, so the recovered addresses are validated live, against the
/// running program's own account of itself: at them a running Prometheus holds its MemProfileRate
/// (the period its `/debug/pprof/heap?debug=1` header states), `mProfCycle` counts its GCs (its
/// `go_gc_duration_seconds_count`), `disableMemoryProfiling` is false, and the `mbuckets` head
/// leads to a well-formed bucket list holding every stack its own heap profile lists.
#[test]
fn debian_prometheus() {
    let path = Path::new(DEBIAN_PROMETHEUS);
    assert!(
        path.is_file(),
        "{} missing; run fixtures/install-toolchains.sh (installs Debian's prometheus)",
        path.display()
    );
    let elf = std::fs::read(path).expect("read prometheus");
    let file = object::File::parse(&*elf).expect("parse prometheus");
    assert!(
        file.section_by_name(".symtab").is_none(),
        "expected a stripped binary"
    );
    let funcs = PclntabFunctions::load(&elf);
    let started = std::time::Instant::now();
    let recovered =
        recover_runtime_addresses(&elf, &funcs).unwrap_or_else(|e| panic!("prometheus: {e}"));
    eprintln!(
        "prometheus: recovered in {:?}: {recovered:#x?}",
        started.elapsed()
    );

    // Go 1.19 initialises MemProfileRate in runtime.init (`defaultMemProfileRate(512*1024)`), so the
    // variable is zero in the file (.noptrbss); recovery must instead have seen the constant 524288
    // selected and stored by the initialiser, right after the disableMemoryProfiling load.
    let section_of = |addr: u64| {
        file.sections()
            .find(|s| s.address() <= addr && addr < s.address() + s.size())
            .and_then(|s| s.name().ok().map(str::to_string))
            .unwrap_or_default()
    };
    assert_eq!(section_of(recovered.mem_profile_rate), ".noptrbss");
    assert_eq!(section_of(recovered.mbuckets), ".bss");
    assert!(
        recovered
            .evidence
            .iter()
            .any(|e| e.contains(&format!("constant {DEFAULT_MEM_PROFILE_RATE}"))),
        "no initialiser-constant evidence: {:#?}",
        recovered.evidence
    );
    let disable = recovered
        .disable_memory_profiling
        .expect("disableMemoryProfiling recovered");
    let cycle = recovered.mprof_cycle.expect("mProfCycle recovered");

    // Live: an idle Prometheus (no scrape jobs), after two collections so its profile has samples.
    let scratch = Scratch::new("coderef-prom");
    let (running, port) = start_prometheus(&scratch, "global:\n  scrape_interval: 1m\n");
    for _ in 0..2 {
        assert_eq!(
            http_get(port, "/debug/pprof/heap?gc=1").unwrap().status,
            200
        );
    }
    let own = http_get(port, "/debug/pprof/heap?debug=1").unwrap().text();
    // "heap profile: I: B [A: AB] @ heap/<2*MemProfileRate>", then "N: M [A: B] @ 0x.. 0x.." records.
    let own_rate: u64 = own
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("heap profile: "))
        .and_then(|l| l.rsplit_once("@ heap/"))
        .and_then(|(_, r)| r.trim().parse::<u64>().ok())
        .map(|r| r / 2)
        .unwrap_or_else(|| panic!("no heap profile header: {own}"));
    let own_stacks: HashSet<Vec<u64>> = own
        .lines()
        .skip(1)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_once(" @ "))
        .map(|(_, pcs)| {
            pcs.split_whitespace()
                .map(|pc| u64::from_str_radix(pc.trim_start_matches("0x"), 16).expect("pc"))
                .collect()
        })
        .collect();
    assert!(
        own_stacks.len() >= 10,
        "prometheus's own profile lists only {} stacks",
        own_stacks.len()
    );
    let gc_count = || {
        http_get(port, "/metrics")
            .unwrap()
            .text()
            .lines()
            .find_map(|l| {
                l.strip_prefix("go_gc_duration_seconds_count ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .expect("go_gc_duration_seconds_count")
    };

    let proc_root = Path::new("/proc");
    let paths = goheap::target::procfs::ProcPaths::new(proc_root, running.pid);
    let info = goheap::binary::BinaryInfo::inspect(
        goheap::target::open::open_binary(&paths).expect("open prometheus"),
        None,
    );
    let map = goheap::target::maps::MemoryMap::read(proc_root, running.pid).unwrap();
    let bias = goheap::target::open::load_bias(&info, &map).expect("load bias");
    let mem = goheap::target::memory::VmReader::open(proc_root, running.pid).unwrap();
    use goheap::target::memory::RemoteMemory;
    let gcs_before: u64 = gc_count();
    let rate = mem.read_u64(recovered.mem_profile_rate + bias).unwrap();
    let cycle_value = mem.read_u32(cycle + bias).unwrap() >> 1;
    let mut flag = [0u8; 1];
    assert_eq!(mem.read_partial(disable + bias, &mut flag).unwrap(), 1);
    let head = mem.read_u64(recovered.mbuckets + bias).unwrap();
    let walk = goheap::runtime::walk::BucketWalker::new(&mem, info.layout, Some(&map))
        .walk(head)
        .unwrap_or_else(|e| {
            panic!("the recovered mbuckets head {head:#x} leads to no bucket list: {e}")
        });
    let gcs_after: u64 = gc_count();
    eprintln!(
        "prometheus live: MemProfileRate {rate} (own header {own_rate}), mProfCycle {cycle_value} \
         (GCs {gcs_before}..{gcs_after}), disableMemoryProfiling {}, {} buckets from head {head:#x}",
        flag[0],
        walk.buckets.len()
    );
    assert_eq!(
        rate, DEFAULT_MEM_PROFILE_RATE,
        "MemProfileRate at the recovered address"
    );
    assert_eq!(
        rate, own_rate,
        "MemProfileRate vs prometheus's own heap profile header"
    );
    assert_eq!(
        flag[0], 0,
        "disableMemoryProfiling at the recovered address"
    );
    assert!(
        (gcs_before..=gcs_after).contains(&u64::from(cycle_value)),
        "mProfCycle at the recovered address holds {cycle_value}, prometheus counted {gcs_before}..{gcs_after} GCs"
    );
    assert!(walk.warning.is_none(), "{:?}", walk.warning);
    // Buckets are never freed and new ones are prepended, so every stack of the profile read
    // before the walk is in the walked list.
    let walked: HashSet<Vec<u64>> = walk.buckets.iter().map(|b| b.stack.clone()).collect();
    let missing: Vec<_> = own_stacks.difference(&walked).collect();
    assert!(
        missing.is_empty(),
        "{} of {} stacks of prometheus's own profile are not in the list at the recovered mbuckets: {missing:x?}",
        missing.len(),
        own_stacks.len()
    );
}

/// Garbage never panics and always yields an error.
#[test]
fn garbage_inputs_are_errors() {
    struct NoFunctions;
    impl FunctionRanges for NoFunctions {
        fn function_range(&self, _: &str) -> Option<Range<u64>> {
            None
        }
    }
    /// Deterministic pseudo-random ranges, many of them absurd.
    struct WildRanges(std::cell::RefCell<XorShift>);
    impl FunctionRanges for WildRanges {
        fn function_range(&self, _: &str) -> Option<Range<u64>> {
            let x = self.0.borrow_mut().next_u64();
            let start = match x % 4 {
                0 => x,
                1 => 0x400000 + (x >> 40),
                2 => u64::MAX - (x & 0xff),
                _ => 0x401000 + (x >> 44),
            };
            let end = start.wrapping_add((x >> 20) & 0xffff);
            Some(start..end)
        }
    }

    let random = XorShift(0x9e37_79b9_7f4a_7c15).bytes(64 * 1024);
    assert!(recover_runtime_addresses(&random, &NoFunctions).is_err());
    assert!(recover_runtime_addresses(&[], &NoFunctions).is_err());

    let (plain, stripped) = twins(GO_1_27, Target::Amd64);
    let plain = std::fs::read(plain).expect("read twin");
    let stripped = std::fs::read(stripped).expect("read twin");
    let symtab = SymtabFunctions::load(&plain);
    let complete = recover_runtime_addresses(&stripped, &symtab).expect("intact twin");
    for len in [4usize, 64, 200, 4096, stripped.len() / 3] {
        let truncated = &stripped[..len];
        assert!(
            recover_runtime_addresses(truncated, &symtab).is_err(),
            "truncated to {len} bytes"
        );
    }
    // Cutting only the trailing section-name table loses names (evidence shows "?"), not addresses.
    for len in [stripped.len() - 1, stripped.len() - 64] {
        let r = recover_runtime_addresses(&stripped[..len], &symtab)
            .unwrap_or_else(|e| panic!("truncated to {len} bytes (only .shstrtab cut): {e}"));
        let addresses = |r: &RecoveredAddresses| {
            (
                r.mbuckets,
                r.mem_profile_rate,
                r.mprof_cycle,
                r.disable_memory_profiling,
            )
        };
        assert_eq!(
            addresses(&r),
            addresses(&complete),
            "truncated to {len} bytes"
        );
    }
    // A header that survives with its section table but garbage code.
    let mut scrambled = stripped.clone();
    let (_, text) = text_section(&stripped);
    let file = object::File::parse(&*stripped).expect("parse");
    let text_offset = file
        .section_by_name(".text")
        .and_then(|s| s.file_range())
        .expect(".text range")
        .0 as usize;
    for (i, b) in scrambled[text_offset..text_offset + text.len()]
        .iter_mut()
        .enumerate()
    {
        *b = random[i % random.len()];
    }
    assert!(recover_runtime_addresses(&scrambled, &symtab).is_err());
    assert!(recover_runtime_addresses(&stripped, &NoFunctions).is_err());
    for seed in 1..50u64 {
        let wild = WildRanges(std::cell::RefCell::new(XorShift(
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d),
        )));
        assert!(recover_runtime_addresses(&stripped, &wild).is_err());
    }
}
