//! Stripped binaries in the real world: Debian's `prometheus` (stripped, cgo, Go 1.19) is located by
//! code references, shown as readable by `goheap ps`, and goheap's profile of it equals the heap
//! profile it serves itself at `/debug/pprof/heap`: every sample (stack as function/file/line
//! frames, `bytes` label, all four values), hence also the in-use and allocation totals.

mod support;

use std::time::Duration;

use pprof_proto::Profile;
use support::*;

/// Sums of the four sample values (alloc_objects, alloc_space, inuse_objects, inuse_space).
fn totals(p: &Profile) -> [i64; 4] {
    let mut t = [0i64; 4];
    for s in p.flat_samples().unwrap() {
        for (t, v) in t.iter_mut().zip(&s.values) {
            *t += v;
        }
    }
    t
}

#[test]
fn debian_prometheus_matches_its_own_profile() {
    let scratch = Scratch::new("prom");
    // No scrape jobs: an idle Prometheus allocates little, so its GC (which is what publishes new
    // heap-profile data) runs only when this test makes it.
    let (running, port) = start_prometheus(&scratch, "global:\n  scrape_interval: 1m\n");
    // Some work (each /metrics answer allocates), then two collections (`gc=1` makes the handler
    // run runtime.GC() first) so that the profile holds many published samples.
    for _ in 0..200 {
        assert_eq!(http_get(port, "/metrics").unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(
            http_get(port, "/debug/pprof/heap?gc=1").unwrap().status,
            200
        );
    }

    let ps = goheap(&["ps", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).expect("ps --json");
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == running.pid)
        .expect("prometheus listed by goheap ps");
    assert_eq!(row["state"], "readable", "{row}");
    assert_eq!(row["method"], "code-reference", "{row}");
    assert!(
        row["go_version"].as_str().unwrap().starts_with("go1.19"),
        "{row}"
    );

    // goheap's read is bracketed by two of Prometheus's own profiles. What may legitimately differ
    // between reads taken back to back:
    // - a GC cycle finishing in between publishes new counts (the profile shows the last completed
    //   cycle): the two brackets then differ, and the attempt is repeated;
    // - buckets created in between (by the reads themselves) appear with all-zero values until the
    //   next GC: `compare` ignores samples that are zero in every value and exist on one side only.
    // With equal brackets nothing was published while goheap read, so its profile must equal them
    // sample by sample, values within ±1 (the float rounding of unsampling).
    let theirs = || {
        let r = http_get(port, "/debug/pprof/heap").expect("GET /debug/pprof/heap");
        assert_eq!(r.status, 200);
        Profile::decode(&r.body).expect("prometheus's profile")
    };
    let mut last = String::new();
    for attempt in 0..5 {
        let before = theirs();
        let out = goheap(&[
            "profile",
            "--pid",
            &running.pid.to_string(),
            "-o",
            "-",
            "-q",
        ]);
        let after = theirs();
        assert!(
            out.status.success(),
            "goheap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = Profile::decode(&out.stdout).expect("goheap's profile");
        let published = compare(&after, &before);
        if !published.is_empty() {
            last =
                format!("attempt {attempt}: a GC published between the brackets: {published:#?}");
            eprintln!("{last}");
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let nonzero = before
            .sample
            .iter()
            .filter(|s| s.value.iter().any(|v| *v != 0))
            .count();
        assert!(
            nonzero >= 20,
            "prometheus's own profile has only {nonzero} samples with values"
        );
        let diffs = compare(&ours, &before);
        assert!(
            diffs.is_empty(),
            "goheap's profile of prometheus differs from its own ({} vs {} samples): {diffs:#?}",
            ours.sample.len(),
            before.sample.len()
        );
        let (t_ours, t_theirs) = (totals(&ours), totals(&before));
        println!(
            "{} samples ({nonzero} with values); totals (alloc_objects, alloc_space, inuse_objects, inuse_space) ours {t_ours:?} theirs {t_theirs:?}",
            before.sample.len()
        );
        let n = before.sample.len() as i64;
        for (i, (o, t)) in t_ours.iter().zip(&t_theirs).enumerate() {
            assert!(
                (o - t).abs() <= n,
                "total {i}: ours {o}, theirs {t} (more than ±1 per sample)"
            );
        }
        assert!(t_theirs[3] > 0, "nothing in use: {t_theirs:?}");
        return;
    }
    panic!("every attempt had a GC between the brackets: {last}");
}
