//! The parsed symbol tables of binaries being profiled, kept within a byte budget.
//!
//! A [`Symbolizer`] is loaded only when a profile of that binary is built (metrics never need one),
//! kept for the next request, and evicted least-recently-used when the budget is exceeded or when
//! no process of the binary is left ([`SymbolCache::retain`]). Its tables are read in place from a
//! mapping of the file ([`crate::symbolize::pclntab::Pclntab::parse_mapped`]), so what it holds is
//! mostly file-backed; after each use its touched pages are handed back to the kernel
//! ([`Symbolizer::release_pages`]), so between requests it costs almost no resident memory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::binary::elf::BinaryIdentity;
use crate::symbolize::Symbolizer;

/// Default budget of the agent's symbol cache (`--symbol-cache-bytes`).
pub const DEFAULT_SYMBOL_CACHE_BYTES: u64 = 64 << 20;

/// Symbolizers by binary, least recently used first out; see the module documentation.
#[derive(Debug)]
pub struct SymbolCache {
    budget: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Least recently used first.
    entries: Vec<Entry>,
    used: u64,
    loads: u64,
    evictions: u64,
}

#[derive(Debug)]
struct Entry {
    id: BinaryIdentity,
    symbolizer: Arc<Symbolizer>,
    cost: u64,
}

/// Counters of a [`SymbolCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolCacheStats {
    pub entries: usize,
    /// Bytes the cached tables cover (anonymous + mapped), at most the budget.
    pub bytes: u64,
    pub loads: u64,
    pub evictions: u64,
}

impl SymbolCache {
    /// A cache holding at most `budget` bytes of tables (0: keep nothing between requests).
    pub fn new(budget: u64) -> SymbolCache {
        SymbolCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The symbolizer of `id`, loading it with `load` on a miss. A table larger than the whole
    /// budget is returned but not kept. Loading runs without the lock held.
    pub fn get_or_load(
        &self,
        id: BinaryIdentity,
        load: impl FnOnce() -> Result<Symbolizer, String>,
    ) -> Result<Arc<Symbolizer>, String> {
        if let Some(hit) = self.touch(id) {
            return Ok(hit);
        }
        let loaded = Arc::new(load()?);
        let cost = loaded.cost_bytes();
        let mut inner = self.lock();
        inner.loads += 1;
        if let Some(i) = inner.entries.iter().position(|e| e.id == id) {
            // Another request loaded it meanwhile: keep one.
            let e = inner.entries.remove(i);
            let s = e.symbolizer.clone();
            inner.entries.push(e);
            return Ok(s);
        }
        if cost <= self.budget {
            while inner.used + cost > self.budget && !inner.entries.is_empty() {
                let old = inner.entries.remove(0);
                inner.used -= old.cost;
                inner.evictions += 1;
            }
            inner.used += cost;
            inner.entries.push(Entry {
                id,
                symbolizer: loaded.clone(),
                cost,
            });
        }
        Ok(loaded)
    }

    fn touch(&self, id: BinaryIdentity) -> Option<Arc<Symbolizer>> {
        let mut inner = self.lock();
        let i = inner.entries.iter().position(|e| e.id == id)?;
        let e = inner.entries.remove(i);
        let s = e.symbolizer.clone();
        inner.entries.push(e);
        Some(s)
    }

    /// Drops the tables of binaries not in `keep` (no process of theirs is left).
    pub fn retain(&self, keep: &HashSet<BinaryIdentity>) {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|e| keep.contains(&e.id));
        inner.used = inner.entries.iter().map(|e| e.cost).sum();
        inner.evictions += (before - inner.entries.len()) as u64;
    }

    pub fn stats(&self) -> SymbolCacheStats {
        let inner = self.lock();
        SymbolCacheStats {
            entries: inner.entries.len(),
            bytes: inner.used,
            loads: inner.loads,
            evictions: inner.evictions,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for SymbolCache {
    fn default() -> Self {
        SymbolCache::new(DEFAULT_SYMBOL_CACHE_BYTES)
    }
}
