//! Issue #9's observer-effect benchmark: Debian's caddy serving small responses on loopback under
//! `wrk`, with and without `goheap agent --interval 1s` watching it, alternated over several
//! rounds (none, agent; agent, none; …) so that the run-to-run noise of each condition is visible
//! next to the difference between them.
//!
//! caddy gets a few routes (static `respond`, JSON, header rewriting, a template, `file_server`
//! with gzip, and a `reverse_proxy` to a second site of its own), and `wrk` cycles through them
//! with a Lua script, so caddy allocates from many distinct stacks and its heap-profile bucket list
//! is a real one (the report shows its size as the agent saw it). A warm-up run before the rounds
//! fills it. In the "agent" condition the agent is started before the run and the run begins once
//! it found caddy readable; in the "none" condition no agent runs at all.
//!
//! Needs (installs nothing itself): `apt-get install caddy wrk`, `cargo build --release -p goheap`.
//! Run as root: like `node_scale` it re-runs itself in a private PID namespace so the agent
//! watches only caddy. Everything is bounded (`wrk -d`) and stops on Ctrl-C.
//!
//! Run: `cargo build --release -p goheap -p goheap-benches && target/release/observer_effect
//! [--quick] [--rounds N] [--seconds S] [--connections C] [--interval 1s] [--no-isolate]
//! [--goheap PATH]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goheap_benches::daemons::{check_installed, package_version, Daemon};
use goheap_benches::node::{self, Agent, Group};
use goheap_benches::Scratch;

struct Opts {
    rounds: usize,
    seconds: u64,
    connections: u32,
    interval: String,
    isolate: bool,
    goheap: Option<PathBuf>,
    quick: bool,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rounds: 5,
        seconds: 8,
        connections: 16,
        interval: "1s".into(),
        isolate: true,
        goheap: None,
        quick: false,
    };
    let (mut rounds, mut seconds) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => rounds = Some(val()?.parse()?),
            "--seconds" => seconds = Some(val()?.parse()?),
            "--connections" => o.connections = val()?.parse()?,
            "--interval" => o.interval = val()?,
            "--no-isolate" => o.isolate = false,
            "--goheap" => o.goheap = Some(val()?.into()),
            "-h" | "--help" => {
                println!("observer_effect [--quick] [--rounds N] [--seconds S] [--connections C] [--interval 1s] [--no-isolate] [--goheap PATH]");
                std::process::exit(0);
            }
            _ => anyhow::bail!("unknown argument {a:?} (see --help)"),
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick { 2 } else { 5 });
    o.seconds = seconds.unwrap_or(if o.quick { 5 } else { 8 });
    anyhow::ensure!(o.rounds >= 1 && (1..=120).contains(&o.seconds));
    Ok(o)
}

/// The routes `wrk` cycles through.
const PATHS: &[&str] = &[
    "/static",
    "/json",
    "/static",
    "/hdr",
    "/static",
    "/tmpl",
    "/static",
    "/files/f1.txt",
    "/static",
    "/proxy",
    "/static",
    "/files/f7.html",
    "/static",
    "/json",
    "/static",
    "/files/f12.txt",
];

fn write_site(dir: &Path, port: u16, upstream: u16) -> anyhow::Result<PathBuf> {
    let site = dir.join("site");
    std::fs::create_dir_all(&site)?;
    for i in 0..16 {
        let ext = if i % 7 == 0 { "html" } else { "txt" };
        let body = format!("file {i} ").repeat(8 + 40 * i);
        std::fs::write(site.join(format!("f{i}.{ext}")), body)?;
    }
    std::fs::write(
        site.join("page.html"),
        "<html><body><p>{{.Req.Method}} {{.Req.URL.Path}} from {{.RemoteIP}}</p>\
         {{range $i, $x := splitList \",\" \"a,b,c,d\"}}<i>{{$i}}={{$x}}</i>{{end}}</body></html>\n",
    )?;
    let d = dir.display();
    let cfg = dir.join("Caddyfile");
    std::fs::write(
        &cfg,
        format!(
            r#"{{
	admin off
	auto_https off
	storage file_system {d}/caddy-data
}}
http://127.0.0.1:{port} {{
	bind 127.0.0.1
	log {{
		output discard
	}}
	handle /static {{
		respond "hello from caddy"
	}}
	handle /json {{
		header Content-Type application/json
		respond `{{"ok":true,"items":[1,2,3],"name":"bench"}}`
	}}
	handle /hdr {{
		header X-Bench "yes"
		header -Server
		header Cache-Control "no-store"
		respond "headers"
	}}
	handle /tmpl {{
		root * {d}/site
		rewrite * /page.html
		templates
		file_server
	}}
	handle_path /files/* {{
		encode gzip
		root * {d}/site
		file_server
	}}
	handle /proxy {{
		reverse_proxy 127.0.0.1:{upstream}
	}}
	handle {{
		respond "not here" 404
	}}
}}
http://127.0.0.1:{upstream} {{
	bind 127.0.0.1
	respond "from the upstream"
}}
"#
        ),
    )?;
    let lua = dir.join("paths.lua");
    let list: Vec<String> = PATHS.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        &lua,
        format!(
            "local paths = {{{}}}\nlocal i = 0\nwrk.headers[\"Accept-Encoding\"] = \"gzip\"\nrequest = function()\n  i = i + 1\n  return wrk.format(\"GET\", paths[(i % #paths) + 1])\nend\n",
            list.join(", ")
        ),
    )?;
    Ok(cfg)
}

/// One `wrk` run's numbers.
#[derive(Debug, Clone, Default)]
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: String,
}

fn parse_latency_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        (s, 1.0)
    };
    Some(num.parse::<f64>().ok()? * scale)
}

fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut errors = Vec::new();
    for line in out.lines() {
        let t = line.trim();
        let f: Vec<&str> = t.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse()?,
            ["50%", v] => r.p50_ms = parse_latency_ms(v).unwrap_or(0.0),
            ["99%", v] => r.p99_ms = parse_latency_ms(v).unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            _ if t.starts_with("Socket errors") || t.starts_with("Non-2xx") => {
                errors.push(t.to_string())
            }
            _ => {}
        }
    }
    anyhow::ensure!(r.rps > 0.0, "no Requests/sec in wrk's output:\n{out}");
    r.errors = errors.join("; ");
    Ok(r)
}

fn run_wrk(dir: &Path, port: u16, o: &Opts, seconds: u64, tag: &str) -> anyhow::Result<WrkResult> {
    let log = dir.join(format!("wrk-{tag}.log"));
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c", &o.connections.to_string()])
        .args([
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(dir.join("paths.lua"))
        .arg(format!("http://127.0.0.1:{port}/"));
    let mut g = Group::spawn("wrk", &mut cmd, &log, false)?;
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = g.exited() {
            break st;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(seconds + 30),
            "wrk did not end"
        );
        node::sleep(Duration::from_millis(50))?;
    };
    let out = std::fs::read_to_string(&log)?;
    anyhow::ensure!(st.success(), "wrk failed ({st}):\n{out}");
    parse_wrk(&out)
}

struct Run {
    round: usize,
    agent: bool,
    wrk: WrkResult,
    caddy_cpu_us_per_req: f64,
    agent_cycles: u64,
    agent_cycle_ms: f64,
    agent_cpu_s: f64,
    buckets: u64,
}

fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let min = xs.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (mean, min, max)
}

fn main() -> anyhow::Result<()> {
    let o = parse_opts()?;
    node::isolate(o.isolate)?;
    node::install_stop_handlers();
    let goheap = node::goheap_binary(o.goheap.clone())?;
    check_installed(&[Daemon::Caddy])?;
    anyhow::ensure!(
        Command::new("wrk").arg("-v").output().is_ok(),
        "wrk missing: apt-get install wrk"
    );
    let scratch = Scratch::new("observer")?;
    let dir = scratch.0.clone();
    let (port, upstream) = (node::free_port()?, node::free_port()?);
    let cfg = write_site(&dir, port, upstream)?;
    let mut caddy_cmd = Command::new(Daemon::Caddy.installed_path());
    caddy_cmd
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_DATA_HOME", dir.join("xdg-data"));
    let mut caddy = Group::spawn("caddy", &mut caddy_cmd, &dir.join("caddy.log"), false)?;
    let t0 = Instant::now();
    while !(node::port_open(port) && node::port_open(upstream)) {
        if let Some(st) = caddy.exited() {
            anyhow::bail!(
                "caddy exited ({st}):\n{}",
                std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
            );
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "caddy not up");
        node::sleep(Duration::from_millis(50))?;
    }
    let caddy_pid = caddy.pid();
    for p in PATHS {
        let (status, _) = node::http_get(port, p, Duration::from_secs(5))?;
        anyhow::ensure!(status == 200, "caddy answers {status} to GET {p}");
    }
    let outside = node::non_loopback_sockets(&[caddy_pid]);
    anyhow::ensure!(
        outside.is_empty(),
        "caddy has sockets outside loopback:\n{}",
        outside.join("\n")
    );
    eprintln!(
        "caddy pid {caddy_pid} on 127.0.0.1:{port}; warm-up {} s",
        o.seconds.min(5)
    );
    run_wrk(&dir, port, &o, o.seconds.min(5), "warmup")?;

    let mut runs = Vec::new();
    let mut agent_n = 0;
    for round in 1..=o.rounds {
        // A B, then B A: neither condition always comes first (drift, the gap since the last run).
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for with_agent in order {
            node::sleep(Duration::from_secs(2))?;
            let mut agent = None;
            let mut buckets = 0;
            if with_agent {
                agent_n += 1;
                let mut a = Agent::start(
                    &goheap,
                    &o.interval,
                    &dir.join(format!("agent-{agent_n}.log")),
                )?;
                let t = Instant::now();
                loop {
                    let p = a.processes()?;
                    match p.get(caddy_pid) {
                        Some(s) if s.state == "readable" => {
                            buckets = s.buckets;
                            break;
                        }
                        Some(s) if s.state != "found" => {
                            anyhow::bail!("agent sees caddy as {}: {:?}", s.state, s.detail)
                        }
                        _ => {}
                    }
                    anyhow::ensure!(
                        t.elapsed() < Duration::from_secs(60),
                        "caddy not readable after 60 s"
                    );
                    node::sleep(Duration::from_millis(50))?;
                }
                agent = Some(a);
            }
            let before = agent.as_mut().map(|a| -> anyhow::Result<_> {
                let m = a.metrics()?;
                Ok((
                    node::metric(&m, "goheap_agent_cycle_duration_seconds_count"),
                    node::metric(&m, "goheap_agent_cycle_duration_seconds_sum"),
                    node::cpu_seconds(a.pid()).unwrap_or(0.0),
                ))
            });
            let before = before.transpose()?;
            let caddy_cpu0 = node::cpu_seconds(caddy_pid).unwrap_or(0.0);
            let tag = format!("{round}{}", if with_agent { "b" } else { "a" });
            let wrk = run_wrk(&dir, port, &o, o.seconds, &tag)?;
            let caddy_cpu = node::cpu_seconds(caddy_pid).unwrap_or(0.0) - caddy_cpu0;
            let (mut agent_cycles, mut agent_cycle_ms, mut agent_cpu_s) = (0, 0.0, 0.0);
            if let (Some(a), Some((c0, s0, cpu0))) = (agent.as_mut(), before) {
                let m = a.metrics()?;
                let c = node::metric(&m, "goheap_agent_cycle_duration_seconds_count") - c0;
                let s = node::metric(&m, "goheap_agent_cycle_duration_seconds_sum") - s0;
                agent_cycles = c as u64;
                agent_cycle_ms = if c > 0.0 { 1e3 * s / c } else { 0.0 };
                agent_cpu_s = node::cpu_seconds(a.pid()).unwrap_or(0.0) - cpu0;
                if let Some(s) = a.processes()?.get(caddy_pid) {
                    buckets = s.buckets;
                }
            }
            drop(agent);
            eprintln!(
                "round {round} {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms{}",
                if with_agent { "agent" } else { "none " },
                wrk.rps,
                wrk.p50_ms,
                wrk.p99_ms,
                if with_agent {
                    format!(", {agent_cycles} cycles of {agent_cycle_ms:.1} ms, {buckets} buckets")
                } else {
                    String::new()
                }
            );
            runs.push(Run {
                round,
                agent: with_agent,
                caddy_cpu_us_per_req: 1e6 * caddy_cpu / wrk.requests.max(1) as f64,
                wrk,
                agent_cycles,
                agent_cycle_ms,
                agent_cpu_s,
                buckets,
            });
        }
    }
    if let Some(st) = caddy.exited() {
        anyhow::bail!("caddy exited during the runs: {st}");
    }
    report(&o, &runs);
    drop(caddy);
    Ok(())
}

fn report(o: &Opts, runs: &[Run]) {
    println!(
        "## observer_effect: caddy {} under wrk (1 thread, {} connections, {} s per run, {} routes cycled), agent --interval {}\n",
        package_version("caddy").unwrap_or_default(),
        o.connections,
        o.seconds,
        PATHS.len(),
        o.interval
    );
    println!(
        "Private PID namespace (agent sees only caddy): {}. Runs alternate: none, agent in odd rounds; agent, none in even ones.\n",
        if node::isolated() { "yes" } else { "no" }
    );
    println!("| round | agent | req/s | p50 | p99 | caddy CPU/req | agent cycles | mean cycle | agent CPU | caddy buckets | errors |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in runs {
        println!(
            "| {} | {} | {:.0} | {:.3} ms | {:.3} ms | {:.1} µs | {} | {} | {} | {} | {} |",
            r.round,
            if r.agent { "yes" } else { "no" },
            r.wrk.rps,
            r.wrk.p50_ms,
            r.wrk.p99_ms,
            r.caddy_cpu_us_per_req,
            if r.agent {
                r.agent_cycles.to_string()
            } else {
                "".into()
            },
            if r.agent {
                format!("{:.1} ms", r.agent_cycle_ms)
            } else {
                "".into()
            },
            if r.agent {
                format!("{:.0} ms", r.agent_cpu_s * 1e3)
            } else {
                "".into()
            },
            if r.agent {
                r.buckets.to_string()
            } else {
                "".into()
            },
            r.wrk.errors
        );
    }
    println!();
    println!("| measure | no agent: mean (min–max) | noise | agent: mean (min–max) | noise | agent vs none | within noise | per-round agent/none: mean (min–max) |");
    println!("|---|---:|---:|---:|---:|---:|:-:|---:|");
    type Metric = (&'static str, fn(&Run) -> f64, &'static str);
    let metrics: [Metric; 4] = [
        ("req/s", |r| r.wrk.rps, ""),
        ("p50 latency", |r| r.wrk.p50_ms, " ms"),
        ("p99 latency", |r| r.wrk.p99_ms, " ms"),
        ("caddy CPU per request", |r| r.caddy_cpu_us_per_req, " µs"),
    ];
    for (name, f, unit) in metrics {
        let a: Vec<f64> = runs.iter().filter(|r| !r.agent).map(f).collect();
        let b: Vec<f64> = runs.iter().filter(|r| r.agent).map(f).collect();
        let (am, amin, amax) = stats(&a);
        let (bm, bmin, bmax) = stats(&b);
        let noise_a = 100.0 * (amax - amin) / am;
        let noise_b = 100.0 * (bmax - bmin) / bm;
        let diff = 100.0 * (bm - am) / am;
        let prec = if unit == " ms" { 3 } else { 1 };
        // Each agent run against the run without it in the same round.
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| 100.0 * (y - x) / x).collect();
        let (rm, rmin, rmax) = stats(&ratios);
        println!(
            "| {name} | {am:.prec$}{unit} ({amin:.prec$}–{amax:.prec$}) | {noise_a:.1}% | {bm:.prec$}{unit} ({bmin:.prec$}–{bmax:.prec$}) | {noise_b:.1}% | {diff:+.1}% | {} | {rm:+.1}% ({rmin:+.1}% – {rmax:+.1}%) |",
            if diff.abs() <= noise_a.max(noise_b) { "yes" } else { "no" }
        );
    }
    println!();
    let with: Vec<&Run> = runs.iter().filter(|r| r.agent).collect();
    let cpu: f64 = with.iter().map(|r| r.agent_cpu_s).sum();
    let secs = (with.len() as u64 * o.seconds) as f64;
    let cycles: u64 = with.iter().map(|r| r.agent_cycles).sum();
    let cycle_ms: f64 = with
        .iter()
        .map(|r| r.agent_cycle_ms * r.agent_cycles as f64)
        .sum::<f64>()
        / cycles.max(1) as f64;
    println!(
        "The agent during the runs with it: {cycles} cycles of {cycle_ms:.1} ms on average, {:.0} ms CPU in {secs:.0} s ({:.2}% of one core, the most it could take from caddy and wrk).\n",
        cpu * 1e3,
        100.0 * cpu / secs
    );
    println!("Noise: (max − min) / mean of the runs of one condition. \"Within noise\": |agent vs none| (difference of the means) ≤ the larger of the two noises. Per-round: each agent run against the run without the agent in the same round.\n");
}
