//! Per-binary symbolization state: the parsed `.gopclntab` of one executable.
//!
//! The file is memory-mapped only while parsing; [`crate::symbolize::pclntab::Pclntab`] keeps its own copy of the
//! tables it needs, so the mapping (and the file's page cache footprint in our RSS) is released.

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
pub struct Symbolizer {
    pclntab: Pclntab,
}

impl Symbolizer {
    /// Parses the pclntab of `binary`, with the version rules of its recorded Go version.
    pub fn open(binary: &GoBinary) -> Result<Symbolizer, SymbolizerError> {
        // SAFETY: the mapping is private and read-only, and only read during `Pclntab::parse`, which
        // copies what it keeps. An executable that is running cannot be truncated (ETXTBSY), which is
        // what would make reads of the mapping fault.
        let map =
            unsafe { memmap2::Mmap::map(&binary.file) }.map_err(|source| SymbolizerError::Map {
                path: binary.path.display().to_string(),
                source,
            })?;
        let pclntab = Pclntab::parse(&map)?;
        drop(map);
        Ok(Self::from_pclntab(pclntab, binary.go_version))
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
}
