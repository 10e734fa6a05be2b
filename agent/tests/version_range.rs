//! Go versions outside the tested range: goheap tries the nearest layout and warns, and refuses
//! (exit 8) when the layout self-check shows it is wrong. The binaries are real fixtures whose
//! `.go.buildinfo` version string was rewritten (same length) to a future release.

mod support;

use std::path::Path;

use goheap::error::exit_code;
use support::*;

/// Copies `src` to `dst`, replacing `from` with `to` inside `.go.buildinfo` only.
fn copy_with_version(src: &Path, dst: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let bin = goheap::binary::GoBinary::open(src).unwrap();
    let sec = bin.section(".go.buildinfo").unwrap().clone();
    let mut data = std::fs::read(src).unwrap();
    let range = sec.offset as usize..(sec.offset + sec.size) as usize;
    let at = data[range.clone()]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .expect("version in .go.buildinfo");
    data[range.start + at..range.start + at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(dst, &data).unwrap();
    std::fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(
        goheap::binary::GoBinary::open(dst).unwrap().go_version_raw,
        to
    );
}

/// `go1.M.P` of `version` (`1.M.P`) and the same string with the minor replaced by 99 (same length
/// for two-digit minors).
fn real_and_future(version: &str) -> (String, String) {
    let (minor, patch) = version
        .strip_prefix("1.")
        .and_then(|r| r.split_once('.'))
        .expect("1.M.P");
    assert_eq!(minor.len(), 2, "{version}");
    (format!("go{version}"), format!("go1.99.{patch}"))
}

#[test]
fn newer_version_with_known_layout_is_tried_with_a_warning() {
    let scratch = Scratch::new("future-ok");
    let bin = scratch.path("heapfixture");
    let (real, future) = real_and_future(GO_1_27);
    copy_with_version(
        &fixture("heapfixture", GO_1_27, "default"),
        &bin,
        &real,
        &future,
    );
    let (running, self_profile) = start_heapfixture(&bin, &scratch);
    let out_path = scratch.path("ours.pb.gz");
    let out = goheap(&[
        "profile",
        "--pid",
        &running.pid.to_string(),
        "-o",
        out_path.to_str().unwrap(),
        "-q",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("outside the tested range"),
        "{err}"
    );
    let ours = pprof_proto::Profile::decode(&std::fs::read(out_path).unwrap()).unwrap();
    let theirs = pprof_proto::Profile::decode(&std::fs::read(self_profile).unwrap()).unwrap();
    let diffs = compare(&ours, &theirs);
    assert!(diffs.is_empty(), "{diffs:#?}");
}

#[test]
fn newer_version_with_a_different_layout_is_refused() {
    let scratch = Scratch::new("future-bad");
    let bin = scratch.path("heapfixture");
    // A Go 1.26 binary (32-byte cycles) claiming to be 1.99 (read with the 16-byte layout).
    let (real, future) = real_and_future(GO_1_26);
    copy_with_version(
        &fixture("heapfixture", GO_1_26, "default"),
        &bin,
        &real,
        &future,
    );
    let (running, _) = start_heapfixture(&bin, &scratch);
    let out = goheap(&[
        "profile",
        "--pid",
        &running.pid.to_string(),
        "-o",
        "-",
        "-q",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit_code::UNSUPPORTED_VERSION),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("unsupported Go version {future}")),
        "{err}"
    );
}
