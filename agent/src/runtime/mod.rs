//! All Go-version knowledge: the one version type ([`version`]), the per-version rules in one
//! dispatch point ([`rules`], [`layout`]), the bucket walk ([`walk`]) and one consistent read of a
//! process's memory-profile state ([`snapshot`]).

pub mod layout;
pub mod records;
pub mod rules;
pub mod snapshot;
pub mod version;
pub mod walk;

pub use rules::VersionRules;
pub use version::GoVersion;
