//! Stripped binaries in `goheap ps` and `goheap profile`: a binary stripped with a separate debug
//! file (`.gnu_debuglink`) is located through that file; a `-s -w` build without one through code
//! references; both are shown readable with the method named, and both profiles equal the one the
//! process wrote about itself.

mod support;

use std::process::Command;

use support::*;

fn ps_row(pid: i32) -> serde_json::Value {
    let out = goheap(&["ps", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not in goheap ps: {rows}"))
}

fn profile_ok(pid: i32) -> pprof_proto::Profile {
    let out = goheap(&["profile", "--pid", &pid.to_string(), "-o", "-", "-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pprof_proto::Profile::decode(&out.stdout).expect("profile")
}

#[test]
fn stripped_with_debuglink_uses_the_debug_file() {
    let plain = fixture("heapfixture", GO_1_22, "default");
    let scratch = Scratch::new("debuglink");
    let debug = scratch.path("heapfixture.debug");
    let stripped = scratch.path("heapfixture");
    let run = |args: &[&std::ffi::OsStr]| {
        let st = Command::new("objcopy")
            .args(args)
            .current_dir(&scratch.0)
            .status()
            .expect("objcopy (binutils)");
        assert!(st.success(), "objcopy {args:?}");
    };
    run(&[
        "--only-keep-debug".as_ref(),
        plain.as_os_str(),
        debug.as_os_str(),
    ]);
    run(&[
        "--strip-all".as_ref(),
        plain.as_os_str(),
        stripped.as_os_str(),
    ]);
    // The debuglink names the file; it is found next to the binary (CRC-checked).
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run(&[link.as_ref(), stripped.as_os_str()]);

    let work = Scratch::new("debuglink-run");
    let (running, self_profile) = start_heapfixture(&stripped, &work);
    let row = ps_row(running.pid);
    assert_eq!(row["state"], "readable", "{row}");
    assert_eq!(row["method"], "debug-file", "{row}");
    let ours = profile_ok(running.pid);
    let theirs = pprof_proto::Profile::decode(&std::fs::read(self_profile).unwrap()).unwrap();
    let diffs = compare(&ours, &theirs);
    assert!(
        diffs.is_empty(),
        "differs from the runtime's own profile: {diffs:#?}"
    );
}

/// `-s -w` builds (no `.symtab`, no debug file): located by code references, and the profile equals
/// the one the process wrote about itself, as in profile_equality.rs.
#[test]
fn stripped_without_debug_file_uses_code_references() {
    for version in [GO_1_19, GO_1_27] {
        let bin = fixture("heapfixture", version, "stripped");
        let scratch = Scratch::new("coderef-ps");
        let (running, self_profile) = start_heapfixture(&bin, &scratch);
        let row = ps_row(running.pid);
        assert_eq!(row["state"], "readable", "{row}");
        assert_eq!(row["method"], "code-reference", "{row}");
        let ours = profile_ok(running.pid);
        let theirs = pprof_proto::Profile::decode(&std::fs::read(self_profile).unwrap()).unwrap();
        assert!(
            theirs.sample.len() >= 10,
            "go{version}: the fixture's own profile has only {} samples",
            theirs.sample.len()
        );
        let diffs = compare(&ours, &theirs);
        assert!(
            diffs.is_empty(),
            "go{version} -s -w: differs from the runtime's own profile: {diffs:#?}"
        );
    }
}
