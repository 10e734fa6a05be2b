//! Interoperability with the Go toolchain: decode a heap profile written by the
//! Go runtime itself, and check that `go tool pprof` reads what this crate writes.
//! Needs the toolchains of `fixtures/install-toolchains.sh`; fails (never skips)
//! when they are missing.

mod common;

use std::path::{Path, PathBuf};

use pprof_proto::{FlatLabelValue, Profile};

use common::support::{GO_1_23, GO_1_24};
use common::{go_command, rich_profile, run_ok, scratch_dir, RICH_COMMENT, RICH_DOC_URL};

/// Toolchain named by the task for runtime-written heap profiles.
const GO_RUNTIME_VERSION: &str = GO_1_23;
/// First toolchain whose vendored pprof knows `doc_url` (field 15).
const GO_DOC_URL_VERSION: &str = GO_1_24;

fn heapwriter_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/heapwriter.go")
}

/// 1-based number of the first line of `file` containing `needle`.
fn line_of(file: &Path, needle: &str) -> i64 {
    let text = std::fs::read_to_string(file).expect("read Go source");
    let index = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}", file.display()));
    index as i64 + 1
}

/// Runs `go tool pprof ARGS` of `version` and returns its stdout.
fn pprof(version: &str, args: &[&str], profile: &Path) -> String {
    let out = run_ok(
        go_command(version)
            .args(["tool", "pprof"])
            .args(args)
            .arg(profile)
            .env("TZ", "UTC")
            .env("PPROF_TMPDIR", profile.parent().expect("profile dir")),
    );
    String::from_utf8(out.stdout).expect("pprof output is UTF-8")
}

#[test]
fn decodes_heap_profile_written_by_go_runtime() {
    const BLOCKS: i64 = 48;
    const BLOCK_SIZE: i64 = 8192;
    let dir = scratch_dir("go-runtime-heap");
    let binary = dir.join("heapwriter");
    run_ok(
        go_command(GO_RUNTIME_VERSION)
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(heapwriter_source()),
    );
    let profile_path = dir.join("heap.pb.gz");
    run_ok(
        std::process::Command::new(&binary)
            .arg(&profile_path)
            .arg(BLOCKS.to_string())
            .arg(BLOCK_SIZE.to_string()),
    );
    let bytes = std::fs::read(&profile_path).expect("read heap profile");
    assert!(
        bytes.starts_with(&pprof_proto::GZIP_MAGIC),
        "runtime writes gzip"
    );
    let p = Profile::decode(&bytes).expect("decode runtime heap profile");

    assert_eq!(
        p.sample_types().unwrap(),
        [
            ("alloc_objects".to_string(), "count".to_string()),
            ("alloc_space".into(), "bytes".into()),
            ("inuse_objects".into(), "count".into()),
            ("inuse_space".into(), "bytes".into()),
        ]
    );
    assert_eq!(
        p.sample_type_names().unwrap(),
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        p.period_type_strings().unwrap(),
        Some(("space".into(), "bytes".into()))
    );
    assert_eq!(p.period, 1, "heapwriter sets MemProfileRate = 1");
    assert!(p.time_nanos > 0);
    let main_mapping = p.mapping.first().expect("runtime writes mappings");
    assert_eq!(
        p.string(main_mapping.filename).unwrap(),
        binary.to_str().unwrap()
    );
    assert!(main_mapping.has_functions);

    // The retained blocks: leaf main.allocateRetainedBlocks at the make() line,
    // called from main.main at the call line; every allocation sampled.
    let src = heapwriter_source();
    let make_line = line_of(&src, "make([]byte, size)");
    let call_line = line_of(&src, "allocateRetainedBlocks(blocks, size)");
    let flat = p.flat_samples().expect("resolve runtime heap profile");
    let retained: Vec<_> = flat
        .iter()
        .filter(|s| {
            s.stack.first().is_some_and(|(f, file, line)| {
                f == "main.allocateRetainedBlocks"
                    && file.ends_with("tests/go/heapwriter.go")
                    && *line == make_line
            })
        })
        .collect();
    assert_eq!(
        retained.len(),
        1,
        "one bucket for the make() site: {flat:#?}"
    );
    let s = retained[0];
    assert_eq!(s.stack[1].0, "main.main");
    assert_eq!(s.stack[1].2, call_line);
    assert_eq!(
        s.values,
        [BLOCKS, BLOCKS * BLOCK_SIZE, BLOCKS, BLOCKS * BLOCK_SIZE]
    );
    assert_eq!(
        s.labels,
        [(
            "bytes".to_string(),
            FlatLabelValue::Num {
                value: BLOCK_SIZE,
                unit: String::new()
            }
        )]
    );

    // Our re-encoding says to Go exactly what the runtime's own encoding says.
    let reencoded = dir.join("reencoded.pb");
    std::fs::write(&reencoded, p.encode_plain()).unwrap();
    let go_view_of_original = pprof(GO_RUNTIME_VERSION, &["-raw"], &profile_path);
    let go_view_of_ours = pprof(GO_RUNTIME_VERSION, &["-raw"], &reencoded);
    assert!(go_view_of_original.contains("main.allocateRetainedBlocks"));
    assert_eq!(go_view_of_ours, go_view_of_original);
}

/// Lines of `text` with trailing whitespace removed.
fn trimmed_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

/// A sample as Go's `Profile.String` prints it (`" %10d"` per value, then ids), trimmed.
fn sample_line(values: &[i64], location_ids: &[u64]) -> String {
    let values: String = values.iter().map(|v| format!(" {v:>10}")).collect();
    let ids: Vec<String> = location_ids.iter().map(u64::to_string).collect();
    format!("{values}: {}", ids.join(" "))
}

#[test]
fn go_pprof_reads_builder_output() {
    let dir = scratch_dir("go-pprof-reads-builder");
    let mut p = rich_profile();
    p.location[3].is_folded = true;
    let path = dir.join("built.pb.gz");
    std::fs::write(&path, p.encode_gzip()).unwrap();

    let raw = pprof(GO_RUNTIME_VERSION, &["-raw"], &path);
    let lines = trimmed_lines(&raw);
    let has = |want: &str| {
        assert!(lines.contains(&want), "-raw lacks line {want:?}:\n{raw}");
    };
    has(&format!("Comment: {RICH_COMMENT}"));
    has("PeriodType: space bytes");
    has("Period: 524288");
    has("Time: 2023-11-14 22:13:20.123456789 +0000 UTC");
    has("Duration: 2.5s");
    has("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes[dflt]");
    has(&sample_line(&[3, 3072, 1, 1024], &[1, 2]));
    has("                bytes:[1024 bytes]");
    has("                kind:[small]");
    // drop_frames `runtime\..*` pruned location 3 (runtime.mallocgc) from the second
    // sample; keep_frames `runtime\.keepAlloc` kept location 4 in the third.
    has(&sample_line(&[2, 8192, 2, 8192], &[1, 2]));
    has(&sample_line(&[5, 640, 0, 0], &[4, 2]));
    // Inlined frames innermost first; system name shown when it differs.
    has("     1: 0x401000 M=1 main.inlinedHelper /src/helper.go:22:3 s=20");
    has("             main.alloc /src/alloc.go:12:7 s=10(_ZN4main5allocE)");
    has("     2: 0x402000 M=1 main.main /src/main.go:7:0 s=5");
    has("     4: 0x404000 M=1 [F] runtime.keepAlloc /go/src/runtime/keep.go:33:0 s=30");
    has("1: 0x400000/0x500000/0x1000 /usr/local/bin/app abc123 [FN][FL][LN][IN]");

    let top = pprof(
        GO_RUNTIME_VERSION,
        &["-top", "-sample_index=alloc_space"],
        &path,
    );
    assert!(top.contains("main.inlinedHelper"), "-top output:\n{top}");
    assert!(top.contains("runtime.keepAlloc"), "-top output:\n{top}");
    assert!(
        !top.contains("runtime.mallocgc"),
        "drop_frames ignored:\n{top}"
    );
    let total_line = top
        .lines()
        .find(|l| l.contains("total"))
        .unwrap_or_else(|| panic!("no total in -top output:\n{top}"));
    // 3072 + 8192 + 640 bytes of alloc_space.
    assert!(total_line.contains("11904B total"), "{total_line}");
}

#[test]
fn go_pprof_proto_rewrite_preserves_content_and_doc_url() {
    let dir = scratch_dir("go-pprof-proto-rewrite");
    let p = rich_profile();
    let ours = dir.join("ours.pb.gz");
    std::fs::write(&ours, p.encode_gzip()).unwrap();
    let theirs = dir.join("theirs.pb.gz");
    run_ok(
        go_command(GO_DOC_URL_VERSION)
            .args(["tool", "pprof", "-proto", "-output"])
            .arg(&theirs)
            .arg(&ours),
    );
    let q = Profile::decode(&std::fs::read(&theirs).unwrap()).expect("decode Go's rewrite");
    assert_eq!(q.string(q.doc_url).unwrap(), RICH_DOC_URL);
    assert_eq!(
        q.string(q.drop_frames).unwrap(),
        p.string(p.drop_frames).unwrap()
    );
    assert_eq!(
        q.string(q.keep_frames).unwrap(),
        p.string(p.keep_frames).unwrap()
    );
    assert_eq!(q.string(q.default_sample_type).unwrap(), "inuse_space");
    let comments: Vec<&str> = q.comment.iter().map(|&c| q.string(c).unwrap()).collect();
    assert_eq!(comments, [RICH_COMMENT]);
    assert_eq!(
        (q.time_nanos, q.duration_nanos, q.period),
        (p.time_nanos, p.duration_nanos, p.period)
    );
    assert_eq!(q.sample_types().unwrap(), p.sample_types().unwrap());
    assert_eq!(
        q.period_type_strings().unwrap(),
        p.period_type_strings().unwrap()
    );

    // Go applied drop_frames while reading: our samples minus runtime.mallocgc frames.
    let mut expected = p.flat_samples().unwrap();
    for s in &mut expected {
        s.stack.retain(|(f, _, _)| f != "runtime.mallocgc");
    }
    let mut got = q.flat_samples().unwrap();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}
