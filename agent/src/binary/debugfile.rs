//! Find the separate debug file of a stripped ELF binary, the way GDB does.
//!
//! Distributions strip binaries and ship the symbols separately (Debian `*-dbgsym`, Fedora
//! `*-debuginfo`). The binary names its debug file in two ways:
//!
//! * `.note.gnu.build-id`: the file is `/usr/lib/debug/.build-id/<first byte hex>/<rest hex>.debug`;
//!   a candidate is accepted only if its own build ID is the same.
//! * `.gnu_debuglink`: a file name plus the CRC-32 of the debug file; looked up in the binary's
//!   directory, its `.debug/` subdirectory, and `/usr/lib/debug/<binary's directory>/`; a candidate
//!   is accepted only if its CRC-32 matches.
//!
//! Every path can be placed under a root prefix such as `/proc/PID/root`, so a binary seen inside a
//! container resolves against the container's file system. The returned path is then read by the
//! `.symtab` scanner.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::binary::hex;

use object::{Object, ReadCache};

/// Debug files are looked up under this directory (inside the root prefix).
pub const DEBUG_DIR: &str = "/usr/lib/debug";

/// Longest build ID we accept (bytes). GNU ld emits 20 (SHA-1) or 16 (MD5/UUID); Go's linker emits
/// what `-B` gives it. Anything longer is treated as corrupt.
pub const MAX_BUILD_ID_LEN: usize = 64;

/// Longest `.gnu_debuglink` file name we accept (bytes).
pub const MAX_DEBUGLINK_NAME_LEN: usize = 255;

/// What a binary says about its separate debug file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DebugLinkInfo {
    /// Contents of the GNU build-ID note, if present.
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink` file name and the CRC-32 (IEEE, as zlib) of the debug file, if present.
    pub debuglink: Option<(String, u32)>,
}

/// Errors while looking for a debug file.
#[derive(Debug, thiserror::Error)]
pub enum DebugFileError {
    /// The binary itself could not be parsed as ELF.
    #[error("not a parsable ELF file: {0}")]
    Elf(String),
    /// The binary could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The build-ID note or debuglink section is malformed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which record.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Where a debug file was found and why it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugFile {
    /// Path of the debug file (including the root prefix).
    pub path: PathBuf,
    /// How it was matched.
    pub matched_by: DebugFileMatch,
}

/// How a debug file was matched to its binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugFileMatch {
    /// `.build-id/xx/yyyy.debug` whose own build ID equals the binary's.
    BuildId,
    /// `.gnu_debuglink` name whose contents have the recorded CRC-32.
    DebugLink,
}

/// Reads the build ID and debuglink of an ELF image in memory.
pub fn debug_link_info(elf: &[u8]) -> Result<DebugLinkInfo, DebugFileError> {
    let file = object::File::parse(elf).map_err(|e| DebugFileError::Elf(e.to_string()))?;
    info_from_object(&file)
}

fn info_from_object<'data, R: object::ReadRef<'data>>(
    file: &object::File<'data, R>,
) -> Result<DebugLinkInfo, DebugFileError> {
    let build_id = match file.build_id() {
        Ok(Some(id)) if id.is_empty() || id.len() > MAX_BUILD_ID_LEN => {
            return Err(DebugFileError::Malformed {
                what: "build-ID note",
                detail: format!("{} bytes", id.len()),
            })
        }
        Ok(id) => id.map(<[u8]>::to_vec),
        Err(e) => {
            return Err(DebugFileError::Malformed {
                what: "build-ID note",
                detail: e.to_string(),
            })
        }
    };
    let debuglink = match file.gnu_debuglink() {
        Ok(Some((name, crc))) => {
            if name.is_empty() || name.len() > MAX_DEBUGLINK_NAME_LEN || name.contains(&b'/') {
                return Err(DebugFileError::Malformed {
                    what: ".gnu_debuglink",
                    detail: format!("file name {:?}", String::from_utf8_lossy(name)),
                });
            }
            let name = std::str::from_utf8(name).map_err(|e| DebugFileError::Malformed {
                what: ".gnu_debuglink",
                detail: e.to_string(),
            })?;
            if name == "." || name == ".." {
                return Err(DebugFileError::Malformed {
                    what: ".gnu_debuglink",
                    detail: format!("file name {name:?}"),
                });
            }
            Some((name.to_string(), crc))
        }
        Ok(None) => None,
        Err(e) => {
            return Err(DebugFileError::Malformed {
                what: ".gnu_debuglink",
                detail: e.to_string(),
            })
        }
    };
    Ok(DebugLinkInfo {
        build_id,
        debuglink,
    })
}

/// Build ID of the ELF file at `path`, reading only the parts needed (debug files can be large).
/// `None` if the file is not a readable ELF file or has no build ID.
fn build_id_of_file(path: &Path) -> Option<Vec<u8>> {
    let file = File::open(path).ok()?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    elf.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// CRC-32 (IEEE, as used by `.gnu_debuglink`) of the file at `path`, streamed.
fn crc32_of_file(path: &Path) -> std::io::Result<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher.finalize())
}

/// `root` + absolute `path`: the path's leading `/` is dropped so it nests under the root, and `.`
/// / `..` components are dropped so it cannot climb out of it lexically. (Symlinks inside the root
/// are still followed by the kernel; callers treat whatever they read as untrusted.)
fn under_root(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        None => path.to_path_buf(),
        Some(root) => {
            let relative: PathBuf = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            root.join(relative)
        }
    }
}

/// Candidate paths in lookup order, paired with how each must be verified.
///
/// `binary_path` is the binary's path as seen inside `root` (e.g. `/usr/bin/prometheus` for
/// `/proc/PID/root/usr/bin/prometheus`).
pub fn candidate_paths(
    binary_path: &Path,
    info: &DebugLinkInfo,
    root: Option<&Path>,
) -> Vec<(PathBuf, DebugFileMatch)> {
    let mut out = Vec::new();
    let debug_dir = Path::new(DEBUG_DIR);
    if let Some(id) = &info.build_id {
        if let Some((first, rest)) = id.split_first() {
            if !rest.is_empty() {
                let path = debug_dir
                    .join(".build-id")
                    .join(hex(&[*first]))
                    .join(format!("{}.debug", hex(rest)));
                out.push((under_root(root, &path), DebugFileMatch::BuildId));
            }
        }
    }
    if let Some((name, _)) = &info.debuglink {
        let dir = binary_path.parent().unwrap_or(Path::new("/"));
        let in_debug_dir = under_root(Some(debug_dir), dir);
        for candidate in [
            dir.join(name),
            dir.join(".debug").join(name),
            in_debug_dir.join(name),
        ] {
            out.push((under_root(root, &candidate), DebugFileMatch::DebugLink));
        }
    }
    out
}

/// Finds the separate debug file of the ELF binary at `binary_path` (a path inside `root`, e.g.
/// the target of `/proc/PID/exe` with `root = /proc/PID/root`).
///
/// Returns `Ok(None)` when the binary names no debug file or none of the candidates exists and
/// verifies.
pub fn find_debug_file(
    binary_path: &Path,
    root: Option<&Path>,
) -> Result<Option<DebugFile>, DebugFileError> {
    let host_path = under_root(root, binary_path);
    let file = File::open(&host_path).map_err(|source| DebugFileError::Io {
        path: host_path.clone(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache).map_err(|e| DebugFileError::Elf(e.to_string()))?;
    let info = info_from_object(&elf)?;
    Ok(find_debug_file_for(binary_path, &info, root, &host_path))
}

/// Like [`find_debug_file`], for a binary whose bytes are already in memory.
pub fn find_debug_file_for_image(
    binary_path: &Path,
    elf: &[u8],
    root: Option<&Path>,
) -> Result<Option<DebugFile>, DebugFileError> {
    let info = debug_link_info(elf)?;
    let host_path = under_root(root, binary_path);
    Ok(find_debug_file_for(binary_path, &info, root, &host_path))
}

fn find_debug_file_for(
    binary_path: &Path,
    info: &DebugLinkInfo,
    root: Option<&Path>,
    host_binary_path: &Path,
) -> Option<DebugFile> {
    let binary_canonical = std::fs::canonicalize(host_binary_path).ok();
    for (path, matched_by) in candidate_paths(binary_path, info, root) {
        if !path.is_file() {
            continue;
        }
        // Never hand back the binary itself (a debuglink naming its own file).
        if binary_canonical.is_some() && std::fs::canonicalize(&path).ok() == binary_canonical {
            continue;
        }
        let verified = match matched_by {
            DebugFileMatch::BuildId => {
                info.build_id.is_some() && build_id_of_file(&path) == info.build_id
            }
            DebugFileMatch::DebugLink => match &info.debuglink {
                Some((_, crc)) => crc32_of_file(&path).ok() == Some(*crc),
                None => false,
            },
        };
        if verified {
            return Some(DebugFile { path, matched_by });
        }
        tracing::debug!(path = %path.display(), ?matched_by, "debug file candidate rejected");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A scratch root directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("goheap-debugfile-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn objcopy(args: &[&std::ffi::OsStr]) {
        let out = Command::new("objcopy")
            .args(args)
            .output()
            .expect("objcopy (binutils) must be installed: apt-get install binutils");
        assert!(
            out.status.success(),
            "objcopy {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sets up `<root>/usr/bin/prog` (a copy of a real binary with a build ID) and its debug file
    /// `prog.debug` produced by `objcopy --only-keep-debug`, linked with `--add-gnu-debuglink`.
    /// Returns (binary path inside root, debug file, binary's build ID).
    fn setup(root: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
        let source = Path::new("/bin/true");
        let original = std::fs::read(source).expect("read /bin/true");
        let build_id = debug_link_info(&original)
            .expect("parse /bin/true")
            .build_id
            .expect("/bin/true has a GNU build ID");
        let bin_dir = root.join("usr/bin");
        std::fs::create_dir_all(&bin_dir).expect("mkdir");
        let prog = bin_dir.join("prog");
        let debug = root.join("prog.debug");
        std::fs::copy(source, &prog).expect("copy binary");
        objcopy(&[
            "--only-keep-debug".as_ref(),
            prog.as_os_str(),
            debug.as_os_str(),
        ]);
        objcopy(&["--remove-section=.gnu_debuglink".as_ref(), prog.as_os_str()]);
        let link = format!("--add-gnu-debuglink={}", debug.display());
        objcopy(&[link.as_ref(), prog.as_os_str()]);
        (PathBuf::from("/usr/bin/prog"), debug, build_id)
    }

    #[test]
    fn finds_debug_file_by_build_id_under_root() {
        let scratch = Scratch::new("buildid");
        let root = scratch.0.as_path();
        let (prog, debug, build_id) = setup(root);
        let info = debug_link_info(&std::fs::read(under_root(Some(root), &prog)).expect("read"))
            .expect("parse");
        assert_eq!(info.build_id.as_deref(), Some(build_id.as_slice()));
        assert_eq!(
            info.debuglink.as_ref().map(|d| d.0.as_str()),
            Some("prog.debug")
        );

        let id_dir = root
            .join("usr/lib/debug/.build-id")
            .join(hex(&build_id[..1]));
        std::fs::create_dir_all(&id_dir).expect("mkdir");
        let by_id = id_dir.join(format!("{}.debug", hex(&build_id[1..])));
        std::fs::copy(&debug, &by_id).expect("copy debug file");

        let found = find_debug_file(&prog, Some(root)).expect("lookup");
        assert_eq!(
            found,
            Some(DebugFile {
                path: by_id.clone(),
                matched_by: DebugFileMatch::BuildId
            })
        );

        // A file at the build-ID path whose own build ID differs is rejected.
        let other = root.join("other");
        std::fs::copy("/bin/ls", &other).expect("copy /bin/ls");
        objcopy(&[
            "--only-keep-debug".as_ref(),
            other.as_os_str(),
            by_id.as_os_str(),
        ]);
        assert_eq!(find_debug_file(&prog, Some(root)).expect("lookup"), None);
    }

    #[test]
    fn finds_debug_file_by_debuglink_in_each_directory() {
        let scratch = Scratch::new("debuglink");
        let root = scratch.0.as_path();
        let (prog, debug, _) = setup(root);
        let locations = [
            root.join("usr/bin/prog.debug"),
            root.join("usr/bin/.debug/prog.debug"),
            root.join("usr/lib/debug/usr/bin/prog.debug"),
        ];
        for location in &locations {
            std::fs::create_dir_all(location.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&debug, location).expect("copy debug file");
            let found = find_debug_file(&prog, Some(root)).expect("lookup");
            assert_eq!(
                found,
                Some(DebugFile {
                    path: location.clone(),
                    matched_by: DebugFileMatch::DebugLink
                }),
                "{}",
                location.display()
            );
            // The in-memory variant agrees.
            let image = std::fs::read(under_root(Some(root), &prog)).expect("read");
            assert_eq!(
                find_debug_file_for_image(&prog, &image, Some(root)).expect("lookup"),
                found
            );
            // A debug file with the wrong CRC is skipped.
            let mut corrupted = std::fs::read(location).expect("read");
            if let Some(last) = corrupted.last_mut() {
                *last ^= 0xff;
            }
            std::fs::write(location, corrupted).expect("write");
            assert_eq!(find_debug_file(&prog, Some(root)).expect("lookup"), None);
            std::fs::remove_file(location).expect("rm");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(debug_link_info(&[]).is_err());
        assert!(debug_link_info(&[0x7f, b'E', b'L', b'F', 2, 1, 1]).is_err());
        let mut state = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(debug_link_info(&random).is_err());
        let missing = find_debug_file(Path::new("/nonexistent/goheap-binary"), None);
        assert!(matches!(missing, Err(DebugFileError::Io { .. })));
    }

    #[test]
    fn candidate_order_and_root() {
        let info = DebugLinkInfo {
            build_id: Some(vec![0x7c, 0x70, 0xe0]),
            debuglink: Some(("prom.debug".into(), 1)),
        };
        let got = candidate_paths(
            Path::new("/usr/bin/prom"),
            &info,
            Some(Path::new("/proc/1/root")),
        );
        let paths: Vec<_> = got.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            under_root(Some(Path::new("/r")), Path::new("/a/../../etc/./x")),
            PathBuf::from("/r/a/etc/x")
        );
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/proc/1/root/usr/lib/debug/.build-id/7c/70e0.debug"),
                PathBuf::from("/proc/1/root/usr/bin/prom.debug"),
                PathBuf::from("/proc/1/root/usr/bin/.debug/prom.debug"),
                PathBuf::from("/proc/1/root/usr/lib/debug/usr/bin/prom.debug"),
            ]
        );
    }
}
