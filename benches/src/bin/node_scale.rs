//! Issue #9's node-scale acceptance benchmarks: `goheap agent --interval 2s` (the binary, run as a
//! subprocess) watching Debian 12's Go daemons and the repo's fixtures. Three scenarios, each
//! with a fresh agent:
//!
//! 1. **daemons** — the nine Debian daemons (etcd, caddy, nats-server, syncthing, prometheus,
//!    containerd, influxd, rclone, restic), one process each, no profile requested: the agent's
//!    RssAnon, VmRSS and VmHWM after `--idle-seconds` (15 s), and each process's state.
//! 2. **growth** — five copies each of etcd, caddy, rclone and prometheus in separate files (as
//!    container images are: distinct inodes, so distinct binaries to the agent), started one by
//!    one; at k = 0, 1, 5, 10, 20 distinct binaries (one process each) a fresh agent runs for
//!    `--idle-seconds`, no profile requested. Reported: idle RSS per k and the least-squares slope,
//!    the "idle RSS growth per extra binary".
//! 3. **node** — those 20 plus ten processes each of the `steadyalloc` fixture built by three Go
//!    versions: 50 processes of 23 distinct binaries, the setup. Measured: (a) the time from
//!    the agent's start until all 50 show `readable` in `GET /processes` (polled every 100 ms);
//!    (b) RSS idle (no profile requested) at `--idle-seconds` or two cycles after the last became
//!    readable; (c) then one `GET /debug/pprof/heap?pid=N` per process in turn, and the peak
//!    (VmHWM) after.
//!
//! Markdown tables go to stdout, progress to stderr. `--quick`: two copies instead of five
//! (k = 0, 1, 4, 8), three fixture processes per Go version (17 processes), 10 s idle points.
//!
//! Needs (installs nothing itself): the Debian packages `etcd-server caddy nats-server syncthing
//! prometheus containerd influxdb rclone restic` (their services are not started where there is
//! no systemd or a `policy-rc.d` says 101), the fixtures (`fixtures/build.sh`) and `cargo build
//! --release -p goheap`. Run as root: the benchmark re-runs itself as PID 1 of a private PID
//! namespace (`unshare`), so the agent sees only the benchmark's processes, and the kernel kills
//! whatever is left when it exits. Each daemon gets a tiny configuration, its own data directory
//! under a scratch directory and fresh loopback ports; before measuring, every daemon's sockets
//! are checked to be on loopback. All is stopped and removed at the end, also on Ctrl-C or a
//! failure (process groups, killed by guards on drop).
//!
//! Run: `cargo build --release -p goheap -p goheap-benches && target/release/node_scale
//! [--quick] [--only daemons,growth,node] [--interval 2s] [--idle-seconds S] [--timeout S]
//! [--go-versions 1.19,1.23.9,1.26.6] [--no-isolate] [--goheap PATH]`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goheap_benches::daemons::{check_installed, package_version, Daemon, Launch, Ready};
use goheap_benches::node::{self, mib, Agent, Fleet, Group, Mem, Processes};
use goheap_benches::{cache_dir, support, Scratch};

struct Opts {
    quick: bool,
    only: Vec<String>,
    interval: String,
    idle: Duration,
    timeout: Duration,
    go_versions: Vec<String>,
    isolate: bool,
    goheap: Option<PathBuf>,
}

const USAGE: &str = "node_scale [--quick] [--only daemons,growth,node] [--interval 2s] [--idle-seconds S] [--timeout S] [--go-versions A,B,C] [--no-isolate] [--goheap PATH]";

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        only: vec!["daemons".into(), "growth".into(), "node".into()],
        interval: "2s".into(),
        idle: Duration::ZERO,
        timeout: Duration::ZERO,
        go_versions: [support::GO_1_19, support::GO_1_23, support::GO_1_26]
            .map(String::from)
            .to_vec(),
        isolate: true,
        goheap: None,
    };
    let (mut idle, mut timeout) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--only" => o.only = val()?.split(',').map(str::to_string).collect(),
            "--interval" => o.interval = val()?,
            "--idle-seconds" => idle = Some(Duration::from_secs(val()?.parse()?)),
            "--timeout" => timeout = Some(Duration::from_secs(val()?.parse()?)),
            "--go-versions" => o.go_versions = val()?.split(',').map(str::to_string).collect(),
            "--no-isolate" => o.isolate = false,
            "--goheap" => o.goheap = Some(val()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => anyhow::bail!("unknown argument {a:?}; usage: {USAGE}"),
        }
    }
    for s in &o.only {
        anyhow::ensure!(
            ["daemons", "growth", "node"].contains(&s.as_str()),
            "unknown scenario {s:?}"
        );
    }
    o.idle = idle.unwrap_or(Duration::from_secs(if o.quick { 10 } else { 15 }));
    o.timeout = timeout.unwrap_or(Duration::from_secs(if o.quick { 45 } else { 90 }));
    Ok(o)
}

#[derive(Clone)]
enum Program {
    Debian(Daemon),
    Fixture(String),
}

/// One distinct binary (its own file).
struct Binary {
    label: String,
    program: Program,
    source: PathBuf,
    path: PathBuf,
    package: String,
}

/// Which binaries each scenario runs (indexes into the binary list).
struct Plan {
    bins: Vec<Binary>,
    /// The nine daemons, one each.
    daemons: Vec<usize>,
    /// The copies of etcd, caddy, rclone and prometheus, interleaved (#1 of each, then #2, …).
    copies: Vec<usize>,
    /// The fixture binaries, one per Go version.
    fixtures: Vec<usize>,
    fixture_procs: usize,
    checkpoints: Vec<usize>,
}

fn plan(o: &Opts, bindir: &Path) -> anyhow::Result<Plan> {
    let copied = [
        Daemon::Etcd,
        Daemon::Caddy,
        Daemon::Rclone,
        Daemon::Prometheus,
    ];
    let ncopies = if o.quick { 2 } else { 5 };
    let mut bins = Vec::new();
    let mut copies = Vec::new();
    for copy in 0..ncopies {
        for d in copied {
            copies.push(bins.len());
            bins.push(Binary {
                path: bindir
                    .join(format!("{}.{}", d.name(), copy + 1))
                    .join(d.name()),
                label: format!("{}#{}", d.name(), copy + 1),
                program: Program::Debian(d),
                source: d.installed_path(),
                package: d.package().to_string(),
            });
        }
    }
    let mut daemons = Vec::new();
    for d in Daemon::ALL {
        match copied.iter().position(|c| *c == d) {
            Some(i) => daemons.push(copies[i]),
            None => {
                daemons.push(bins.len());
                bins.push(Binary {
                    path: bindir.join(d.name()).join(d.name()),
                    label: d.name().to_string(),
                    program: Program::Debian(d),
                    source: d.installed_path(),
                    package: d.package().to_string(),
                });
            }
        }
    }
    let mut fixtures = Vec::new();
    for v in &o.go_versions {
        let source = cache_dir()
            .join("fixtures/steadyalloc")
            .join(v)
            .join("default/steadyalloc");
        anyhow::ensure!(
            source.exists(),
            "fixture {} missing: run fixtures/build.sh (or pick built versions with --go-versions)",
            source.display()
        );
        fixtures.push(bins.len());
        bins.push(Binary {
            label: format!("steadyalloc go{v}"),
            program: Program::Fixture(v.clone()),
            path: bindir.join(format!("steadyalloc-{v}")).join("steadyalloc"),
            source,
            package: "(repo fixture)".into(),
        });
    }
    Ok(Plan {
        bins,
        daemons,
        copies,
        fixtures,
        fixture_procs: if o.quick { 3 } else { 10 },
        checkpoints: if o.quick {
            vec![0, 1, 4, 8]
        } else {
            vec![0, 1, 5, 10, 20]
        },
    })
}

/// One started process.
struct Running {
    bin: usize,
    pid: i32,
    group: usize,
    ready: Ready,
    spawned: Instant,
    log: PathBuf,
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

struct Bench {
    opts: Opts,
    goheap: PathBuf,
    scratch: Scratch,
    bins: Vec<Binary>,
    fleet: Fleet,
    running: Vec<Running>,
    started: usize,
    agents: usize,
}

impl Bench {
    fn start(&mut self, bin: usize) -> anyhow::Result<()> {
        self.started += 1;
        let b = &self.bins[bin];
        let dir = self.scratch.0.join("run").join(format!(
            "{}.{}",
            b.label.replace([' ', '#'], "-"),
            self.started
        ));
        let Launch {
            mut cmd,
            ready,
            keep_stdin,
        } = match &b.program {
            Program::Debian(d) => d.prepare(&b.path, &dir)?,
            Program::Fixture(_) => {
                std::fs::create_dir_all(&dir)?;
                let ready = dir.join("ready");
                let mut cmd = Command::new(&b.path);
                cmd.args(["-rate-mib-per-sec", "1", "-listen", "127.0.0.1:0", "-ready"])
                    .arg(&ready);
                Launch {
                    cmd,
                    ready: Ready::File(ready),
                    keep_stdin: false,
                }
            }
        };
        let log = dir.join("output.log");
        let g = Group::spawn(&b.label, &mut cmd, &log, keep_stdin)?;
        self.running.push(Running {
            bin,
            pid: g.pid(),
            group: self.fleet.0.len(),
            ready,
            spawned: Instant::now(),
            log,
        });
        self.fleet.0.push(g);
        Ok(())
    }

    /// Stops every running process (before a scenario that needs a different set).
    fn stop_all(&mut self) {
        self.fleet.stop_all();
        self.running.clear();
    }

    /// Waits until every started process is up and on loopback only, or fails naming the one that
    /// exited.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            self.check_all_alive()?;
            let pending = self
                .running
                .iter()
                .filter(|r| match &r.ready {
                    Ready::Port(p) => !node::port_open(*p),
                    Ready::File(f) => !f.exists(),
                    Ready::Alive(d) => r.spawned.elapsed() < *d,
                })
                .count();
            if pending == 0 {
                break;
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(180),
                "{pending} processes not up after 180 s"
            );
            node::sleep(Duration::from_millis(100))?;
        }
        let outside = node::non_loopback_sockets(&self.pids());
        anyhow::ensure!(
            outside.is_empty(),
            "sockets outside loopback (stopping):\n{}",
            outside.join("\n")
        );
        Ok(())
    }

    fn check_all_alive(&mut self) -> anyhow::Result<()> {
        for r in &self.running {
            if let Some(st) = self.fleet.0[r.group].exited() {
                anyhow::bail!(
                    "{} (pid {}) exited: {st}; its output ({}):\n{}",
                    self.bins[r.bin].label,
                    r.pid,
                    r.log.display(),
                    log_tail(&r.log)
                );
            }
        }
        Ok(())
    }

    fn pids(&self) -> Vec<i32> {
        self.running.iter().map(|r| r.pid).collect()
    }

    fn agent(&mut self) -> anyhow::Result<Agent> {
        self.agents += 1;
        let log = self.scratch.0.join(format!("agent-{}.log", self.agents));
        Agent::start(&self.goheap, &self.opts.interval, &log)
    }
}

/// What polling `/processes` saw.
struct Watch {
    first_readable: HashMap<i32, f64>,
    /// When (seconds since the agent's start) and at which cycle all were readable.
    all_readable: Option<(f64, u64)>,
    /// When none was `found` (new) any more.
    settled: Option<f64>,
    /// When the watch ended because the rest are in states the agent keeps.
    stuck: Option<f64>,
    last: Processes,
}

/// States the agent keeps without retrying into `readable`.
const FINAL_STATES: &[&str] = &[
    "profiling-disabled",
    "no-symbol-table",
    "permission-denied",
    "unsupported",
    "disabled",
];

/// Polls `/processes` every 100 ms until all `pids` are readable, or each is readable or in a
/// final state, or `timeout` since the agent's start.
fn watch(agent: &mut Agent, pids: &[i32], timeout: Duration) -> anyhow::Result<Watch> {
    let mut w = Watch {
        first_readable: HashMap::new(),
        all_readable: None,
        settled: None,
        stuck: None,
        last: Processes::default(),
    };
    loop {
        let p = agent.processes()?;
        let t = agent.started.elapsed().as_secs_f64();
        let (mut settled, mut finished) = (true, true);
        for &pid in pids {
            match p.get(pid) {
                Some(s) if s.state == "readable" => {
                    w.first_readable.entry(pid).or_insert(t);
                }
                Some(s) if s.state != "found" => {
                    finished &= FINAL_STATES.contains(&s.state.as_str());
                }
                _ => (settled, finished) = (false, false),
            }
        }
        if settled && w.settled.is_none() {
            w.settled = Some(t);
        }
        w.last = p;
        if w.first_readable.len() == pids.len() {
            w.all_readable = Some((t, w.last.cycles));
            return Ok(w);
        }
        if finished {
            w.stuck = Some(t);
            return Ok(w);
        }
        if agent.started.elapsed() >= timeout {
            return Ok(w);
        }
        node::sleep(Duration::from_millis(100))?;
    }
}

/// An idle point: at least `idle` after the agent's start and two cycles after the watch ended.
fn wait_idle(agent: &mut Agent, w: &Watch, idle: Duration) -> anyhow::Result<(u64, f64, Mem)> {
    let c = agent.wait_cycles(w.last.cycles + 2, Duration::from_secs(120))?;
    node::sleep(idle.saturating_sub(agent.started.elapsed()))?;
    let mem = Mem::of(agent.pid());
    let c = agent.processes()?.cycles.max(c);
    Ok((c, agent.started.elapsed().as_secs_f64(), mem))
}

fn describe_watch(w: &Watch, n: usize, timeout: Duration) -> String {
    match (w.all_readable, w.stuck) {
        (Some((t, c)), _) => format!("{t:.1} s (cycle {c})"),
        (None, Some(t)) => format!(
            "never: {}/{n} readable, the rest in a final state after {t:.1} s",
            w.first_readable.len()
        ),
        (None, None) => format!(
            "not within {:.0} s: {}/{n} readable",
            timeout.as_secs_f64(),
            w.first_readable.len()
        ),
    }
}

struct IdleRun {
    k: usize,
    watch: Watch,
    cycle: u64,
    at: f64,
    mem: Mem,
}

fn idle_run(b: &mut Bench) -> anyhow::Result<IdleRun> {
    let pids = b.pids();
    let mut agent = b.agent()?;
    let watch = watch(&mut agent, &pids, b.opts.timeout)?;
    let (cycle, at, mem) = wait_idle(&mut agent, &watch, b.opts.idle)?;
    b.check_all_alive()?;
    eprintln!(
        "  {} processes: {}; at {at:.0} s (cycle {cycle}) VmRSS {} RssAnon {} VmHWM {}",
        pids.len(),
        describe_watch(&watch, pids.len(), b.opts.timeout),
        mib(mem.rss),
        mib(mem.anon),
        mib(mem.hwm)
    );
    Ok(IdleRun {
        k: pids.len(),
        watch,
        cycle,
        at,
        mem,
    })
}

struct ProfileResult {
    status: u16,
    bytes: usize,
    ms: f64,
    reason: String,
}

struct NodeRun {
    idle: IdleRun,
    profiles: Vec<ProfileResult>,
    profiles_s: f64,
    after: Mem,
    later_cycle: u64,
    later: Mem,
    cpu_idle: f64,
    cpu: f64,
    wall: f64,
    mean_cycle: f64,
    last: Processes,
}

fn node_run(b: &mut Bench) -> anyhow::Result<NodeRun> {
    let pids = b.pids();
    let mut agent = b.agent()?;
    let watch = watch(&mut agent, &pids, b.opts.timeout)?;
    eprintln!(
        "  all readable: {}",
        describe_watch(&watch, pids.len(), b.opts.timeout)
    );
    let (cycle, at, mem) = wait_idle(&mut agent, &watch, b.opts.idle)?;
    let cpu_idle = node::cpu_seconds(agent.pid()).unwrap_or(0.0);
    eprintln!(
        "  idle at {at:.0} s (cycle {cycle}): VmRSS {} RssAnon {} VmHWM {}; one heap profile per process…",
        mib(mem.rss),
        mib(mem.anon),
        mib(mem.hwm)
    );
    let t0 = Instant::now();
    let mut profiles = Vec::new();
    for &pid in &pids {
        node::check_stop()?;
        let t = Instant::now();
        let (status, body) = node::http_get(
            agent.port,
            &format!("/debug/pprof/heap?pid={pid}"),
            Duration::from_secs(120),
        )?;
        let reason = if status == 200 {
            String::new()
        } else {
            String::from_utf8_lossy(&body).trim().to_string()
        };
        profiles.push(ProfileResult {
            status,
            bytes: body.len(),
            ms: t.elapsed().as_secs_f64() * 1e3,
            reason,
        });
    }
    let profiles_s = t0.elapsed().as_secs_f64();
    let after = Mem::of(agent.pid());
    eprintln!(
        "  after the profiles: VmRSS {} RssAnon {} VmHWM {}",
        mib(after.rss),
        mib(after.anon),
        mib(after.hwm)
    );
    let c = agent.processes()?.cycles;
    let later_cycle = agent.wait_cycles(c + 2, Duration::from_secs(120))?;
    let later = Mem::of(agent.pid());
    let last = agent.processes()?;
    let mean_cycle = agent.mean_cycle_seconds()?;
    let cpu = node::cpu_seconds(agent.pid()).unwrap_or(0.0);
    let wall = agent.started.elapsed().as_secs_f64();
    b.check_all_alive()?;
    Ok(NodeRun {
        idle: IdleRun {
            k: pids.len(),
            watch,
            cycle,
            at,
            mem,
        },
        profiles,
        profiles_s,
        after,
        later_cycle,
        later,
        cpu_idle,
        cpu,
        wall,
        mean_cycle,
        last,
    })
}

fn main() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    node::isolate(opts.isolate)?;
    node::install_stop_handlers();
    let goheap = node::goheap_binary(opts.goheap.clone())?;
    check_installed(&Daemon::ALL)?;
    let scratch = Scratch::new("node-scale")?;
    let bindir = scratch.0.join("bin");
    let p = plan(&opts, &bindir)?;
    for b in &p.bins {
        std::fs::create_dir_all(b.path.parent().expect("bin dir"))?;
        std::fs::copy(&b.source, &b.path)?;
    }
    eprintln!(
        "{} binaries copied under {}; private PID namespace: {}",
        p.bins.len(),
        bindir.display(),
        node::isolated()
    );
    let mut b = Bench {
        opts,
        goheap,
        scratch,
        bins: p.bins,
        fleet: Fleet::default(),
        running: Vec::new(),
        started: 0,
        agents: 0,
    };
    let want = |s: &str| b.opts.only.iter().any(|o| o == s);
    let (run_daemons, run_growth, run_node) = (want("daemons"), want("growth"), want("node"));

    let mut daemons = None;
    if run_daemons {
        eprintln!("daemons: the nine Debian daemons, one process each");
        for &bin in &p.daemons {
            b.start(bin)?;
        }
        b.wait_ready()?;
        let run = idle_run(&mut b)?;
        let running: Vec<(usize, i32)> = b.running.iter().map(|r| (r.bin, r.pid)).collect();
        daemons = Some((run, running));
        b.stop_all();
    }

    let mut growth = Vec::new();
    if run_growth || run_node {
        eprintln!(
            "growth: copies of etcd, caddy, rclone and prometheus, a fresh agent at k = {:?}",
            p.checkpoints
        );
        if run_growth && p.checkpoints.contains(&0) {
            growth.push(idle_run(&mut b)?);
        }
        for (i, &bin) in p.copies.iter().enumerate() {
            b.start(bin)?;
            if run_growth && p.checkpoints.contains(&(i + 1)) {
                b.wait_ready()?;
                growth.push(idle_run(&mut b)?);
            }
        }
    }

    let mut node_result = None;
    if run_node {
        for &bin in &p.fixtures {
            for _ in 0..p.fixture_procs {
                b.start(bin)?;
            }
        }
        b.wait_ready()?;
        eprintln!(
            "node: {} processes of {} distinct binaries, all up, sockets on loopback",
            b.running.len(),
            p.copies.len() + p.fixtures.len()
        );
        let run = node_run(&mut b)?;
        let running: Vec<(usize, i32)> = b.running.iter().map(|r| (r.bin, r.pid)).collect();
        node_result = Some((run, running));
    }
    b.stop_all();

    println!(
        "# node_scale{}: `goheap agent --interval {}`, {}\n",
        if b.opts.quick { " --quick" } else { "" },
        b.opts.interval,
        if node::isolated() {
            "in a private PID namespace (the agent sees only the benchmark's processes)"
        } else {
            "NOT isolated (the agent also watched the machine's other Go processes)"
        }
    );
    if let Some((run, _)) = &node_result {
        report_acceptance(&b, &growth, run);
    }
    if let Some((run, running)) = &daemons {
        report_daemons(&b, run, running);
    }
    if !growth.is_empty() {
        report_growth(&growth);
    }
    if let Some((run, running)) = &node_result {
        report_node(&b, run, running);
    }
    Ok(())
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

/// Least-squares fit over the points with at least one binary (k = 0 is the agent alone).
fn slope(growth: &[IdleRun], f: fn(&Mem) -> u64) -> Option<(f64, f64)> {
    node::linear_fit(
        &growth
            .iter()
            .filter(|g| g.k > 0)
            .map(|g| (g.k as f64, f(&g.mem) as f64))
            .collect::<Vec<_>>(),
    )
}

fn report_acceptance(b: &Bench, growth: &[IdleRun], run: &NodeRun) {
    let n = run.idle.k;
    println!("## Acceptance (issue #9)\n");
    println!("| measure | today | target | met |");
    println!("|---|---:|---:|:-:|");
    println!(
        "| all {n} readable after the agent's start | {} | ≤ 10 s | {} |",
        describe_watch(&run.idle.watch, n, b.opts.timeout),
        yes_no(run.idle.watch.all_readable.is_some_and(|(t, _)| t <= 10.0))
    );
    println!(
        "| peak RSS (VmHWM) after one heap profile per process | {} | ≤ 32 MiB | {} |",
        mib(run.after.hwm),
        yes_no(run.after.hwm <= 32 * 1024)
    );
    if let Some((s, _)) = slope(growth, |m| m.anon) {
        let ks: Vec<String> = growth
            .iter()
            .filter(|g| g.k > 0)
            .map(|g| g.k.to_string())
            .collect();
        println!(
            "| idle RSS growth per extra binary (RssAnon slope, k = {}) | {s:.0} KiB | ≤ 256 KiB | {} |",
            ks.join(", "),
            yes_no(s <= 256.0)
        );
    }
    println!();
}

fn short(s: &str, max: usize) -> String {
    let s = s.replace('|', "/");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// The per-binary table: states, method, buckets, time to readable, heap profile answers.
fn per_binary(
    b: &Bench,
    running: &[(usize, i32)],
    w: &Watch,
    last: &Processes,
    profiles: Option<&[ProfileResult]>,
) {
    println!("| binary | package | version | Go | procs | state | method | buckets (max) | readable after | heap profile |");
    println!("|---|---|---|---|---:|---|---|---:|---:|---|");
    let mut order: Vec<usize> = Vec::new();
    for (bin, _) in running {
        if !order.contains(bin) {
            order.push(*bin);
        }
    }
    for bin in order {
        let info = &b.bins[bin];
        let mut states: BTreeMap<String, usize> = BTreeMap::new();
        let mut details: Vec<String> = Vec::new();
        let (mut go, mut method, mut buckets, mut procs) = (String::new(), String::new(), 0, 0);
        let mut readable_at: Option<f64> = Some(0.0);
        let mut prof: Vec<String> = Vec::new();
        for (j, (_, pid)) in running.iter().enumerate().filter(|(_, r)| r.0 == bin) {
            procs += 1;
            let s = last.get(*pid);
            *states
                .entry(s.map_or("absent".into(), |s| s.state.clone()))
                .or_default() += 1;
            if let Some(s) = s {
                go.clone_from(&s.go_version);
                if let Some(m) = &s.method {
                    method.clone_from(m);
                }
                buckets = buckets.max(s.buckets);
                if let Some(d) = &s.detail {
                    if !details.contains(d) {
                        details.push(d.clone());
                    }
                }
            }
            readable_at = match (readable_at, w.first_readable.get(pid)) {
                (Some(a), Some(t)) => Some(a.max(*t)),
                _ => None,
            };
            if let Some(p) = profiles.map(|p| &p[j]) {
                prof.push(if p.status == 200 {
                    format!("200, {:.1} KiB, {:.0} ms", p.bytes as f64 / 1024.0, p.ms)
                } else {
                    format!("{}: {}", p.status, short(&p.reason, 60))
                });
            }
        }
        let mut state: Vec<String> = states
            .iter()
            .map(|(s, c)| {
                if procs > 1 {
                    format!("{s} ×{c}")
                } else {
                    s.clone()
                }
            })
            .collect();
        if !details.is_empty() {
            state.push(format!("({})", short(&details.join("; "), 90)));
        }
        let prof = match prof.len() {
            0 => "—".to_string(),
            1 => prof[0].clone(),
            _ => {
                let ok: Vec<&ProfileResult> = running
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.0 == bin)
                    .filter_map(|(j, _)| profiles.map(|p| &p[j]))
                    .collect();
                if ok.iter().all(|p| p.status == 200) {
                    let kib = |p: &&ProfileResult| p.bytes as f64 / 1024.0;
                    let ms = |p: &&ProfileResult| p.ms;
                    format!(
                        "200 ×{}, {:.1}–{:.1} KiB, {:.0}–{:.0} ms",
                        ok.len(),
                        ok.iter().map(kib).fold(f64::INFINITY, f64::min),
                        ok.iter().map(kib).fold(0.0, f64::max),
                        ok.iter().map(ms).fold(f64::INFINITY, f64::min),
                        ok.iter().map(ms).fold(0.0, f64::max)
                    )
                } else {
                    prof.dedup();
                    prof.join("; ")
                }
            }
        };
        let version = match &info.program {
            Program::Debian(d) => package_version(d.package()).unwrap_or_default(),
            Program::Fixture(v) => format!("built by Go {v}"),
        };
        println!(
            "| {} | {} | {version} | {go} | {procs} | {} | {method} | {buckets} | {} | {prof} |",
            info.label,
            info.package,
            state.join(" "),
            readable_at.map_or("—".into(), |t| format!("{t:.1} s")),
        );
    }
    println!();
}

fn report_daemons(b: &Bench, run: &IdleRun, running: &[(usize, i32)]) {
    println!(
        "## The nine Debian daemons, one process each, no profile requested\n\n\
         All readable: {}. Agent at {:.0} s (cycle {}): **RssAnon {}**, VmRSS {}, **VmHWM {}** \
         (the issue's baseline: 93 MB anonymous after 15 s, 112 MB peak).\n",
        describe_watch(&run.watch, run.k, b.opts.timeout),
        run.at,
        run.cycle,
        mib(run.mem.anon),
        mib(run.mem.rss),
        mib(run.mem.hwm)
    );
    per_binary(b, running, &run.watch, &run.watch.last, None);
}

fn report_growth(growth: &[IdleRun]) {
    println!("## Idle agent RSS by distinct binaries watched\n");
    println!("Copies of etcd, caddy, rclone, prometheus (interleaved), one process each, no profile requested, a fresh agent for each k (k = 0: the agent with no Go process to watch).\n");
    println!("| distinct binaries | all readable after | idle point | VmRSS | RssAnon | VmHWM |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for g in growth {
        println!(
            "| {} | {} | {:.0} s (cycle {}) | {} | {} | {} |",
            g.k,
            g.watch.all_readable.map_or(
                format!("{}/{}", g.watch.first_readable.len(), g.k),
                |(t, _)| { format!("{t:.1} s") }
            ),
            g.at,
            g.cycle,
            mib(g.mem.rss),
            mib(g.mem.anon),
            mib(g.mem.hwm)
        );
    }
    println!();
    if let (Some((s, c)), Some((sr, cr)), Some((sh, _))) = (
        slope(growth, |m| m.anon),
        slope(growth, |m| m.rss),
        slope(growth, |m| m.hwm),
    ) {
        println!(
            "Least-squares slope per extra binary (k ≥ 1): RssAnon {s:.0} KiB (intercept {:.1} MiB), VmRSS {sr:.0} KiB (intercept {:.1} MiB), VmHWM {sh:.0} KiB.\n",
            c / 1024.0,
            cr / 1024.0
        );
    }
}

fn report_node(b: &Bench, run: &NodeRun, running: &[(usize, i32)]) {
    let n = run.idle.k;
    let distinct = {
        let mut d: Vec<usize> = running.iter().map(|r| r.0).collect();
        d.sort();
        d.dedup();
        d.len()
    };
    println!("## Node: {n} Go processes of {distinct} distinct binaries\n");
    println!(
        "All {n} readable after the agent's start: {}.\n",
        describe_watch(&run.idle.watch, n, b.opts.timeout)
    );
    println!("| when | cycle | VmRSS | RssAnon | VmHWM |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| idle at {:.0} s, no profile requested | {} | {} | {} | {} |",
        run.idle.at,
        run.idle.cycle,
        mib(run.idle.mem.rss),
        mib(run.idle.mem.anon),
        mib(run.idle.mem.hwm)
    );
    println!(
        "| right after one heap profile per process, in turn ({:.0} ms for all {n}) | | {} | {} | {} |",
        run.profiles_s * 1e3,
        mib(run.after.rss),
        mib(run.after.anon),
        mib(run.after.hwm)
    );
    println!(
        "| two cycles later | {} | {} | {} | {} |",
        run.later_cycle,
        mib(run.later.rss),
        mib(run.later.anon),
        mib(run.later.hwm)
    );
    println!();
    println!(
        "Agent CPU (utime+stime): {:.2} s until the idle point, {:.2} s in {:.0} s in all ({:.1}% of one core); mean cycle {:.0} ms.\n",
        run.cpu_idle,
        run.cpu,
        run.wall,
        100.0 * run.cpu / run.wall,
        run.mean_cycle * 1e3
    );
    per_binary(
        b,
        running,
        &run.idle.watch,
        &run.last,
        Some(&run.profiles[..]),
    );
}
