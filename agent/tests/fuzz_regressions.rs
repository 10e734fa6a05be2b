//! Fuzzing on stable Rust, in the normal test suite.
//!
//! 1. Every input the fuzzers ever crashed, hung or exhausted memory on (stored under
//!    `agent/fuzz/regressions/<target>/`) is replayed through the same harness code the fuzz targets
//!    run (`agent/fuzz/src/lib.rs`, compiled in here).
//! 2. A deterministic, seeded mutation loop (xorshift) drives every target with mutated seeds: real
//!    fixture binaries with random patches, mutated bucket images, profiles, maps files and `g`
//!    memory (`allgs`, `g` structs, stacks).
//!
//! Each input must return (no panic) within [`PER_INPUT_LIMIT`] of CPU time.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::{XorShift, TARGETS};

/// CPU time an input may take: generous for an unoptimized build; the slowest honest input (a
/// full pclntab parse plus lookups on a 3 MB binary) takes well under a second.
const PER_INPUT_LIMIT: Duration = Duration::from_secs(3);

/// This thread's CPU time: what an input costs, whatever else the machine runs (a seed took 5.4 s
/// of wall time once with the suite's other tests and a build competing for the two cores).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run_bounded(target: &str, input: &[u8], what: &str) {
    let t = thread_cpu();
    harness::run(target, input);
    let took = thread_cpu() - t;
    assert!(
        took < PER_INPUT_LIMIT,
        "{target}: {what} took {took:?} (limit {PER_INPUT_LIMIT:?}); input {} bytes",
        input.len()
    );
}

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions")
}

#[test]
fn stored_crashing_inputs_no_longer_crash() {
    // Every directory under regressions/ is a target's (a misnamed one would never be replayed).
    let root = regressions_dir();
    let dirs = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("regressions directory {}: {e}", root.display()));
    for d in dirs {
        let name = d.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.contains(&name.as_str()),
            "{}/{name} is no fuzz target's directory (targets: {TARGETS:?})",
            root.display()
        );
    }
    let mut replayed = 0;
    for target in TARGETS {
        // Every target has a directory, possibly holding only `.gitkeep`: a missing one fails.
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{target}: regressions directory {} is missing ({e})",
                dir.display()
            )
        });
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            run_bounded(target, &data, &p.display().to_string());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no stored regression inputs found under {}",
        root.display()
    );
}

/// Mutates the target's seeds `iterations` times (plus fresh random patch lists for the binary
/// targets) and runs each result.
fn mutation_loop(target: &str, seed: u64, iterations: usize, max_len: usize) {
    let seeds = harness::seeds::for_target(target);
    assert!(!seeds.is_empty(), "{target}: no seeds");
    let mut rng = XorShift(seed);
    for s in &seeds {
        run_bounded(target, s, "a seed");
    }
    for i in 0..iterations {
        let binary_target = matches!(target, "pclntab" | "coderef" | "elf_open");
        let input = if binary_target && i % 2 == 0 {
            harness::random_patches(&mut rng)
        } else {
            let mut v = seeds[rng.below(seeds.len())].clone();
            harness::mutate(&mut rng, &mut v, max_len);
            v
        };
        run_bounded(
            target,
            &input,
            &format!("mutation {i} (rng seed {seed:#x})"),
        );
    }
}

#[test]
fn mutated_buildinfo() {
    mutation_loop("buildinfo", 0x9e37_79b9, 3000, 4096);
}

#[test]
fn mutated_maps() {
    mutation_loop("maps", 0x1234_5678, 1000, 8192);
}

#[test]
fn mutated_bucket_walk() {
    mutation_loop("bucket_walk", 0xdead_beef, 2000, 1 << 16);
}

#[test]
fn mutated_pprof_decode() {
    mutation_loop("pprof_decode", 0xfeed_face, 2000, 1 << 16);
}

#[test]
fn patched_binaries_pclntab() {
    mutation_loop("pclntab", 0x5151_5151, 60, 4096);
}

#[test]
fn patched_binaries_coderef() {
    mutation_loop("coderef", 0xc0de_4ef5, 60, 4096);
}

#[test]
fn patched_binaries_elf_open() {
    mutation_loop("elf_open", 0xe1f0_0001, 60, 4096);
}

#[test]
fn mutated_goroutines() {
    mutation_loop("goroutines", 0x6f72_0001, 1500, 1 << 15);
}
