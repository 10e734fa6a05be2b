//! Oracle tests for `goheap::symbolize::pclntab` and `goheap::symbolize::locations`: build `tests/symoracle/main.go` with
//! real Go toolchains, run it, and require our answers from the binary file to equal what the Go
//! runtime reported about its own PCs (CallersFrames, FuncForPC, and the runtime/pprof heap
//! profile). Static checks compare against `.symtab` for amd64 and cross-compiled arm64 builds.
//!
//! Toolchains come from `$GOHEAP_CACHE/go/<ver>/goroot` (default `~/.cache/goheap`), installed by
//! `fixtures/install-toolchains.sh`; a missing toolchain fails the test.

mod support;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use goheap::symbolize::locations::LocationBuilder;
use goheap::symbolize::pclntab::{Frame, Pclntab};
use object::{Object, ObjectSection, ObjectSymbol};
use serde::Deserialize;
use support::{
    go_tool, gocache, XorShift, GO_1_19, GO_1_21, GO_1_22, GO_1_23, GO_1_24, GO_1_25, GO_1_26,
    GO_1_27,
};

/// Builds the oracle with toolchain `ver`; returns the executable path.
fn build(ver: &str, goarch: &str, tag: &str, flags: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("symoracle")
        .join(format!("{ver}-{goarch}-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/symoracle/main.go");
    std::fs::copy(&src, dir.join("main.go")).unwrap();
    std::fs::write(dir.join("go.mod"), "module symoracle\n\ngo 1.19\n").unwrap();
    let out = dir.join("symoracle");
    let cache = gocache(ver);
    let res = Command::new(go_tool(ver))
        .arg("build")
        .arg("-o")
        .arg(&out)
        .args(flags)
        .arg(".")
        .current_dir(&dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", cache)
        .env("CGO_ENABLED", "0")
        .env("GOARCH", goarch)
        .env("GOOS", "linux")
        .output()
        .expect("run go build");
    assert!(
        res.status.success(),
        "go build {ver} {goarch} {flags:?} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

#[derive(Deserialize, Debug, Clone)]
struct JFrame {
    pc: u64,
    func_nil: bool,
    function: String,
    file: String,
    line: i64,
    entry: u64,
    more: bool,
}

#[derive(Deserialize, Debug)]
struct JPc {
    pc: u64,
    func_for_pc: String,
    func_for_pc_nil: bool,
    func_entry: u64,
    frames: Option<Vec<JFrame>>,
}

#[derive(Deserialize, Debug)]
struct Oracle {
    go_version: String,
    goarch: String,
    load_bias: u64,
    stacks: Vec<Vec<u64>>,
    frames: Vec<Option<Vec<JFrame>>>,
    phys_stacks: Vec<Option<Vec<u64>>>,
    phys_frames: Vec<Option<Vec<JFrame>>>,
    pcs: Vec<JPc>,
    mem_records: Vec<Option<Vec<u64>>>,
}

// Minimal profile.proto subset for decoding the runtime's heap profile.
#[derive(Clone, PartialEq, prost::Message)]
struct PProfile {
    #[prost(message, repeated, tag = "2")]
    sample: Vec<PSample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<PLocation>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<PFunction>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct PSample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct PLocation {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "3")]
    address: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<PLine>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct PLine {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}
#[derive(Clone, PartialEq, prost::Message)]
struct PFunction {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
    #[prost(int64, tag = "5")]
    start_line: i64,
}

/// Frames as comparable tuples, relocated by `bias`.
fn ours(frames: &[Frame], bias: u64) -> Vec<(u64, bool, String, String, i64, u64)> {
    frames
        .iter()
        .map(|f| {
            (
                f.pc + bias,
                !f.has_func,
                f.function.clone(),
                f.file.clone(),
                f.line,
                f.entry + bias,
            )
        })
        .collect()
}

fn theirs(frames: &[JFrame]) -> Vec<(u64, bool, String, String, i64, u64)> {
    frames
        .iter()
        .map(|f| {
            (
                f.pc,
                f.func_nil,
                f.function.clone(),
                f.file.clone(),
                f.line,
                f.entry,
            )
        })
        .collect()
}

fn unbias(pcs: &[u64], bias: u64) -> Vec<u64> {
    pcs.iter().map(|p| p - bias).collect()
}

/// Runs the oracle binary and checks every answer.
fn run_and_compare(exe: &Path, expect_ver: &str) {
    let prof_path = exe.with_extension("pb.gz");
    let out = Command::new(exe)
        .arg(&prof_path)
        .env("GODEBUG", "profstackdepth=30")
        .output()
        .expect("run oracle");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Oracle = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    assert!(
        o.go_version.starts_with(&format!("go{expect_ver}")),
        "{}",
        o.go_version
    );
    assert_eq!(o.goarch, "amd64");

    let file = std::fs::read(exe).unwrap();
    let tab = Pclntab::parse(&file).expect("parse pclntab");
    let want_minor: u32 = expect_ver.split('.').nth(1).unwrap().parse().unwrap();
    assert_eq!(tab.go_version().minor, want_minor);
    let bias = o.load_bias;

    // Per-PC: FuncForPC(pc).Name()/Entry() and CallersFrames([]uintptr{pc}).
    let mut inlined_seen = 0;
    for p in &o.pcs {
        let name = tab.func_name_for_pc(p.pc - bias);
        if p.func_for_pc_nil {
            assert!(tab.func_for_pc(p.pc - bias).is_none(), "pc {:#x}", p.pc);
        } else {
            assert_eq!(name, p.func_for_pc, "FuncForPC({:#x}).Name()", p.pc);
            let f = tab.func_for_pc(p.pc - bias).expect("func");
            assert_eq!(
                f.entry + bias,
                p.func_entry,
                "FuncForPC({:#x}).Entry()",
                p.pc
            );
        }
        let want = p.frames.clone().unwrap_or_default();
        let got = tab.frames_for_pcs(&[p.pc - bias]);
        assert_eq!(
            ours(&got, bias),
            theirs(&want),
            "CallersFrames([{:#x}])",
            p.pc
        );
        // frame_at is the first frame CallersFrames yields: both have one, or neither does.
        match (tab.frame_at(p.pc - bias), want.first()) {
            (Some(first), Some(w)) => {
                assert_eq!(first.pc + bias, w.pc, "frame_at({:#x}).pc", p.pc);
                assert!(
                    !w.more || got.len() > 1,
                    "CallersFrames([{:#x}]) has more",
                    p.pc
                );
                if first.inlined {
                    inlined_seen += 1;
                }
            }
            (None, None) => {}
            (ours, theirs) => panic!(
                "frame_at({:#x}) is {ours:?}, the runtime's first frame {theirs:?}",
                p.pc
            ),
        }
    }
    assert!(
        inlined_seen > 5,
        "oracle exercised too few inlined PCs ({inlined_seen})"
    );

    // Full stacks, and stacks reduced to physical PCs.
    assert_eq!(o.stacks.len(), o.frames.len());
    for (s, f) in o.stacks.iter().zip(&o.frames) {
        let got = tab.frames_for_pcs(&unbias(s, bias));
        assert_eq!(
            ours(&got, bias),
            theirs(f.as_deref().unwrap_or(&[])),
            "stack {s:x?}"
        );
    }
    for (s, f) in o.phys_stacks.iter().zip(&o.phys_frames) {
        let s = s.as_deref().unwrap_or(&[]);
        let got = tab.frames_for_pcs(&unbias(s, bias));
        assert_eq!(
            ours(&got, bias),
            theirs(f.as_deref().unwrap_or(&[])),
            "phys stack {s:x?}"
        );
    }

    // Heap profile: same records, same order => identical locations and functions.
    let mut gz = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&prof_path).unwrap())
        .read_to_end(&mut gz)
        .unwrap();
    let prof = <PProfile as prost::Message>::decode(gz.as_slice()).expect("decode profile");
    assert_eq!(prof.sample.len(), o.mem_records.len(), "sample count");
    assert!(prof.sample.len() > 10);
    let mut lb = LocationBuilder::new(&tab);
    for (i, (rec, sample)) in o.mem_records.iter().zip(&prof.sample).enumerate() {
        let stk = unbias(rec.as_deref().unwrap_or(&[]), bias);
        let ids = lb.append_heap_sample(&stk);
        assert_eq!(ids, sample.location_id, "sample {i} stack {stk:x?}");
    }
    let (locs, funcs) = lb.finish();
    assert_eq!(locs.len(), prof.location.len(), "location count");
    let st = |i: i64| prof.string_table[i as usize].clone();
    let pfuncs: HashMap<u64, &PFunction> = prof.function.iter().map(|f| (f.id, f)).collect();
    for (ours_l, p) in locs.iter().zip(&prof.location) {
        assert_eq!(ours_l.id, p.id);
        assert_eq!(ours_l.address + bias, p.address, "location {}", p.id);
        let ol: Vec<(u64, i64)> = ours_l
            .lines
            .iter()
            .map(|l| (l.function_id, l.line))
            .collect();
        let pl: Vec<(u64, i64)> = p.line.iter().map(|l| (l.function_id, l.line)).collect();
        assert_eq!(ol, pl, "lines of location {}", p.id);
    }
    assert_eq!(funcs.len(), prof.function.len(), "function count");
    for f in &funcs {
        let p = pfuncs[&f.id];
        assert_eq!(
            (
                f.name.clone(),
                f.system_name.clone(),
                f.filename.clone(),
                f.start_line
            ),
            (st(p.name), st(p.system_name), st(p.filename), p.start_line),
            "function {}",
            f.id
        );
    }
    let generic = funcs
        .iter()
        .any(|f| f.name.contains("[go.shape.") || f.name.contains("[...]"));
    assert!(generic, "no generic function in the profile");
}

/// Static checks against `.symtab` (present in non-stripped builds).
fn check_against_symtab(exe: &Path, go119: bool) {
    let data = std::fs::read(exe).unwrap();
    let tab = Pclntab::parse(&data).expect("parse pclntab");
    let obj = object::File::parse(data.as_slice()).unwrap();
    let sym = |n: &str| {
        obj.symbols()
            .find(|s| s.name() == Ok(n))
            .map(|s| s.address())
    };
    assert_eq!(Some(tab.moduledata_addr()), sym("runtime.firstmoduledata"));
    let gofunc = if go119 { "go.func.*" } else { "go:func.*" };
    assert_eq!(Some(tab.gofunc_addr()), sym(gofunc), "{gofunc}");
    assert_eq!(Some(tab.text_start()), sym("runtime.text"));
    let pcl = obj
        .sections()
        .find(|s| s.name().is_ok_and(|n| n.ends_with(".gopclntab")))
        .expect("pclntab section");
    assert_eq!(tab.header_addr(), pcl.address());
    // Every function of the table has an identically named text symbol at its entry.
    let mut by_addr: HashMap<u64, Vec<String>> = HashMap::new();
    for s in obj.symbols() {
        if let Ok(n) = s.name() {
            by_addr.entry(s.address()).or_default().push(n.to_string());
        }
    }
    let mut n = 0;
    for f in tab.funcs() {
        let names = by_addr.get(&f.entry).cloned().unwrap_or_default();
        // Assembly functions carry an ABI suffix in .symtab only, and the linker writes '·' of
        // type-equality function names as '.' there.
        let fname = f.name.replace('·', ".");
        // Go 1.19 also shortens array types in pclntab names to "[...]".
        let ok = names
            .iter()
            .any(|n| *n == fname || n.strip_suffix(".abi0") == Some(&fname))
            || (go119 && fname.contains("[...]"));
        assert!(ok, "{} at {:#x}: symtab has {names:?}", f.name, f.entry);
        // Names can repeat (e.g. a function compiled into two packages); any match will do.
        assert_eq!(
            tab.func_by_name(&f.name).map(|g| g.name),
            Some(f.name.clone())
        );
        assert_eq!(
            tab.func_for_pc(f.entry).map(|g| g.name),
            Some(f.name.clone())
        );
        n += 1;
    }
    assert!(n > 1000, "only {n} functions");
    for rt in [
        "runtime.mallocgc",
        "runtime.goexit",
        "runtime.main",
        "main.main",
    ] {
        let f = tab
            .func_by_name(rt)
            .unwrap_or_else(|| panic!("{rt} missing"));
        assert_eq!(
            Some(f.entry),
            sym(rt).or_else(|| sym(&format!("{rt}.abi0"))),
            "{rt}"
        );
    }
}

fn oracle_for(ver: &str) {
    let plain = build(ver, "amd64", "default", &[]);
    check_against_symtab(&plain, ver == GO_1_19);
    run_and_compare(&plain, ver);
    let pie = build(ver, "amd64", "pie", &["-buildmode=pie"]);
    check_against_symtab(&pie, ver == GO_1_19);
    run_and_compare(&pie, ver);
}

#[test]
fn oracle_go1_19() {
    oracle_for(GO_1_19);
}

#[test]
fn oracle_go1_21() {
    oracle_for(GO_1_21);
}

#[test]
fn oracle_go1_22() {
    oracle_for(GO_1_22);
}

#[test]
fn oracle_go1_23() {
    oracle_for(GO_1_23);
}

#[test]
fn oracle_go1_24() {
    oracle_for(GO_1_24);
}

#[test]
fn oracle_go1_25() {
    oracle_for(GO_1_25);
}

#[test]
fn oracle_go1_26() {
    oracle_for(GO_1_26);
}

#[test]
fn oracle_go1_27() {
    oracle_for(GO_1_27);
}

/// Stripped binaries (`-s -w`): no `.symtab`, moduledata must still be found.
#[test]
fn oracle_stripped() {
    for (ver, tag, flags) in [
        (GO_1_27, "stripped", &["-ldflags=-s -w"][..]),
        (
            GO_1_19,
            "stripped-pie",
            &["-ldflags=-s -w", "-buildmode=pie"][..],
        ),
    ] {
        let exe = build(ver, "amd64", tag, flags);
        let data = std::fs::read(&exe).unwrap();
        let obj = object::File::parse(data.as_slice()).unwrap();
        assert!(
            obj.section_by_name(".symtab").is_none(),
            "{ver} {tag} not stripped"
        );
        run_and_compare(&exe, ver);
    }
}

/// arm64 cross-compiled twins: static checks against `.symtab` (they cannot run here).
#[test]
fn arm64_static() {
    for ver in [GO_1_19, GO_1_21, GO_1_23, GO_1_27] {
        for (tag, flags) in [("default", &[][..]), ("pie", &["-buildmode=pie"][..])] {
            let exe = build(ver, "arm64", tag, flags);
            check_against_symtab(&exe, ver == GO_1_19);
        }
    }
}

/// Garbage, truncation and random mutation never panic.
#[test]
fn hostile_input() {
    assert!(Pclntab::parse(&[]).is_err());
    assert!(Pclntab::parse(b"\x7fELF garbage").is_err());
    assert!(Pclntab::parse(&[0u8; 4096]).is_err());
    let exe = build(GO_1_23, "amd64", "default", &[]);
    let data = std::fs::read(&exe).unwrap();
    let obj = object::File::parse(data.as_slice()).unwrap();
    let pcl = obj.section_by_name(".gopclntab").unwrap();
    let (pcl_off, pcl_len) = pcl.file_range().unwrap();
    let (pcl_off, pcl_len) = (pcl_off as usize, pcl_len as usize);
    drop(obj);
    for cut in [
        16,
        64,
        4096,
        data.len() / 2,
        pcl_off + 8,
        pcl_off + 100,
        pcl_off + pcl_len / 2,
    ] {
        let _ = Pclntab::parse(&data[..cut.min(data.len())]);
    }
    let good = Pclntab::parse(&data).unwrap();
    let probe: Vec<u64> = good.funcs().step_by(97).map(|f| f.entry + 3).collect();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut rnd = move || rng.next_u64();
    let mut buf = data.clone();
    let mut parsed_ok = 0;
    for round in 0..200 {
        buf.copy_from_slice(&data);
        let n = 1 + (rnd() % 64) as usize;
        for _ in 0..n {
            // Mostly hit the pclntab (headers, ftab, _func records, pc tables), sometimes anywhere.
            let pos = if round % 4 == 0 {
                (rnd() as usize) % buf.len()
            } else if round % 4 == 1 {
                pcl_off + (rnd() as usize) % 128.min(pcl_len)
            } else {
                pcl_off + (rnd() as usize) % pcl_len
            };
            buf[pos] = rnd() as u8;
        }
        if let Ok(t) = Pclntab::parse(&buf) {
            parsed_ok += 1;
            for &pc in &probe {
                let _ = t.frames_for_pcs(&[pc, pc + 1, pc + 2]);
                let _ = t.func_name_for_pc(pc);
                let _ = t.expand_final_inline_frame(&[pc, pc + 7]);
                let mut lb = LocationBuilder::new(&t);
                let _ = lb.append_heap_sample(&[pc, pc + 5, pc]);
            }
        }
    }
    assert!(
        parsed_ok > 0,
        "no mutated input parsed; mutations never reached the lookup paths"
    );
}
