//! `goheap diff BASE NEW`: what changed between two profiles, as a differential flame graph (growth
//! red, shrinkage blue), differential folded stacks, or a pprof diff profile that
//! `go tool pprof` reads as it reads `-diff_base BASE NEW`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use pprof_proto::Profile;

use super::output::{self, SampleIndex};
use super::Failure;
use crate::profile::diff;
use crate::profile::flamegraph::{self, Folded, Labels};
use crate::profile::summary::human_bytes;

/// What `goheap diff` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DiffFormat {
    /// Differential SVG flame graph: frames sized by NEW, red where they grew, blue where they
    /// shrank (inferno's differential mode; search, click to zoom).
    Svg,
    /// Gzipped pprof diff profile: NEW plus BASE negated (labelled pprof::base), as
    /// `go tool pprof -diff_base BASE NEW` builds it; open with `go tool pprof`.
    Pprof,
    /// Differential collapsed stacks: `root;...;leaf BASE_VALUE NEW_VALUE` per line.
    Folded,
}

impl DiffFormat {
    fn extension(self) -> &'static str {
        match self {
            DiffFormat::Svg => "svg",
            DiffFormat::Pprof => "pb.gz",
            DiffFormat::Folded => "folded",
        }
    }
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The earlier profile (pprof, gzipped or not), e.g. from `goheap profile` or `goheap record`.
    pub base: PathBuf,
    /// The later profile; the diff shows NEW - BASE.
    pub new: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "svg")]
    pub format: DiffFormat,
    /// The value compared (svg, folded and the summary). Default: NEW's default sample type, as
    /// pprof picks it (inuse_space for `profile`, alloc_space for `record`).
    #[arg(long, value_enum)]
    pub sample_index: Option<SampleIndex>,
    /// Output file (`-` for stdout). Default: goheap-diff-<unix time>.<svg|pb.gz|folded> in the
    /// current directory.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Do not print the summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn read_profile(path: &Path) -> Result<Profile, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Other(anyhow::anyhow!("reading {}: {e}", path.display())))?;
    Profile::decode(&bytes).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "{} is not a pprof profile: {e}",
            path.display()
        ))
    })
}

pub(crate) fn run(args: DiffArgs) -> Result<(), Failure> {
    let base = read_profile(&args.base)?;
    let new = read_profile(&args.new)?;
    let merged = diff::diff(&base, &new).map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    let sample_type = output::chosen_sample_type(&new, args.sample_index);
    let flame_err = |e: flamegraph::FlameError| Failure::Other(anyhow::anyhow!("{e}"));
    let (_, unit) = flamegraph::sample_type_index(&new, &sample_type).map_err(flame_err)?;
    let fb = flamegraph::fold(&base, &sample_type).map_err(flame_err)?;
    let fnew = flamegraph::fold(&new, &sample_type).map_err(flame_err)?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let bytes = match args.format {
        DiffFormat::Pprof => {
            let mut p = merged;
            if let Some(s) = args.sample_index {
                output::set_default_sample_type(&mut p, s);
            }
            p.encode_gzip()
        }
        DiffFormat::Folded => differential_lines(&fb, &fnew).into_bytes(),
        DiffFormat::Svg => {
            let labels = Labels {
                title: format!(
                    "goheap diff: {} against {}",
                    name(&args.new),
                    name(&args.base)
                ),
                subtitle: Some(format!(
                    "{sample_type}: frames sized by NEW, red grew, blue shrank (scaled estimates)"
                )),
                count_name: flamegraph::count_name(&unit),
            };
            flamegraph::diff_svg(&fb, &fnew, &labels).map_err(flame_err)?
        }
    };
    let dest = output::destination(args.output.as_deref(), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("goheap-diff-{now}.{}", args.format.extension()))
    });
    output::write_to(dest.as_deref(), &bytes)?;
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", summary(&fb, &fnew, &sample_type, &unit));
        if let Some(path) = &dest {
            let how = match args.format {
                DiffFormat::Svg => {
                    "open it in a browser (red grew, blue shrank; click to zoom, Ctrl-F to search)"
                        .to_string()
                }
                DiffFormat::Pprof => format!("open with: go tool pprof -top {}", path.display()),
                DiffFormat::Folded => "collapsed stacks: `stack BASE NEW` a line".to_string(),
            };
            let _ = writeln!(
                err,
                "wrote {} ({} bytes); {how}",
                path.display(),
                bytes.len()
            );
        }
    }
    Ok(())
}

/// `stack base new` lines for every stack of either profile, sorted.
fn differential_lines(base: &Folded, new: &Folded) -> String {
    let mut both: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (s, v) in base {
        both.entry(s).or_default().0 = *v;
    }
    for (s, v) in new {
        both.entry(s).or_default().1 = *v;
    }
    let mut out = String::new();
    for (s, (b, n)) in both {
        out.push_str(&format!("{s} {b} {n}\n"));
    }
    out
}

fn amount(v: i64, unit: &str) -> String {
    if unit == "bytes" {
        human_bytes(v)
    } else {
        v.to_string()
    }
}

/// Totals of both and the functions whose flat value changed most.
fn summary(base: &Folded, new: &Folded, sample_type: &str, unit: &str) -> String {
    let total = |f: &Folded| f.values().fold(0i64, |a, v| a.saturating_add(*v));
    let (tb, tn) = (total(base), total(new));
    let change = tn.saturating_sub(tb);
    let pct = if tb != 0 {
        format!(" ({:+.1}%)", 100.0 * change as f64 / tb as f64)
    } else {
        String::new()
    };
    let mut flat: BTreeMap<&str, i64> = BTreeMap::new();
    for (f, sign) in [(new, 1i64), (base, -1i64)] {
        for (stack, v) in f {
            let leaf = stack.rsplit(';').next().unwrap_or(stack);
            let e = flat.entry(leaf).or_default();
            *e = e.saturating_add(v.saturating_mul(sign));
        }
    }
    let mut top: Vec<(&str, i64)> = flat.into_iter().filter(|(_, v)| *v != 0).collect();
    top.sort_by(|a, b| b.1.abs().cmp(&a.1.abs()).then_with(|| a.0.cmp(b.0)));
    top.truncate(5);
    let sign = |v: i64| if v > 0 { "+" } else { "" };
    let mut s = format!(
        "{sample_type}: base {}, new {}, change {}{}{pct}\nlargest changes (flat):",
        amount(tb, unit),
        amount(tn, unit),
        sign(change),
        amount(change, unit)
    );
    if top.is_empty() {
        s.push_str("\n  (none)");
    }
    for (name, v) in top {
        s.push_str(&format!(
            "\n  {:>11}  {name}",
            format!("{}{}", sign(v), amount(v, unit))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differential_lines_cover_both_sides() {
        let mut b = Folded::new();
        b.insert("a;b".into(), 5);
        b.insert("a;c".into(), 2);
        let mut n = Folded::new();
        n.insert("a;b".into(), 9);
        n.insert("a;d".into(), 1);
        assert_eq!(differential_lines(&b, &n), "a;b 5 9\na;c 2 0\na;d 0 1\n");
        let s = summary(&b, &n, "inuse_space", "bytes");
        assert!(
            s.starts_with("inuse_space: base 7 B, new 10 B, change +3 B (+42.9%)"),
            "{s}"
        );
        assert!(s.contains("+4 B  b") && s.contains("-2 B  c"), "{s}");
    }
}
