//! `goheap profile --json`: the summary as JSON on stdout, its numbers those of the profile it
//! wrote (totals of every sample type, and the top functions exactly as `go tool pprof -top` ranks
//! them), and a usage error when the profile itself would go to stdout.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use goheap::error::exit_code;
use pprof_proto::Profile;
use support::*;

const GO: &str = "1.23.9";

#[test]
fn json_summary_is_the_profiles_summary() {
    let s = Scratch::new("json");
    let ready = s.path("hf.ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "default"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.1", "-rate", "4096", "-ready"])
        .arg(&ready);
    let hf = start_and_wait(cmd, &ready, Duration::from_secs(60));
    let file = s.path("hf.pb.gz");
    let out = goheap(&[
        "profile",
        "-p",
        &hf.pid.to_string(),
        "--json",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "--json prints nothing on stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(j["pid"], hf.pid);
    assert_eq!(j["process_name"], "heapfixture");
    assert_eq!(j["go_version"], "go1.23.9");
    assert_eq!(j["symbols"], "symtab");
    assert_eq!(j["mem_profile_rate"], 4096);
    assert!(j["warning"].is_null());
    assert_eq!(j["output"], file.to_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(j["output_bytes"], bytes.len());

    let p = Profile::decode(&bytes).unwrap();
    let mut totals = [0i64; 4];
    for smp in p.flat_samples().unwrap() {
        for (t, v) in totals.iter_mut().zip(&smp.values) {
            *t += v;
        }
    }
    for (i, name) in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(j[name], totals[i], "{name}");
    }

    // The top functions: go tool pprof -top's first five rows by flat alloc_space, exact bytes.
    let tmp = s.path("pprof-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let top = Command::new(go_tool(GO))
        .args(["tool", "pprof", "-top", "-unit=B", "-nodecount=5"])
        .arg("-sample_index=alloc_space")
        .arg(&file)
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &s.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    let theirs: Vec<(String, i64)> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f[5..].join(" ");
            let name = name.strip_suffix(" (inline)").unwrap_or(&name).to_string();
            (name, f[0].trim_end_matches('B').parse().unwrap())
        })
        .collect();
    let ours: Vec<(String, i64)> = j["top_alloc_space"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["alloc_space"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(theirs.len(), 5, "{text}");
    assert_eq!(ours, theirs, "top functions differ from go tool pprof -top");
    let pct: BTreeMap<String, f64> = j["top_alloc_space"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["percent"].as_f64().unwrap(),
            )
        })
        .collect();
    for (name, v) in &ours {
        let want = 100.0 * *v as f64 / totals[1] as f64;
        assert!((pct[name] - want).abs() < 1e-9, "{name}");
    }

    // The profile itself cannot share stdout with the JSON.
    let out = goheap(&["profile", "-p", &hf.pid.to_string(), "--json", "-o", "-"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE),
        "{}: {} bytes on stdout",
        out.status,
        out.stdout.len()
    );
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json"));
}
