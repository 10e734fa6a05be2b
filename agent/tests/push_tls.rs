//! Push over TLS (`otlp+https://`, `otlp+grpcs://`) to a real OpenTelemetry Collector whose OTLP
//! receivers serve a certificate for 127.0.0.1/localhost made here (rcgen) by a private CA;
//! goheap trusts that CA through `--push-ca-file`, and the collector's decoded profiles must equal
//! goheap's own (the comparison of push_otlp.rs, agent_common/otelcol.rs). Faults: a certificate
//! from another CA and a certificate for another name are refused (`failed{reason="tls"}`,
//! retried, nothing reaches the collector) with one log line saying what to do.
//!
//! `pyroscope+connect+https://`: fixtures/pyroscope's receiver (Pyroscope's own generated Connect
//! handler) served by Go's http.ListenAndServeTLS with such a certificate; its series equal
//! goheap's own profiles, and the basic-auth header arrives (only over TLS).

mod agent_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_common::otelcol::{push_to_collector, Collector};
use agent_common::pprof_stacks::{assert_stacks_close, pprof_stacks, read_pprof, received_stacks};
use agent_common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A private CA: its certificate (PEM file) and what signs with it.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

fn make_ca(scratch: &Scratch, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, format!("goheap test CA {name}"));
    let cert = p.self_signed(&key).unwrap();
    let pem = scratch.path(&format!("ca-{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca { cert, key, pem }
}

/// A server certificate for `names` (DNS names or IP addresses) signed by `ca`: (cert, key) files.
fn server_cert(scratch: &Scratch, ca: &Ca, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, tag);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        scratch.path(&format!("{tag}.crt")),
        scratch.path(&format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn tls_push_equal(tag: &str, url: fn(&Collector) -> String) {
    let scratch = Scratch::new(&format!("push-tls-certs-{tag}"));
    let ca = make_ca(&scratch, "a");
    let (c, k) = server_cert(&scratch, &ca, "collector", &["127.0.0.1", "localhost"]);
    let ca_file = ca.pem.to_str().unwrap().to_string();
    push_to_collector(tag, Some((&c, &k)), url, &["--push-ca-file", &ca_file]);
}

#[test]
fn otlp_https_profiles_reach_a_tls_collector_equal_to_goheaps_own() {
    tls_push_equal("https", |c| format!("otlp+https://127.0.0.1:{}", c.port));
}

#[test]
fn otlp_grpcs_profiles_reach_a_tls_collector_equal_to_goheaps_own() {
    tls_push_equal("grpcs", |c| {
        format!("otlp+grpcs://localhost:{}", c.grpc_port)
    });
}

/// Bytes the collector's file exporter wrote (0 when it wrote nothing).
fn written(c: &Collector) -> u64 {
    std::fs::metadata(&c.out).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_certificate_from_another_ca_or_for_another_name_is_refused_as_tls_and_retried() {
    let scratch = Scratch::new("push-tls-faults");
    let trusted = make_ca(&scratch, "trusted");
    let other = make_ca(&scratch, "other");
    // Signed by a CA goheap does not trust, for the right name.
    let (c1, k1) = server_cert(&scratch, &other, "other-ca", &["127.0.0.1", "localhost"]);
    // Signed by the trusted CA, for a name that is not the URL's host.
    let (c2, k2) = server_cert(&scratch, &trusted, "wrong-name", &["collector.example"]);
    let s1 = Scratch::new("push-tls-faults-1");
    let s2 = Scratch::new("push-tls-faults-2");
    let mut wrong_ca = Collector::start(&s1, Some((&c1, &k1)));
    let mut wrong_name = Collector::start(&s2, Some((&c2, &k2)));
    let (_fx, _addr) = start_steadyalloc(&scratch, "tls-faults", 20.0);
    let u1 = format!("otlp+https://127.0.0.1:{}", wrong_ca.port);
    let u2 = format!("otlp+grpcs://127.0.0.1:{}", wrong_name.grpc_port);
    let agent = Agent::start(
        &scratch,
        &[
            "--push",
            &u1,
            "--push",
            &u2,
            "--push-ca-file",
            trusted.pem.to_str().unwrap(),
            "--push-max-attempts",
            "3",
            "--push-timeout",
            "3s",
        ],
    );
    let failed = |t: &str, u: &str| {
        metric(
            t,
            &format!("goheap_agent_push_failed_total{{reason=\"tls\",sink=\"{u}\"}}"),
        )
    };
    let done = |t: &str| {
        let gave_up = |u: &str| {
            metric(
                t,
                &format!(
                    "goheap_agent_push_dropped_total{{reason=\"retries_exhausted\",sink=\"{u}\"}}"
                ),
            )
        };
        failed(t, &u1) >= 3.0 && failed(t, &u2) >= 3.0 && gave_up(&u1) >= 1.0 && gave_up(&u2) >= 1.0
    };
    let t0 = std::time::Instant::now();
    while !done(&agent.metrics()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "TLS failures not retried and given up on both sinks in 60 s:\n{}\n{}",
            agent
                .metrics()
                .lines()
                .filter(|l| l.starts_with("goheap_agent_push"))
                .collect::<Vec<_>>()
                .join("\n"),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = agent.metrics();
    let log = agent.log_text();
    drop(agent);
    for u in [&u1, &u2] {
        assert_eq!(
            metric(&t, &format!("goheap_agent_push_sent_total{{sink=\"{u}\"}}")),
            0.0,
            "{t}"
        );
        // Every failure of these sinks is a TLS failure: nothing else (no request got through).
        let other: f64 = t
            .lines()
            .filter(|l| {
                l.starts_with("goheap_agent_push_failed_total{")
                    && l.contains(&format!("sink=\"{u}\""))
                    && !l.contains("reason=\"tls\"")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(other, 0.0, "{t}");
    }
    // One warn line per sink saying what to do.
    for u in [&u1, &u2] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("push over TLS failed") && l.contains(u.as_str()))
            .collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("--push-ca-file"), "{}", lines[0]);
    }
    assert!(
        log.lines().any(|l| l.contains("push over TLS failed")
            && l.contains(u2.as_str())
            && l.contains("not valid for name \"127.0.0.1\"")),
        "the name mismatch is named: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("push over TLS failed")
            && l.contains(u1.as_str())
            && l.contains("UnknownIssuer")),
        "the unknown CA is named: {log}"
    );
    wrong_ca.stop();
    wrong_name.stop();
    // Nothing reached either collector: no profile was sent in clear or otherwise.
    assert_eq!(written(&wrong_ca), 0, "{}", wrong_ca.out.display());
    assert_eq!(written(&wrong_name), 0, "{}", wrong_name.out.display());
}

#[test]
fn an_unreadable_or_empty_ca_file_refuses_to_start_with_one_line() {
    let scratch = Scratch::new("push-tls-cafile");
    let empty = scratch.path("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for (path, says) in [
        (empty.clone(), "no CERTIFICATE block"),
        (
            Path::new("/nonexistent/ca.pem").to_path_buf(),
            "No such file",
        ),
    ] {
        let log = scratch.path("agent.err");
        let mut child = std::process::Command::new(goheap_bin())
            .args(["agent", "--listen", "127.0.0.1:0", "--push"])
            .arg("otlp+https://127.0.0.1:1")
            .arg("--push-ca-file")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // An agent that accepted the file would run on: give it 20 s, then kill it and fail.
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = std::fs::read_to_string(&log).unwrap();
        let status = status.unwrap_or_else(|| panic!("the agent started with {path:?}: {err}"));
        assert_eq!(status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("--push-ca-file") && err.contains(says),
            "{err}"
        );
    }
}

/// fixtures/pyroscope's receiver, built (once per machine, cached) by fixtures/pyroscope/build.sh.
fn pyroscope_bin() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pyroscope/build.sh");
    let st = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .expect("running fixtures/pyroscope/build.sh");
    assert!(st.success(), "fixtures/pyroscope/build.sh failed");
    cache_dir().join("pyroscope/goheap-pyroscope")
}

struct Receiver(std::process::Child);
impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pyroscope_connect_https_series_equal_goheaps_own_through_pyroscopes_handler() {
    let scratch = Scratch::new("push-tls-pyroscope");
    let ca = make_ca(&scratch, "pyro");
    let (c, k) = server_cert(&scratch, &ca, "pyroscope", &["localhost"]);
    let received = scratch.path("connect.jsonl");
    let port = free_port();
    let _rx = Receiver(
        std::process::Command::new(pyroscope_bin())
            .args(["connect", &format!("127.0.0.1:{port}")])
            .arg(&received)
            .env("GOHEAP_TLS_CERT_FILE", &c)
            .env("GOHEAP_TLS_KEY_FILE", &k)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the Connect receiver"),
    );
    wait_for(Duration::from_secs(30), "the Connect receiver", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (fx, _addr) = start_steadyalloc(&scratch, "tls-pyro", 20.0);
    let outdir = scratch.path("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let auth = scratch.path("basic");
    std::fs::write(&auth, "user:secret\n").unwrap();
    let url = format!("pyroscope+connect+https://localhost:{port}");
    let agent = Agent::start(
        &scratch,
        &[
            "--output-dir",
            outdir.to_str().unwrap(),
            "--push",
            &url,
            "--push-ca-file",
            ca.pem.to_str().unwrap(),
            "--push-basic-auth-file",
            auth.to_str().unwrap(),
        ],
    );
    let pid = fx.pid.to_string();
    let series = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&received)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|u| {
                u["labels"]["pid"].as_str() == Some(pid.as_str())
                    && u["sample_types"][0] == "alloc_objects/count"
            })
            .collect()
    };
    wait_for(
        Duration::from_secs(60),
        "three alloc series over TLS",
        || (series().len() >= 3).then_some(()),
    );
    let metrics = agent.metrics();
    drop(agent);
    assert!(
        metric(
            &metrics,
            &format!("goheap_agent_push_sent_total{{sink=\"{url}\"}}")
        ) >= 3.0,
        "{metrics}"
    );
    let own: Vec<pprof_proto::Profile> = own_profiles(&outdir, fx.pid)
        .iter()
        .map(|(_, p)| read_pprof(p))
        .collect();
    let all = series();
    for u in &all {
        assert_eq!(u["error"], "", "{u}");
        // "user:secret" in base64 (RFC 4648).
        assert_eq!(u["authorization"], "Basic dXNlcjpzZWNyZXQ=", "{u}");
        let t = u["time_nanos"].as_i64().unwrap();
        let Some(mine) = own.iter().find(|p| p.time_nanos == t) else {
            panic!("no --output-dir profile with time_nanos {t}");
        };
        assert_stacks_close(
            &pprof_stacks(mine, &["alloc_objects", "alloc_space"]),
            &received_stacks(u),
            &format!("alloc series at {t}"),
        );
    }
    assert!(all.len() >= 3);
}
