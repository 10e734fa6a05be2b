//! Per-binary work, cached by file identity: two processes of one executable share it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::binary::elf::BinaryIdentity;
use crate::binary::locate::BinaryInfo;
use crate::error::Refusal;
use crate::symbolize::cache::SymbolCache;
use crate::symbolize::Symbolizer;
use crate::target::open::open_binary;
use crate::target::procfs::{ProcPaths, TargetView};

/// Per-binary state shared by all processes running that binary.
pub struct CachedBinary {
    pub info: BinaryInfo,
    /// Where its symbolizer is kept (shared by every binary of one [`BinaryCache`]).
    symbols: Arc<SymbolCache>,
}

impl CachedBinary {
    pub fn new(info: BinaryInfo, symbols: Arc<SymbolCache>) -> CachedBinary {
        CachedBinary { info, symbols }
    }

    /// The symbolizer of this binary, from the symbol cache or loaded now (only profiles need it).
    pub fn symbolizer(&self) -> Result<Arc<Symbolizer>, String> {
        self.symbols.get_or_load(self.info.binary.identity, || {
            Symbolizer::open(&self.info.binary).map_err(|e| e.to_string())
        })
    }
}

/// Opens and inspects the executable of `paths` (the work a cache entry saves; no cache involved,
/// so it may run on any thread).
pub fn inspect(paths: &ProcPaths) -> Result<BinaryInfo, Refusal> {
    let bin = open_binary(paths)?;
    Ok(BinaryInfo::inspect(bin, TargetView::of(paths).as_ref()))
}

/// Caches of per-binary work, keyed by file identity (device, inode, size, mtime).
#[derive(Default)]
pub struct BinaryCache {
    entries: HashMap<BinaryIdentity, Arc<CachedBinary>>,
    /// Symbolizers of these binaries, within a byte budget.
    pub symbols: Arc<SymbolCache>,
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
        Ok(self.insert(inspect(paths)?))
    }

    /// The cached entry of the executable with identity `id`, if any.
    pub fn lookup(&self, id: &BinaryIdentity) -> Option<Arc<CachedBinary>> {
        self.entries.get(id).cloned()
    }

    /// Caches a binary inspected elsewhere (see [`inspect`]), counting the scan.
    pub fn insert(&mut self, info: BinaryInfo) -> Arc<CachedBinary> {
        let id = info.binary.identity;
        self.scans += 1;
        let entry = Arc::new(CachedBinary::new(info, self.symbols.clone()));
        self.entries.insert(id, entry.clone());
        entry
    }

    /// Drops entries not in `keep`.
    /// A cache whose symbolizers share a budget of `symbol_cache_bytes`.
    pub fn with_symbol_budget(symbol_cache_bytes: u64) -> BinaryCache {
        BinaryCache {
            symbols: Arc::new(SymbolCache::new(symbol_cache_bytes)),
            ..BinaryCache::default()
        }
    }

    /// Drops entries (and their symbolizers) not in `keep`.
    pub fn retain(&mut self, keep: &std::collections::HashSet<BinaryIdentity>) {
        self.entries.retain(|k, _| keep.contains(k));
        self.symbols.retain(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
