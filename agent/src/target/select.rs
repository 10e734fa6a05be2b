//! Choosing the processes a command works on: `--pid PID`, `--name REGEX` (searched in the
//! process's comm and in its executable's path) or `--container ID-PREFIX` (the container id in
//! `/proc/PID/cgroup`, see [`crate::target::cgroup`]).
//!
//! [`select`] gives every matching Go process (`goheap profile`, `record`); [`select_one`] exactly
//! one, or an error listing the candidates (`goheap top`). [`Selector::matches_row`] filters
//! `goheap ps`. A `--pid` selection is taken as given (the command's own refusals then say whether
//! that pid exists and is Go); `--name` and `--container` keep only Go processes, goheap itself
//! excluded, ascending by pid.

use std::path::Path;

use crate::binary::BinaryCache;
use crate::error::exit_code;
use crate::target::cgroup;
use crate::target::discovery::{self, GoProcessSummary, ProcessState};
use crate::target::procfs::{self, ProcPaths};

/// Longest `--name` pattern accepted, in bytes (the compiled automaton is bounded as well).
const MAX_PATTERN_BYTES: usize = 4096;
/// Compiled size limit of a `--name` regex, in bytes.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// How processes are chosen.
#[derive(Debug, Clone)]
pub enum Selector {
    /// Exactly this pid.
    Pid(i32),
    /// Processes whose comm or executable path contains a match of the regex.
    Name(regex::Regex),
    /// Processes whose cgroup names a container id starting with this (lowercase hex) prefix.
    Container(String),
}

/// A process that was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: i32,
    /// `/proc/PID/comm` (at most 15 bytes), or `process` if unreadable.
    pub comm: String,
    /// The executable's path as the process sees it; empty if unreadable.
    pub binary: String,
    /// The container id from the cgroup (64 hex digits), empty for a host process.
    pub container_id: String,
}

/// Why a selection failed. Each has its exit code ([`SelectError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// `--name` is not a valid regex.
    #[error("invalid --name regex {pattern:?}: {detail}")]
    BadPattern { pattern: String, detail: String },
    /// `--container` is not a hex prefix.
    #[error("invalid --container {prefix:?}: give the first hex digits of a container id (as `crictl ps` or `docker ps` shows it)")]
    BadContainer { prefix: String },
    /// Nothing matched. `denied` counts matching processes goheap was not allowed to inspect.
    #[error("no Go process matches {what}{}; list them with `goheap ps`", denied_note(*.denied))]
    NoMatch { what: String, denied: usize },
    /// One process was needed and several matched.
    #[error("{} Go processes match {what} ({}); choose one with --pid", .targets.len(), list(.targets))]
    SeveralMatch { what: String, targets: Vec<Target> },
}

fn denied_note(denied: usize) -> String {
    if denied == 0 {
        String::new()
    } else {
        format!(" ({denied} matching processes could not be inspected: run as root or with CAP_SYS_PTRACE)")
    }
}

/// `pid 12 comm, pid 34 comm, …` (at most 10, then how many more).
fn list(targets: &[Target]) -> String {
    let mut parts: Vec<String> = targets
        .iter()
        .take(10)
        .map(|t| format!("pid {} {}", t.pid, t.comm))
        .collect();
    if targets.len() > 10 {
        parts.push(format!("{} more", targets.len() - 10));
    }
    parts.join(", ")
}

impl SelectError {
    /// The process exit code: 2 for a malformed selector, 12 for no match, 13 for several.
    pub fn exit_code(&self) -> i32 {
        match self {
            SelectError::BadPattern { .. } | SelectError::BadContainer { .. } => exit_code::USAGE,
            SelectError::NoMatch { .. } => exit_code::NO_MATCH,
            SelectError::SeveralMatch { .. } => exit_code::SEVERAL_MATCH,
        }
    }
}

impl Selector {
    /// The selector of one of `--pid`, `--name`, `--container` (the caller's argument parser
    /// ensures exactly one is given; with none, `None`).
    pub fn from_args(
        pid: Option<i32>,
        name: Option<&str>,
        container: Option<&str>,
    ) -> Result<Option<Selector>, SelectError> {
        if let Some(pid) = pid {
            return Ok(Some(Selector::Pid(pid)));
        }
        if let Some(pattern) = name {
            return Self::name(pattern).map(Some);
        }
        if let Some(prefix) = container {
            return Self::container(prefix).map(Some);
        }
        Ok(None)
    }

    /// A `--name` selector.
    pub fn name(pattern: &str) -> Result<Selector, SelectError> {
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(SelectError::BadPattern {
                pattern: format!("{}…", pattern.chars().take(40).collect::<String>()),
                detail: format!("longer than {MAX_PATTERN_BYTES} bytes"),
            });
        }
        regex::RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_BYTES)
            .build()
            .map(Selector::Name)
            .map_err(|e| SelectError::BadPattern {
                pattern: pattern.to_string(),
                // The regex crate's message spans several lines; keep its last, which says what.
                detail: e
                    .to_string()
                    .lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string(),
            })
    }

    /// A `--container` selector: 1 to 64 hex digits, compared in lowercase.
    pub fn container(prefix: &str) -> Result<Selector, SelectError> {
        let p = prefix.to_ascii_lowercase();
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SelectError::BadContainer {
                prefix: prefix.to_string(),
            });
        }
        Ok(Selector::Container(p))
    }

    /// How the selection reads in messages: `--pid 12`, `--name "api"`, `--container 3f2a`.
    pub fn describe(&self) -> String {
        match self {
            Selector::Pid(p) => format!("--pid {p}"),
            Selector::Name(r) => format!("--name {:?}", r.as_str()),
            Selector::Container(c) => format!("--container {c}"),
        }
    }

    /// Whether a process with this comm, executable path and container id is selected.
    pub fn matches(&self, pid: i32, comm: &str, binary: &str, container_id: &str) -> bool {
        match self {
            Selector::Pid(p) => *p == pid,
            Selector::Name(r) => r.is_match(comm) || (!binary.is_empty() && r.is_match(binary)),
            Selector::Container(c) => !container_id.is_empty() && container_id.starts_with(c),
        }
    }

    /// Whether a `goheap ps` row is selected (its comm and cgroup are read from `proc_root`).
    pub fn matches_row(&self, proc_root: &Path, row: &GoProcessSummary) -> bool {
        let comm = procfs::comm(proc_root, row.pid).unwrap_or_default();
        let container = match self {
            Selector::Container(_) => cgroup::read(proc_root, row.pid).container_id,
            _ => String::new(),
        };
        self.matches(row.pid, &comm, &row.binary, &container)
    }
}

/// The processes `sel` chooses under `proc_root`. `--pid` gives that pid whatever it is; `--name`
/// and `--container` give the matching Go processes (goheap itself excluded), ascending by pid, or
/// [`SelectError::NoMatch`].
pub fn select(proc_root: &Path, sel: &Selector) -> Result<Vec<Target>, SelectError> {
    if let Selector::Pid(pid) = sel {
        return Ok(vec![target_of(proc_root, *pid)]);
    }
    let me = std::process::id() as i32;
    let mut binaries = BinaryCache::default();
    let mut found = Vec::new();
    let mut denied = 0usize;
    for pid in discovery::list_pids(proc_root) {
        if pid == me {
            continue;
        }
        let t = target_of(proc_root, pid);
        if !sel.matches(pid, &t.comm, &t.binary, &t.container_id) {
            continue;
        }
        // Only now is the executable inspected (once per binary): is it Go?
        match discovery::summarize(&mut binaries, proc_root, pid) {
            Some(row) if row.state == ProcessState::PermissionDenied => denied += 1,
            Some(_) => found.push(t),
            None => {}
        }
    }
    if found.is_empty() {
        return Err(SelectError::NoMatch {
            what: sel.describe(),
            denied,
        });
    }
    Ok(found)
}

/// Exactly one process: what [`select`] gives, or [`SelectError::SeveralMatch`] listing them.
pub fn select_one(proc_root: &Path, sel: &Selector) -> Result<Target, SelectError> {
    let mut all = select(proc_root, sel)?;
    if all.len() > 1 {
        return Err(SelectError::SeveralMatch {
            what: sel.describe(),
            targets: all,
        });
    }
    Ok(all.remove(0))
}

fn target_of(proc_root: &Path, pid: i32) -> Target {
    Target {
        pid,
        comm: procfs::comm(proc_root, pid).unwrap_or_else(|| "process".into()),
        binary: procfs::exe_target(&ProcPaths::new(proc_root, pid)).unwrap_or_default(),
        container_id: cgroup::read(proc_root, pid).container_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_comm_or_path() {
        let s = Selector::name("^api-").unwrap();
        assert!(s.matches(1, "api-server", "/usr/bin/other", ""));
        assert!(!s.matches(1, "worker", "/srv/api-server", ""));
        let s = Selector::name("bin/api").unwrap();
        assert!(s.matches(1, "x", "/usr/bin/api", ""));
        let e = Selector::name("a(").unwrap_err();
        assert_eq!(e.exit_code(), exit_code::USAGE);
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }

    #[test]
    fn containers_match_by_prefix() {
        let id = "3f2a".to_string() + &"0".repeat(60);
        let s = Selector::container("3F2").unwrap();
        assert!(s.matches(1, "x", "/x", &id));
        assert!(!s.matches(1, "x", "/x", ""));
        assert!(!Selector::container("3f3")
            .unwrap()
            .matches(1, "x", "/x", &id));
        for bad in ["", "xyz", &"a".repeat(65)] {
            assert!(Selector::container(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn several_is_one_line_listing_them() {
        let t = |pid| Target {
            pid,
            comm: format!("c{pid}"),
            binary: String::new(),
            container_id: String::new(),
        };
        let e = SelectError::SeveralMatch {
            what: "--name \"c\"".into(),
            targets: (1..=12).map(t).collect(),
        };
        let line = e.to_string();
        assert_eq!(line.lines().count(), 1);
        assert!(line.starts_with("12 Go processes match --name \"c\" (pid 1 c1, pid 2 c2"));
        assert!(line.contains("2 more"), "{line}");
        assert_eq!(e.exit_code(), exit_code::SEVERAL_MATCH);
    }
}
