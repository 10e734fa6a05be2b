//! The agent's per-process series against processes whose truth is known: the in-use gauges equal
//! what the Go runtime itself reports in the heap profile a fixture writes about itself, and the
//! `container_id` / `pod_uid` labels equal the ids in the cgroup paths fixtures are placed in (the
//! shapes containerd, CRI-O, Docker and the kubelet's cgroupfs driver create).

mod agent_common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_common::cgroups::*;
use agent_common::*;
use pprof_proto::Profile;

/// A proc root holding only the given processes (symlinks into /proc), so the agent under test
/// reads nothing else on the machine.
fn private_proc_root(s: &Scratch, pids: &[i32]) -> PathBuf {
    let root = s.path("proc");
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// One series of the metrics text: name, labels, value.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (label values here never hold escaped quotes).
fn parse_metrics(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let value = value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"));
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{l:?}"));
                    let mut labels = BTreeMap::new();
                    let mut s = body;
                    while !s.is_empty() {
                        let (k, r) = s.split_once("=\"").unwrap_or_else(|| panic!("{l:?}"));
                        let (v, r) = r.split_once('"').unwrap_or_else(|| panic!("{l:?}"));
                        labels.insert(k.to_string(), v.to_string());
                        s = r.strip_prefix(',').unwrap_or(r);
                    }
                    (name.to_string(), labels)
                }
            };
            Series {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// The series of `name` for `pid` (panics unless there is exactly one).
fn series_of<'a>(all: &'a [Series], name: &str, pid: i32) -> &'a Series {
    let pid = pid.to_string();
    let found: Vec<&Series> = all
        .iter()
        .filter(|s| s.name == name && s.labels.get("pid") == Some(&pid))
        .collect();
    assert_eq!(found.len(), 1, "{name} for pid {pid}: {found:?}");
    found[0]
}

const PER_PROCESS: [&str; 4] = [
    "container_go_heap_inuse_bytes",
    "container_go_heap_inuse_objects",
    "container_go_alloc_bytes_total",
    "container_go_alloc_objects_total",
];

/// Waits until every pid is `readable` in /processes and has its in-use gauge in /metrics.
fn wait_all_readable(agent: &Agent, pids: &[i32]) {
    wait_for(Duration::from_secs(90), "all fixtures readable", || {
        let metrics = agent.metrics();
        pids.iter()
            .all(|&p| {
                agent.process(p).is_some_and(|e| e["state"] == "readable")
                    && metric_for_pid(&metrics, "container_go_heap_inuse_bytes", p).is_some()
            })
            .then_some(())
    });
}

/// The sum of one sample type over a profile.
fn total(p: &Profile, sample_type: &str) -> i64 {
    let names = p.sample_type_names().unwrap();
    let i = names
        .iter()
        .position(|n| n == sample_type)
        .unwrap_or_else(|| panic!("no {sample_type} in {names:?}"));
    p.sample.iter().map(|s| s.value[i]).sum()
}

/// `container_go_heap_inuse_bytes` / `_objects` (and `/processes`' `inuse_bytes` / `inuse_objects`)
/// equal the inuse_space / inuse_objects totals of the heap profile each fixture wrote about itself
/// (the runtime's own numbers: per bucket the same unsampling in f64, truncated, then summed, so
/// the totals are equal exactly); for Go 1.19, 1.23 and 1.27 (the three bucket layouts).
#[test]
fn inuse_gauges_equal_the_runtime_profile() {
    let s = Scratch::new("gauges");
    let mut fixtures = Vec::new();
    for version in [GO_1_19, GO_1_23, GO_1_27] {
        let bin = fixture("heapfixture", version, "default");
        let profile = s.path(&format!("{version}.pb.gz"));
        let ready = s.path(&format!("{version}.ready"));
        let mut cmd = Command::new(bin);
        cmd.env("GOGC", "off")
            .args(["-scale", "0.2", "-rate", "4096", "-profile"])
            .arg(&profile)
            .arg("-ready")
            .arg(&ready);
        let running = start_and_wait(cmd, &ready, Duration::from_secs(60));
        fixtures.push((version, running, profile));
    }
    let pids: Vec<i32> = fixtures.iter().map(|f| f.1.pid).collect();
    let root = private_proc_root(&s, &pids);
    let agent = Agent::start_with_interval(&s, "500ms", &["--proc-root", root.to_str().unwrap()]);
    wait_all_readable(&agent, &pids);
    // Two cycles later the idle fixtures' gauges are settled.
    let c = agent.cycles();
    wait_for(Duration::from_secs(30), "two more cycles", || {
        (agent.cycles() >= c + 2).then_some(())
    });
    let metrics = parse_metrics(&agent.metrics());
    for (version, running, profile) in &fixtures {
        let pid = running.pid;
        let p = Profile::decode(&std::fs::read(profile).unwrap()).unwrap();
        let samples = p.sample.len() as i64;
        assert!(samples >= 10, "go{version}: {samples} samples");
        let entry = agent.process(pid).unwrap();
        for (gauge, sample_type, field) in [
            (
                "container_go_heap_inuse_bytes",
                "inuse_space",
                "inuse_bytes",
            ),
            (
                "container_go_heap_inuse_objects",
                "inuse_objects",
                "inuse_objects",
            ),
        ] {
            let want = total(&p, sample_type);
            let got = series_of(&metrics, gauge, pid).value as i64;
            assert!(want > 0, "go{version}: {sample_type} total {want}");
            assert_eq!(
                got, want,
                "go{version}: {gauge} vs the runtime's {sample_type} total ({samples} samples)"
            );
            assert_eq!(
                entry[field].as_i64(),
                Some(got),
                "go{version}: /processes {field} vs {gauge}"
            );
        }
    }
}

// --- container and pod labels --------------------------------------------------------------------

/// A fixture placed in one cgroup path, and the labels the agent must give it.
struct Placed {
    shape: &'static str,
    cgroup: String,
    container_id: String,
    pod_uid: String,
    running: Running,
}

/// Fixtures placed in cgroups shaped like containerd's (systemd driver), CRI-O's, Docker's (systemd
/// and cgroupfs drivers) and the kubelet's cgroupfs driver, plus one left where it is (a host
/// process): the agent's four per-process series and its `/processes` entry carry exactly the
/// container id and pod uid of the path (empty strings for the host process and Docker's pod uid).
#[test]
fn container_and_pod_labels_end_to_end() {
    let s = Scratch::new("labels");
    let mut cgroups = Cgroups::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_string();
    let shapes: Vec<(&'static str, String, String, String)> = [
        "containerd",
        "cri-o",
        "docker-systemd",
        "docker-cgroupfs",
        "kubelet-cgroupfs",
    ]
    .iter()
    .enumerate()
    .map(|(i, shape)| {
        let (id, uid) = ids(i as u64);
        let u = uid.replace('-', "_");
        let (path, pod) = match *shape {
            "containerd" => (
                format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"),
                uid,
            ),
            "cri-o" => (
                format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{id}.scope"),
                uid,
            ),
            "docker-systemd" => (format!("system.slice/docker-{id}.scope"), String::new()),
            "docker-cgroupfs" => (format!("docker/{id}"), String::new()),
            _ => (format!("kubepods/burstable/pod{uid}/{id}"), uid),
        };
        (*shape, path, id, pod)
    })
    .collect();

    let bin = fixture("heapfixture", GO, "default");
    let start = |tag: &str, cgroup: Option<&Path>| {
        let ready = s.path(&format!("{tag}.ready"));
        let mut cmd = Command::new(&bin);
        cmd.env("GOGC", "off")
            .args(["-scale", "0.02", "-rate", "4096", "-ready"])
            .arg(&ready);
        if let Some(dir) = cgroup {
            join_cgroup_at_exec(&mut cmd, dir);
        }
        start_and_wait(cmd, &ready, Duration::from_secs(60))
    };
    let mut placed = Vec::new();
    for (shape, path, id, pod) in shapes {
        let dir = cgroups.make(&path);
        let running = start(shape, Some(&dir));
        placed.push(Placed {
            shape,
            cgroup: format!("/{path}"),
            container_id: id,
            pod_uid: pod,
            running,
        });
    }
    placed.push(Placed {
        shape: "host",
        cgroup: own_v2,
        container_id: String::new(),
        pod_uid: String::new(),
        running: start("host", None),
    });
    for p in &placed {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", p.running.pid)).unwrap();
        assert!(
            text.lines().any(|l| l == format!("0::{}", p.cgroup)),
            "{}: /proc/PID/cgroup is\n{text}",
            p.shape
        );
    }

    let pids: Vec<i32> = placed.iter().map(|p| p.running.pid).collect();
    let root = private_proc_root(&s, &pids);
    let agent = Agent::start_with_interval(&s, "500ms", &["--proc-root", root.to_str().unwrap()]);
    wait_all_readable(&agent, &pids);
    // The counters appear with the first read that saw growth; read the metrics once all are there.
    let metrics = wait_for(Duration::from_secs(30), "all per-process series", || {
        let m = parse_metrics(&agent.metrics());
        pids.iter()
            .all(|&pid| {
                PER_PROCESS.iter().all(|name| {
                    m.iter()
                        .any(|s| s.name == *name && s.labels.get("pid") == Some(&pid.to_string()))
                })
            })
            .then_some(m)
    });
    for p in &placed {
        let pid = p.running.pid;
        let want: BTreeMap<String, String> = [
            ("pid", pid.to_string()),
            ("binary", "heapfixture".to_string()),
            ("go_version", format!("go{GO}")),
            ("container_id", p.container_id.clone()),
            ("pod_uid", p.pod_uid.clone()),
            // No kubelet log directory here (the default /var/log has no containers/ or pods/):
            // no Kubernetes names, so the service is the binary's name.
            ("namespace", String::new()),
            ("pod", String::new()),
            ("container", String::new()),
            ("service_name", "heapfixture".to_string()),
            ("node", String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for name in PER_PROCESS {
            assert_eq!(
                series_of(&metrics, name, pid).labels,
                want,
                "{}: {name} (cgroup {})",
                p.shape,
                p.cgroup
            );
        }
        let entry = agent.process(pid).unwrap();
        assert_eq!(
            (entry["container_id"].as_str(), entry["pod_uid"].as_str()),
            (Some(p.container_id.as_str()), Some(p.pod_uid.as_str())),
            "{}: /processes entry {entry:#}",
            p.shape
        );
    }
    drop(agent);
    drop(placed);
    drop(cgroups);
}
