//! Flame graphs and diffs of real processes, checked against `go tool pprof` and a real browser.
//! `--format svg|folded` of `goheap profile` and `goheap record`: the SVG is well-formed XML, names
//! every function of pprof's top 10, is interactive (search, zoom) and renders in headless Chromium
//! to a picture that is not blank; folded stacks give, for every sample index, exactly pprof's flat
//! and cumulative value of every function. `goheap diff`: `go tool pprof -top` of its pprof diff is
//! `go tool pprof -diff_base BASE NEW -top`, line for line; its differential flame graph is red
//! where the heap grew and blue where it shrank.

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

/// The distinct `rgb(...)` fills of the SVG's frames.
fn frame_colours(svg: &str) -> std::collections::BTreeSet<[u8; 3]> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|r| r.parent().is_some_and(|g| g.has_tag_name("g")))
        .filter_map(|r| r.attribute("fill"))
        .filter_map(|f| {
            f.strip_prefix("rgb(")?
                .strip_suffix(')')
                .map(str::to_string)
        })
        .filter_map(|f| {
            let c: Vec<u8> = f.split(',').filter_map(|v| v.trim().parse().ok()).collect();
            (c.len() == 3).then(|| [c[0], c[1], c[2]])
        })
        .collect()
}

/// Checks the picture shows the flame graph: not one colour, and more than 2% of its pixels
/// painted exactly in the colours of the SVG's frames (a blank page, or one with only the title and
/// the background gradient, has none).
fn assert_not_blank(svg: &str, pixels: &[[u8; 3]], what: &str) {
    let distinct: std::collections::BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    let fills = frame_colours(svg);
    let painted = pixels.iter().filter(|p| fills.contains(*p)).count();
    let share = painted as f64 / pixels.len() as f64;
    println!(
        "SCREENSHOT {what}: {} colours, {:.1}% of the pixels in the {} frame colours",
        distinct.len(),
        100.0 * share,
        fills.len()
    );
    assert!(distinct.len() > 1, "{what}: the screenshot is one colour");
    assert!(
        share > 0.02,
        "{what}: the screenshot shows no flame graph ({:.2}% frame pixels)",
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
            assert_not_blank(&svg, &pixels, "goheap profile --format svg");
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

/// Profiles of two PIE heapfixture processes (different load addresses), one allocating twice as
/// much as the other, written by `goheap profile`: (small, large).
fn two_pie_profiles(s: &Scratch) -> (PathBuf, PathBuf) {
    let bin = fixture("heapfixture", GO, "pie");
    let mut paths = Vec::new();
    for (tag, scale) in [("small", "0.1"), ("large", "0.2")] {
        let ready = s.path(&format!("{tag}.ready"));
        let mut cmd = Command::new(&bin);
        cmd.env("GOGC", "off")
            .args(["-scale", scale, "-rate", "4096", "-ready"])
            .arg(&ready);
        let hf = start_and_wait(cmd, &ready, Duration::from_secs(60));
        let path = s.path(&format!("{tag}.pb.gz"));
        run_ok(&[
            "profile",
            "-p",
            &hf.pid.to_string(),
            "-q",
            "-o",
            path.to_str().unwrap(),
        ]);
        paths.push(path);
    }
    (paths.remove(0), paths.remove(0))
}

/// `go tool pprof -top <args>`, all nodes, the whole output.
fn pprof_top_text(s: &Scratch, args: &[&str]) -> String {
    let tmp = s.path("pprof-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(go())
        .args(["tool", "pprof", "-top", "-nodecount=100000"])
        .args(args)
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &s.0)
        .env_remove("GOROOT")
        .env_remove("GOFLAGS")
        .env_remove("GOTOOLCHAIN")
        .output()
        .expect("go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `go tool pprof -top` of `goheap diff --format pprof BASE NEW` is exactly
/// `go tool pprof -diff_base BASE NEW -top` (header, totals and percentages of BASE's total, every
/// row), for every sample index, both ways round, and for two different binaries.
#[test]
fn pprof_diff_is_what_go_tool_pprof_diff_base_shows() {
    let s = Scratch::new("diff-pprof");
    let (small, large) = two_pie_profiles(&s);
    let sa_profile = {
        let (sa, _) = start_steadyalloc(&s, "sa", 16.0);
        std::thread::sleep(Duration::from_secs(1));
        let p = s.path("steadyalloc.pb.gz");
        run_ok(&[
            "profile",
            "-p",
            &sa.pid.to_string(),
            "-q",
            "-o",
            p.to_str().unwrap(),
        ]);
        p
    };
    let mut pairs = vec![];
    for index in [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ] {
        pairs.push((&small, &large, index));
        pairs.push((&large, &small, index));
    }
    pairs.push((&sa_profile, &large, "alloc_space"));
    for (i, (base, new, index)) in pairs.into_iter().enumerate() {
        let d = s.path(&format!("diff{i}.pb.gz"));
        let out = run_ok(&[
            "diff",
            base.to_str().unwrap(),
            new.to_str().unwrap(),
            "--format",
            "pprof",
            "-o",
            d.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("go tool pprof -top"), "{stderr}");
        let si = format!("-sample_index={index}");
        let ours = pprof_top_text(&s, &[&si, d.to_str().unwrap()]);
        let theirs = pprof_top_text(
            &s,
            &[
                &si,
                "-diff_base",
                base.to_str().unwrap(),
                new.to_str().unwrap(),
            ],
        );
        assert!(
            theirs.lines().count() > 10,
            "pprof's diff is too short:\n{theirs}"
        );
        assert_eq!(
            ours,
            theirs,
            "diff {} {} ({index}): go tool pprof -top differs",
            base.display(),
            new.display()
        );
    }
}

/// The fill colours of the frames titled `function` in an inferno SVG.
fn frame_fills(svg: &str, function: &str) -> Vec<(u8, u8, u8)> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("g"))
        .filter(|g| {
            g.children().any(|c| {
                c.has_tag_name("title")
                    && c.text()
                        .is_some_and(|t| t.starts_with(&format!("{function} (")))
            })
        })
        .map(|g| {
            let fill = g
                .children()
                .find(|c| c.has_tag_name("rect"))
                .and_then(|r| r.attribute("fill"))
                .expect("frame rect with fill");
            let inner = fill
                .strip_prefix("rgb(")
                .and_then(|f| f.strip_suffix(')'))
                .unwrap_or_else(|| panic!("fill {fill}"));
            let c: Vec<u8> = inner
                .split(',')
                .map(|v| v.trim().parse().unwrap())
                .collect();
            (c[0], c[1], c[2])
        })
        .collect()
}

/// The differential flame graph is red where the heap grew and blue where it shrank (inferno
/// colours a frame by the change of its own value: callers without allocations of their own stay
/// grey), names the functions, and renders; the folded form lists each stack's two values.
#[test]
fn diff_svg_is_red_where_it_grew_and_blue_where_it_shrank() {
    let s = Scratch::new("diff-svg");
    let (small, large) = two_pie_profiles(&s);
    let grew = s.path("grew.svg");
    let out = run_ok(&[
        "diff",
        small.to_str().unwrap(),
        large.to_str().unwrap(),
        "--sample-index",
        "alloc_space",
        "-o",
        grew.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alloc_space: base"), "{stderr}");
    let shrank = s.path("shrank.svg");
    run_ok(&[
        "diff",
        large.to_str().unwrap(),
        small.to_str().unwrap(),
        "--sample-index",
        "alloc_space",
        "-q",
        "-o",
        shrank.to_str().unwrap(),
    ]);
    let (g, k) = (
        std::fs::read_to_string(&grew).unwrap(),
        std::fs::read_to_string(&shrank).unwrap(),
    );
    let red = |c: &(u8, u8, u8)| c.0 == 255 && c.1 < 250 && c.2 < 250;
    let blue = |c: &(u8, u8, u8)| c.2 == 255 && c.0 < 250 && c.1 < 250;
    for f in ["main.newPoint", "main.recorder.record", "main.deepChain"] {
        let fills = frame_fills(&g, f);
        assert!(
            fills.iter().any(red) && !fills.iter().any(blue),
            "{f} grew but its frames are {fills:?}"
        );
        let fills = frame_fills(&k, f);
        assert!(
            fills.iter().any(blue) && !fills.iter().any(red),
            "{f} shrank but its frames are {fills:?}"
        );
    }
    assert!(g.contains("function search(") && g.contains("function zoom("));
    let pixels = screenshot(&s, &grew);
    assert_not_blank(&g, &pixels, "goheap diff --format svg");

    // Folded: `stack BASE NEW`, the two values being each profile's own folded value.
    let out = run_ok(&[
        "diff",
        small.to_str().unwrap(),
        large.to_str().unwrap(),
        "--format",
        "folded",
        "--sample-index",
        "inuse_objects",
        "-q",
        "-o",
        "-",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let one = |p: &Path| -> BTreeMap<String, i64> {
        let bytes = std::fs::read(p).unwrap();
        let prof = pprof_proto::Profile::decode(&bytes).unwrap();
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for smp in prof.flat_samples().unwrap() {
            if smp.values[2] != 0 {
                let k: Vec<String> = smp.stack.iter().rev().map(|f| f.0.clone()).collect();
                *m.entry(k.join(";")).or_default() += smp.values[2];
            }
        }
        m
    };
    let (b, n) = (one(&small), one(&large));
    let mut lines = 0;
    for line in text.lines() {
        let mut f = line.rsplitn(3, ' ');
        let (nv, bv, stack) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        assert_eq!(
            bv.parse::<i64>().unwrap(),
            b.get(stack).copied().unwrap_or(0),
            "{line}"
        );
        assert_eq!(
            nv.parse::<i64>().unwrap(),
            n.get(stack).copied().unwrap_or(0),
            "{line}"
        );
        lines += 1;
    }
    let stacks: std::collections::BTreeSet<&String> = b.keys().chain(n.keys()).collect();
    assert_eq!(lines, stacks.len());
}
