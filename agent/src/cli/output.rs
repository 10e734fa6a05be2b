//! What `goheap profile`, `record` and `diff` share about their output: the sample index
//! (`--sample-index`), default file names and writing to a file or stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use pprof_proto::Profile;

use super::Failure;

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
