//! The core acceptance test: for every Go version × build mode, goheap's profile of the running
//! heap fixture equals the heap profile the process wrote about itself (`pprof.Lookup("heap")`):
//! the same samples — stacks as function/file/line frames and the `bytes` label — with values equal
//! within ±1 (float rounding of the unsampling scale).

mod support;

use std::path::Path;

use pprof_proto::Profile;
use support::*;

/// Profiles one fixture binary and compares; returns differences prefixed with the case name.
fn check_case(version: &str, mode: &str, with_pprof_tool: bool) -> Vec<String> {
    let bin = fixture("heapfixture", version, mode);
    let scratch = Scratch::new(&format!("eq-{version}-{mode}"));
    let (running, self_profile) = start_heapfixture(&bin, &scratch);
    let out_path = scratch.path("goheap.pb.gz");
    let out = goheap(&[
        "profile",
        "--pid",
        &running.pid.to_string(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let case = format!("go{version}/{mode}");
    if !out.status.success() {
        return vec![format!(
            "{case}: goheap profile failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let ours =
        Profile::decode(&std::fs::read(&out_path).unwrap()).expect("goheap's profile decodes");
    let theirs =
        Profile::decode(&std::fs::read(&self_profile).unwrap()).expect("runtime's profile decodes");
    assert!(
        theirs.sample.len() >= 10,
        "{case}: the fixture's own profile has only {} samples",
        theirs.sample.len()
    );
    let mut diffs: Vec<String> = compare(&ours, &theirs)
        .into_iter()
        .map(|d| format!("{case}: {d}"))
        .collect();
    if with_pprof_tool {
        diffs.extend(
            check_with_go_pprof(version, &out_path, &self_profile, &bin)
                .into_iter()
                .map(|d| format!("{case}: {d}")),
        );
    }
    diffs
}

/// `go tool pprof -top` opens goheap's file and shows the same top function as on the runtime's file.
fn check_with_go_pprof(version: &str, ours: &Path, theirs: &Path, _bin: &Path) -> Vec<String> {
    let go = go_tool(version);
    let top = |p: &Path| {
        let out = std::process::Command::new(&go)
            .args([
                "tool",
                "pprof",
                "-top",
                "-nodecount=3",
                "-sample_index=inuse_space",
            ])
            .arg(p)
            .env("PPROF_TMPDIR", std::env::temp_dir())
            .output()
            .expect("go tool pprof");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok_ours, text_ours) = top(ours);
    let (ok_theirs, text_theirs) = top(theirs);
    let first_fn = |t: &str| {
        t.lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .and_then(|l| l.split_whitespace().last().map(str::to_string))
            .unwrap_or_default()
    };
    let mut d = Vec::new();
    if !ok_ours {
        d.push(format!(
            "go tool pprof failed on goheap's profile: {text_ours}"
        ));
    } else if !ok_theirs {
        d.push(format!(
            "go tool pprof failed on the runtime's profile: {text_theirs}"
        ));
    } else if first_fn(&text_ours).is_empty() || first_fn(&text_ours) != first_fn(&text_theirs) {
        d.push(format!(
            "pprof -top differs:\n--- goheap\n{text_ours}\n--- runtime\n{text_theirs}"
        ));
    }
    d
}

fn run_matrix(versions: &[&str]) {
    let mut diffs = Vec::new();
    for v in versions {
        for m in LIVE_MODES {
            diffs.extend(check_case(v, m, *m == "default"));
        }
    }
    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(40).collect();
        panic!(
            "{} differences:\n{}",
            diffs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn go1_19_profiles_equal_runtime() {
    run_matrix(&[GO_1_19]);
}
#[test]
fn go1_21_profiles_equal_runtime() {
    run_matrix(&[GO_1_21]);
}
#[test]
fn go1_22_profiles_equal_runtime() {
    run_matrix(&[GO_1_22]);
}
#[test]
fn go1_23_profiles_equal_runtime() {
    run_matrix(&[GO_1_23]);
}
#[test]
fn go1_24_profiles_equal_runtime() {
    run_matrix(&[GO_1_24]);
}
#[test]
fn go1_25_profiles_equal_runtime() {
    run_matrix(&[GO_1_25]);
}
#[test]
fn go1_26_profiles_equal_runtime() {
    run_matrix(&[GO_1_26]);
}
#[test]
fn go1_27_profiles_equal_runtime() {
    run_matrix(&[GO_1_27]);
}

/// `goheap profile` streams the profile (each sample encoded and gzipped as it is built) and
/// summarizes it from ids; the agent builds the same profile in memory. Both forms are the same
/// bytes (but for `time_nanos`), and the id-based summary is the one computed from resolved frames.
#[test]
fn streamed_profile_is_the_in_memory_profile() {
    use goheap::profile::oneshot::{ProfileRequest, Profiler, SUMMARY_TOP};
    use std::io::Read;
    for (version, mode) in [("1.19", "default"), ("1.23.9", "pie"), ("1.27.3", "cgo")] {
        let case = format!("go{version}/{mode}");
        let bin = fixture("heapfixture", version, mode);
        let scratch = Scratch::new(&format!("stream-{version}-{mode}"));
        let (running, _) = start_heapfixture(&bin, &scratch);
        let mut profiler = Profiler::new("/proc".into());
        let read = profiler
            .read(&ProfileRequest {
                pid: running.pid,
                require_symbol_table: false,
            })
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (gz, summary) = read.write_gzip(Vec::new(), true).unwrap();
        let mut streamed = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut streamed)
            .unwrap();
        let in_memory = read.build().unwrap();
        let mut decoded = Profile::decode(&streamed).unwrap();
        assert_eq!(
            decoded.encode_plain(),
            streamed,
            "{case}: canonical encoding"
        );
        decoded.time_nanos = in_memory.time_nanos;
        assert_eq!(decoded.encode_plain(), in_memory.encode_plain(), "{case}");
        assert!(in_memory.sample.len() >= 10, "{case}");

        // The summary from resolved frames, as it was computed before it used ids.
        let summary = summary.unwrap();
        let mut totals = [0i64; 4];
        let mut flat: std::collections::HashMap<String, i64> = Default::default();
        for s in in_memory.flat_samples().unwrap() {
            for (t, v) in totals.iter_mut().zip(&s.values) {
                *t += v;
            }
            *flat.entry(s.stack[0].0.clone()).or_default() += s.values[1];
        }
        let mut top: Vec<(String, i64)> = flat.into_iter().filter(|(_, b)| *b > 0).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(SUMMARY_TOP);
        assert_eq!(
            [
                summary.alloc_objects,
                summary.alloc_bytes,
                summary.inuse_objects,
                summary.inuse_bytes
            ],
            totals,
            "{case}"
        );
        assert_eq!(summary.top_alloc, top, "{case}");
        assert_eq!(
            goheap::profile::summary::summarize(&in_memory, SUMMARY_TOP),
            summary,
            "{case}"
        );
    }
}

/// The comparison itself must be able to fail: a profile with one value changed by 2 is different.
#[test]
fn comparison_detects_differences() {
    let bin = fixture("heapfixture", GO_1_23, "default");
    let scratch = Scratch::new("cmp");
    let (_running, self_profile) = start_heapfixture(&bin, &scratch);
    let theirs = Profile::decode(&std::fs::read(&self_profile).unwrap()).unwrap();
    assert!(compare(&theirs, &theirs).is_empty());
    let mut changed = theirs.clone();
    let i = changed.sample.iter().position(|s| s.value[1] != 0).unwrap();
    changed.sample[i].value[1] += 2;
    assert_eq!(compare(&changed, &theirs).len(), 1);
    let mut fewer = theirs.clone();
    fewer.sample.remove(i);
    assert_eq!(compare(&fewer, &theirs).len(), 1);
}

/// The matrix is what the scripts build: the default `GOHEAP_GO_VERSIONS` of `fixtures/build.sh`
/// (which fixtures exist) and of `fixtures/install-toolchains.sh` (which toolchains exist) are
/// exactly [`GO_VERSIONS`]. One list, checked against the two places a shell script needs it.
#[test]
fn matrix_is_what_the_fixture_scripts_build() {
    for (script, var) in [
        ("build.sh", "VERSIONS"),
        ("install-toolchains.sh", "GO_VERSIONS"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(script);
        let text = std::fs::read_to_string(&path).unwrap();
        let prefix = format!("{var}=\"${{GOHEAP_GO_VERSIONS:-");
        let list: Vec<&str> = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{script}: no {prefix}...}}\" line"))
            .trim_end_matches("}\"")
            .split_whitespace()
            .collect();
        assert_eq!(list, GO_VERSIONS, "{script}: default {var}");
    }
}
