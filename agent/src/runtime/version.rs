//! Go release versions, and the range goheap supports.
//!
//! There is one version type in goheap: [`GoVersion`], read from `.go.buildinfo` (see
//! [`crate::binary::buildinfo`]) or inferred from the pclntab when that is absent. The string the
//! binary records (`go1.22rc1`, `devel go1.24-abc …`) is kept next to it where it is displayed
//! (`GoBinary::go_version_raw`).

use std::fmt;

/// A Go release `major.minor.patch` (`go1.21.13` is `1.21.13`; `go1.22rc1` is `1.22.0`).
///
/// Ordered by `(major, minor, patch)`; every per-version rule is keyed on `major.minor` only (see
/// [`crate::runtime::rules::VersionRules`]): patch releases never changed a layout goheap reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    /// Always 1 so far.
    pub major: u32,
    /// 19 for Go 1.19, 27 for Go 1.27.
    pub minor: u32,
    pub patch: u32,
}

/// Oldest Go release goheap was tested against.
pub const OLDEST_SUPPORTED: GoVersion = GoVersion::new(1, 19);
/// Newest Go release goheap was tested against.
pub const NEWEST_SUPPORTED: GoVersion = GoVersion::new(1, 27);
/// The supported range as shown in messages, `--help` and `goheap ps`.
pub const SUPPORTED_RANGE: &str = "Go 1.19–1.27";

impl GoVersion {
    /// `major.minor.0`.
    pub const fn new(major: u32, minor: u32) -> GoVersion {
        GoVersion {
            major,
            minor,
            patch: 0,
        }
    }

    /// Parses `go1.M[.P][suffix]` (also inside `devel go1.M-...` strings) and bare `1.M[.P]`.
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let rest = match raw.find("go1.") {
            Some(start) => &raw[start + 2..],
            None if raw.starts_with("1.") => raw,
            None => return None,
        };
        let mut nums = [0u32; 3];
        let mut idx = 0;
        let mut cur: Option<u32> = None;
        for ch in rest.chars() {
            if let Some(d) = ch.to_digit(10) {
                cur = Some(cur.unwrap_or(0).checked_mul(10)?.checked_add(d)?);
            } else if ch == '.' && idx < 2 && cur.is_some() {
                nums[idx] = cur.take()?;
                idx += 1;
            } else {
                break;
            }
        }
        nums[idx] = cur?;
        if idx == 0 {
            return None; // "1" alone is no release
        }
        Some(GoVersion {
            major: nums[0],
            minor: nums[1],
            patch: nums[2],
        })
    }

    /// True when this is Go 1.`minor` or later.
    pub fn at_least(self, minor: u32) -> bool {
        (self.major, self.minor) >= (1, minor)
    }

    /// Within the tested range [`OLDEST_SUPPORTED`]..=[`NEWEST_SUPPORTED`] (by `major.minor`).
    pub fn is_tested(self) -> bool {
        let oldest = (OLDEST_SUPPORTED.major, OLDEST_SUPPORTED.minor);
        let newest = (NEWEST_SUPPORTED.major, NEWEST_SUPPORTED.minor);
        (oldest..=newest).contains(&(self.major, self.minor))
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_strings() {
        let v = GoVersion::parse("go1.21.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 13));
        let v = GoVersion::parse("go1.22rc1").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("devel go1.24-abcdef Tue").unwrap();
        assert_eq!((v.major, v.minor), (1, 24));
        assert!(v.at_least(23) && !v.at_least(25));
        assert_eq!(GoVersion::parse("1.19"), Some(GoVersion::new(1, 19)));
        assert_eq!(GoVersion::parse("xyz"), None);
        assert_eq!(GoVersion::parse("go1"), None);
        assert_eq!(GoVersion::parse("go1.99999999999999"), None);
    }

    #[test]
    fn tested_range() {
        assert!(GoVersion::parse("go1.19.8").unwrap().is_tested());
        assert!(GoVersion::parse("go1.27.3").unwrap().is_tested());
        assert!(!GoVersion::parse("go1.28.0").unwrap().is_tested());
        assert!(!GoVersion::parse("go1.18.1").unwrap().is_tested());
        assert!(!GoVersion {
            major: 2,
            minor: 20,
            patch: 0
        }
        .is_tested());
    }
}
