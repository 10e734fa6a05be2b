//! The agent's `/debug/pprof/goroutine?pid=N`: the goroutine profile of a tracked process equals
//! the runtime's own (the `goroutines` fixture's), default and stripped builds; and
//! `container_go_goroutines{state}` adds up to its `runtime.NumGoroutine`; the `container_go_gc_*`
//! series equal its own runtime/metrics.

mod agent_common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use agent_common::*;
use pprof_proto::Profile;

/// (function, file, line) stacks → count, without main.main's (the fixture's writer goroutine).
fn stacks(p: &Profile) -> BTreeMap<Vec<(String, String, i64)>, i64> {
    let mut m = BTreeMap::new();
    for s in p.flat_samples().unwrap() {
        if !s.stack.iter().any(|f| f.0 == "main.main") {
            *m.entry(s.stack.clone()).or_insert(0) += s.values[0];
        }
    }
    m
}

#[test]
fn agent_serves_the_goroutine_profile_of_a_tracked_process() {
    let scratch = Scratch::new("goroutines-agent");
    let agent = Agent::start(&scratch, &["--goroutine-metrics"]);
    let mut pids = Vec::new();
    for mode in ["default", "stripped"] {
        let dir = scratch.path(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(fixture("goroutines", GO, mode));
        cmd.arg(&dir);
        let proc = start_and_wait(cmd, &dir.join("ready"), Duration::from_secs(30));
        pids.push(proc.pid);
        agent.wait_state(proc.pid, "readable", Duration::from_secs(30));
        let r = agent.get(&format!("/debug/pprof/goroutine?pid={}", proc.pid));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let served = Profile::decode(&r.body).unwrap();
        let own = Profile::decode(&std::fs::read(dir.join("goroutine.pb.gz")).unwrap()).unwrap();
        assert_eq!(stacks(&served), stacks(&own), "{mode}");
        let total: i64 = served
            .flat_samples()
            .unwrap()
            .iter()
            .map(|s| s.values[0])
            .sum();
        let count: i64 = std::fs::read_to_string(dir.join("count"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(total, count, "{mode}");
        // container_go_goroutines{state}: every state present, their sum NumGoroutine; the fixture
        // has one goroutine in a raw read syscall, the rest blocked.
        let state = |text: &str, st: &str| -> Option<f64> {
            let needle = format!("pid=\"{}\"", proc.pid);
            let want = format!("state=\"{st}\"");
            text.lines()
                .filter(|l| {
                    l.starts_with("container_go_goroutines{")
                        && l.contains(&needle)
                        && l.contains(&want)
                })
                .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        };
        // A cycle that read the process before its two forced GCs (it parks its goroutines
        // first) shows them waiting but 0 GC cycles: wait for one that came after.
        let text = wait_for(Duration::from_secs(20), "container_go_goroutines", || {
            let t = agent.metrics();
            let after_gcs = metric_for_pid(&t, "container_go_gc_cycles_total", proc.pid)
                .is_some_and(|c| c >= 2.0);
            (state(&t, "waiting").is_some() && after_gcs).then_some(t)
        });
        let states = [
            "runnable",
            "running",
            "syscall",
            "waiting",
            "copystack",
            "preempted",
            "leaked",
        ];
        let sum: f64 = states
            .iter()
            .map(|st| state(&text, st).unwrap_or_else(|| panic!("{st} missing:\n{text}")))
            .sum();
        assert_eq!(sum as i64, count, "{mode}: {text}");
        assert_eq!(state(&text, "syscall"), Some(1.0), "{mode}");
        assert_eq!(state(&text, "waiting"), Some((count - 1) as f64), "{mode}");
        // The GC series equal the fixture's own runtime/metrics (quiescent after two GCs), the
        // stripped build's too (globals by code references, offsets from the table).
        let own: std::collections::HashMap<String, f64> = std::fs::read_to_string(dir.join("gc"))
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect();
        for (metric, name) in [
            ("container_go_gc_cycles_total", "/gc/cycles/total:gc-cycles"),
            ("container_go_gc_heap_goal_bytes", "/gc/heap/goal:bytes"),
            ("container_go_gc_heap_live_bytes", "/gc/heap/live:bytes"),
            ("container_go_gc_gogc_percent", "/gc/gogc:percent"),
            ("container_go_gc_memory_limit_bytes", "/gc/gomemlimit:bytes"),
        ] {
            let got = metric_for_pid(&text, metric, proc.pid);
            assert_eq!(got, Some(own[name]), "{mode}: {metric}");
        }
    }
    // Both fixtures were killed at the end of their iteration: their goroutine and GC series go.
    wait_for(
        Duration::from_secs(20),
        "series of exited processes removed",
        || {
            let t = agent.metrics();
            let left = t.lines().any(|l| {
                (l.starts_with("container_go_goroutines{") || l.starts_with("container_go_gc_"))
                    && pids.iter().any(|p| l.contains(&format!("pid=\"{p}\"")))
            });
            (!left).then_some(())
        },
    );
    assert_eq!(agent.get("/debug/pprof/goroutine?pid=abc").status, 400);
    assert_eq!(
        agent.get("/debug/pprof/goroutine?pid=2147483647").status,
        404
    );
}
