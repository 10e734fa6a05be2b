//! `goheap top` as a person uses it: in a terminal (tmux: `send-keys`, `capture-pane`) against a
//! live steadyalloc, whose hottest allocator by objects is `main.makeRecords` (256 64-byte records
//! per 16 KiB buffer of `main.makeBuffer`) and whose one caller of both is `main.allocate`; and its
//! plain-text snapshots (`--once`, and stdout not a terminal until the target exits).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const GO: &str = GO_1_23;

/// Starts steadyalloc at `rate` MiB/s.
fn start_steadyalloc(s: &Scratch, tag: &str, rate: f64) -> Running {
    let ready = s.path(&format!("{tag}.ready"));
    let mut cmd = Command::new(fixture("steadyalloc", GO, "default"));
    cmd.args(["-rate-mib-per-sec", &rate.to_string()])
        .arg("-ready")
        .arg(&ready);
    start_and_wait(cmd, &ready, Duration::from_secs(30))
}

/// A tmux server of its own (socket in the scratch directory) running one bash in a 200x50
/// window; killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(s: &Scratch) -> Tmux {
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "tmux is missing: run fixtures/install-toolchains.sh (GOHEAP_TEST_TOOLS=1)"
        );
        let t = Tmux {
            socket: s.path("tmux.sock"),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color PS1='$ ' bash --norc --noprofile",
        ]);
        wait_for(Duration::from_secs(10), "the shell prompt", || {
            t.capture().contains('$').then_some(())
        });
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names, e.g. "q", "Enter").
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types a command line and Enter.
    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "t", "-l", line]);
        self.keys(&["Enter"]);
    }

    /// The visible screen.
    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen satisfies `f`; returns that screen.
    fn wait_screen(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = (0..300).find_map(|_| {
            last = self.capture();
            if f(&last) {
                return Some(last.clone());
            }
            std::thread::sleep(Duration::from_millis(100));
            None
        });
        found.unwrap_or_else(|| panic!("screen never showed {what}; last screen:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The function names of the table's rows, in order (the line after the heading, which ends in
/// `FUNCTION`, onwards; each row's last field is the function).
fn table(screen: &str) -> Vec<String> {
    let mut lines = screen
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("FUNCTION"));
    lines.next();
    lines
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.contains("q quit"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// The line `echo EXIT=$?` printed after the command (the command line itself also holds
/// `EXIT=`, but not at the start of a line).
fn exit_status(screen: &str) -> Option<&str> {
    screen
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("EXIT="))
}

fn exit_line(screen: &str) -> bool {
    exit_status(screen).is_some()
}

/// The `snapshot N` counter of the header.
fn snapshot_no(screen: &str) -> Option<u64> {
    let rest = screen.split("snapshot ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Live in tmux: the hottest allocator by objects is first, key 2 (cumulative bytes) puts the
/// caller first, p freezes the screen (the snapshot counter stops while the process goes on), p
/// again resumes, q exits with status 0 and the shell's screen comes back (the alternate screen is
/// left: no table on it).
#[test]
fn live_view_in_tmux_sorts_pauses_and_quits() {
    let s = Scratch::new("top-tmux");
    let sa = start_steadyalloc(&s, "sa", 64.0);
    let tmux = Tmux::start(&s);
    tmux.type_line(&format!(
        "{} top -p {} --sort alloc-objects -i 500ms; echo EXIT=$?",
        goheap_bin().display(),
        sa.pid
    ));
    let screen = tmux.wait_screen("a table with makeRecords and makeBuffer", |t| {
        let rows = table(t);
        rows.iter().any(|r| r == "main.makeBuffer") && rows.iter().any(|r| r == "main.makeRecords")
    });
    assert_eq!(table(&screen)[0], "main.makeRecords", "{screen}");
    let pid_name = format!("pid {} (steadyalloc)", sa.pid);
    for want in [
        pid_name.as_str(),
        "go1.23.9",
        "MemProfileRate 524288",
        "GC cycles",
        "OBJECTS/s*",
        "q quit",
        "p/space pause",
    ] {
        assert!(screen.contains(want), "lacks {want:?}:\n{screen}");
    }

    tmux.keys(&["2"]);
    let screen = tmux.wait_screen("sorted by CUM ALLOC/s", |t| t.contains("CUM ALLOC/s*"));
    assert_eq!(table(&screen)[0], "main.allocate", "{screen}");

    tmux.keys(&["3"]);
    let screen = tmux.wait_screen("sorted by OBJECTS/s again", |t| t.contains("OBJECTS/s*"));
    assert_eq!(table(&screen)[0], "main.makeRecords", "{screen}");

    tmux.keys(&["p"]);
    let frozen = tmux.wait_screen("PAUSED", |t| t.contains("PAUSED"));
    std::thread::sleep(Duration::from_millis(2000));
    let later = tmux.capture();
    assert_eq!(frozen, later, "the paused screen changed");
    let n = snapshot_no(&frozen).expect("snapshot counter");
    tmux.keys(&["p"]);
    tmux.wait_screen("the counter moving after resuming", |t| {
        !t.contains("PAUSED") && snapshot_no(t).is_some_and(|m| m > n)
    });

    tmux.keys(&["q"]);
    let screen = tmux.wait_screen("the exit status", exit_line);
    assert_eq!(exit_status(&screen), Some("EXIT=0"), "{screen}");
    assert!(
        screen.contains(" top -p "),
        "the shell's screen is back:\n{screen}"
    );
    assert!(
        !screen.contains("FUNCTION") && !screen.contains("q quit"),
        "the table stayed on the screen:\n{screen}"
    );
    // Raw mode is off again: typed text echoes and runs.
    tmux.type_line("echo cooked-$((40+2))");
    tmux.wait_screen("the shell echoing again", |t| t.contains("cooked-42"));
}

/// In tmux, the target's exit ends the view: the screen is restored, "process N (steadyalloc)
/// exited" is printed, and the status is 0.
#[test]
fn target_exit_restores_the_terminal() {
    let s = Scratch::new("top-exit");
    let mut sa = start_steadyalloc(&s, "sa", 8.0);
    let tmux = Tmux::start(&s);
    tmux.type_line(&format!(
        "{} top -p {} -i 300ms; echo EXIT=$?",
        goheap_bin().display(),
        sa.pid
    ));
    tmux.wait_screen("the table", |t| {
        t.contains("q quit") && !table(t).is_empty()
    });
    sa.child.kill().unwrap();
    sa.child.wait().unwrap();
    let screen = tmux.wait_screen("the exit status", exit_line);
    assert_eq!(exit_status(&screen), Some("EXIT=0"), "{screen}");
    assert!(
        screen.contains(&format!("process {} (steadyalloc) exited", sa.pid)),
        "{screen}"
    );
    assert!(!screen.contains("q quit"), "{screen}");
}

/// The pid of the `goheap top -p TARGET` process (found in /proc by its command line).
fn top_pid(target: i32) -> i32 {
    wait_for(Duration::from_secs(10), "the goheap top process", || {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let target = target.to_string();
            (args.len() > 3
                && args[0] == goheap_bin().as_os_str().as_encoded_bytes()
                && args[1] == b"top"
                && args[3] == target.as_bytes())
            .then_some(pid)
        })
    })
}

/// Ctrl-C (a key in raw mode) and SIGTERM (a signal) both end the view with status 0 and the
/// shell's screen back, raw mode off.
#[test]
fn ctrl_c_and_sigterm_restore_the_terminal() {
    let s = Scratch::new("top-signals");
    let sa = start_steadyalloc(&s, "sa", 8.0);
    let tmux = Tmux::start(&s);
    let line = format!(
        "{} top -p {} -i 300ms; echo EXIT=$?",
        goheap_bin().display(),
        sa.pid
    );
    tmux.type_line(&line);
    tmux.wait_screen("the table", |t| {
        t.contains("q quit") && !table(t).is_empty()
    });
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_screen("the exit status", exit_line);
    assert_eq!(exit_status(&screen), Some("EXIT=0"), "{screen}");
    assert!(!screen.contains("q quit"), "{screen}");

    tmux.type_line("clear");
    tmux.wait_screen("a cleared screen", |t| !t.contains("EXIT="));
    tmux.type_line(&line);
    tmux.wait_screen("the table", |t| {
        t.contains("q quit") && !table(t).is_empty()
    });
    let pid = top_pid(sa.pid);
    // SAFETY: kill(2) on the goheap process this test started (through tmux).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let screen = tmux.wait_screen("the exit status", exit_line);
    assert_eq!(exit_status(&screen), Some("EXIT=0"), "{screen}");
    assert!(!screen.contains("q quit"), "{screen}");
    tmux.type_line("echo cooked-$((40+2))");
    tmux.wait_screen("the shell echoing again", |t| t.contains("cooked-42"));
}

/// Parses a cell like `17.5 MiB/s` or `512 B/s` into bytes per second.
fn bytes_per_s(num: &str, unit: &str) -> f64 {
    let n: f64 = num
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {num}"));
    let m = match unit.trim_end_matches("/s") {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => panic!("unit {u}"),
    };
    n * m
}

/// `--once` (stdout a pipe): one snapshot and exit 0. The header names the process, Go version and
/// rate; sorted by objects, makeRecords is first, and its objects/s and makeBuffer's bytes/s are
/// the program's configured rates (128 MiB/s: half in 64-byte records, half in 16 KiB buffers)
/// within 25% (a 2 s interval holds ~256 samples of each function, one standard deviation 6%).
#[test]
fn once_prints_one_plain_snapshot() {
    let s = Scratch::new("top-once");
    let sa = start_steadyalloc(&s, "sa", 128.0);
    std::thread::sleep(Duration::from_millis(500));
    let out = goheap(&[
        "top",
        "-p",
        &sa.pid.to_string(),
        "--once",
        "-i",
        "2s",
        "--sort",
        "alloc-objects",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in plain output: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("pid {} (steadyalloc) ", sa.pid))
            && lines[0].contains("go1.23.9")
            && lines[0].contains("MemProfileRate 524288"),
        "{text}"
    );
    assert!(lines[1].starts_with("allocating "), "{text}");
    assert_eq!(
        text.matches("FUNCTION").count(),
        1,
        "one snapshot only: {text}"
    );
    let rows = table(&text);
    assert_eq!(rows[0], "main.makeRecords", "{text}");
    let row = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .split_whitespace()
            .collect()
    };
    // Columns: ALLOC/s (2 fields), CUM ALLOC/s (2), OBJECTS/s (1), ...
    let records = row("main.makeRecords");
    let objects: f64 = records[4].parse().unwrap();
    let want_objects = 64.0 * 1024.0 * 1024.0 / 64.0;
    assert!(
        (objects / want_objects - 1.0).abs() < 0.25,
        "makeRecords {objects} objects/s, the program allocates {want_objects}: {text}"
    );
    let buffers = row("main.makeBuffer");
    let bytes = bytes_per_s(buffers[0], buffers[1]);
    let want_bytes = 64.0 * 1024.0 * 1024.0;
    assert!(
        (bytes / want_bytes - 1.0).abs() < 0.25,
        "makeBuffer {bytes} B/s, the program allocates {want_bytes}: {text}"
    );
    let caller = row("main.allocate");
    let cum = bytes_per_s(caller[2], caller[3]);
    assert!(
        (cum / (2.0 * want_bytes) - 1.0).abs() < 0.25,
        "main.allocate cumulative {cum} B/s: {text}"
    );
}

/// With stdout not a terminal and no `--once`, a snapshot is printed every interval until the
/// target exits; then "process N (steadyalloc) exited" and status 0.
#[test]
fn plain_snapshots_until_the_target_exits() {
    let s = Scratch::new("top-plain");
    let mut sa = start_steadyalloc(&s, "sa", 8.0);
    let child = Command::new(goheap_bin())
        .args(["top", "-p", &sa.pid.to_string(), "-i", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    sa.child.kill().unwrap();
    sa.child.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let snapshots = text.matches("FUNCTION").count();
    assert!(snapshots >= 3, "{snapshots} snapshots in 1.6 s: {text}");
    assert_eq!(
        text.lines().last(),
        Some(format!("process {} (steadyalloc) exited", sa.pid).as_str()),
        "{text}"
    );
}
