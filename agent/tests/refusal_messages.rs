//! The one-line refusals of `goheap profile` and the states of `goheap ps` say what is really going
//! on (issue #9): a zombie is a zombie, root is denied for a reason it is told, the profiling state
//! comes from the live `runtime.MemProfileRate`, and force mode is not advised where it cannot work.

mod agent_common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_common::*;
use goheap::error::exit_code;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The state letter of `/proc/PID/stat`.
fn proc_state(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next().map(str::to_string)
}

/// `goheap profile` of a zombie exits 9 and says it is a zombie: exited, not reaped by its parent
/// (named by pid).
#[test]
fn zombie_is_called_a_zombie() {
    let s = Scratch::new("zombie-cli");
    let (mut sa, _) = start_steadyalloc(&s, "sa", 1.0);
    sa.child.kill().unwrap();
    wait_for(Duration::from_secs(10), "a zombie", || {
        (proc_state(sa.pid).as_deref() == Some("Z")).then_some(())
    });
    let out = goheap(&["profile", "-p", &sa.pid.to_string(), "-o", "-", "-q"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(exit_code::PROCESS_EXITED), "{err}");
    assert!(err.contains("zombie"), "{err}");
    assert!(err.contains("not reaped"), "{err}");
    assert!(
        err.contains(&format!("parent (pid {})", std::process::id())),
        "names the parent: {err}"
    );
    assert!(!err.contains("while goheap was reading"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    sa.child.wait().unwrap();
}

#[allow(dead_code)]
fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdin(Stdio::null()).stdout(Stdio::null())
}
