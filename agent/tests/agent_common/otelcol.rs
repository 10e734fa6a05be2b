//! A real OpenTelemetry Collector (fixtures/otelcol: otelcol + otlpreceiver + contrib's
//! fileexporter, profiles feature gate on) for the push tests: started with its OTLP receivers in
//! clear or over TLS, what it wrote decoded with the collector's own pdata/pprofile
//! (`goheap-otelcol decode`), and [`push_to_collector`], the comparison of what it received with
//! goheap's own delta profiles (`--output-dir`) of the same process and intervals.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pprof_stacks::{pprof_stacks, read_pprof};
use super::*;

/// The collector binary, built (once per machine, cached) by fixtures/otelcol/build.sh.
pub fn otelcol_bin() -> PathBuf {
    built_tool("otelcol")
}

/// A running collector, stopped with SIGTERM (so the fileexporter flushes) then killed on drop.
pub struct Collector {
    pub child: Child,
    /// OTLP/HTTP port.
    pub port: u16,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl Collector {
    /// Starts a collector whose OTLP receivers listen on 127.0.0.1 in clear, or over TLS with
    /// `tls` = (certificate PEM file, key PEM file).
    pub fn start(scratch: &Scratch, tls: Option<(&Path, &Path)>) -> Collector {
        let tls = tls
            .map(|(c, k)| {
                format!(
                    "        tls:\n          cert_file: {}\n          key_file: {}\n",
                    c.display(),
                    k.display()
                )
            })
            .unwrap_or_default();
        let port = free_port();
        let grpc_port = free_port();
        let out = scratch.path("otelcol-out.json");
        let log = scratch.path("otelcol.log");
        let config = scratch.path("otelcol.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n{tls}\
                 \x20     grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n{tls}\
                 exporters:\n  file:\n    path: {}\n    format: json\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n\
                 \x20 pipelines:\n    profiles:\n      receivers: [otlp]\n      exporters: [file]\n",
                out.display()
            ),
        )
        .unwrap();
        let child = Command::new(otelcol_bin())
            .arg("--config")
            .arg(&config)
            .arg("--feature-gates=service.profilesSupport")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting goheap-otelcol");
        let c = Collector {
            child,
            port,
            grpc_port,
            out,
            log,
        };
        wait_for(
            Duration::from_secs(60),
            "the collector's OTLP/HTTP port",
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        c
    }

    /// SIGTERM and wait: the fileexporter has written everything it received.
    pub fn stop(&mut self) {
        send_signal(self.child.id() as i32, "TERM");
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the collector received, decoded with pdata/pprofile: one JSON array of resources per
    /// export request.
    pub fn decoded(&self) -> Vec<serde_json::Value> {
        let out = Command::new(otelcol_bin())
            .arg("decode")
            .arg(&self.out)
            .output()
            .expect("goheap-otelcol decode");
        assert!(
            out.status.success(),
            "decode failed: {}\ncollector log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("decode prints JSON"))
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIG pid` (coreutils/procps `kill`).
pub fn send_signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The alloc profiles the collector received for `pid`: (interval end in ns, per stack
/// [alloc_objects, alloc_space]), plus every resource's attributes seen.
pub type Received = Vec<(u64, BTreeMap<Vec<String>, Vec<i64>>)>;

pub fn received_allocs(
    decoded: &[serde_json::Value],
    pid: i32,
) -> (Received, Vec<serde_json::Value>, usize) {
    let mut out = Vec::new();
    let mut attrs = Vec::new();
    let mut inuse = 0;
    for req in decoded {
        for r in req.as_array().unwrap() {
            if r["attributes"]["process.pid"].as_i64() != Some(pid as i64) {
                continue;
            }
            attrs.push(r["attributes"].clone());
            let profiles = r["profiles"].as_array().unwrap();
            let by_type = |t: &str| {
                profiles
                    .iter()
                    .find(|p| p["sample_types"][0].as_str() == Some(t))
                    .cloned()
            };
            if by_type("inuse_space/bytes").is_some() && by_type("inuse_objects/count").is_some() {
                inuse += 1;
            }
            let (Some(objs), Some(space)) =
                (by_type("alloc_objects/count"), by_type("alloc_space/bytes"))
            else {
                continue;
            };
            for p in [&objs, &space] {
                assert_eq!(p["period_type"], "space/bytes", "{p}");
            }
            let end =
                objs["time_unix_nano"].as_u64().unwrap() + objs["duration_nano"].as_u64().unwrap();
            assert!(
                objs["duration_nano"].as_u64().unwrap() > 0,
                "an alloc delta covers an interval"
            );
            let mut stacks: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
            for (k, p) in [&objs, &space].iter().enumerate() {
                for smp in p["samples"].as_array().unwrap() {
                    let stack: Vec<String> = smp["stack"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect();
                    let v: i64 = smp["values"][0].as_i64().unwrap();
                    stacks.entry(stack).or_insert_with(|| vec![0, 0])[k] += v;
                }
            }
            out.push((end, stacks));
        }
    }
    (out, attrs, inuse)
}

/// Runs steadyalloc and `goheap agent --push URL --output-dir DIR <extra>` against a collector
/// (over TLS with `tls`), and checks that the collector's decoded alloc deltas equal goheap's own
/// profiles of the same intervals (±1 per value and in total) with the resource attributes.
/// `url` makes the sink URL from the collector (its `port` is OTLP/HTTP, `grpc_port` OTLP/gRPC).
pub fn push_to_collector(
    tag: &str,
    tls: Option<(&Path, &Path)>,
    url: impl Fn(&Collector) -> String,
    extra: &[&str],
) {
    let scratch = Scratch::new(&format!("push-otlp-{tag}"));
    let mut collector = Collector::start(&scratch, tls);
    let ready = scratch.path("steady.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", "20", "-ready"]).arg(&ready);
    let fx = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let outdir = scratch.path("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let url = url(&collector);
    let mut args = vec!["--output-dir", outdir.to_str().unwrap(), "--push", &url];
    args.extend_from_slice(extra);
    let agent = Agent::start(&scratch, &args);
    // At least four intervals of this process pushed (its first read sends in-use only).
    let sent_key = format!("goheap_agent_push_sent_total{{sink=\"{url}\"}}");
    wait_for(Duration::from_secs(60), "profiles pushed", || {
        let files = own_profiles(&outdir, fx.pid).len();
        let sent = metric(&agent.get("/metrics").text(), &sent_key);
        (files >= 5 && sent >= 9.0).then_some(())
    });
    let info = agent.process(fx.pid).expect("fixture tracked");
    let metrics = agent.get("/metrics").text();
    drop(agent);
    collector.stop();
    assert!(
        metrics.contains(&format!("goheap_agent_push_queue_length{{sink=\"{url}\"}}")),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            &format!("goheap_agent_push_last_success_timestamp_seconds{{sink=\"{url}\"}}")
        ) > 1.6e9
    );

    let decoded = collector.decoded();
    let (allocs, attrs, inuse) = received_allocs(&decoded, fx.pid);
    assert!(allocs.len() >= 3, "alloc deltas received: {}", allocs.len());
    assert!(
        inuse >= allocs.len(),
        "every interval carries its in-use profile"
    );
    for a in &attrs {
        assert_eq!(a["service.name"], "steadyalloc", "{a}");
        assert_eq!(a["process.executable.name"], "steadyalloc", "{a}");
        assert_eq!(a["process.pid"].as_i64(), Some(fx.pid as i64), "{a}");
        assert_eq!(a["process.runtime.version"], info["go_version"], "{a}");
        assert!(
            a["host.name"].as_str().is_some_and(|h| !h.is_empty()),
            "{a}"
        );
        let cid = info["container_id"].as_str().unwrap();
        assert_eq!(
            a.get("container.id").and_then(|v| v.as_str()).unwrap_or(""),
            cid,
            "{a}"
        );
    }
    let own = own_profiles(&outdir, fx.pid);
    let mut compared = 0;
    for (end_ns, stacks) in &allocs {
        let end_ms = end_ns / 1_000_000;
        // goheap's file of the same read is written right after it (same cycle, < 1 s later).
        let Some((_, path)) = own
            .iter()
            .find(|(ms, _)| *ms >= end_ms && *ms < end_ms + 1000)
        else {
            panic!("no --output-dir profile for the interval ending at {end_ms} ms: {own:?}");
        };
        let ours = pprof_stacks(&read_pprof(path), &["alloc_objects", "alloc_space"]);
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            stacks.keys().collect::<Vec<_>>(),
            "same stacks as goheap's own profile {}",
            path.display()
        );
        let mut totals = [(0i64, 0i64); 2];
        for (stack, v) in &ours {
            let r = &stacks[stack];
            for k in 0..2 {
                assert!(
                    (v[k] - r[k]).abs() <= 1,
                    "{stack:?}: ours {v:?}, collector {r:?}"
                );
                totals[k].0 += v[k];
                totals[k].1 += r[k];
            }
        }
        for (o, r) in totals {
            assert!(
                o > 0 && (o - r).abs() <= 1,
                "totals: ours {o}, collector {r}"
            );
        }
        // steadyalloc's two allocation sites are in every interval.
        assert!(
            ours.keys()
                .any(|s| s.first().map(String::as_str) == Some("main.makeRecords")),
            "{ours:?}"
        );
        compared += 1;
    }
    assert!(compared >= 3);
    drop(fx);
}
