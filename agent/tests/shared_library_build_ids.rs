//! The mappings of a heap profile carry the GNU build ID of every mapped object, shared libraries
//! included, as the runtime's own profile does (issue #9): pprof matches symbols and binaries by it.

mod agent_common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use agent_common::*;
use pprof_proto::Profile;

/// file -> build IDs of a profile's mappings.
fn build_ids(p: &Profile) -> BTreeMap<String, Vec<String>> {
    let s = |i: i64| p.string_table.get(i as usize).cloned().unwrap_or_default();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for map in &p.mapping {
        m.entry(s(map.filename)).or_default().push(s(map.build_id));
    }
    for v in m.values_mut() {
        v.sort();
        v.dedup();
    }
    m
}

/// The cgo fixture links libc (and the dynamic loader): goheap's profile gives their mappings the
/// build IDs the fixture's own `pprof.WriteHeapProfile` gives them.
#[test]
fn shared_library_mappings_have_the_runtimes_build_ids() {
    let s = Scratch::new("buildid");
    let profile = s.path("self.pb.gz");
    let ready = s.path("ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "cgo"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.05", "-profile"])
        .arg(&profile)
        .arg("-ready")
        .arg(&ready);
    let hf = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let ours_path = s.path("goheap.pb.gz");
    let out = goheap(&[
        "profile",
        "-p",
        &hf.pid.to_string(),
        "-q",
        "-o",
        ours_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = build_ids(&Profile::decode(&std::fs::read(&profile).unwrap()).unwrap());
    let ours = build_ids(&Profile::decode(&std::fs::read(&ours_path).unwrap()).unwrap());
    let libs: Vec<&String> = theirs
        .iter()
        .filter(|(f, ids)| f.contains(".so") && ids.iter().any(|i| !i.is_empty()))
        .map(|(f, _)| f)
        .collect();
    assert!(
        libs.iter().any(|f| f.contains("libc.so")),
        "the runtime's profile names libc with a build ID: {theirs:#?}"
    );
    for (file, ids) in &theirs {
        if ids.iter().all(|i| i.is_empty()) {
            continue;
        }
        assert_eq!(
            ours.get(file),
            Some(ids),
            "build IDs of {file}: ours {ours:#?}\nthe runtime's {theirs:#?}"
        );
    }
}
