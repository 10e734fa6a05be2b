//! Per-binary symbolization state: the parsed `.gopclntab` of one executable.
//!
//! The file is mapped read-only and the tables are read in place from the mapping
//! ([`Pclntab::parse_mapped`]): the pages are file-backed, so the kernel can drop them, and
//! [`Symbolizer::release_pages`] returns the touched ones after each use.

use std::sync::Arc;

use crate::binary::GoBinary;
use crate::runtime::version::GoVersion;
use crate::symbolize::pclntab::{Pclntab, PclntabError};

/// Errors preparing symbolization.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizerError {
    #[error("mapping {path}: {source}")]
    Map {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pclntab(#[from] PclntabError),
}

/// Symbolizes PCs of one binary (unrelocated ELF addresses).
#[derive(Debug)]
pub struct Symbolizer {
    pclntab: Pclntab,
}

impl Symbolizer {
    /// Maps `binary` and parses its pclntab in place, with the version rules of its recorded Go
    /// version.
    pub fn open(binary: &GoBinary) -> Result<Symbolizer, SymbolizerError> {
        let map = map_binary(binary)?;
        let mut pclntab = Pclntab::parse_mapped(map)?;
        pclntab.set_go_version(binary.go_version);
        let s = Symbolizer { pclntab };
        s.release_pages();
        Ok(s)
    }

    /// Wraps an already parsed pclntab of a binary built by Go `version`.
    pub fn from_pclntab(mut pclntab: Pclntab, version: GoVersion) -> Symbolizer {
        pclntab.set_go_version(version);
        Symbolizer { pclntab }
    }

    /// The parsed tables.
    pub fn pclntab(&self) -> &Pclntab {
        &self.pclntab
    }

    /// Bytes this symbolizer accounts for in a cache budget: its own heap bytes plus the mapped
    /// file bytes it may touch.
    pub fn cost_bytes(&self) -> u64 {
        (self.pclntab.owned_bytes() + self.pclntab.mapped_bytes()) as u64
    }

    /// Hands the mapping's resident pages back to the kernel (they are re-read from the file on
    /// the next access), so a cached symbolizer costs no resident memory between uses.
    pub fn release_pages(&self) {
        self.pclntab.release_pages();
    }
}

/// Maps the executable read-only.
pub fn map_binary(binary: &GoBinary) -> Result<Arc<memmap2::Mmap>, SymbolizerError> {
    // SAFETY: a private read-only mapping. The file is a running executable, which cannot be
    // written (ETXTBSY), so the bytes under the mapping do not change while it is read.
    unsafe { memmap2::Mmap::map(&binary.file) }
        .map(Arc::new)
        .map_err(|source| SymbolizerError::Map {
            path: binary.path.display().to_string(),
            source,
        })
}
