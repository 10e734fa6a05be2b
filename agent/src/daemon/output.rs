//! `--output-dir`: one delta heap profile per process per cycle, with bounded retention.
//!
//! Files are named `goheap-<binary>-<pid>-<unix ms>.pb.gz`. Before each write the oldest of our own
//! files are deleted until the directory's goheap files plus the new one fit in `retain_bytes`; and
//! nothing is written while the filesystem's free space is below [`OutputDir::free_floor`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

const PREFIX: &str = "goheap-";
const SUFFIX: &str = ".pb.gz";
/// Never let free space drop below this many bytes (or 5% of the filesystem, whichever is smaller).
const FREE_FLOOR_BYTES: u64 = 1 << 30;

/// Why a profile was not written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("profile of {size} bytes is larger than the retention limit {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("free space on {dir} is below {floor} bytes")]
    DiskFull { dir: String, floor: u64 },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the output directory's lock was poisoned by a panic")]
    Poisoned,
}

impl OutputError {
    pub fn reason(&self) -> &'static str {
        match self {
            OutputError::TooLarge { .. } => "too_large",
            OutputError::DiskFull { .. } => "low_disk_space",
            OutputError::Io { .. } => "io_error",
            OutputError::Poisoned => "internal",
        }
    }
}

/// The output directory and the files goheap keeps there, oldest first.
pub struct OutputDir {
    dir: PathBuf,
    retain_bytes: u64,
    files: VecDeque<(PathBuf, u64)>,
    total: u64,
    /// The directory is not writable (the last write or probe failed with an I/O error): said
    /// once, as a warning, until a write succeeds again.
    unwritable: bool,
}

impl OutputDir {
    /// Opens (creating if needed) `dir`; existing goheap files count toward retention, oldest first.
    pub fn open(dir: PathBuf, retain_bytes: u64) -> anyhow::Result<OutputDir> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating --output-dir {}: {e}", dir.display()))?;
        let mut existing: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("reading --output-dir {}: {e}", dir.display()))?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
                    return None;
                }
                let meta = e.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                Some((meta.modified().ok()?, e.path(), meta.len()))
            })
            .collect();
        existing.sort();
        let mut out = OutputDir {
            dir,
            retain_bytes,
            files: VecDeque::new(),
            total: 0,
            unwritable: false,
        };
        for (_, p, len) in existing {
            out.total += len;
            out.files.push_back((p, len));
        }
        out.evict(0);
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that a file can be created in the directory (an existing directory may be on a
    /// read-only file system, or owned by someone else): creates and removes a hidden file. A failure
    /// is warned about once, as a failed write is.
    pub fn probe(&mut self) -> Result<(), OutputError> {
        let tmp = self
            .dir
            .join(format!(".{PREFIX}probe-{}.tmp", std::process::id()));
        let r = std::fs::write(&tmp, b"").map_err(|source| OutputError::Io {
            path: tmp.display().to_string(),
            source,
        });
        let _ = std::fs::remove_file(&tmp);
        self.note(r)
    }

    /// Whether the directory is currently known not to be writable.
    pub fn unwritable(&self) -> bool {
        self.unwritable
    }

    /// Reports the first I/O failure (and the recovery after one) in the log.
    fn note<T>(&mut self, r: Result<T, OutputError>) -> Result<T, OutputError> {
        match &r {
            Err(OutputError::Io { source, .. }) if !self.unwritable => {
                self.unwritable = true;
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %source,
                    "--output-dir is not writable: delta profiles are not written (counted in goheap_agent_output_skipped_total{{reason=\"io_error\"}}) until it is"
                );
            }
            Ok(_) if self.unwritable => {
                self.unwritable = false;
                tracing::info!(dir = %self.dir.display(), "--output-dir is writable again");
            }
            _ => {}
        }
        r
    }

    /// Bytes of goheap files currently kept.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Deletes oldest files until `incoming` more bytes fit.
    fn evict(&mut self, incoming: u64) {
        while self.total.saturating_add(incoming) > self.retain_bytes {
            let Some((p, len)) = self.files.pop_front() else {
                break;
            };
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot delete old profile");
                }
            }
            self.total = self.total.saturating_sub(len);
        }
    }

    /// The free-space floor of the directory's filesystem, and the free space now.
    pub fn free_floor(&self) -> Option<(u64, u64)> {
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        let frsize = st.fragment_size() as u64;
        let size = (st.blocks() as u64).saturating_mul(frsize);
        let avail = (st.blocks_available() as u64).saturating_mul(frsize);
        Some((FREE_FLOOR_BYTES.min(size / 20), avail))
    }

    /// Writes one profile (already gzipped). Returns its path.
    pub fn write(&mut self, binary: &str, pid: i32, data: &[u8]) -> Result<PathBuf, OutputError> {
        let r = self.write_file(binary, pid, data);
        self.note(r)
    }

    fn write_file(&mut self, binary: &str, pid: i32, data: &[u8]) -> Result<PathBuf, OutputError> {
        let size = data.len() as u64;
        if size > self.retain_bytes {
            return Err(OutputError::TooLarge {
                size,
                limit: self.retain_bytes,
            });
        }
        self.evict(size);
        if let Some((floor, avail)) = self.free_floor() {
            if avail.saturating_sub(size) < floor {
                return Err(OutputError::DiskFull {
                    dir: self.dir.display().to_string(),
                    floor,
                });
            }
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name: String = binary
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let path = self.dir.join(format!("{PREFIX}{name}-{pid}-{ms}{SUFFIX}"));
        let tmp = self.dir.join(format!(".{PREFIX}{name}-{pid}-{ms}.tmp"));
        let io = |source| OutputError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&tmp, data).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        self.total += size;
        self.files.push_back((path.clone(), size));
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_oldest_first() {
        let dir = std::env::temp_dir().join(format!("goheap-output-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = OutputDir::open(dir.clone(), 2500).unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            paths.push(out.write("bin", 1, &vec![i as u8; 1000]).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Only the last two fit in 2500 bytes.
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, vec![false, false, false, true, true]);
        assert_eq!(out.total_bytes(), 2000);
        assert!(matches!(
            out.write("bin", 1, &[0u8; 3000]),
            Err(OutputError::TooLarge { .. })
        ));
        // Reopening counts the files already there.
        let again = OutputDir::open(dir.clone(), 1500).unwrap();
        assert_eq!(again.total_bytes(), 1000);
        assert!(!paths[3].exists() && paths[4].exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn io_failures_are_noted_until_a_write_succeeds() {
        let dir = std::env::temp_dir().join(format!("goheap-output-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = OutputDir::open(dir.clone(), 1 << 20).unwrap();
        assert!(out.probe().is_ok() && !out.unwritable());
        // The directory disappears (or becomes unwritable) after the start.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(out.probe(), Err(OutputError::Io { .. })));
        assert!(out.unwritable());
        assert!(matches!(
            out.write("bin", 1, b"x"),
            Err(OutputError::Io { .. })
        ));
        assert!(out.unwritable());
        std::fs::create_dir_all(&dir).unwrap();
        out.write("bin", 1, b"x").unwrap();
        assert!(!out.unwritable());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
