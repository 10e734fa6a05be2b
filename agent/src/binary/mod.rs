//! The executable on disk: ELF headers and sections ([`elf`]), the Go version ([`buildinfo`]), the
//! streaming symbol-table scan ([`symtab`]), separate debug files ([`debugfile`]), code references
//! for stripped binaries ([`coderef`]), the one place that decides how the runtime's globals are
//! located ([`locate`]), and the per-binary cache ([`cache`]).
//!
//! Everything read from a file is untrusted: sizes and offsets are bounded before use.

pub mod buildinfo;
pub mod cache;
pub mod coderef;
pub mod debugfile;
pub mod elf;
pub mod locate;
pub mod symtab;
pub mod varint;

/// Lower-case hex of `bytes` (build IDs in paths and mappings).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub use cache::{BinaryCache, CachedBinary};
pub use elf::{BinaryError, BinaryIdentity, GoBinary, LoadSegment};
pub use locate::{BinaryInfo, LocateMethod, RuntimeSymbols};
