//! Locating and running the Go toolchains that `fixtures/install-toolchains.sh` installs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// The repository's one test-support module (Go versions, cache and toolchain paths, the RNG).
#[path = "../../../agent/tests/support/mod.rs"]
pub mod support;

use support::{cache_dir, go_tool, gocache};

/// A `go` command of toolchain `version`, offline and with its own build cache.
pub fn go_command(version: &str) -> Command {
    let mut cmd = Command::new(go_tool(version));
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "auto")
        .env("GOCACHE", gocache(version))
        .env("GOPATH", cache_dir().join("gopath"))
        .env_remove("GOROOT");
    cmd
}

/// Runs `cmd`, failing the test with its output if it does not exit 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh scratch directory for one test under cargo's per-target tmp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pprof-proto")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

use pprof_proto::{FrameLine, MappingInfo, Profile, ProfileBuilder, SampleLabel};

/// Regexp stored in `drop_frames` of [`rich_profile`] (pprof anchors it as `^(...)$`).
pub const RICH_DROP_FRAMES: &str = r"runtime\..*";
/// Regexp stored in `keep_frames` of [`rich_profile`].
pub const RICH_KEEP_FRAMES: &str = r"runtime\.keepAlloc";
/// Comment stored in [`rich_profile`].
pub const RICH_COMMENT: &str = "built by pprof-proto tests";
/// Documentation URL stored in [`rich_profile`].
pub const RICH_DOC_URL: &str = "https://example.invalid/docs/heap";

/// A heap-shaped profile that sets every field the builder can set: four sample
/// types with a default, period type/period, time/duration, comment, drop/keep
/// frames, doc URL, a mapping with all flags, a location with two inlined lines
/// (innermost first), a function whose system name differs, and string and
/// numeric labels.
pub fn rich_profile() -> Profile {
    let mut b = ProfileBuilder::new();
    b.add_sample_type("alloc_objects", "count")
        .add_sample_type("alloc_space", "bytes")
        .add_sample_type("inuse_objects", "count")
        .add_sample_type("inuse_space", "bytes")
        .set_default_sample_type("inuse_space")
        .set_period_type("space", "bytes")
        .set_period(524_288)
        .set_time_nanos(1_700_000_000_123_456_789)
        .set_duration_nanos(2_500_000_000)
        .add_comment(RICH_COMMENT)
        .set_drop_frames(RICH_DROP_FRAMES)
        .set_keep_frames(RICH_KEEP_FRAMES)
        .set_doc_url(RICH_DOC_URL);
    let mapping = b.mapping(&MappingInfo {
        memory_start: 0x40_0000,
        memory_limit: 0x50_0000,
        file_offset: 0x1000,
        filename: "/usr/local/bin/app",
        build_id: "abc123",
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    });
    let main_main = b.function("main.main", "main.main", "/src/main.go", 5);
    let alloc = b.function("main.alloc", "_ZN4main5allocE", "/src/alloc.go", 10);
    let helper = b.function(
        "main.inlinedHelper",
        "main.inlinedHelper",
        "/src/helper.go",
        20,
    );
    let mallocgc = b.function(
        "runtime.mallocgc",
        "runtime.mallocgc",
        "/go/src/runtime/malloc.go",
        900,
    );
    let keep = b.function(
        "runtime.keepAlloc",
        "runtime.keepAlloc",
        "/go/src/runtime/keep.go",
        30,
    );
    let frame = |function, line, column| FrameLine {
        function,
        line,
        column,
    };
    let inlined = b
        .location(
            0x40_1000,
            Some(mapping),
            0x40_1000,
            &[frame(helper, 22, 3), frame(alloc, 12, 7)],
        )
        .expect("location");
    let caller = b
        .location(
            0x40_2000,
            Some(mapping),
            0x40_2000,
            &[frame(main_main, 7, 0)],
        )
        .expect("location");
    let malloc = b
        .location(
            0x40_3000,
            Some(mapping),
            0x40_3000,
            &[frame(mallocgc, 950, 0)],
        )
        .expect("location");
    let kept = b
        .location(0x40_4000, Some(mapping), 0x40_4000, &[frame(keep, 33, 0)])
        .expect("location");
    b.add_sample(
        &[inlined, caller],
        &[3, 3072, 1, 1024],
        &[
            SampleLabel::Str {
                key: "kind",
                value: "small",
            },
            SampleLabel::Num {
                key: "bytes",
                value: 1024,
                unit: "bytes",
            },
        ],
    )
    .expect("sample");
    b.add_sample(
        &[malloc, inlined, caller],
        &[2, 8192, 2, 8192],
        &[SampleLabel::Num {
            key: "bytes",
            value: 4096,
            unit: "bytes",
        }],
    )
    .expect("sample");
    b.add_sample(&[kept, caller], &[5, 640, 0, 0], &[])
        .expect("sample");
    b.build()
}
