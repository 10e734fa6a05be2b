//! `goheap agent --push` against misbehaving sinks: a fault injector (a small TCP server in the
//! test, not a model of any receiver) that is down for a while, answers 4xx or 5xx, or accepts the
//! connection and never answers. Checked: the agent keeps collecting at its interval, queues are
//! bounded (oldest dropped and counted), 4xx is not retried, 5xx and timeouts are, data flows again
//! when the sink returns, and a stalled sink does not hold back another one.

mod agent_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_common::*;

/// One request the injector read.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body_len: usize,
    /// FNV-1a of the body: retries of one upload carry the same bytes.
    body_hash: u64,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The fault injector: answers every request with `status`, or (status 0) never answers.
struct Injector {
    port: u16,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Injector {
    fn start(port: u16, status: u16) -> Injector {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the injector");
        listener.set_nonblocking(true).unwrap();
        let inj = Injector {
            port,
            status: Arc::new(AtomicU16::new(status)),
            seen: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (st, seen, stop) = (inj.status.clone(), inj.seen.clone(), inj.stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (st, seen) = (st.clone(), seen.clone());
                        if let Some(s) = serve(s, &st, &seen) {
                            held.push(s);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        inj
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The listener closes within one accept poll.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads one request; answers it with `status`, or returns the stream to hold it open (status 0).
fn serve(mut s: TcpStream, status: &AtomicU16, seen: &Mutex<Vec<Seen>>) -> Option<TcpStream> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body_hash = buf[head_end..head_end + len]
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    seen.lock().unwrap().push(Seen {
        request_line,
        headers,
        body_len: len,
        body_hash,
    });
    let status = status.load(Ordering::Relaxed);
    if status == 0 {
        return Some(s);
    }
    let body = format!("injected {status}");
    let _ = write!(
        s,
        "HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    None
}

fn start_fixture(scratch: &Scratch) -> Running {
    let ready = scratch.path("steady.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", "20", "-ready"]).arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(30))
}

/// Cycles the agent completed (its `goheap_agent_cycles_total`).
fn cycles(agent: &Agent) -> f64 {
    metric(&agent.get("/metrics").text(), "goheap_agent_cycles_total")
}

/// Over `window`, the agent completes cycles at its 1 s interval (at least 70% of them).
fn assert_collecting(agent: &Agent, window: Duration, what: &str) {
    let c0 = cycles(agent);
    std::thread::sleep(window);
    let done = cycles(agent) - c0;
    let want = window.as_secs_f64() * 0.7;
    assert!(
        done >= want.floor(),
        "{what}: {done} cycles in {window:?} at a 1 s interval\n{}",
        agent.log_text()
    );
}

#[test]
fn sink_down_then_back_queue_bounded_oldest_dropped_collection_unaffected() {
    let scratch = Scratch::new("push-down");
    let fx = start_fixture(&scratch);
    let port = free_port(); // nothing listens there yet: the sink is down
    let url = format!("otlp+http://127.0.0.1:{port}");
    let agent = Agent::start_with_interval(
        &scratch,
        "1s",
        &[
            "--push",
            &url,
            "--push-queue-items",
            "3",
            "--push-max-attempts",
            "100",
            "--push-timeout",
            "1s",
        ],
    );
    assert_collecting(&agent, Duration::from_secs(8), "sink down");
    let m = agent.get("/metrics").text();
    let q = |name: &str| metric(&m, &format!("{name}{{sink=\"{url}\"}}"));
    assert!(
        metric(
            &m,
            &format!("goheap_agent_push_dropped_total{{reason=\"queue_full\",sink=\"{url}\"}}")
        ) >= 3.0,
        "{m}"
    );
    assert!(q("goheap_agent_push_queue_length") <= 3.0, "{m}");
    assert!(q("goheap_agent_push_queue_length") >= 1.0, "{m}");
    assert_eq!(q("goheap_agent_push_sent_total"), 0.0, "{m}");
    assert_eq!(
        q("goheap_agent_push_last_success_timestamp_seconds"),
        0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            &format!("goheap_agent_push_failed_total{{reason=\"connect\",sink=\"{url}\"}}")
        ) >= 2.0,
        "{m}"
    );
    // The sink comes back: the profile being retried and the queue flow to it.
    let sink = Injector::start(port, 200);
    wait_for(
        Duration::from_secs(60),
        "pushes after the sink returned",
        || {
            let m = agent.get("/metrics").text();
            (metric(
                &m,
                &format!("goheap_agent_push_sent_total{{sink=\"{url}\"}}"),
            ) >= 4.0)
                .then_some(())
        },
    );
    let seen = sink.seen();
    assert!(
        seen.iter().all(
            |s| s.request_line == "POST /v1development/profiles HTTP/1.1"
                && s.header("content-type") == Some("application/x-protobuf")
                && s.body_len > 0
        ),
        "{seen:?}"
    );
    drop(fx);
}

#[test]
fn a_sink_that_never_answers_times_out_and_holds_back_no_cycle_nor_other_sink() {
    let scratch = Scratch::new("push-stall");
    let fx = start_fixture(&scratch);
    let stall = Injector::start(free_port(), 0);
    let good = Injector::start(free_port(), 204);
    let stall_url = format!("pyroscope+http://127.0.0.1:{}", stall.port);
    let good_url = format!("pyroscope+http://127.0.0.1:{}", good.port);
    let agent = Agent::start_with_interval(
        &scratch,
        "1s",
        &[
            "--push",
            &stall_url,
            "--push",
            &good_url,
            "--push-timeout",
            "2s",
            "--push-max-attempts",
            "2",
        ],
    );
    let t0 = Instant::now();
    assert_collecting(&agent, Duration::from_secs(10), "a sink that never answers");
    let m = agent.get("/metrics").text();
    assert!(
        metric(
            &m,
            &format!("goheap_agent_push_failed_total{{reason=\"timeout\",sink=\"{stall_url}\"}}")
        ) >= 2.0,
        "{m}"
    );
    // Two requests per interval (alloc delta and in-use; in-use only at the first read) reached the
    // other sink all along.
    let good_sent = metric(
        &m,
        &format!("goheap_agent_push_sent_total{{sink=\"{good_url}\"}}"),
    );
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        good_sent >= secs * 0.7,
        "{good_sent} sent in {secs:.1} s\n{m}"
    );
    // The stalled sink got requests and never answered any: at most one every timeout.
    let stalled = stall.seen().len() as f64;
    assert!(
        stalled >= 2.0 && stalled <= secs / 2.0 + 2.0,
        "{stalled} in {secs:.1} s"
    );
    // The cycle histogram: no cycle waited for a sink (each well under the 2 s timeout).
    let sum = metric(&m, "goheap_agent_cycle_duration_seconds_sum");
    let count = metric(&m, "goheap_agent_cycle_duration_seconds_count");
    assert!(
        count >= 5.0 && sum / count < 1.0,
        "mean cycle {} s",
        sum / count
    );
    // Pyroscope's ingest request, as sent to the good sink.
    let seen = good.seen();
    let s = &seen[0];
    assert!(s.request_line.starts_with("POST /ingest?name="), "{s:?}");
    assert!(s.request_line.contains("&format=pprof"), "{s:?}");
    assert!(
        s.request_line.contains(&format!("pid%3D{}", fx.pid))
            || seen
                .iter()
                .any(|s| s.request_line.contains(&format!("pid%3D{}", fx.pid))),
        "{seen:?}"
    );
    assert!(
        s.header("content-type")
            .is_some_and(|c| c.starts_with("multipart/form-data; boundary=")),
        "{s:?}"
    );
    drop(fx);
}

#[test]
fn a_4xx_is_not_retried_a_5xx_is() {
    let scratch = Scratch::new("push-status");
    let fx = start_fixture(&scratch);
    let bad_request = Injector::start(free_port(), 400);
    let unavailable = Injector::start(free_port(), 503);
    let u400 = format!("pyroscope+http://127.0.0.1:{}", bad_request.port);
    let u503 = format!("pyroscope+http://127.0.0.1:{}", unavailable.port);
    let agent = Agent::start_with_interval(
        &scratch,
        "1s",
        &["--push", &u400, "--push", &u503, "--push-max-attempts", "3"],
    );
    wait_for(Duration::from_secs(60), "5xx retries exhausted", || {
        let m = agent.get("/metrics").text();
        (metric(
            &m,
            &format!(
                "goheap_agent_push_dropped_total{{reason=\"retries_exhausted\",sink=\"{u503}\"}}"
            ),
        ) >= 2.0)
            .then_some(())
    });
    let m = agent.get("/metrics").text();
    assert!(
        metric(
            &m,
            &format!("goheap_agent_push_dropped_total{{reason=\"rejected\",sink=\"{u400}\"}}")
        ) >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            &format!("goheap_agent_push_sent_total{{sink=\"{u400}\"}}")
        ),
        0.0
    );
    // Each upload (its query names the process and interval) reached the 4xx sink once, and the
    // 5xx sink up to three times (with the agent's -max-attempts 3), some more than once.
    let count = |seen: Vec<Seen>| {
        let mut c: std::collections::BTreeMap<(String, u64), usize> = Default::default();
        for s in seen {
            *c.entry((s.request_line, s.body_hash)).or_default() += 1;
        }
        c
    };
    let c400 = count(bad_request.seen());
    assert!(
        c400.len() >= 2 && c400.values().all(|&n| n == 1),
        "{c400:?}"
    );
    let c503 = count(unavailable.seen());
    assert!(c503.values().all(|&n| n <= 3), "{c503:?}");
    assert!(c503.values().any(|&n| n == 3), "{c503:?}");
    drop(fx);
}

#[test]
fn credentials_come_from_files_never_from_the_url() {
    let scratch = Scratch::new("push-creds");
    let out = goheap(&["agent", "--push", "otlp+http://user:secret@127.0.0.1:4318"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credentials are not taken from the command line"),
        "{err}"
    );
    // A URL without the protocol (plain https://) is refused too; the TLS schemes are push_tls.rs's.
    let out = goheap(&["agent", "--push", "https://127.0.0.1:4318"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("otlp+grpc(s)://"), "{err}");

    let fx = start_fixture(&scratch);
    let sink = Injector::start(free_port(), 200);
    let token = scratch.path("token");
    let tenant = scratch.path("tenant");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    std::fs::write(&tenant, "team-a\n").unwrap();
    let url = format!("otlp+http://127.0.0.1:{}", sink.port);
    let agent = Agent::start_with_interval(
        &scratch,
        "1s",
        &[
            "--push",
            &url,
            "--push-bearer-token-file",
            token.to_str().unwrap(),
            "--push-tenant-file",
            tenant.to_str().unwrap(),
        ],
    );
    let s = wait_for(Duration::from_secs(30), "a push", || {
        sink.seen().into_iter().next()
    });
    assert_eq!(
        s.header("authorization"),
        Some("Bearer s3cr3t-token"),
        "{s:?}"
    );
    assert_eq!(s.header("x-scope-orgid"), Some("team-a"), "{s:?}");
    assert!(
        !agent.log_text().contains("s3cr3t"),
        "the token is never logged"
    );
    drop(fx);
}
