//! What `goheap profile`, `record` and `diff` share about their output: the format (`--format`),
//! the sample index (`--sample-index`), rendering, default file names and writing to a file or
//! stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use pprof_proto::Profile;

use super::Failure;
use crate::profile::flamegraph::{self, Labels};

/// What is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Gzipped pprof protobuf (open with `go tool pprof`).
    Pprof,
    /// Interactive SVG flame graph (search, click to zoom; open in a browser).
    Svg,
    /// Collapsed stacks: `root;...;leaf value` per line, for flame graph tools.
    Folded,
}

impl Format {
    /// The default file extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Pprof => "pb.gz",
            Format::Svg => "svg",
            Format::Folded => "folded",
        }
    }
}

/// `--format` and `--sample-index`, for commands that write one profile.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RenderArgs {
    /// Output format: pprof (gzipped protobuf), svg (interactive flame graph), folded (collapsed
    /// stacks). The default file name ends in .pb.gz, .svg or .folded accordingly.
    #[arg(long, value_enum, default_value = "pprof")]
    pub format: Format,
    /// The value shown: for svg and folded the value of each stack; for pprof the profile's
    /// default sample type. Default: the profile's default (inuse_space for `profile`, alloc_space
    /// for `record`), as pprof picks it.
    #[arg(long, value_enum)]
    pub sample_index: Option<SampleIndex>,
}

/// A value of a heap profile's samples, as pprof's `-sample_index` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SampleIndex {
    /// Objects allocated (scaled estimate).
    #[value(name = "alloc_objects")]
    AllocObjects,
    /// Bytes allocated (scaled estimate).
    #[value(name = "alloc_space")]
    AllocSpace,
    /// Objects in use (scaled estimate).
    #[value(name = "inuse_objects")]
    InuseObjects,
    /// Bytes in use (scaled estimate).
    #[value(name = "inuse_space")]
    InuseSpace,
}

impl SampleIndex {
    /// The sample type name in the profile.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SampleIndex::AllocObjects => "alloc_objects",
            SampleIndex::AllocSpace => "alloc_space",
            SampleIndex::InuseObjects => "inuse_objects",
            SampleIndex::InuseSpace => "inuse_space",
        }
    }
}

/// The sample type to show: the one asked for, else the profile's default (pprof's rule).
pub(crate) fn chosen_sample_type(p: &Profile, asked: Option<SampleIndex>) -> String {
    asked
        .map(|s| s.name().to_string())
        .or_else(|| flamegraph::default_sample_type(p))
        .unwrap_or_else(|| "inuse_space".into())
}

/// The bytes of `p` in `args.format`: pprof with the chosen default sample type, or a flame graph
/// of the chosen sample type titled `title`.
pub(crate) fn render(mut p: Profile, args: &RenderArgs, title: &str) -> Result<Vec<u8>, Failure> {
    let sample_type = chosen_sample_type(&p, args.sample_index);
    let flame_err = |e: flamegraph::FlameError| Failure::Other(anyhow::anyhow!("{e}"));
    match args.format {
        Format::Pprof => {
            if let Some(s) = args.sample_index {
                set_default_sample_type(&mut p, s);
            }
            Ok(p.encode_gzip())
        }
        Format::Folded => {
            let f = flamegraph::fold(&p, &sample_type).map_err(flame_err)?;
            Ok(flamegraph::folded_text(&f).into_bytes())
        }
        Format::Svg => {
            let (_, unit) = flamegraph::sample_type_index(&p, &sample_type).map_err(flame_err)?;
            let f = flamegraph::fold(&p, &sample_type).map_err(flame_err)?;
            let labels = Labels {
                title: title.to_string(),
                subtitle: Some(format!("{sample_type} (scaled estimates)")),
                count_name: flamegraph::count_name(&unit),
            };
            flamegraph::svg(&f, &labels).map_err(flame_err)
        }
    }
}

/// The string-table index of `s` in `p`, added if missing.
pub(crate) fn intern(p: &mut Profile, s: &str) -> i64 {
    match p.string_table.iter().position(|t| t == s) {
        Some(i) => i as i64,
        None => {
            p.string_table.push(s.to_string());
            (p.string_table.len() - 1) as i64
        }
    }
}

/// Sets the profile's `default_sample_type` (what pprof shows without `-sample_index`).
pub(crate) fn set_default_sample_type(p: &mut Profile, index: SampleIndex) {
    p.default_sample_type = intern(p, index.name());
}

/// `goheap-<what><name>-<pid>-<unix time>.<ext>` in the current directory, `<name>` being the
/// process's comm with characters other than `[A-Za-z0-9_-]` replaced by `_`.
pub(crate) fn default_path(what: &str, process_name: &str, pid: i32, ext: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name: String = process_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(format!("goheap-{what}{name}-{pid}-{now}.{ext}"))
}

/// Where output goes: `-` is stdout (returns `None`), otherwise the given or the default path.
pub(crate) fn destination(
    output: Option<&Path>,
    default: impl FnOnce() -> PathBuf,
) -> Option<PathBuf> {
    match output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.to_path_buf()),
        None => Some(default()),
    }
}

/// Writes `bytes` to `dest` (stdout when `None`).
pub(crate) fn write_to(dest: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match dest {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| Failure::Other(anyhow::anyhow!("writing stdout: {e}")))
        }
        Some(path) => std::fs::write(path, bytes)
            .map_err(|e| Failure::Other(anyhow::anyhow!("writing {}: {e}", path.display()))),
    }
}

/// The line printed after writing `path`: its size and how to open it.
pub(crate) fn wrote_line(path: &Path, bytes: usize, format: Format) -> String {
    let d = path.display();
    match format {
        Format::Pprof => format!("wrote {d} ({bytes} bytes); open with: go tool pprof {d}"),
        Format::Svg => format!(
            "wrote {d} ({bytes} bytes); open it in a browser (click to zoom, Ctrl-F to search)"
        ),
        Format::Folded => {
            format!("wrote {d} ({bytes} bytes): collapsed stacks, one `root;...;leaf value` a line")
        }
    }
}

/// The summary's ranking lines: `  <bytes> <percent>  <function>`, or a note when there is none.
pub(crate) fn top_lines(s: &crate::profile::summary::ProfileSummary, none: &str) -> String {
    use crate::profile::summary::human_bytes;
    if s.top_alloc.is_empty() {
        return format!("  ({none})");
    }
    s.top_alloc
        .iter()
        .map(|(name, b)| {
            let pct = if s.alloc_bytes > 0 {
                100.0 * *b as f64 / s.alloc_bytes as f64
            } else {
                0.0
            };
            format!("  {:>10} {pct:5.1}%  {name}", human_bytes(*b))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
