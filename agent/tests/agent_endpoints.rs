//! The agent's `/debug/pprof/` index and allocs profiles, on an agent listening on
//! `localhost:PORT` (and one on `:PORT`, Go's every-address form), against real steadyalloc
//! processes of two Go versions: the index lists every running fixture with links that answer
//! profiles; `allocs` opens as alloc_space with `duration_nanos` the process's age, and with
//! `seconds=N` the window's length.

mod agent_common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::*;
use pprof_proto::Profile;

/// A `goheap agent --listen LISTEN` serving on 127.0.0.1:`port`, killed on drop.
fn start_agent(s: &Scratch, listen: &str, port: u16) -> Agent {
    let log = s.path(&format!("agent-{port}.log"));
    let mut cmd = Command::new(goheap_bin());
    let child = without_agent_env(&mut cmd)
        .args(["agent", "--listen", listen, "--interval", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting goheap agent");
    let a = Agent { child, port, log };
    wait_for(Duration::from_secs(20), "agent /healthz", || {
        (http_get(port, "/healthz").ok()?.status == 200).then_some(())
    });
    a
}

fn decode(r: &HttpResponse, what: &str) -> Profile {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    Profile::decode(&r.body).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every `href="..."` of an HTML page, `&amp;` decoded.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| Some(rest[..rest.find('"')?].replace("&amp;", "&")))
        .collect()
}

#[test]
fn index_lists_every_process_and_allocs_open_as_alloc_space() {
    let s = Scratch::new("endpoints");
    let spawned = Instant::now();
    let (a, _) = start_steadyalloc(&s, "a", 16.0);
    // A second Go version: steadyalloc built by Go 1.27.
    let ready = s.path("b.ready");
    let mut cmd = Command::new(fixture("steadyalloc", GO_1_27, "default"));
    cmd.args(["-rate-mib-per-sec", "16"])
        .arg("-ready")
        .arg(&ready);
    let b = start_and_wait(cmd, &ready, Duration::from_secs(30));
    let readied = Instant::now();

    let port = free_port();
    let agent = start_agent(&s, &format!("localhost:{port}"), port);
    for pid in [a.pid, b.pid] {
        agent.wait_state(pid, "readable", Duration::from_secs(30));
    }

    // The index, with and without the trailing slash.
    let r = agent.get("/debug/pprof/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert_eq!(agent.get("/debug/pprof").text().len(), html.len());
    let links = hrefs(&html);
    for (fx, version) in [(&a, GO), (&b, GO_1_27)] {
        let pid = fx.pid;
        let row = html
            .lines()
            .find(|l| l.starts_with(&format!("<tr><td>{pid}</td>")))
            .unwrap_or_else(|| panic!("no row for pid {pid}: {html}"));
        let bin = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(row.contains("<td>readable</td>"), "{row}");
        assert!(row.contains(&format!("<td>go{version}</td>")), "{row}");
        assert!(row.contains(&bin.display().to_string()), "{row}");
        let heap = format!("/debug/pprof/heap?pid={pid}");
        let allocs = format!("/debug/pprof/allocs?pid={pid}");
        assert!(
            links.contains(&heap) && links.contains(&allocs),
            "{links:?}"
        );

        // Every link of this process answers a profile of it.
        let h = decode(&agent.get(&heap), &heap);
        assert_eq!(
            h.string(h.mapping[0].filename).unwrap(),
            bin.display().to_string()
        );
        assert_ne!(
            h.string(h.default_sample_type).unwrap_or(""),
            "alloc_space",
            "heap opens as inuse_space"
        );
        let asked = Instant::now();
        let p = decode(&agent.get(&allocs), &allocs);
        assert_eq!(p.string(p.default_sample_type).unwrap(), "alloc_space");
        // duration_nanos is the process's age: at least from ready to the request, at most from
        // its spawn to the answer.
        let age = Duration::from_nanos(p.duration_nanos as u64);
        let (lo, hi) = (
            asked - readied,
            spawned.elapsed() + Duration::from_millis(100),
        );
        assert!(
            age >= lo && age <= hi,
            "{allocs}: duration {age:?} not in {lo:?}..{hi:?}"
        );
        assert!(p.time_nanos > 0);
    }
    // Links to the /processes and /metrics pages work too.
    for l in ["/processes", "/metrics"] {
        assert!(links.iter().any(|h| h == l), "{links:?}");
        assert_eq!(agent.get(l).status, 200);
    }

    // allocs?seconds=N: a delta over that window, its length in duration_nanos.
    let window = format!("/debug/pprof/allocs?pid={}&seconds=2", a.pid);
    let p = decode(&agent.get(&window), &window);
    assert_eq!(p.string(p.default_sample_type).unwrap(), "alloc_space");
    let d = Duration::from_nanos(p.duration_nanos as u64);
    assert!(
        d >= Duration::from_secs(2) && d <= Duration::from_millis(3500),
        "window {d:?}"
    );

    // `:PORT` listens on every address: IPv4 and (where the kernel has IPv6) IPv6 loopback.
    let port2 = free_port();
    let _any = start_agent(&s, &format!(":{port2}"), port2);
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        let mut c = std::net::TcpStream::connect(("::1", port2)).expect("[::1] answers");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
}
