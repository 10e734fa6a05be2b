//! Discovery for pull and Kubernetes names, against real processes and a real Prometheus:
//!
//! - Go fixtures run in cgroup v2 paths shaped like containerd's (systemd driver) and a host
//!   process; the only thing faked is the node's container-runtime data that the kubelet keeps
//!   on disk (`/var/log/containers/<pod>_<ns>_<container>-<id>.log` symlinks into
//!   `/var/log/pods/<ns>_<pod>_<uid>/<container>/`), made in a temp dir and given to the agent by
//!   `--kubelet-log-dir`.
//! - The names reach all three outputs: `/metrics` series labels, `/processes` labels and
//!   `/targets` groups and the labels of pushed (Pyroscope `/ingest`) profiles, also for a container
//!   whose log link appears only after the agent saw it.
//! - Prometheus (Debian's `/usr/bin/prometheus`) with `http_sd_configs` on `/targets` lists every
//!   fixture with its labels and a scrape URL carrying `?pid=`, scrapes `/metrics?pid=` (up) and
//!   stores the series under the process's labels.

mod agent_common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_common::cgroups::*;
use agent_common::*;
use serde_json::Value;

fn private_proc_root(s: &Scratch, pids: &[i32]) -> PathBuf {
    let root = s.path("proc");
    std::fs::create_dir_all(&root).unwrap();
    for pid in pids {
        symlink(format!("/proc/{pid}"), root.join(pid.to_string())).unwrap();
    }
    root
}

/// One fixture and what the agent must say about it.
struct Fixture {
    running: Running,
    container_id: String,
    pod_uid: String,
    namespace: String,
    pod: String,
    container: String,
}

impl Fixture {
    /// The labels the agent must give this process (empty values for what is unknown).
    fn want(&self, node: &str) -> BTreeMap<String, String> {
        self.labels(node, &self.namespace, &self.pod, &self.container)
    }

    /// The labels before the kubelet lists its container (no Kubernetes names).
    fn want_unnamed(&self, node: &str) -> BTreeMap<String, String> {
        self.labels(node, "", "", "")
    }

    fn labels(&self, node: &str, ns: &str, pod: &str, container: &str) -> BTreeMap<String, String> {
        let service = if container.is_empty() {
            "heapfixture".to_string()
        } else {
            format!("{ns}/{container}")
        };
        [
            ("pid", self.running.pid.to_string()),
            ("binary", "heapfixture".into()),
            ("go_version", format!("go{GO}")),
            ("container_id", self.container_id.clone()),
            ("pod_uid", self.pod_uid.clone()),
            ("namespace", ns.into()),
            ("pod", pod.into()),
            ("container", container.into()),
            ("service_name", service),
            ("node", node.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Writes the kubelet's on-node layout for one container: the pod's log directory with the
/// container's log file, and the `containers/` symlink naming pod, namespace, container and id.
fn kubelet_layout(dir: &Path, f: &Fixture) {
    let pod_dir = dir
        .join("pods")
        .join(format!("{}_{}_{}", f.namespace, f.pod, f.pod_uid));
    std::fs::create_dir_all(pod_dir.join(&f.container)).unwrap();
    let log = pod_dir.join(&f.container).join("0.log");
    std::fs::write(&log, "").unwrap();
    std::fs::create_dir_all(dir.join("containers")).unwrap();
    symlink(
        &log,
        dir.join("containers").join(format!(
            "{}_{}_{}-{}.log",
            f.pod, f.namespace, f.container, f.container_id
        )),
    )
    .unwrap();
}

/// Starts a small heapfixture, in the cgroup `cgroup` if given.
fn start_fixture(s: &Scratch, tag: &str, cgroup: Option<&Path>) -> Running {
    let bin = fixture("heapfixture", GO, "default");
    let ready = s.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(&bin);
    cmd.env("GOGC", "off")
        .args(["-scale", "0.02", "-rate", "4096", "-ready"])
        .arg(&ready);
    if let Some(dir) = cgroup {
        join_cgroup_at_exec(&mut cmd, dir);
    }
    start_and_wait(cmd, &ready, Duration::from_secs(60))
}

/// Three fixtures in containerd-shaped pod cgroups (pods `shop/web-…` container `server`,
/// `shop/web-…` container `sidecar`, `batch/job-…` container `worker`) and one host process.
fn start_fixtures(s: &Scratch, cgroups: &mut Cgroups) -> Vec<Fixture> {
    let mut out = Vec::new();
    let pods = [
        ("shop", "web-7d9f8b6c5d-x2x4z", "server", 0u64),
        ("shop", "web-7d9f8b6c5d-x2x4z", "sidecar", 1),
        ("batch", "job-28391-q7k2p", "worker", 2),
    ];
    let (_, web_uid) = ids(100);
    for (ns, pod, container, n) in pods {
        let (id, own_uid) = ids(n);
        let uid = if ns == "shop" {
            web_uid.clone()
        } else {
            own_uid
        };
        let u = uid.replace('-', "_");
        let path = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{id}.scope"
        );
        let dir = cgroups.make(&path);
        out.push(Fixture {
            running: start_fixture(s, container, Some(&dir)),
            container_id: id,
            pod_uid: uid,
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
        });
    }
    out.push(Fixture {
        running: start_fixture(s, "host", None),
        container_id: String::new(),
        pod_uid: String::new(),
        namespace: String::new(),
        pod: String::new(),
        container: String::new(),
    });
    out
}

/// Parses metrics text into (name, labels) of every series.
fn series(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
        .map(|l| {
            let (name, rest) = l.split_once('{').unwrap();
            let body = rest.rsplit_once('}').unwrap().0;
            let mut labels = BTreeMap::new();
            let mut s = body;
            while !s.is_empty() {
                let (k, r) = s.split_once("=\"").unwrap_or_else(|| panic!("{l:?}"));
                let (v, r) = r.split_once('"').unwrap_or_else(|| panic!("{l:?}"));
                labels.insert(k.to_string(), v.to_string());
                s = r.strip_prefix(',').unwrap_or(r);
            }
            (name.to_string(), labels)
        })
        .collect()
}

const PER_PROCESS: [&str; 4] = [
    "container_go_heap_inuse_bytes",
    "container_go_heap_inuse_objects",
    "container_go_alloc_bytes_total",
    "container_go_alloc_objects_total",
];

/// Whether a JSON label value is the pid (label values are strings).
fn is_pid(v: &Value, pid: i32) -> bool {
    v.as_str() == Some(pid.to_string().as_str())
}

fn json_labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("labels object: {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The `/targets` group of `pid`, if listed.
fn target_group(agent: &Agent, pid: i32) -> Option<Value> {
    let r = agent.get("/targets");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let groups: Value = serde_json::from_slice(&r.body).expect("/targets is JSON");
    groups
        .as_array()
        .expect("/targets is a list of target groups")
        .iter()
        .find(|g| is_pid(&g["labels"]["pid"], pid))
        .cloned()
}

/// Waits until every fixture's four series carry exactly `want` labels in /metrics.
fn wait_series(agent: &Agent, fixtures: &[Fixture], node: &str) {
    wait_for(
        Duration::from_secs(90),
        "every fixture's series with its labels",
        || {
            let all = series(&agent.metrics());
            fixtures
                .iter()
                .all(|f| {
                    let want = f.want(node);
                    PER_PROCESS.iter().all(|name| {
                        let of_pid: Vec<_> = all
                            .iter()
                            .filter(|(n, l)| {
                                n == name && l.get("pid") == Some(&f.running.pid.to_string())
                            })
                            .collect();
                        of_pid.len() == 1 && of_pid[0].1 == want
                    })
                })
                .then_some(())
        },
    );
}

/// The names of containers the kubelet lists reach `/metrics`, `/processes` and `/targets`, also
/// for a container whose log link the kubelet makes only after the agent first saw the process;
/// a host process keeps empty names and its binary as the service name.
#[test]
fn kubernetes_names_reach_metrics_processes_and_targets() {
    let s = Scratch::new("k8s-names");
    let mut cgroups = Cgroups::new();
    let fixtures = start_fixtures(&s, &mut cgroups);
    let kubelet = s.path("kubelet");
    std::fs::create_dir_all(kubelet.join("containers")).unwrap();
    std::fs::create_dir_all(kubelet.join("pods")).unwrap();
    // The first two containers are listed from the start; `worker` only later.
    for f in &fixtures[..2] {
        kubelet_layout(&kubelet, f);
    }
    let pids: Vec<i32> = fixtures.iter().map(|f| f.running.pid).collect();
    let root = private_proc_root(&s, &pids);
    let node = "node-a";
    let advertise = "goheap-test.invalid:9465";
    let ingest = IngestLog::start();
    let push = format!("pyroscope+http://127.0.0.1:{}", ingest.port);
    let agent = Agent::start_with_interval(
        &s,
        "500ms",
        &[
            "--proc-root",
            root.to_str().unwrap(),
            "--kubelet-log-dir",
            kubelet.to_str().unwrap(),
            "--node-name",
            node,
            "--advertise-address",
            advertise,
            "--push",
            &push,
        ],
    );
    // Before its link exists, `worker` is known only as a container of a pod nobody lists.
    let early: Vec<BTreeMap<String, String>> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == 2 {
                f.want_unnamed(node)
            } else {
                f.want(node)
            }
        })
        .collect();
    wait_for(Duration::from_secs(90), "all readable", || {
        pids.iter()
            .all(|&p| agent.process(p).is_some_and(|e| e["state"] == "readable"))
            .then_some(())
    });
    let metrics_early = series(&agent.metrics());
    for (f, want) in fixtures.iter().zip(early) {
        for name in PER_PROCESS {
            let got: Vec<_> = metrics_early
                .iter()
                .filter(|(n, l)| n == name && l.get("pid") == Some(&f.running.pid.to_string()))
                .map(|(_, l)| l.clone())
                .collect();
            // A counter may not be there yet (no growth seen); when it is, it is labelled so.
            assert!(
                got.len() <= 1 && got.iter().all(|l| *l == want),
                "{name}: {got:?} vs {want:?}"
            );
        }
    }
    // The kubelet makes the link for `worker`: the names follow within a few cycles, and the
    // series under the old labels are gone (exactly one series per name and pid).
    kubelet_layout(&kubelet, &fixtures[2]);
    wait_series(&agent, &fixtures, node);
    for f in &fixtures {
        let pid = f.running.pid;
        let want = f.want(node);
        let entry = agent.process(pid).unwrap();
        assert_eq!(json_labels(&entry["labels"]), want, "/processes of {pid}");
        assert_eq!(
            (entry["container_id"].as_str(), entry["pod_uid"].as_str()),
            (Some(f.container_id.as_str()), Some(f.pod_uid.as_str()))
        );
        let group = target_group(&agent, pid).unwrap_or_else(|| panic!("{pid} not in /targets"));
        assert_eq!(group["targets"], serde_json::json!([advertise]));
        let mut labels = json_labels(&group["labels"]);
        assert_eq!(labels.remove("__param_pid"), Some(pid.to_string()));
        assert_eq!(
            labels.remove("__metrics_path__").as_deref(),
            Some("/metrics")
        );
        assert_eq!(labels, want, "/targets of {pid}");
    }
    // /metrics?pid= serves exactly that process's four series.
    let f = &fixtures[0];
    let one = agent.get(&format!("/metrics?pid={}", f.running.pid));
    assert_eq!(one.status, 200);
    let one = series(&one.text());
    assert_eq!(one.len(), 4, "{one:?}");
    assert!(one.iter().all(|(_, l)| *l == f.want(node)), "{one:?}");
    // A pid the agent does not track is a 404 with its reason, not an empty 200.
    let unknown = agent.get(&format!("/metrics?pid={}", i32::MAX));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(unknown.text().contains("is tracked"), "{}", unknown.text());
    // Pushed profiles carry the same names: each process's Pyroscope application name.
    for f in &fixtures {
        let want = f.want(node);
        let app = wait_for(
            Duration::from_secs(30),
            &format!("an upload of pid {} with its names", f.running.pid),
            || {
                ingest.names().into_iter().find(|n| {
                    n.contains(&format!(",pid={},", f.running.pid))
                        && (f.pod.is_empty() || n.contains(&format!(",pod={},", f.pod)))
                })
            },
        );
        for key in [
            "service_name",
            "namespace",
            "pod",
            "container",
            "container_id",
            "pod_uid",
            "node",
        ] {
            // Every label but service_name follows a comma; empty ones are left out.
            if want[key].is_empty() {
                assert!(!app.contains(&format!(",{key}=")), "{key}: {app}");
            } else {
                let sep = if key == "service_name" { '{' } else { ',' };
                assert!(
                    app.contains(&format!("{sep}{key}={},", want[key])),
                    "{key}: {app}"
                );
            }
        }
        assert!(
            app.starts_with(&format!("{}{{", want["service_name"])),
            "{app}"
        );
    }
    drop(agent);
    drop(fixtures);
    drop(cgroups);
}

/// Records the `name` of every Pyroscope `/ingest` upload it receives (answering 200), to check
/// the labels pushed profiles carry; the push protocol itself is checked against real receivers
/// in push_pyroscope.rs and push_otlp.rs.
struct IngestLog {
    port: u16,
    names: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl IngestLog {
    fn start() -> IngestLog {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = names.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match conn.read(&mut chunk) {
                        Ok(n) if n > 0 && buf.len() < 1 << 20 => buf.extend_from_slice(&chunk[..n]),
                        _ => break None,
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let target = head.split(' ').nth(1).unwrap_or("");
                if let Some((_, query)) = target.split_once('?') {
                    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                        if k == "name" {
                            seen.lock().unwrap().push(v.into_owned());
                        }
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        IngestLog { port, names }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

/// Prometheus' `/api/v1/query` result for `query`: (labels, value) of each series.
fn prom_query(port: u16, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let r = http_get(port, &format!("/api/v1/query?query={}", urlencode(query)))
        .expect("prometheus query");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                json_labels(&s["metric"]),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// A real Prometheus with `http_sd_configs` pointing at `/targets` discovers every fixture: its
/// `/api/v1/targets` lists each with the agent's labels and a scrape URL carrying `?pid=`, for a
/// metrics job (`/metrics?pid=`, health up, series stored under the process's labels and equal
/// to the agent's own) and a profile job (`/debug/pprof/heap?pid=`, the path a profile scraper
/// uses; Prometheus cannot parse a pprof body, so only its discovery is checked).
#[test]
fn prometheus_discovers_every_fixture_through_targets() {
    let s = Scratch::new("targets-prom");
    let mut cgroups = Cgroups::new();
    let fixtures = start_fixtures(&s, &mut cgroups);
    let kubelet = s.path("kubelet");
    for f in &fixtures[..3] {
        kubelet_layout(&kubelet, f);
    }
    let pids: Vec<i32> = fixtures.iter().map(|f| f.running.pid).collect();
    let root = private_proc_root(&s, &pids);
    let node = "node-b";
    let agent = Agent::start_with_interval(
        &s,
        "500ms",
        &[
            "--proc-root",
            root.to_str().unwrap(),
            "--kubelet-log-dir",
            kubelet.to_str().unwrap(),
            "--node-name",
            node,
        ],
    );
    wait_series(&agent, &fixtures, node);
    let address = format!("127.0.0.1:{}", agent.port);
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: goheap-metrics
    honor_labels: true
    http_sd_configs:
      - url: http://{address}/targets
        refresh_interval: 1s
  - job_name: goheap-heap
    http_sd_configs:
      - url: http://{address}/targets
        refresh_interval: 1s
    relabel_configs:
      - target_label: __metrics_path__
        replacement: /debug/pprof/heap
"#
    );
    let (_prom, prom) = start_prometheus(&s, &config);
    let targets = wait_for(
        Duration::from_secs(60),
        "prometheus lists every fixture in both jobs, the metrics job up",
        || {
            let r = http_get(prom, "/api/v1/targets?state=active").ok()?;
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            let active = v["data"]["activeTargets"].as_array()?.clone();
            let all_there = pids.iter().all(|pid| {
                ["goheap-metrics", "goheap-heap"].iter().all(|job| {
                    active.iter().any(|t| {
                        t["labels"]["job"] == *job
                            && is_pid(&t["labels"]["pid"], *pid)
                            && (*job != "goheap-metrics" || t["health"] == "up")
                    })
                })
            });
            (all_there && active.len() == 2 * pids.len()).then_some(active)
        },
    );
    for f in &fixtures {
        let pid = f.running.pid;
        for (job, path) in [
            ("goheap-metrics", "/metrics"),
            ("goheap-heap", "/debug/pprof/heap"),
        ] {
            let t = targets
                .iter()
                .find(|t| t["labels"]["job"] == job && is_pid(&t["labels"]["pid"], pid))
                .unwrap();
            assert_eq!(
                t["scrapeUrl"],
                format!("http://{address}{path}?pid={pid}"),
                "{job} {pid}"
            );
            assert_eq!(t["discoveredLabels"]["__param_pid"], pid.to_string());
            // Prometheus drops empty label values; everything else is the agent's label set.
            let mut want: BTreeMap<String, String> = f
                .want(node)
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .collect();
            want.insert("job".into(), job.into());
            want.insert("instance".into(), address.clone());
            assert_eq!(json_labels(&t["labels"]), want, "{job} {pid}");
        }
    }
    // What Prometheus stored from the metrics job: each fixture's in-use gauge under its labels,
    // equal to the agent's (idle fixtures: the gauge is settled).
    let stored = wait_for(Duration::from_secs(30), "the in-use gauges stored", || {
        let r = prom_query(
            prom,
            "container_go_heap_inuse_bytes{job=\"goheap-metrics\"}",
        );
        (r.len() == fixtures.len()).then_some(r)
    });
    let text = agent.metrics();
    for f in &fixtures {
        let pid = f.running.pid;
        let (labels, value) = stored
            .iter()
            .find(|(l, _)| l.get("pid") == Some(&pid.to_string()))
            .unwrap();
        for (k, v) in f.want(node).into_iter().filter(|(_, v)| !v.is_empty()) {
            assert_eq!(labels.get(&k), Some(&v), "stored {k} of {pid}: {labels:?}");
        }
        let ours = metric_for_pid(&text, "container_go_heap_inuse_bytes", pid).unwrap();
        assert!(*value > 0.0);
        assert_eq!(*value, ours, "stored gauge of {pid}");
    }
    drop(agent);
    drop(fixtures);
    drop(cgroups);
}
