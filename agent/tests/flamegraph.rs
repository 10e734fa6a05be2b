//! Flame graphs of real processes (`--format svg|folded` of `goheap profile` and `goheap record`),
//! checked against `go tool pprof` and a real browser: the SVG is well-formed XML, names every
//! function of pprof's top 10, is interactive (search, zoom) and renders in headless Chromium to a
//! picture that is not blank; folded stacks give, for every sample index, exactly pprof's flat and
//! cumulative value of every function.

mod agent_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn go() -> PathBuf {
    go_tool(GO)
}

fn run_ok(args: &[&str]) -> std::process::Output {
    let out = goheap(args);
    assert!(
        out.status.success(),
        "goheap {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `go tool pprof -top` of `profile` for `sample_index`, every node, exact units: function →
/// (flat, cum).
fn pprof_top(s: &Scratch, profile: &Path, extra: &[&str]) -> BTreeMap<String, (i64, i64)> {
    let tmp = s.path("pprof-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(go())
        .args(["tool", "pprof", "-top", "-unit=B"])
        .args(["-nodecount=100000", "-nodefraction=0", "-edgefraction=0"])
        .args(extra)
        .arg(profile)
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &s.0)
        .env_remove("GOROOT")
        .env_remove("GOFLAGS")
        .env_remove("GOTOOLCHAIN")
        .output()
        .expect("go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_top(&text)
}

/// Parses `-top` rows (`flat flat% sum% cum cum% name`) with `-unit=B` values (`123B`, `123`).
/// pprof lists a function once, inlined or not (` (inline)` when its every call was inlined).
fn parse_top(text: &str) -> BTreeMap<String, (i64, i64)> {
    let num = |v: &str| -> i64 {
        v.trim_end_matches('B')
            .parse()
            .unwrap_or_else(|_| panic!("not an exact value {v:?} in:\n{text}"))
    };
    let mut m = BTreeMap::new();
    let mut rows = false;
    for line in text.lines() {
        if line.trim_start().starts_with("flat") {
            rows = true;
            continue;
        }
        if !rows {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        // pprof marks frames inlined at their call site; the function is the same.
        let name = f[5..].join(" ");
        let name = name.strip_suffix(" (inline)").unwrap_or(&name).to_string();
        let e: &mut (i64, i64) = m.entry(name).or_default();
        e.0 += num(f[0]);
        e.1 += num(f[3]);
    }
    m
}

/// Flat (leaf) and cumulative (anywhere in the stack, once per stack) value of every function in
/// folded text, which must be `root;...;leaf value` lines.
fn folded_top(text: &str) -> BTreeMap<String, (i64, i64)> {
    let mut m: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for line in text.lines() {
        let (stack, v) = line.rsplit_once(' ').expect("`stack value`");
        let v: i64 = v.parse().expect("integer value");
        let frames: Vec<&str> = stack.split(';').collect();
        let leaf = frames.last().unwrap();
        m.entry(leaf.to_string()).or_default().0 += v;
        let mut seen = std::collections::HashSet::new();
        for f in &frames {
            if seen.insert(*f) {
                m.entry(f.to_string()).or_default().1 += v;
            }
        }
    }
    m
}

/// The frame names of an inferno SVG: the text of each frame's `<title>` before ` (`.
fn svg_frames(svg: &str) -> Vec<String> {
    // inferno writes an SVG DOCTYPE; roxmltree refuses DTDs unless asked.
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(svg, opts).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter(|n| n.parent().is_some_and(|p| p.has_tag_name("g")))
        .filter_map(|n| n.text())
        .filter_map(|t| t.rsplit_once(" (").map(|(name, _)| name.to_string()))
        .collect()
}

/// Renders `svg` in headless Chromium (1200×800) and returns the screenshot's RGB pixels.
fn screenshot(s: &Scratch, svg: &Path) -> Vec<[u8; 3]> {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run fixtures/install-toolchains.sh (it installs Debian's chromium for the tests)"
    );
    let png = s.path("shot.png");
    let profile_dir = s.path("chromium-profile");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1200,800",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", svg.display()))
        .env("HOME", &s.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish its screenshot in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium: {status}");
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "unexpected colour type {:?}",
        info.color_type
    );
    assert_eq!((info.width, info.height), (1200, 800));
    buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| [c[0], c[1], c[2]])
        .collect()
}

/// Checks the picture shows a flame graph: not one colour, and a good part of it frames (the
/// palette's saturated colours, far from the white page and the pale background gradient).
fn assert_not_blank(pixels: &[[u8; 3]], what: &str) {
    let mut counts: BTreeMap<[u8; 3], usize> = BTreeMap::new();
    for p in pixels {
        *counts.entry(*p).or_default() += 1;
    }
    let saturated = pixels
        .iter()
        .filter(|p| {
            let (lo, hi) = (*p.iter().min().unwrap(), *p.iter().max().unwrap());
            hi as i32 - lo as i32 > 80
        })
        .count();
    let share = saturated as f64 / pixels.len() as f64;
    println!(
        "SCREENSHOT {what}: {} colours, {:.1}% frame pixels",
        counts.len(),
        100.0 * share
    );
    assert!(counts.len() > 1, "{what}: the screenshot is one colour");
    assert!(
        counts.len() >= 16 && share > 0.02,
        "{what}: the screenshot looks blank ({} colours, {:.2}% frame pixels)",
        counts.len(),
        100.0 * share
    );
}

/// `goheap profile --format svg`: well-formed, every function of pprof's top 10 (of the same
/// sample index, from a pprof written from the same idle process) is a frame, search and zoom are
/// there, and Chromium renders it.
#[test]
fn profile_svg_has_pprofs_top_10_and_renders_in_chromium() {
    let s = Scratch::new("flame-svg");
    let hf = start_small_heapfixture(&s, "hf", 0.1);
    let pid = hf.pid.to_string();
    let pb = s.path("hf.pb.gz");
    run_ok(&["profile", "-p", &pid, "-q", "-o", pb.to_str().unwrap()]);
    for index in ["alloc_space", "inuse_space"] {
        let svg_path = s.path(&format!("hf-{index}.svg"));
        let out = run_ok(&[
            "profile",
            "-p",
            &pid,
            "--format",
            "svg",
            "--sample-index",
            index,
            "-o",
            svg_path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("open it in a browser"), "{stderr}");
        let svg = std::fs::read_to_string(&svg_path).unwrap();
        let frames = svg_frames(&svg);
        if index == "alloc_space" {
            let pixels = screenshot(&s, &svg_path);
            assert_not_blank(&pixels, "goheap profile --format svg");
        }
        let mut top: Vec<(String, (i64, i64))> =
            pprof_top(&s, &pb, &[&format!("-sample_index={index}")])
                .into_iter()
                .collect();
        top.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(&b.0)));
        let top10: Vec<&str> = top
            .iter()
            .filter(|(_, (flat, _))| *flat > 0)
            .take(10)
            .map(|(n, _)| n.as_str())
            .collect();
        assert!(top10.len() >= 5, "pprof's top is too short: {top10:?}");
        for f in &top10 {
            assert!(
                frames.iter().any(|x| x == f),
                "{index}: {f} (pprof top 10) is not a frame of the SVG; frames: {frames:?}"
            );
        }
        // Interactive: inferno's search and zoom.
        assert!(
            svg.contains("function search(") && svg.contains("function zoom("),
            "{index}: no search/zoom script"
        );
        assert!(svg.contains(&format!("{index} (scaled estimates)")));
    }
}

/// `goheap profile --format folded`: for every sample index, each function's flat value (leaf of
/// a root-first line) and cumulative value equal `go tool pprof -top`'s on the pprof written from
/// the same idle process.
#[test]
fn folded_stacks_equal_pprof_flat_and_cum_for_every_sample_index() {
    let s = Scratch::new("flame-folded");
    let hf = start_small_heapfixture(&s, "hf", 0.1);
    let pid = hf.pid.to_string();
    let pb = s.path("hf.pb.gz");
    run_ok(&["profile", "-p", &pid, "-q", "-o", pb.to_str().unwrap()]);
    for index in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ] {
        let out = run_ok(&[
            "profile",
            "-p",
            &pid,
            "-q",
            "--format",
            "folded",
            "--sample-index",
            index,
            "-o",
            "-",
        ]);
        let text = String::from_utf8(out.stdout).unwrap();
        // Root first: goroutine entry points (runtime.main, runtime.systemstack for the
        // runtime's own allocations), never an allocating leaf.
        assert!(
            text.lines().all(|l| l.starts_with("runtime.")),
            "{index}: lines must start at the root:\n{text}"
        );
        assert!(
            text.lines()
                .filter(|l| l.starts_with("runtime.main;"))
                .count()
                > 5
        );
        let ours = folded_top(&text);
        let theirs: BTreeMap<String, (i64, i64)> =
            pprof_top(&s, &pb, &[&format!("-sample_index={index}")])
                .into_iter()
                .filter(|(_, (flat, cum))| *flat != 0 || *cum != 0)
                .collect();
        assert!(theirs.len() > 5, "{index}: too few functions");
        assert_eq!(
            ours, theirs,
            "{index}: folded stacks differ from pprof -top"
        );
    }
}

/// `goheap record --format svg|folded` on steadyalloc: the two allocating functions are frames of a
/// well-formed SVG titled for the window, and alloc_objects folded lines count them.
#[test]
fn record_writes_flame_graphs_of_the_window() {
    let s = Scratch::new("flame-record");
    let (sa, _addr) = start_steadyalloc(&s, "sa", 32.0);
    let pid = sa.pid.to_string();
    let svg_path = s.path("window.svg");
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2s",
        "-q",
        "--format",
        "svg",
        "-o",
        svg_path.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let frames = svg_frames(&svg);
    for f in ["main.allocate", "main.makeBuffer", "main.makeRecords"] {
        assert!(frames.iter().any(|x| x == f), "{f} missing: {frames:?}");
    }
    assert!(svg.contains("goheap record: steadyalloc"), "title");
    assert!(
        svg.contains("alloc_space (scaled estimates)"),
        "default index"
    );
    let out = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2s",
        "-q",
        "--format",
        "folded",
        "--sample-index",
        "alloc_objects",
        "-o",
        "-",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let top = folded_top(&text);
    // 256 records per 16 KiB buffer.
    let (records, buffers) = (top["main.makeRecords"].0, top["main.makeBuffer"].0);
    assert!(buffers > 0 && records > 50 * buffers, "{text}");
}
