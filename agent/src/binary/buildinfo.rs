//! The Go version recorded in a binary's `.go.buildinfo` section (Go 1.18+ inline-string format).
//!
//! Layout (see `debug/buildinfo` in the Go source): a 32-byte header starting with the magic
//! `"\xff Go buildinf:"`, then the pointer size (byte 14) and flags (byte 15; bit 1 = strings are inline).
//! With inline strings, two uvarint-length-prefixed strings follow the header: the Go version and the
//! module info. Go 1.19–1.27 all write the inline format; the older pointer format is refused.

use crate::runtime::version::GoVersion;

/// Magic bytes at the start of `.go.buildinfo`.
pub const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Size of the fixed header before the inline strings.
const HEADER_LEN: usize = 32;
/// Longest version string we accept ("go1.22.10", "devel go1.24-abcdef Tue ..." fit easily).
const MAX_VERSION_LEN: u64 = 128;

/// Errors decoding `.go.buildinfo`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error(".go.buildinfo is too short ({0} bytes)")]
    Truncated(usize),
    #[error(".go.buildinfo has no Go buildinfo magic")]
    BadMagic,
    #[error(".go.buildinfo uses the pre-Go-1.18 pointer format (Go older than 1.18)")]
    PointerFormat,
    #[error(".go.buildinfo version string is malformed")]
    BadVersion,
}

/// Decodes the Go version from the first bytes of `.go.buildinfo` (at most a few hundred are needed):
/// the parsed release and the string exactly as the binary records it.
pub fn parse_version(data: &[u8]) -> Result<(GoVersion, String), BuildInfoError> {
    if data.len() < HEADER_LEN {
        return Err(BuildInfoError::Truncated(data.len()));
    }
    if &data[..BUILDINFO_MAGIC.len()] != BUILDINFO_MAGIC {
        return Err(BuildInfoError::BadMagic);
    }
    let flags = data[15];
    if flags & 0x2 == 0 {
        return Err(BuildInfoError::PointerFormat);
    }
    let rest = &data[HEADER_LEN..];
    let (used, len) =
        crate::binary::varint::read_uvarint(rest, 10).ok_or(BuildInfoError::BadVersion)?;
    if len == 0 || len > MAX_VERSION_LEN {
        return Err(BuildInfoError::BadVersion);
    }
    let bytes = rest
        .get(used..used + len as usize)
        .ok_or(BuildInfoError::Truncated(data.len()))?;
    let s = std::str::from_utf8(bytes).map_err(|_| BuildInfoError::BadVersion)?;
    let v = GoVersion::parse(s).ok_or(BuildInfoError::BadVersion)?;
    Ok((v, s.to_string()))
}

/// How many bytes of `.go.buildinfo` [`parse_version`] may need.
pub const VERSION_PREFIX_LEN: usize = HEADER_LEN + 10 + MAX_VERSION_LEN as usize;

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: &str) -> Vec<u8> {
        let mut d = BUILDINFO_MAGIC.to_vec();
        d.push(8);
        d.push(2);
        d.resize(32, 0);
        d.push(version.len() as u8);
        d.extend_from_slice(version.as_bytes());
        d.push(0);
        d
    }

    #[test]
    fn parses_versions() {
        let (v, raw) = parse_version(&header("go1.21.13")).unwrap();
        assert_eq!(
            (v.major, v.minor, v.patch, raw.as_str()),
            (1, 21, 13, "go1.21.13")
        );
        let (v, raw) = parse_version(&header("go1.22rc1")).unwrap();
        assert_eq!(
            (v.major, v.minor, v.patch, raw.as_str()),
            (1, 22, 0, "go1.22rc1")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_version(b"short"), Err(BuildInfoError::Truncated(5)));
        let mut h = header("go1.21.13");
        h[0] = 0;
        assert_eq!(parse_version(&h), Err(BuildInfoError::BadMagic));
        let mut h = header("go1.21.13");
        h[32] = 0xff; // unterminated / huge varint
        assert!(parse_version(&h).is_err());
        let mut h = header("go1.21.13");
        h[15] = 0;
        assert_eq!(parse_version(&h), Err(BuildInfoError::PointerFormat));
        for cut in 0..h.len() {
            let _ = parse_version(&header("go1.21.13")[..cut]);
        }
    }
}
