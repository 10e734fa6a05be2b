//! Flame graphs of heap profiles: collapsed ("folded") stacks of one sample type, and interactive
//! SVGs (search, click to zoom) rendered by the `inferno` crate, including its differential mode
//! for two profiles (growth red, shrinkage blue).
//!
//! Folded stacks are one line per distinct stack, root first, frames joined by `;`, then a space and
//! the summed value of the chosen sample type (`main.main;main.work;main.alloc 1048576`). Frames are
//! function names as pprof shows them (inlined calls expanded; an unsymbolized location is its
//! address in hex); lines are sorted, zero values left out.

use std::collections::BTreeMap;
use std::io::Write;

use pprof_proto::Profile;

/// Stacks (root first, `;`-joined) and their summed value of one sample type.
pub type Folded = BTreeMap<String, i64>;

/// Why a flame graph could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    #[error("the profile has no sample type {wanted:?} (it has: {have})")]
    NoSampleType { wanted: String, have: String },
    #[error("reading the profile: {0}")]
    Profile(#[from] pprof_proto::ProfileError),
    #[error("rendering the flame graph: {0}")]
    Render(#[from] std::io::Error),
}

/// The sample type pprof shows by default: the profile's `default_sample_type` if set, else the
/// last sample type (`inuse_space` for a heap profile).
pub fn default_sample_type(p: &Profile) -> Option<String> {
    if p.default_sample_type != 0 {
        if let Ok(s) = p.string(p.default_sample_type) {
            return Some(s.to_string());
        }
    }
    p.sample_type_names().ok()?.pop()
}

/// The index and unit of sample type `name` in `p`.
pub fn sample_type_index(p: &Profile, name: &str) -> Result<(usize, String), FlameError> {
    let types = p.sample_types()?;
    types
        .iter()
        .position(|(t, _)| t == name)
        .map(|i| (i, types[i].1.clone()))
        .ok_or_else(|| FlameError::NoSampleType {
            wanted: name.to_string(),
            have: types
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A frame name made safe for the folded format (no `;`, no line breaks).
fn frame_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect()
}

/// The folded stacks of `p` for sample type `sample_type`, zero sums left out.
pub fn fold(p: &Profile, sample_type: &str) -> Result<Folded, FlameError> {
    let (index, _) = sample_type_index(p, sample_type)?;
    let mut out = Folded::new();
    for s in p.flat_samples()? {
        let v = s.values.get(index).copied().unwrap_or(0);
        if v == 0 {
            continue;
        }
        // flat_samples lists frames leaf first; folded stacks are root first.
        let stack = s
            .stack
            .iter()
            .rev()
            .map(|f| frame_name(&f.0))
            .collect::<Vec<_>>()
            .join(";");
        let stack = if stack.is_empty() {
            "(no frames)".to_string()
        } else {
            stack
        };
        let e = out.entry(stack).or_default();
        *e = e.saturating_add(v);
    }
    out.retain(|_, v| *v != 0);
    Ok(out)
}

/// The folded text: one `stack value` line per stack, sorted.
pub fn folded_text(f: &Folded) -> String {
    let mut s = String::new();
    for (stack, v) in f {
        s.push_str(stack);
        s.push(' ');
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// What a flame graph shows in its header and tooltips.
pub struct Labels {
    pub title: String,
    pub subtitle: Option<String>,
    /// What a value counts (`bytes`, `objects`).
    pub count_name: String,
}

fn options(labels: &Labels) -> inferno::flamegraph::Options<'static> {
    let mut o = inferno::flamegraph::Options::default();
    o.title = labels.title.clone();
    o.subtitle = labels.subtitle.clone();
    o.count_name = labels.count_name.clone();
    o.colors =
        inferno::flamegraph::color::Palette::Basic(inferno::flamegraph::color::BasicPalette::Mem);
    o.hash = true;
    // Root at the top, as pprof's own flame graph view draws it (and a tall graph opens at its root).
    o.direction = inferno::flamegraph::Direction::Inverted;
    o
}

/// The unit of a sample type as a flame graph counts it.
pub fn count_name(unit: &str) -> String {
    match unit {
        "count" => "objects".into(),
        "" => "samples".into(),
        u => u.into(),
    }
}

/// An interactive SVG flame graph of `f` (negative values are left out).
pub fn svg(f: &Folded, labels: &Labels) -> Result<Vec<u8>, FlameError> {
    let lines: Vec<String> = f
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(s, v)| format!("{s} {v}"))
        .collect();
    if lines.is_empty() {
        return Ok(empty_svg(labels));
    }
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(
        &mut options(labels),
        lines.iter().map(String::as_str),
        &mut out,
    )?;
    Ok(out)
}

/// What is drawn when there is nothing to draw (inferno refuses empty input): the title and a
/// line saying so.
fn empty_svg(labels: &Labels) -> Vec<u8> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let sub = labels.subtitle.as_deref().unwrap_or("");
    format!(
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="90" viewBox="0 0 1200 90" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="100%" height="100%" fill="#eeeeee"/>
<text x="600" y="24" font-size="17" font-family="monospace" text-anchor="middle">{}</text>
<text x="600" y="48" font-size="12" font-family="monospace" text-anchor="middle">{}</text>
<text x="600" y="72" font-size="12" font-family="monospace" text-anchor="middle">no samples: every stack's value is 0</text>
</svg>
"##,
        esc(&labels.title),
        esc(sub)
    )
    .into_bytes()
}

/// A differential SVG flame graph (inferno's differential mode): frames are sized by `new` and
/// coloured by the change from `base`, red where it grew and blue where it shrank. Stacks only in
/// `base` have no width.
pub fn diff_svg(base: &Folded, new: &Folded, labels: &Labels) -> Result<Vec<u8>, FlameError> {
    let positive = |f: &Folded| {
        let mut s = Vec::new();
        for (stack, v) in f.iter().filter(|(_, v)| **v > 0) {
            let _ = writeln!(s, "{stack} {v}");
        }
        s
    };
    let (b, n) = (positive(base), positive(new));
    let mut pairs = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        b.as_slice(),
        n.as_slice(),
        &mut pairs,
    )?;
    let text = String::from_utf8_lossy(&pairs);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // Frames are sized by the second count: without any, there is nothing to draw.
    if !lines.iter().any(|l| l.rsplit(' ').next() != Some("0")) {
        return Ok(empty_svg(labels));
    }
    lines.sort_unstable();
    let mut out = Vec::new();
    let mut o = options(labels);
    // Red and blue read best on grey.
    o.bgcolors = Some(inferno::flamegraph::color::BackgroundColor::Grey);
    inferno::flamegraph::from_lines(&mut o, lines, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        let mut b = pprof_proto::ProfileBuilder::new();
        b.add_sample_type("alloc_space", "bytes")
            .add_sample_type("inuse_space", "bytes");
        let main = b.function("main.main", "main.main", "m.go", 1);
        let work = b.function("main.work", "main.work", "m.go", 5);
        let odd = b.function("main.odd;name", "main.odd;name", "m.go", 9);
        let line = |function| pprof_proto::FrameLine {
            function,
            line: 1,
            column: 0,
        };
        let l_main = b.location(1, None, 0x10, &[line(main)]).unwrap();
        let l_work = b.location(2, None, 0x20, &[line(work)]).unwrap();
        // One location with an inlined call: odd inlined into work.
        let l_inl = b.location(3, None, 0x30, &[line(odd), line(work)]).unwrap();
        b.add_sample(&[l_work, l_main], &[100, 10], &[]).unwrap();
        b.add_sample(&[l_work, l_main], &[50, 0], &[]).unwrap();
        b.add_sample(&[l_inl, l_main], &[7, 0], &[]).unwrap();
        b.add_sample(&[l_main], &[0, 3], &[]).unwrap();
        b.build()
    }

    #[test]
    fn folds_root_first_summed_without_zeros() {
        let p = profile();
        let f = fold(&p, "alloc_space").unwrap();
        assert_eq!(
            folded_text(&f),
            "main.main;main.work 150\nmain.main;main.work;main.odd:name 7\n"
        );
        let f = fold(&p, "inuse_space").unwrap();
        assert_eq!(folded_text(&f), "main.main 3\nmain.main;main.work 10\n");
        assert!(matches!(
            fold(&p, "inuse_objects"),
            Err(FlameError::NoSampleType { .. })
        ));
        assert_eq!(default_sample_type(&p).as_deref(), Some("inuse_space"));
    }

    #[test]
    fn svg_names_every_frame() {
        let p = profile();
        let labels = Labels {
            title: "t".into(),
            subtitle: None,
            count_name: "bytes".into(),
        };
        let s =
            String::from_utf8(svg(&fold(&p, "alloc_space").unwrap(), &labels).unwrap()).unwrap();
        for name in ["main.main", "main.work", "main.odd:name"] {
            assert!(s.contains(name), "{name} missing");
        }
        let d = diff_svg(
            &fold(&p, "inuse_space").unwrap(),
            &fold(&p, "alloc_space").unwrap(),
            &labels,
        )
        .unwrap();
        assert!(String::from_utf8(d).unwrap().contains("main.odd:name"));
        // Nothing to draw: a picture saying so, not an error.
        let empty = svg(&Folded::new(), &labels).unwrap();
        assert!(String::from_utf8(empty).unwrap().contains("no samples"));
        let empty = diff_svg(&fold(&p, "alloc_space").unwrap(), &Folded::new(), &labels).unwrap();
        assert!(String::from_utf8(empty).unwrap().contains("no samples"));
    }
}
