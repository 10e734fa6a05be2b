//! The documentation tells the truth: the exit-code table of `goheap --help` and of the README both
//! come from `goheap::error::EXIT_CODES`, and every refusal's exit code is in that table.

use std::process::Command;

use goheap::error::{exit_code, exit_codes_help, exit_codes_markdown, Refusal, EXIT_CODES};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

#[test]
fn readme_exit_code_table_is_the_source_table() {
    let table = exit_codes_markdown();
    assert!(
        readme().contains(&table),
        "README.md must contain exactly this exit-code table:\n{table}"
    );
}

#[test]
fn help_prints_the_source_table_for_every_subcommand() {
    let want = exit_codes_help();
    for args in [&["--help"][..], &["profile", "--help"], &["ps", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_goheap"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(exit_code::OK), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&want),
            "{args:?} help lacks the table:\n{text}"
        );
    }
}

#[test]
fn codes_are_distinct_and_cover_every_refusal() {
    let mut codes: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
    let n = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), n, "duplicate exit code in EXIT_CODES");
    let refusals = [
        Refusal::NoSuchProcess { pid: 1 },
        Refusal::ProcessExited { pid: 1 },
        Refusal::PermissionDenied {
            pid: 1,
            what: String::new(),
            why: String::new(),
        },
        Refusal::NotGo {
            pid: 1,
            exe: String::new(),
        },
        Refusal::NoSymbols {
            exe: String::new(),
            detail: String::new(),
        },
        Refusal::ProfilingDisabled {
            pid: 1,
            reason: String::new(),
            force_works: true,
        },
        Refusal::UnsupportedVersion {
            pid: 1,
            version: String::new(),
            detail: String::new(),
        },
        Refusal::Corrupt {
            pid: 1,
            detail: String::new(),
        },
    ];
    let mut seen = Vec::new();
    for r in &refusals {
        let c = r.exit_code();
        assert!(codes.contains(&c), "{r:?} exits {c}, not in EXIT_CODES");
        assert!(!seen.contains(&c), "{r:?} shares exit code {c}");
        assert!(c > exit_code::USAGE, "{r:?} uses a reserved code");
        seen.push(c);
    }
}
