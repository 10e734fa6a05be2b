//! `goheap agent --push pyroscope+http://...`: every interval's uploads to Pyroscope's ingest API,
//! received by `goheap-otelcol pyroscope-ingest` (fixtures/otelcol/pyroscope.go: no Pyroscope server
//! can be built here, so the uploads are decoded as Pyroscope's handler does, the multipart
//! `profile` part with github.com/google/pprof/profile) and compared with goheap's own delta profile
//! of the same process and interval (`--output-dir`): alloc_objects/alloc_space per stack within ±1,
//! the in-use snapshot present, the labels (`__delta__=false`), tenant and basic-auth headers.
//!
//! `--push pyroscope+connect+http://...`: the Connect `push.v1.PusherService/Push` call, received by
//! `goheap-pyroscope connect` (fixtures/pyroscope: Pyroscope's published API module
//! github.com/grafana/pyroscope/api v1.6.0, its generated `pushv1connect` handler and `push/v1`
//! types), each series' labels and pprof compared the same way; and the Connect errors that handler
//! writes (`unavailable` retried with the same payload, `invalid_argument` refused and counted).

mod agent_common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::pprof_stacks::{assert_stacks_close, pprof_stacks, read_pprof, received_stacks};
use agent_common::*;

/// Starts `goheap-pyroscope connect 127.0.0.1:PORT OUT [FAIL_CODE FAIL_COUNT]` and waits for it.
fn start_connect_receiver(out: &Path, fail: Option<(&str, u32)>) -> (Receiver, u16) {
    let port = free_port();
    let mut cmd = Command::new(built_tool("pyroscope"));
    cmd.args(["connect", &format!("127.0.0.1:{port}")]).arg(out);
    if let Some((code, n)) = fail {
        cmd.args([code, &n.to_string()]);
    }
    let rx = Receiver(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the Connect receiver"),
    );
    wait_for(Duration::from_secs(30), "the Connect receiver", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (rx, port)
}

/// The receiver, killed on drop.
struct Receiver(std::process::Child);
impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uploads(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The two processes whose profiles the Pyroscope tests push: steadyalloc allocating 20 MiB/s
/// (alloc deltas), and an idle heap fixture (GC off) that wrote its own heap profile (returned
/// third: the truth for in-use uploads).
fn start_pushed_fixtures(scratch: &Scratch) -> (Running, Running, PathBuf) {
    let ready = scratch.path("steady.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", "20", "-ready"]).arg(&ready);
    let fx = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let self_profile = scratch.path("heapfixture.pb.gz");
    let hready = scratch.path("heap.ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "default"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.2", "-rate", "4096", "-profile"])
        .arg(&self_profile)
        .arg("-ready")
        .arg(&hready);
    let hfx = start_and_wait(cmd, &hready, Duration::from_secs(60));
    (fx, hfx, self_profile)
}

/// The agent's `--output-dir` and its credential files (basic auth `user:pass`, tenant `tenant`).
fn push_files(scratch: &Scratch, tenant: &str) -> (PathBuf, PathBuf, PathBuf) {
    let outdir = scratch.path("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let auth = scratch.path("basic");
    let tenant_file = scratch.path("tenant");
    std::fs::write(&auth, "user:pass\n").unwrap();
    std::fs::write(&tenant_file, format!("{tenant}\n")).unwrap();
    (outdir, auth, tenant_file)
}

#[test]
fn pyroscope_ingest_uploads_equal_goheaps_own_profiles() {
    let scratch = Scratch::new("push-pyroscope");
    let port = free_port();
    let received = scratch.path("ingest.jsonl");
    let _rx = Receiver(
        Command::new(built_tool("otelcol"))
            .args(["pyroscope-ingest", &format!("127.0.0.1:{port}")])
            .arg(&received)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the ingest receiver"),
    );
    wait_for(Duration::from_secs(30), "the ingest receiver", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (fx, hfx, self_profile) = start_pushed_fixtures(&scratch);
    let (outdir, auth, tenant) = push_files(&scratch, "tenant-7");
    let url = format!("pyroscope+http://127.0.0.1:{port}");
    let agent = Agent::start(
        &scratch,
        &[
            "--output-dir",
            outdir.to_str().unwrap(),
            "--push",
            &url,
            "--push-basic-auth-file",
            auth.to_str().unwrap(),
            "--push-tenant-file",
            tenant.to_str().unwrap(),
            "--node-name",
            "node-a",
        ],
    );
    let pid = fx.pid.to_string();
    let ours = |u: &serde_json::Value| u["labels"]["pid"].as_str() == Some(pid.as_str());
    let is_alloc = |u: &serde_json::Value| u["sample_types"][0] == "alloc_objects/count";
    wait_for(Duration::from_secs(60), "four alloc uploads", || {
        let n = uploads(&received)
            .iter()
            .filter(|u| ours(u) && is_alloc(u))
            .count();
        (n >= 4).then_some(())
    });
    let hpid = hfx.pid.to_string();
    let heap_inuse = |u: &serde_json::Value| {
        u["labels"]["pid"].as_str() == Some(hpid.as_str())
            && u["sample_types"][0] == "inuse_objects/count"
    };
    wait_for(
        Duration::from_secs(60),
        "two in-use uploads of the heap fixture",
        || (uploads(&received).iter().filter(|u| heap_inuse(u)).count() >= 2).then_some(()),
    );
    let info = agent.process(fx.pid).expect("fixture tracked");
    let metrics = agent.get("/metrics").text();
    drop(agent);
    assert_eq!(
        metric(
            &metrics,
            &format!("goheap_agent_push_dropped_total{{reason=\"rejected\",sink=\"{url}\"}}")
        ),
        0.0,
        "the receiver accepted every upload"
    );
    let expected_auth = {
        let out = Command::new("sh")
            .args(["-c", "printf %s user:pass | base64"])
            .output()
            .unwrap();
        format!("Basic {}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let all: Vec<serde_json::Value> = uploads(&received).into_iter().filter(|u| ours(u)).collect();
    let own = own_profiles(&outdir, fx.pid);
    let mut compared = 0;
    let mut inuse = 0;
    for u in &all {
        assert_eq!(u["service"], "steadyalloc", "{u}");
        assert_eq!(u["format"], "pprof", "{u}");
        assert_eq!(u["tenant"], "tenant-7", "{u}");
        assert_eq!(u["authorization"], expected_auth.as_str(), "{u}");
        let l = &u["labels"];
        assert_eq!(l["__delta__"], "false", "{u}");
        assert_eq!(l["service_name"], "steadyalloc", "{u}");
        assert_eq!(l["binary"], "steadyalloc", "{u}");
        assert_eq!(l["go_version"], info["go_version"], "{u}");
        assert_eq!(l["node"], "node-a", "{u}");
        let from: u64 = u["from"].as_str().unwrap().parse().unwrap();
        let until: u64 = u["until"].as_str().unwrap().parse().unwrap();
        assert!(from < until, "{u}");
        assert_eq!(
            u["period"].as_i64(),
            info["mem_profile_rate"].as_i64(),
            "{u}"
        );
        if u["sample_types"] == serde_json::json!(["inuse_objects/count", "inuse_space/bytes"]) {
            // steadyalloc's sampled in-use heap is a few samples, often none: only present.
            inuse += 1;
            continue;
        }
        assert_eq!(
            u["sample_types"],
            serde_json::json!(["alloc_objects/count", "alloc_space/bytes"])
        );
        // goheap's own file of the same read, written right after it.
        let Some((_, path)) = own.iter().find(|(ms, _)| *ms >= until * 1000) else {
            panic!("no --output-dir profile after {until} s: {own:?}");
        };
        assert_stacks_close(
            &pprof_stacks(&read_pprof(path), &["alloc_objects", "alloc_space"]),
            &received_stacks(u),
            &path.display().to_string(),
        );
        compared += 1;
    }
    assert!(compared >= 4, "{compared} alloc uploads compared");
    // The heap fixture's in-use uploads equal, per stack, the profile it wrote about itself.
    let truth = pprof_stacks(
        &read_pprof(&self_profile),
        &["inuse_objects", "inuse_space"],
    );
    assert!(
        truth.len() >= 10,
        "{} stacks in the fixture's own profile",
        truth.len()
    );
    let mut heap_uploads = 0;
    for u in uploads(&received).iter().filter(|u| heap_inuse(u)) {
        assert_stacks_close(&truth, &received_stacks(u), "heap fixture in-use upload");
        heap_uploads += 1;
    }
    assert!(heap_uploads >= 2);
    drop(hfx);
    assert!(inuse >= compared, "{inuse} in-use uploads");
    drop(fx);
}

#[test]
fn connect_push_series_equal_goheaps_own_profiles_through_pyroscopes_handler() {
    let scratch = Scratch::new("push-pyroscope-connect");
    let received = scratch.path("connect.jsonl");
    let (_rx, port) = start_connect_receiver(&received, None);
    let (fx, hfx, self_profile) = start_pushed_fixtures(&scratch);
    let (outdir, auth, tenant) = push_files(&scratch, "tenant-9");
    let url = format!("pyroscope+connect+http://127.0.0.1:{port}");
    let agent = Agent::start(
        &scratch,
        &[
            "--output-dir",
            outdir.to_str().unwrap(),
            "--push",
            &url,
            "--push-basic-auth-file",
            auth.to_str().unwrap(),
            "--push-tenant-file",
            tenant.to_str().unwrap(),
            "--node-name",
            "node-c",
            "--push-timeout",
            "7s",
        ],
    );
    let pid = fx.pid.to_string();
    let hpid = hfx.pid.to_string();
    let of = |u: &serde_json::Value, p: &str| u["labels"]["pid"].as_str() == Some(p);
    let kind = |u: &serde_json::Value| u["sample_types"][0].as_str().unwrap_or("").to_string();
    wait_for(Duration::from_secs(60), "four alloc series", || {
        let n = uploads(&received)
            .iter()
            .filter(|u| of(u, &pid) && kind(u) == "alloc_objects/count")
            .count();
        (n >= 4).then_some(())
    });
    wait_for(
        Duration::from_secs(60),
        "two in-use series of the heap fixture",
        || {
            let n = uploads(&received)
                .iter()
                .filter(|u| of(u, &hpid) && kind(u) == "inuse_objects/count")
                .count();
            (n >= 2).then_some(())
        },
    );
    let info = agent.process(fx.pid).expect("fixture tracked");
    let metrics = agent.get("/metrics").text();
    drop(agent);
    let all = uploads(&received);
    let sent = metric(
        &metrics,
        &format!("goheap_agent_push_sent_total{{sink=\"{url}\"}}"),
    );
    assert!(
        sent >= 6.0 && sent <= all.len() as f64,
        "{sent} sent, {} received",
        all.len()
    );
    let expected_auth = {
        let out = Command::new("sh")
            .args(["-c", "printf %s user:pass | base64"])
            .output()
            .unwrap();
        format!("Basic {}", String::from_utf8(out.stdout).unwrap().trim())
    };
    // Every series, whoever's: the Connect request as Pyroscope's handler saw it.
    let mut ids = std::collections::BTreeSet::new();
    for u in &all {
        assert_eq!(u["error"], "", "{u}");
        assert_eq!(u["content_type"], "application/proto", "{u}");
        assert_eq!(u["connect_protocol_version"], "1", "{u}");
        // --push-timeout 7s reaches the handler as its context's deadline.
        assert_eq!(u["connect_timeout_ms"], "7000", "{u}");
        let left = u["deadline_ms"].as_i64().unwrap();
        assert!(left > 0 && left <= 7000, "{u}");
        assert_eq!(u["tenant"], "tenant-9", "{u}");
        assert_eq!(u["authorization"], expected_auth.as_str(), "{u}");
        assert_eq!(u["raw_samples"], 1, "{u}");
        let order: Vec<&str> = u["label_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "labels sorted by name: {u}");
        let l = &u["labels"];
        assert_eq!(l["__name__"], "memory", "{u}");
        assert_eq!(l["__delta__"], "false", "{u}");
        assert_eq!(l["node"], "node-c", "{u}");
        let id = u["sample_id"].as_str().unwrap().to_string();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "a UUID: {id}");
        assert!(ids.insert(id), "sample IDs are unique: {u}");
    }
    // Per request: the alloc delta (not at a first read) and then the in-use snapshot.
    let mut by_request: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for u in all.iter().filter(|u| of(u, &pid)) {
        by_request
            .entry(u["request"].as_i64().unwrap())
            .or_default()
            .push(kind(u));
    }
    for kinds in by_request.values() {
        assert!(
            kinds == &["alloc_objects/count", "inuse_objects/count"]
                || kinds == &["inuse_objects/count"],
            "{kinds:?}"
        );
    }
    // The alloc series equal goheap's own file of the same read (the same pprof time_nanos).
    let own: Vec<pprof_proto::Profile> = own_profiles(&outdir, fx.pid)
        .iter()
        .map(|(_, p)| read_pprof(p))
        .collect();
    let mut compared = 0;
    for u in all.iter().filter(|u| of(u, &pid)) {
        let l = &u["labels"];
        assert_eq!(l["service_name"], "steadyalloc", "{u}");
        assert_eq!(l["binary"], "steadyalloc", "{u}");
        assert_eq!(l["go_version"], info["go_version"], "{u}");
        assert_eq!(
            u["period"].as_i64(),
            info["mem_profile_rate"].as_i64(),
            "{u}"
        );
        if kind(u) != "alloc_objects/count" {
            continue;
        }
        assert_eq!(
            u["sample_types"],
            serde_json::json!(["alloc_objects/count", "alloc_space/bytes"])
        );
        let t = u["time_nanos"].as_i64().unwrap();
        let Some(mine) = own.iter().find(|p| p.time_nanos == t) else {
            panic!("no --output-dir profile with time_nanos {t}");
        };
        assert_eq!(mine.duration_nanos, u["duration_nanos"].as_i64().unwrap());
        assert_stacks_close(
            &pprof_stacks(mine, &["alloc_objects", "alloc_space"]),
            &received_stacks(u),
            &format!("alloc series at {t}"),
        );
        compared += 1;
    }
    assert!(compared >= 4, "{compared} alloc series compared");
    // The heap fixture's in-use series equal, per stack, the profile it wrote about itself.
    let truth = pprof_stacks(
        &read_pprof(&self_profile),
        &["inuse_objects", "inuse_space"],
    );
    assert!(truth.len() >= 10, "{} stacks", truth.len());
    let mut heap_series = 0;
    for u in all
        .iter()
        .filter(|u| of(u, &hpid) && kind(u) == "inuse_objects/count")
    {
        assert_eq!(u["labels"]["service_name"], "heapfixture", "{u}");
        assert_stacks_close(&truth, &received_stacks(u), "heap fixture in-use");
        heap_series += 1;
    }
    assert!(heap_series >= 2);
    drop(hfx);
    drop(fx);
}

#[test]
fn connect_errors_from_pyroscopes_handler_are_retried_or_refused_and_counted() {
    let scratch = Scratch::new("push-pyroscope-connect-errors");
    let out_retry = scratch.path("unavailable.jsonl");
    let out_refuse = scratch.path("invalid.jsonl");
    // The first 3 calls answered `unavailable` (HTTP 503), the first `invalid_argument` (400).
    let (_r1, p1) = start_connect_receiver(&out_retry, Some(("unavailable", 3)));
    let (_r2, p2) = start_connect_receiver(&out_refuse, Some(("invalid_argument", 1)));
    let fx = start_small_heapfixture(&scratch, "errors", 0.05);
    let u1 = format!("pyroscope+connect+http://127.0.0.1:{p1}");
    let u2 = format!("pyroscope+connect+http://127.0.0.1:{p2}");
    let agent = Agent::start(
        &scratch,
        &["--push", &u1, "--push", &u2, "--push-max-attempts", "6"],
    );
    let accepted = |path: &Path, from: i64| {
        uploads(path)
            .iter()
            .any(|u| u["error"] == "" && u["request"].as_i64() >= Some(from))
    };
    wait_for(Duration::from_secs(60), "both receivers accepting", || {
        (accepted(&out_retry, 4) && accepted(&out_refuse, 3)).then_some(())
    });
    let m = agent.metrics();
    drop(agent);
    drop(fx);
    let ids_of = |path: &Path, request: i64| -> Vec<String> {
        let mut v: Vec<String> = uploads(path)
            .iter()
            .filter(|u| u["request"].as_i64() == Some(request))
            .map(|u| u["sample_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let series = |sink: &str, what: &str, reason: &str| {
        metric(
            &m,
            &format!("goheap_agent_push_{what}_total{{reason=\"{reason}\",sink=\"{sink}\"}}"),
        )
    };
    // unavailable: the same payload (the same sample IDs) sent again until accepted.
    let first = ids_of(&out_retry, 1);
    assert!(!first.is_empty());
    for r in 2..=4 {
        assert_eq!(
            ids_of(&out_retry, r),
            first,
            "request {r} retries request 1"
        );
    }
    let lines = uploads(&out_retry);
    for u in lines.iter().filter(|u| u["request"].as_i64() <= Some(4)) {
        let want = if u["request"].as_i64() == Some(4) {
            ""
        } else {
            "unavailable"
        };
        assert_eq!(u["error"], want, "{u}");
    }
    assert_eq!(series(&u1, "failed", "http_5xx"), 3.0, "{m}");
    assert_eq!(series(&u1, "dropped", "rejected"), 0.0);
    assert_eq!(series(&u1, "dropped", "retries_exhausted"), 0.0);
    let sent1 = metric(
        &m,
        &format!("goheap_agent_push_sent_total{{sink=\"{u1}\"}}"),
    );
    let accepted1 = lines.iter().filter(|u| u["error"] == "").count() as f64;
    assert!(
        sent1 >= 1.0 && sent1 <= accepted1,
        "{sent1} sent, {accepted1} accepted"
    );
    // invalid_argument: refused once, never sent again, counted as rejected.
    let refused = ids_of(&out_refuse, 1);
    assert!(!refused.is_empty());
    let later: Vec<String> = uploads(&out_refuse)
        .iter()
        .filter(|u| u["request"].as_i64() > Some(1))
        .map(|u| u["sample_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        refused.iter().all(|id| !later.contains(id)),
        "a refused payload was sent again"
    );
    assert_eq!(series(&u2, "failed", "http_4xx"), 1.0, "{m}");
    assert_eq!(
        series(&u2, "dropped", "rejected"),
        refused.len() as f64,
        "{m}"
    );
    assert_eq!(series(&u2, "dropped", "retries_exhausted"), 0.0);
}
