//! What `goheap profile`, `record` and `diff` share about their output: the format (`--format`),
//! the sample index (`--sample-index`), rendering, default file names and writing to a file or
//! stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use pprof_proto::Profile;

use super::Failure;
use crate::profile::flamegraph::{self, Labels};
use crate::target::select::Target;

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

/// Where each chosen process's output goes (`None`: stdout), in the order of `targets`:
/// - no `-o`: `default_path` in the current directory, one file per process;
/// - `-o DIR/` (ending in `/`) or `-o DIR` naming an existing directory: the default names in DIR;
/// - `-o FILE` or `-o -` (stdout): only when one process was chosen, else a usage error.
pub(crate) fn destinations(
    output: Option<&Path>,
    targets: &[Target],
    what: &str,
    ext: &str,
) -> Result<Vec<Option<PathBuf>>, Failure> {
    let default = |t: &Target| default_path(what, &t.comm, t.pid, ext);
    let Some(out) = output else {
        return Ok(targets.iter().map(|t| Some(default(t))).collect());
    };
    let as_dir = out.as_os_str().to_string_lossy().ends_with('/') || out.is_dir();
    if as_dir {
        // Said once, before any process is read.
        if !out.is_dir() {
            let missing = out.join(default(&targets[0]));
            let errno = if out.exists() {
                libc::ENOTDIR
            } else {
                libc::ENOENT
            };
            let e = std::io::Error::from_raw_os_error(errno);
            return Err(Failure::Output(OutputError::of(&missing, &e)));
        }
        return Ok(targets.iter().map(|t| Some(out.join(default(t)))).collect());
    }
    if targets.len() > 1 {
        let pids: Vec<String> = targets.iter().map(|t| t.pid.to_string()).collect();
        let shown = if out.as_os_str() == "-" {
            "stdout (-o -)".to_string()
        } else {
            format!("-o {}", out.display())
        };
        return Err(Failure::Usage(format!(
            "{} processes were chosen (pids {}) but {shown} takes one profile: give a directory (-o DIR/) for one file per process, or leave -o out",
            targets.len(),
            pids.join(", ")
        )));
    }
    Ok(targets
        .iter()
        .map(|_| (out.as_os_str() != "-").then(|| out.to_path_buf()))
        .collect())
}

/// An output file that appears under its name only once complete: the bytes go to a temporary
/// file in the same directory, which [`OutputFile::commit`] syncs and renames over `path`; dropped
/// without `commit` (any error), the temporary file is removed, so no partial file is left looking
/// valid. A `path` that exists and is not a regular file (`/dev/stdout`, `/dev/full`, a FIFO) is
/// written in place.
pub(crate) struct OutputFile {
    path: PathBuf,
    tmp: Option<PathBuf>,
    file: std::fs::File,
}

impl OutputFile {
    pub(crate) fn create(path: &Path) -> Result<OutputFile, OutputError> {
        let special = std::fs::metadata(path)
            .map(|m| !m.is_file() && !m.is_dir())
            .unwrap_or(false);
        if special {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| OutputError::of(path, &e))?;
            return Ok(OutputFile {
                path: path.to_path_buf(),
                tmp: None,
                file,
            });
        }
        if path.is_dir() {
            return Err(OutputError {
                path: path.display().to_string(),
                why: "it is a directory".into(),
                remedy: "end it with / to write into it, or give a file name".into(),
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "goheap".into());
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let tmp = dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| OutputError::of(path, &e))?;
        Ok(OutputFile {
            path: path.to_path_buf(),
            tmp: Some(tmp),
            file,
        })
    }

    /// The file to write into.
    pub(crate) fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// The error of a failed write into [`OutputFile::file`], naming the final path.
    pub(crate) fn error(&self, e: &std::io::Error) -> OutputError {
        OutputError::of(&self.path, e)
    }

    /// Flushes the data to the device (a full disk may only say so here) and gives the file its name.
    pub(crate) fn commit(mut self) -> Result<(), OutputError> {
        self.file
            .flush()
            .map_err(|e| OutputError::of(&self.path, &e))?;
        match self.tmp.take() {
            None => Ok(()),
            Some(tmp) => {
                let done = self
                    .file
                    .sync_all()
                    .and_then(|_| std::fs::rename(&tmp, &self.path));
                if let Err(e) = done {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(OutputError::of(&self.path, &e));
                }
                Ok(())
            }
        }
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// An output that cannot be written: one line with the path, why, and what to do (exit 11).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {why}; {remedy}")]
pub(crate) struct OutputError {
    pub path: String,
    pub why: String,
    pub remedy: String,
}

impl OutputError {
    /// The error of an I/O failure while creating or writing `path`.
    pub(crate) fn of(path: &Path, e: &std::io::Error) -> OutputError {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let elsewhere = "choose another place with -o".to_string();
        let (why, remedy) = match e.raw_os_error() {
            Some(libc::ENOENT) if !dir.exists() => (
                format!("directory {} does not exist", dir.display()),
                format!("create it (mkdir -p {}) or {elsewhere}", dir.display()),
            ),
            Some(libc::ENOTDIR) => (format!("{} is not a directory", dir.display()), elsewhere),
            Some(libc::EACCES) | Some(libc::EPERM) => (
                format!("permission denied in {}", dir.display()),
                format!("write to a directory you can write to ({elsewhere})"),
            ),
            Some(libc::EROFS) => (
                format!("{} is on a read-only file system", dir.display()),
                elsewhere,
            ),
            Some(libc::ENOSPC) => (
                "no space left on the device".into(),
                format!("free some space or {elsewhere}"),
            ),
            Some(libc::EDQUOT) => (
                "disk quota exceeded".into(),
                format!("free some space or {elsewhere}"),
            ),
            _ => (e.to_string(), elsewhere),
        };
        OutputError {
            path: path.display().to_string(),
            why,
            remedy,
        }
    }
}

/// Writes `bytes` to `dest` (stdout when `None`); a file only appears once complete.
pub(crate) fn write_to(dest: Option<&Path>, bytes: &[u8]) -> Result<(), Failure> {
    match dest {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| Failure::Output(OutputError::of(Path::new("stdout"), &e)))
        }
        Some(path) => {
            let mut f = OutputFile::create(path).map_err(Failure::Output)?;
            if let Err(e) = f.file().write_all(bytes) {
                return Err(Failure::Output(f.error(&e)));
            }
            f.commit().map_err(Failure::Output)
        }
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
