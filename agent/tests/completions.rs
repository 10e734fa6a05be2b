//! Shell completions and manual pages, used as a person would: bash and fish complete
//! subcommands, flags and flag values from the generated scripts; zsh's script is valid zsh; the
//! manual pages render with man(1) and groff without warnings, one per subcommand.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn goheap_ok(args: &[&str]) -> String {
    let out = goheap(args);
    assert!(
        out.status.success(),
        "goheap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tool(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run fixtures/install-toolchains.sh (it installs the test tools)"
    );
    path
}

/// What bash's completion offers for the command line `line` (the cursor at its end), with the
/// script of `goheap completions bash` loaded.
fn bash_complete(script: &Path, line: &str) -> Vec<String> {
    let prog = format!(
        r#"source {}
line="$1"
read -ra COMP_WORDS <<< "$line"
[[ "$line" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
COMP_LINE="$line"
COMP_POINT=${{#line}}
_goheap goheap "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script.display()
    );
    let out = Command::new(tool("/usr/bin/bash"))
        .args(["--norc", "--noprofile", "-c", &prog, "bash"])
        .arg(line)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// What fish's `complete -C` offers for `line`, with the fish script loaded.
fn fish_complete(script: &Path, line: &str) -> Vec<String> {
    let prog = format!("source {}; complete -C '{line}'", script.display());
    let out = Command::new(tool("/usr/bin/fish"))
        .args(["--no-config", "-c", &prog])
        .env("HOME", script.parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

fn assert_has(got: &[String], want: &[&str], what: &str) {
    for w in want {
        assert!(
            got.iter().any(|g| g == w),
            "{what}: {w} not offered; got {got:?}"
        );
    }
}

#[test]
fn bash_and_fish_complete_subcommands_flags_and_values() {
    let s = Scratch::new("completions");
    let bash = s.path("goheap.bash");
    std::fs::write(&bash, goheap_ok(&["completions", "bash"])).unwrap();
    let fish = s.path("goheap.fish");
    std::fs::write(&fish, goheap_ok(&["completions", "fish"])).unwrap();
    let subcommands = [
        "profile",
        "record",
        "diff",
        "ps",
        "agent",
        "completions",
        "man",
    ];
    let formats = ["pprof", "svg", "folded"];
    let indices = [
        "alloc_objects",
        "alloc_space",
        "inuse_objects",
        "inuse_space",
    ];

    assert_has(
        &bash_complete(&bash, "goheap "),
        &subcommands,
        "bash subcommands",
    );
    assert_eq!(
        bash_complete(&bash, "goheap rec"),
        ["record"],
        "bash prefix"
    );
    assert_has(
        &bash_complete(&bash, "goheap record --"),
        &[
            "--pid",
            "--duration",
            "--output",
            "--format",
            "--sample-index",
            "--quiet",
        ],
        "bash record flags",
    );
    assert_eq!(bash_complete(&bash, "goheap record --format "), formats);
    assert_eq!(
        bash_complete(&bash, "goheap profile --sample-index "),
        indices
    );
    assert_has(
        &bash_complete(&bash, "goheap completions "),
        &["bash", "fish", "zsh"],
        "bash shells",
    );

    assert_has(
        &fish_complete(&fish, "goheap "),
        &subcommands,
        "fish subcommands",
    );
    assert_has(
        &fish_complete(&fish, "goheap diff --"),
        &["--format", "--sample-index", "--output"],
        "fish diff flags",
    );
    assert_has(
        &fish_complete(&fish, "goheap record --format "),
        &formats,
        "fish formats",
    );
    assert_has(
        &fish_complete(&fish, "goheap record --sample-index "),
        &indices,
        "fish sample indices",
    );
}

#[test]
fn zsh_script_is_valid_zsh_for_every_subcommand() {
    let s = Scratch::new("completions-zsh");
    let zsh = s.path("_goheap");
    let text = goheap_ok(&["completions", "zsh"]);
    std::fs::write(&zsh, &text).unwrap();
    assert!(text.starts_with("#compdef goheap"), "{}", &text[..80]);
    let out = Command::new(tool("/usr/bin/zsh"))
        .args(["-f", "-n"])
        .arg(&zsh)
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh -n: {out:?}");
    // Loading it under compinit defines the completion function for goheap.
    let prog = format!(
        "autoload -U compinit && compinit -u -d {}/zcompdump && fpath=({} $fpath) && source {} && print -r -- ${{_comps[goheap]}}",
        s.0.display(),
        s.0.display(),
        zsh.display()
    );
    let out = Command::new("/usr/bin/zsh")
        .args(["-f", "-c", &prog])
        .env("HOME", &s.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh compinit: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "_goheap");
    for sub in ["profile", "record", "diff", "ps", "agent", "man"] {
        assert!(text.contains(&format!("'{sub}:")), "zsh: no {sub}");
    }
    assert!(text.contains("alloc_objects") && text.contains("folded"));
}

/// Renders a roff page with man(1) at a fixed width; groff must report no warnings.
fn render_man(page: &Path) -> String {
    let out = Command::new(tool("/usr/bin/groff"))
        .args(["-man", "-ww", "-z"])
        .arg(page)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff warnings for {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(tool("/usr/bin/man"))
        .args(["-l", "-P", "cat"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {}: {out:?}", page.display());
    // Undo the terminal overstrike (bold `N\bN`, underline `_\bx`).
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_pages_render_one_per_subcommand() {
    let s = Scratch::new("man");
    let page = s.path("goheap.1");
    std::fs::write(&page, goheap_ok(&["man"])).unwrap();
    let text = render_man(&page);
    for want in [
        "NAME",
        "SYNOPSIS",
        "goheap-profile(1)",
        "goheap-record(1)",
        "goheap-diff(1)",
        "Exit codes:",
        "no such process",
    ] {
        assert!(text.contains(want), "goheap(1) lacks {want:?}:\n{text}");
    }
    let one = s.path("record.1");
    std::fs::write(&one, goheap_ok(&["man", "record"])).unwrap();
    let text = render_man(&one);
    assert!(
        text.contains("goheap-record") && text.contains("--duration"),
        "{text}"
    );

    let dir = s.path("pages");
    goheap_ok(&["man", "--out-dir", dir.to_str().unwrap()]);
    for (sub, flag) in [
        ("profile", "--sample-index"),
        ("record", "--duration"),
        ("diff", "--format"),
        ("ps", "--json"),
        ("agent", "--interval"),
        ("completions", "SHELL"),
    ] {
        let p = dir.join(format!("goheap-{sub}.1"));
        let text = render_man(&p);
        assert!(
            text.contains(flag) || text.contains(&flag.to_lowercase()),
            "goheap-{sub}(1) lacks {flag}:\n{text}"
        );
    }
    assert!(dir.join("goheap.1").exists());
}
