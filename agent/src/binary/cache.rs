//! Per-binary work, cached by file identity: two processes of one executable share it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::binary::elf::BinaryIdentity;
use crate::binary::locate::BinaryInfo;
use crate::error::Refusal;
use crate::symbolize::Symbolizer;
use crate::target::open::open_binary;
use crate::target::procfs::{ProcPaths, TargetView};

/// Per-binary state shared by all processes running that binary.
pub struct CachedBinary {
    pub info: BinaryInfo,
    /// Built lazily on the first profile (not needed for `ps` or metrics).
    symbolizer: std::sync::OnceLock<Result<Arc<Symbolizer>, String>>,
}

impl CachedBinary {
    pub fn new(info: BinaryInfo) -> CachedBinary {
        CachedBinary {
            info,
            symbolizer: std::sync::OnceLock::new(),
        }
    }

    /// The symbolizer of this binary (parsed once).
    pub fn symbolizer(&self) -> Result<Arc<Symbolizer>, String> {
        self.symbolizer
            .get_or_init(|| {
                let parsed = self
                    .info
                    .parsed_pclntab
                    .lock()
                    .ok()
                    .and_then(|mut p| p.take());
                match parsed {
                    Some(p) => Ok(Arc::new(Symbolizer::from_pclntab(
                        p,
                        self.info.binary.go_version,
                    ))),
                    None => Symbolizer::open(&self.info.binary)
                        .map(Arc::new)
                        .map_err(|e| e.to_string()),
                }
            })
            .clone()
    }
}

/// Caches of per-binary work, keyed by file identity (device, inode, size, mtime).
#[derive(Default)]
pub struct BinaryCache {
    entries: HashMap<BinaryIdentity, Arc<CachedBinary>>,
    /// How many binaries were inspected (symbol-table scans), for self-metrics.
    pub scans: u64,
}

impl BinaryCache {
    /// The cached entry for the executable of `paths`, inspecting it if new.
    pub fn get(&mut self, paths: &ProcPaths) -> Result<Arc<CachedBinary>, Refusal> {
        // Cheap identity check through the magic link first.
        if let Ok(meta) = std::fs::metadata(paths.exe()) {
            if let Some(e) = self.entries.get(&BinaryIdentity::of(&meta)) {
                return Ok(e.clone());
            }
        }
        let bin = open_binary(paths)?;
        let id = bin.identity;
        let info = BinaryInfo::inspect(bin, TargetView::of(paths).as_ref());
        self.scans += 1;
        let entry = Arc::new(CachedBinary::new(info));
        self.entries.insert(id, entry.clone());
        Ok(entry)
    }

    /// Drops entries not in `keep`.
    pub fn retain(&mut self, keep: &std::collections::HashSet<BinaryIdentity>) {
        self.entries.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
