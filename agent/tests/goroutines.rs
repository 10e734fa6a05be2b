//! Goroutines read from outside (`goheap goroutines`, goroutine/ and pclntab/unwind.rs):
//!
//! - the checked-in layout table equals what each fixture's own DWARF says (every toolchain,
//!   amd64 and arm64), so it cannot drift;
//! - oracle: the `goroutines` fixture parks known goroutines (chan send/recv, select, Mutex,
//!   WaitGroup, Sleep, accept, a blocking read syscall), writes its own goroutine profile and
//!   `runtime.NumGoroutine`, then stops changing; goheap's profile has the same stacks
//!   (function, file, line) with the same counts, and the same total — every Go version, default,
//!   PIE and stripped; its spinning goroutine is reported running, counted apart, with the
//!   creation site the runtime's own `debug=2` text gives;
//! - Debian's stripped prometheus and etcd: goheap's goroutine profile matches their own
//!   `/debug/pprof/goroutine`, taken back to back.
//!
//! Fuzzed `g` memory (no panic, bounded time and memory) is the `goroutines` fuzz target
//! (`agent/fuzz`), replayed on stable by `fuzz_regressions.rs`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use goheap::binary::elf::Arch;
use goheap::goroutine::dwarf_layout::layout_from_dwarf;
use goheap::goroutine::layout::GLayout;
use goheap::goroutine::read::{read_goroutines, GoroutineLimits, GoroutineTarget};
use goheap::runtime::version::GoVersion;
use goheap::symbolize::pclntab::Pclntab;
use goheap::target::memory::{MemoryError, ReadStats, RemoteMemory};
use pprof_proto::Profile;
use support::*;

fn version_of(v: &str) -> GoVersion {
    GoVersion::parse(&format!("go{v}")).unwrap()
}

#[test]
fn layout_table_matches_every_fixtures_dwarf() {
    let mut checked = 0;
    for v in GO_VERSIONS {
        for (program, mode, arch) in [
            ("heapfixture", "default", Arch::Amd64),
            ("heapfixture", "arm64", Arch::Arm64),
            ("goroutines", "default", Arch::Amd64),
        ] {
            let path = fixture(program, v, mode);
            let derived =
                layout_from_dwarf(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let table = GLayout::for_version(&version_of(v), arch);
            assert_eq!(
                derived,
                table,
                "Go {v} {mode}: goroutine/layout.rs row differs from {}'s DWARF; regenerate it with `goheap goroutine-layout`",
                path.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, GO_VERSIONS.len() * 3);
}

#[test]
fn stripped_fixture_has_no_dwarf_and_gets_the_table() {
    let path = fixture("goroutines", GO_1_27, "stripped");
    let e = layout_from_dwarf(&path).expect_err("a -s -w binary has no DWARF");
    assert!(e.to_string().contains("no DWARF"), "{e}");
}

/// (function, file, line) frames, leaf first → goroutine count, leaving out main.main's stacks
/// (the fixture's main goroutine wrote the profile; it is parked elsewhere when goheap reads) and
/// running goroutines (goheap labels them `state=running`; the runtime's profile has them in
/// `main.spin`): those are counted apart by [`running`].
fn stacks(p: &Profile) -> BTreeMap<Vec<(String, String, i64)>, i64> {
    let mut m = BTreeMap::new();
    for s in p.flat_samples().unwrap() {
        if s.stack.iter().any(|f| f.0 == "main.main") || is_running(&s) {
            continue;
        }
        *m.entry(s.stack.clone()).or_insert(0) += s.values[0];
    }
    m
}

fn is_running(s: &pprof_proto::FlatSample) -> bool {
    has_running_label(s) || s.stack.iter().any(|f| f.0 == "main.spin")
}

fn has_running_label(s: &pprof_proto::FlatSample) -> bool {
    s.labels.iter().any(|(k, v)| {
        k == "state" && matches!(v, pprof_proto::FlatLabelValue::Str(v) if v == "running")
    })
}

/// Goroutines in samples labelled `state=running` (goheap's running goroutines).
fn labelled_running(p: &Profile) -> i64 {
    p.flat_samples()
        .unwrap()
        .iter()
        .filter(|s| has_running_label(s))
        .map(|s| s.values[0])
        .sum()
}

/// The running goroutines of a profile: function names of their stacks → count.
fn running(p: &Profile) -> BTreeMap<Vec<String>, i64> {
    let mut m = BTreeMap::new();
    for s in p.flat_samples().unwrap() {
        if is_running(&s) {
            let names = s.stack.iter().map(|f| f.0.clone()).collect();
            *m.entry(names).or_insert(0) += s.values[0];
        }
    }
    m
}

fn total(p: &Profile) -> i64 {
    p.flat_samples().unwrap().iter().map(|s| s.values[0]).sum()
}

/// `debug=2` text (the runtime's or goheap's) split into goroutines: goid → (header line, the
/// rest of its lines).
fn goroutine_blocks(text: &str) -> BTreeMap<u64, (String, Vec<String>)> {
    let mut m = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().skip_while(|l| !l.starts_with("goroutine "));
        let Some(head) = lines.next() else { continue };
        let Some(goid) = head
            .strip_prefix("goroutine ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        m.insert(
            goid,
            (head.to_string(), lines.map(str::to_string).collect()),
        );
    }
    m
}

/// The `created by` line of a goroutine's block and the `file:line +off` line under it.
fn created_by(lines: &[String]) -> Option<(String, String)> {
    let i = lines.iter().position(|l| l.starts_with("created by "))?;
    Some((lines[i].clone(), lines.get(i + 1)?.trim().to_string()))
}

fn check_oracle(version: &str, mode: &str) {
    let dir = Scratch::new(&format!("goroutines-{version}-{mode}"));
    let mut cmd = Command::new(fixture("goroutines", version, mode));
    // "spin": the fixture also runs goroutines on CPU (main.spin), which goheap sees running.
    cmd.arg(&dir.0).arg("spin");
    let proc = start_and_wait(cmd, &dir.path("ready"), Duration::from_secs(30));
    let own = Profile::decode(&std::fs::read(dir.path("goroutine.pb.gz")).unwrap()).unwrap();
    let own_text = std::fs::read_to_string(dir.path("goroutine.txt")).unwrap();
    let count: i64 = std::fs::read_to_string(dir.path("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        total(&own),
        count,
        "Go {version} {mode}: the fixture's own profile vs NumGoroutine"
    );
    // The spinners, by the runtime's own account: how many, and their goids and creation sites.
    let spinners: i64 = running(&own).values().sum();
    assert!(
        spinners >= 1,
        "Go {version} {mode}: no main.spin in {own_text}"
    );
    let own_blocks = goroutine_blocks(&own_text);
    let spin_sites: BTreeMap<u64, (String, String)> = own_blocks
        .iter()
        .filter(|(_, (_, l))| l.iter().any(|l| l.starts_with("main.spin(")))
        .map(|(&id, (_, l))| (id, created_by(l).expect("a spinner's created by")))
        .collect();
    assert_eq!(spin_sites.len() as i64, spinners, "{own_text}");
    let out = dir.path("ours.pb.gz");
    let pid = proc.pid.to_string();
    // A spinner is preempted now and then (sysmon, every 10 ms): read again when one was not
    // caught running.
    let mut ours = None;
    let mut summary = String::new();
    for _attempt in 0..5 {
        let o = goheap(&["goroutines", "--pid", &pid, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "Go {version} {mode}: {o:?}");
        summary = String::from_utf8_lossy(&o.stderr).into_owned();
        let p = Profile::decode(&std::fs::read(&out).unwrap()).unwrap();
        let done = labelled_running(&p) == spinners && total(&p) == count;
        ours = Some(p);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = ours.unwrap();
    let types: Vec<_> = ours.sample_types().unwrap();
    assert_eq!(types, vec![("goroutine".to_string(), "count".to_string())]);
    assert_eq!(
        total(&ours),
        count,
        "Go {version} {mode}: goheap's total vs NumGoroutine"
    );
    // Running goroutines are counted apart: one sample labelled state=running whose one frame is
    // the start function, with as many goroutines as the runtime saw spinning.
    assert_eq!(
        labelled_running(&ours),
        spinners,
        "Go {version} {mode}: goroutines labelled state=running"
    );
    assert!(
        summary.contains(&format!(
            "{count} goroutines ({spinners} running, stacks not read)"
        )),
        "Go {version} {mode}: goheap's summary: {summary}"
    );
    assert_eq!(
        running(&ours),
        BTreeMap::from([(vec!["main.spin".to_string()], spinners)]),
        "Go {version} {mode}: goheap's running goroutines"
    );
    let (a, b) = (stacks(&own), stacks(&ours));
    assert_eq!(
        b, a,
        "Go {version} {mode}: goheap's stacks (left) vs the runtime's own (right)"
    );
    // Every kind of wait is there (the fixture's numbers: 3 sends, 4 receives, …).
    let leaf_with = |f: &str| -> i64 {
        b.iter()
            .filter(|(s, _)| s.iter().any(|fr| fr.0 == f))
            .map(|(_, c)| c)
            .sum()
    };
    for (f, n) in [
        ("main.chanSend", 3),
        ("main.chanRecv", 4),
        ("main.selectWait", 2),
        ("main.mutexWait", 5),
        ("main.waitGroupWait", 3),
        ("main.sleeper", 2),
        ("main.acceptWait", 1),
        ("main.syscallRead", 1),
    ] {
        assert_eq!(leaf_with(f), n, "Go {version} {mode}: goroutines in {f}");
    }
    // The text form names states and creators; the spinners are [running], created where the
    // runtime's own debug=2 text says (function, file:line and offset of the go statement).
    let mut text = String::new();
    for _attempt in 0..5 {
        let t = goheap(&["goroutines", "--pid", &pid, "--format", "text"]);
        assert!(t.status.success(), "{t:?}");
        text = String::from_utf8_lossy(&t.stdout).into_owned();
        if text.matches(" [running]:").count() as i64 == spinners {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(text.matches("[chan send]:").count(), 3, "{text}");
    assert_eq!(text.matches("[syscall]:").count(), 1, "{text}");
    assert_eq!(
        text.matches(" [running]:").count() as i64,
        spinners,
        "Go {version} {mode}: {text}"
    );
    let blocks = goroutine_blocks(&text);
    for (goid, site) in &spin_sites {
        let (head, lines) = blocks
            .get(goid)
            .unwrap_or_else(|| panic!("Go {version} {mode}: spinner {goid} not in {text}"));
        assert_eq!(
            head,
            &format!("goroutine {goid} [running]:"),
            "Go {version} {mode}"
        );
        assert_eq!(
            created_by(lines).as_ref(),
            Some(site),
            "Go {version} {mode}: spinner {goid}'s creation site (left: goheap, right: the runtime's debug=2)"
        );
    }
    assert_eq!(
        text.matches("created by main.main in goroutine 1").count() as i64,
        if version_of(version).at_least(21) {
            count - 1
        } else {
            0
        },
        "{text}"
    );
}

#[test]
fn goroutine_profile_equals_the_runtimes_own_default() {
    for v in GO_VERSIONS {
        check_oracle(v, "default");
    }
}

#[test]
fn goroutine_profile_equals_the_runtimes_own_pie() {
    for v in GO_VERSIONS {
        check_oracle(v, "pie");
    }
}

#[test]
fn leak_view_groups_goroutines_blocked_longer_than_since() {
    let dir = Scratch::new("goroutines-leak");
    let mut cmd = Command::new(fixture("goroutines", GO_1_27, "default"));
    cmd.arg(&dir.0);
    let proc = start_and_wait(cmd, &dir.path("ready"), Duration::from_secs(30));
    let pid = proc.pid.to_string();
    // waitsince is stamped by the first GC that finds a goroutine blocked: the fixture's forced
    // GC ran after every goroutine parked, so after 1.5 s all of them have waited > 1 s.
    std::thread::sleep(Duration::from_millis(1500));
    let o = goheap(&[
        "goroutines",
        "--pid",
        &pid,
        "--format",
        "text",
        "--since",
        "1s",
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\n5 goroutines [sync.Mutex.Lock"), "{text}");
    assert!(text.contains("\n4 goroutines [chan receive]"), "{text}");
    // With a threshold longer than the process has lived, none qualify.
    let o = goheap(&[
        "goroutines",
        "--pid",
        &pid,
        "--format",
        "text",
        "--since",
        "1h",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("0 goroutines blocked"), "{text}");
}

#[test]
fn goroutine_profile_equals_the_runtimes_own_stripped() {
    for v in GO_VERSIONS {
        check_oracle(v, "stripped");
    }
}

/// `[entry, end)` of functions from a binary's own `.gopclntab` (what a stripped binary has).
struct PclntabFuncs(Pclntab);

impl goheap::binary::coderef::FunctionRanges for PclntabFuncs {
    fn function_range(&self, name: &str) -> Option<std::ops::Range<u64>> {
        self.0.func_by_name(name).map(|f| f.entry..f.end)
    }
}

fn symtab_value(path: &std::path::Path, name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(name));
    sym.unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .address()
}

#[test]
fn allgs_and_allglen_recovered_from_code_equal_the_symtab() {
    // Recovery reads only machine code and .gopclntab (what a stripped binary keeps), so run it
    // on binaries that also have .symtab and compare: amd64 and arm64 (PIE too), every version.
    // (The stripped amd64 fixtures are checked end to end by the stripped oracle test.)
    let mut checked = 0;
    for v in GO_VERSIONS {
        for (program, mode) in [
            ("goroutines", "default"),
            ("goroutines", "pie"),
            ("heapfixture", "arm64"),
        ] {
            let path = fixture(program, v, mode);
            let elf = std::fs::read(&path).unwrap();
            let funcs = PclntabFuncs(Pclntab::parse(&elf).unwrap());
            let got = goheap::binary::coderef::recover_goroutine_globals(&elf, &funcs)
                .unwrap_or_else(|e| panic!("Go {v} {program} {mode}: {e}"));
            assert_eq!(
                (got.allgs, got.allglen),
                (
                    symtab_value(&path, "runtime.allgs"),
                    symtab_value(&path, "runtime.allglen")
                ),
                "Go {v} {program} {mode}: {:?}",
                got.evidence
            );
            checked += 1;
        }
    }
    assert_eq!(checked, GO_VERSIONS.len() * 3);
}

/// Function names per frame (leaf first) → goroutines, leaving out the goroutine that serves the
/// profile request (in `runtime/pprof.writeGoroutine`).
fn stacks_by_name(p: &Profile) -> BTreeMap<Vec<String>, i64> {
    let mut m = BTreeMap::new();
    for s in p.flat_samples().unwrap() {
        let names: Vec<String> = s.stack.iter().map(|f| f.0.clone()).collect();
        if names.iter().any(|n| n == "runtime/pprof.writeGoroutine") {
            continue;
        }
        *m.entry(names).or_insert(0) += s.values[0];
    }
    m
}

/// A server's own `/debug/pprof/goroutine` on `port` and goheap's goroutine profile of `pid`, taken
/// back to back, have the same stacks (function names per frame) with the same counts, up to
/// `slack` goroutines that started or ended in between (the request's own connection goroutines);
/// retried up to 5 times for a quiescent moment. The server runs at least `min` goroutines.
fn goroutines_match_own_endpoint(what: &str, pid: i32, port: u16, scratch: &Scratch, min: i64) {
    let slack = 2;
    let pid = pid.to_string();
    let out = scratch.path("ours.pb.gz");
    let mut last = String::new();
    for attempt in 0..5 {
        let r = http_get(port, "/debug/pprof/goroutine").unwrap();
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let theirs = stacks_by_name(&Profile::decode(&r.body).unwrap());
        let o = goheap(&["goroutines", "--pid", &pid, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{what}: {o:?}");
        let ours = stacks_by_name(&Profile::decode(&std::fs::read(&out).unwrap()).unwrap());
        let keys: std::collections::BTreeSet<&Vec<String>> =
            theirs.keys().chain(ours.keys()).collect();
        let diff: i64 = keys
            .iter()
            .map(|k| {
                (theirs.get(*k).copied().unwrap_or(0) - ours.get(*k).copied().unwrap_or(0)).abs()
            })
            .sum();
        let (n, m): (i64, i64) = (theirs.values().sum(), ours.values().sum());
        // The top stacks (most goroutines first) must be the same ones.
        let top = |s: &BTreeMap<Vec<String>, i64>| -> Vec<Vec<String>> {
            let mut v: Vec<_> = s.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            v.into_iter().take(3).map(|(k, _)| k.clone()).collect()
        };
        if diff <= slack && (n - m).abs() <= slack && top(&theirs) == top(&ours) {
            assert!(n >= min, "{what} runs dozens of goroutines, saw {n}");
            return;
        }
        last = format!(
            "attempt {attempt}: {diff} goroutines differ ({n} theirs, {m} ours)\ntheirs: {theirs:#?}\nours: {ours:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("goroutine profiles of {what} differ in 5 attempts; last: {last}");
}

/// Debian's stripped Prometheus serves its own goroutine profile; goheap's, taken right after,
/// has the same stacks (function names) with the same counts.
#[test]
fn stripped_prometheus_goroutines_match_its_own_endpoint() {
    let scratch = Scratch::new("goroutines-prometheus");
    let (prom, port) = start_prometheus(&scratch, "global:\n  scrape_interval: 1h\n");
    std::thread::sleep(Duration::from_secs(2));
    goroutines_match_own_endpoint("prometheus", prom.pid, port, &scratch, 16);
}

/// Debian's stripped etcd (a one-member cluster, `--enable-pprof`) likewise: its own goroutine
/// profile and goheap's, back to back, have the same stacks with the same counts.
#[test]
fn stripped_etcd_goroutines_match_its_own_endpoint() {
    let scratch = Scratch::new("goroutines-etcd");
    let (etcd, port) = start_etcd(&scratch);
    // Let the member elect itself and publish (a burst of goroutines at start), then settle.
    std::thread::sleep(Duration::from_secs(3));
    goroutines_match_own_endpoint("etcd", etcd.pid, port, &scratch, 16);
}

/// The GC state read from the runtime's globals equals what the process's own runtime/metrics
/// said at the same quiescent moment (after two forced GCs, nothing allocating): every version,
/// default and PIE. Metrics a release lacks (`/gc/gogc:percent` etc. before 1.21) are not compared.
#[test]
fn gc_state_equals_the_processes_own_runtime_metrics() {
    use goheap::goroutine::gc::GcLocation;
    use goheap::target::procfs::ProcPaths;
    for v in GO_VERSIONS {
        for mode in ["default", "pie"] {
            let dir = Scratch::new(&format!("gc-{v}-{mode}"));
            let mut cmd = Command::new(fixture("goroutines", v, mode));
            cmd.arg(&dir.0);
            let proc = start_and_wait(cmd, &dir.path("ready"), Duration::from_secs(30));
            let own: HashMap<String, u64> = std::fs::read_to_string(dir.path("gc"))
                .unwrap()
                .lines()
                .map(|l| {
                    let (k, v) = l.split_once(' ').unwrap();
                    (k.to_string(), v.parse().unwrap())
                })
                .collect();
            assert!(own.contains_key("/gc/cycles/total:gc-cycles"), "{own:?}");
            let root = std::path::Path::new("/proc");
            let info = goheap::binary::cache::inspect(&ProcPaths::new(root, proc.pid)).unwrap();
            let map = goheap::target::maps::MemoryMap::read(root, proc.pid).unwrap();
            let bias = goheap::target::open::load_bias(&info, &map).unwrap();
            let mem = goheap::target::memory::VmReader::open(root, proc.pid).unwrap();
            let loc = GcLocation::of(&info.binary).unwrap();
            let s = loc.read(&mem, bias).unwrap();
            let ours: [(&str, u64); 5] = [
                ("/gc/cycles/total:gc-cycles", s.cycles),
                ("/gc/heap/goal:bytes", s.heap_goal_bytes),
                ("/gc/heap/live:bytes", s.heap_live_bytes),
                ("/gc/gogc:percent", s.gogc_percent as u64),
                ("/gc/gomemlimit:bytes", s.memory_limit_bytes as u64),
            ];
            for (name, value) in ours {
                if let Some(&want) = own.get(name) {
                    assert_eq!(value, want, "Go {v} {mode}: {name}");
                }
            }
            assert!(s.cycles >= 2, "Go {v} {mode}: the fixture forced two GCs");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            assert!(
                s.last_gc_unix_ns <= now && now - s.last_gc_unix_ns < 60_000_000_000,
                "Go {v} {mode}: last GC {} vs now {now}",
                s.last_gc_unix_ns
            );
        }
    }
}

/// Memory of a real process, except that one `g`'s saved SP moves after the first batch of
/// header reads, as a goroutine that ran between goheap's two reads would: it is dropped and
/// counted, every other goroutine is kept.
struct MovingG<'a> {
    inner: &'a dyn RemoteMemory,
    g: u64,
    sched_sp: u64,
    batches: std::cell::Cell<u32>,
}

impl RemoteMemory for MovingG<'_> {
    fn pid(&self) -> i32 {
        self.inner.pid()
    }
    fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemoryError> {
        let n = self.inner.read_partial(addr, buf)?;
        let at = self.g + self.sched_sp;
        if self.batches.get() >= 2 && addr <= at && at + 8 <= addr + n as u64 {
            let o = (at - addr) as usize;
            let sp = u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
            buf[o..o + 8].copy_from_slice(&(sp - 64).to_le_bytes());
        }
        Ok(n)
    }
    fn read_batch(
        &self,
        reqs: &mut [goheap::target::memory::ReadRequest<'_>],
    ) -> Result<(), MemoryError> {
        self.batches.set(self.batches.get() + 1);
        for r in reqs.iter_mut() {
            r.got = self.read_partial(r.addr, r.buf)?;
        }
        Ok(())
    }
    fn stats(&self) -> ReadStats {
        ReadStats::default()
    }
}

#[test]
fn a_goroutine_that_changes_between_the_reads_is_dropped_and_counted() {
    let dir = Scratch::new("goroutines-moving");
    let bin = fixture("goroutines", GO_1_27, "default");
    let mut cmd = Command::new(&bin);
    cmd.arg(&dir.0);
    let proc = start_and_wait(cmd, &dir.path("ready"), Duration::from_secs(30));
    let elf = std::fs::read(&bin).unwrap();
    let tab = Pclntab::parse(&elf).unwrap();
    let version = version_of(GO_1_27);
    let layout = GLayout::for_version(&version, Arch::Amd64);
    let vm =
        goheap::target::memory::VmReader::open(std::path::Path::new("/proc"), proc.pid).unwrap();
    let target = |mem| GoroutineTarget {
        mem,
        pclntab: &tab,
        layout,
        version,
        uses_lr: false,
        allgs: symtab_value(&bin, "runtime.allgs"),
        allglen: symtab_value(&bin, "runtime.allglen"),
        bias: 0,
    };
    let limits = GoroutineLimits::for_version(&version);
    let steady = read_goroutines(&target(&vm), &limits).unwrap();
    assert_eq!((steady.changed, steady.invalid), (0, 0));
    // The g of one parked goroutine: allgs[i] for the first waiting user goroutine.
    let allgs_ptr = vm.read_u64(symtab_value(&bin, "runtime.allgs")).unwrap();
    let victim = steady
        .goroutines
        .iter()
        .find(|g| g.goid != 1 && !g.system)
        .unwrap();
    let mut g_addr = 0;
    for i in 0..steady.allglen {
        let p = vm.read_u64(allgs_ptr + 8 * i).unwrap();
        if vm.read_u64(p + layout.goid).unwrap() == victim.goid {
            g_addr = p;
        }
    }
    assert_ne!(g_addr, 0);
    let moving = MovingG {
        inner: &vm,
        g: g_addr,
        sched_sp: layout.sched_sp,
        batches: std::cell::Cell::new(0),
    };
    let s = read_goroutines(&target(&moving), &limits).unwrap();
    assert_eq!(s.changed, 1);
    assert_eq!(s.goroutines.len(), steady.goroutines.len() - 1);
    assert!(s.goroutines.iter().all(|g| g.goid != victim.goid));
}
