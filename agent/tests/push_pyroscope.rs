//! `goheap agent --push pyroscope+http://...`: every interval's uploads to Pyroscope's ingest API,
//! received by `goheap-otelcol pyroscope-ingest` (fixtures/otelcol/pyroscope.go: no Pyroscope server
//! can be built here, so the uploads are decoded as Pyroscope's handler does, the multipart
//! `profile` part with github.com/google/pprof/profile) and compared with goheap's own delta profile
//! of the same process and interval (`--output-dir`): alloc_objects/alloc_space per stack within ±1,
//! the in-use snapshot present, the labels (`__delta__=false`), tenant and basic-auth headers.

mod agent_common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::pprof_stacks::{pprof_stacks, read_pprof};
use agent_common::*;

/// The collector binary, built (once per machine, cached) by fixtures/otelcol/build.sh.
fn otelcol_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(build_otelcol).clone()
}

fn build_otelcol() -> PathBuf {
    let bin = cache_dir().join("otelcol/goheap-otelcol");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/otelcol/build.sh");
    let st = Command::new("bash")
        .arg(&script)
        .status()
        .expect("running fixtures/otelcol/build.sh");
    assert!(st.success(), "fixtures/otelcol/build.sh failed");
    assert!(bin.exists(), "{} missing after build.sh", bin.display());
    bin
}

/// goheap's own delta profiles of `pid` in `dir`: (write time in ms since the epoch, path).
fn own_profiles(dir: &Path, pid: i32) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let rest = name
                .strip_prefix("goheap-steadyalloc-")?
                .strip_suffix(".pb.gz")?;
            let (p_pid, ms) = rest.rsplit_once('-')?;
            (p_pid == pid.to_string()).then_some((ms.parse().ok()?, p.clone()))
        })
        .collect();
    v.sort();
    v
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
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

#[test]
fn pyroscope_ingest_uploads_equal_goheaps_own_profiles() {
    let scratch = Scratch::new("push-pyroscope");
    let port = free_port();
    let received = scratch.path("ingest.jsonl");
    let _rx = Receiver(
        Command::new(otelcol_bin())
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
    let ready = scratch.path("steady.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", "20", "-ready"]).arg(&ready);
    let fx = start_and_wait(cmd, &ready, Duration::from_secs(30));
    // An idle heap fixture (GC off) that wrote its own heap profile: the truth for in-use uploads.
    let self_profile = scratch.path("heapfixture.pb.gz");
    let hready = scratch.path("heap.ready");
    let mut cmd = Command::new(fixture("heapfixture", GO, "default"));
    cmd.env("GOGC", "off")
        .args(["-scale", "0.2", "-rate", "4096", "-profile"])
        .arg(&self_profile)
        .arg("-ready")
        .arg(&hready);
    let hfx = start_and_wait(cmd, &hready, Duration::from_secs(60));
    let outdir = scratch.path("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let auth = scratch.path("basic");
    let tenant = scratch.path("tenant");
    std::fs::write(&auth, "user:pass\n").unwrap();
    std::fs::write(&tenant, "tenant-7\n").unwrap();
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
        let mine = pprof_stacks(&read_pprof(path), &["alloc_objects", "alloc_space"]);
        let mut theirs: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
        for s in u["samples"].as_array().unwrap() {
            let stack: Vec<String> = s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            let e = theirs.entry(stack).or_insert_with(|| vec![0, 0]);
            for k in 0..2 {
                e[k] += s["values"][k].as_i64().unwrap();
            }
        }
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{}",
            path.display()
        );
        for (stack, v) in &mine {
            let r = &theirs[stack];
            for k in 0..2 {
                assert!(
                    (v[k] - r[k]).abs() <= 1,
                    "{stack:?}: ours {v:?}, received {r:?}"
                );
            }
        }
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
        let mut got: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
        for s in u["samples"].as_array().unwrap() {
            let stack: Vec<String> = s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            let e = got.entry(stack).or_insert_with(|| vec![0, 0]);
            for k in 0..2 {
                e[k] += s["values"][k].as_i64().unwrap();
            }
        }
        assert_eq!(
            truth.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        );
        for (stack, v) in &truth {
            for k in 0..2 {
                assert!(
                    (v[k] - got[stack][k]).abs() <= 1,
                    "{stack:?}: runtime {v:?}, received {:?}",
                    got[stack]
                );
            }
        }
        heap_uploads += 1;
    }
    assert!(heap_uploads >= 2);
    drop(hfx);
    assert!(inuse >= compared, "{inuse} in-use uploads");
    drop(fx);
}
