//! The fixtures are what the other tests assume they are: `fixtures/verify.py` runs or inspects
//! every binary of the matrix (see fixtures/README.md, "Verification"): the heap fixture's own
//! profile names every allocating function and, for Go >= 1.23, has stacks deeper than 64 frames;
//! the live `runtime.MemProfileRate` is 524288 (0 in `noprofile`, whose linker flag
//! `disableMemoryProfiling` is set); `steadyalloc` allocates at its configured rate; `goroutines`
//! writes its own goroutine profile and a NumGoroutine of 22; `gcstate` shows two forced GCs and
//! its 8 MiB of live heap objects in its own runtime/metrics.
//! Equality tests alone would still pass if a fixture silently stopped exercising one of these.

mod support;

use std::path::Path;
use std::process::Command;

/// Binaries per Go version in the matrix of fixtures/build.sh: heapfixture × 7 modes,
/// steadyalloc × 2, noprofile × 2, goroutines × 3, gcstate × 3.
const BINARIES_PER_VERSION: usize = 17;

#[test]
fn every_fixture_binary_is_what_the_tests_assume() {
    let manifest = support::fixtures_dir().join("manifest.json");
    assert!(
        manifest.exists(),
        "{} is missing: run fixtures/build.sh",
        manifest.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/verify.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&manifest)
        .output()
        .expect("running python3 fixtures/verify.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fixtures/verify.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    let want = support::GO_VERSIONS.len() * BINARIES_PER_VERSION;
    assert_eq!(
        ok, want,
        "verified {ok} binaries, the matrix has {want} (is {} a subset? run fixtures/build.sh):\n{stdout}",
        manifest.display()
    );
}
