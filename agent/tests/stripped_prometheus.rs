//! Stripped binaries in the real world: Debian's `prometheus` (stripped, cgo, Go 1.19) is located by
//! code references, shown as readable by `goheap ps`, and goheap's profile of it matches the heap
//! profile it serves itself at `/debug/pprof/heap`, taken at nearly the same moment.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pprof_proto::Profile;
use support::*;

fn flat_alloc_space(p: &Profile) -> (i64, Vec<(String, i64)>) {
    let mut flat: HashMap<String, i64> = HashMap::new();
    let mut total = 0;
    for s in p.flat_samples().unwrap() {
        total += s.values[1];
        if let Some(f) = s.stack.first() {
            *flat.entry(f.0.clone()).or_default() += s.values[1];
        }
    }
    let mut v: Vec<(String, i64)> = flat.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    (total, v)
}

#[test]
fn debian_prometheus_matches_its_own_profile() {
    let prom = std::path::Path::new("/usr/bin/prometheus");
    assert!(
        prom.exists(),
        "/usr/bin/prometheus missing: run fixtures/install-toolchains.sh"
    );
    let scratch = Scratch::new("prom");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        scratch.path("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['{addr}']\n"),
    )
    .unwrap();
    let child = Command::new(prom)
        .arg(format!(
            "--config.file={}",
            scratch.path("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let running = Running {
        pid: child.id() as i32,
        child,
    };
    let t0 = Instant::now();
    while http_get(port, "/-/ready").map(|r| r.status).ok() != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "prometheus not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let it scrape itself for a few seconds so that a few GC cycles publish samples.
    std::thread::sleep(Duration::from_secs(4));

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

    let mut last = String::new();
    for attempt in 0..5 {
        let resp = http_get(port, "/debug/pprof/heap").expect("GET /debug/pprof/heap");
        let (status, body) = (resp.status, resp.body);
        let out = goheap(&[
            "profile",
            "--pid",
            &running.pid.to_string(),
            "-o",
            "-",
            "-q",
        ]);
        assert!(
            out.status.success(),
            "goheap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(status, 200);
        let theirs = Profile::decode(&body).expect("prometheus's profile");
        let ours = Profile::decode(&out.stdout).expect("goheap's profile");
        let (t_total, t_top) = flat_alloc_space(&theirs);
        let (o_total, o_top) = flat_alloc_space(&ours);
        let rel = (o_total - t_total).abs() as f64 / t_total.max(1) as f64;
        let top_names =
            |v: &[(String, i64)]| v.iter().take(3).map(|x| x.0.clone()).collect::<Vec<_>>();
        last = format!(
            "attempt {attempt}: totals ours {o_total} theirs {t_total} ({:.2}%), top ours {:?} theirs {:?}",
            rel * 100.0,
            top_names(&o_top),
            top_names(&t_top)
        );
        eprintln!("{last}");
        if rel <= 0.02 && !o_top.is_empty() && top_names(&o_top)[0] == top_names(&t_top)[0] {
            return;
        }
        // A GC between the two reads publishes a new cycle; try again.
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("goheap's profile of prometheus differs from its own: {last}");
}
