//! Choosing targets with `--name REGEX` and `--container ID-PREFIX` against several real Go
//! processes running at once (copies of steadyalloc under different names, one placed in a
//! containerd-shaped cgroup v2 path) and a non-Go process whose name also matches: `ps` lists, and
//! `profile`/`record` write one file per chosen process, exactly the right ones; no match, several
//! matches where one file is asked for, and malformed selectors are one line with their exit codes.

mod agent_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_common::cgroups::{join_cgroup_at_exec, Cgroups};
use agent_common::*;
use goheap::error::exit_code;
use pprof_proto::Profile;

/// A 64-hex container id distinct per run.
fn container_id() -> String {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32);
    let mut r = XorShift(x | 1);
    x = r.next_u64();
    format!(
        "{x:016x}{:016x}{:016x}{:016x}",
        r.next_u64(),
        r.next_u64(),
        r.next_u64()
    )
}

/// A copy of steadyalloc named `name` (so its comm and path differ), started allocating.
fn start_copy(s: &Scratch, name: &str, cgroup: Option<&Path>) -> (Running, PathBuf) {
    start_program(s, "steadyalloc", name, cgroup)
}

/// A copy of fixture `program` (steadyalloc or noprofile: both take `-rate-mib-per-sec` and
/// `-ready`) named `name`, started allocating.
fn start_program(
    s: &Scratch,
    program: &str,
    name: &str,
    cgroup: Option<&Path>,
) -> (Running, PathBuf) {
    let bin = s.path(name);
    place(&fixture(program, GO, "default"), &bin);
    let ready = s.path(&format!("{name}.ready"));
    let mut cmd = Command::new(&bin);
    cmd.args(["-rate-mib-per-sec", "16"])
        .arg("-ready")
        .arg(&ready);
    if let Some(dir) = cgroup {
        join_cgroup_at_exec(&mut cmd, dir);
    }
    (spawn_ready(cmd, &ready), bin)
}

/// `from` under the name `to`: a hard link (the process's comm and exe path are then `to`'s, and
/// no file is ever open for writing, so no exec can fail with ETXTBSY), or a copy on another file
/// system.
fn place(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// Spawns `cmd` and waits for its `ready` file. A spawn failing with ETXTBSY (a copy made while a
/// concurrent test forked still had a writable descriptor in that child) is retried.
fn spawn_ready(mut cmd: Command, ready: &Path) -> Running {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("starting {cmd:?}: {e}"),
        }
    };
    let pid = child.id() as i32;
    wait_for(Duration::from_secs(30), &format!("{cmd:?} ready"), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{cmd:?} exited with {st} before becoming ready");
        }
        ready.exists().then_some(())
    });
    Running { child, pid }
}

/// A run tag: every program name of a test starts with it, since other tests (and people) share
/// the machine.
fn run_tag(n: u64) -> String {
    format!(
        "{:04x}",
        XorShift((u64::from(std::process::id()) << 8 | n) | 1).next_u64() & 0xffff
    )
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one line on stderr (a refusal is exactly one line).
fn one_line(out: &Output) -> String {
    let e = stderr_of(out);
    assert_eq!(e.lines().count(), 1, "one line expected: {e:?}");
    e.trim_end().to_string()
}

/// Pids in the `goheap ps` table.
fn ps_pids(args: &[&str]) -> Vec<i32> {
    let mut a = vec!["ps"];
    a.extend_from_slice(args);
    let out = goheap(&a);
    assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().trim_start().starts_with("PID"));
    lines
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// The files in `dir`, sorted, with the profile each holds.
fn profiles_in(dir: &Path) -> Vec<(String, Profile)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            let p = Profile::decode(&bytes).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, p)
        })
        .collect()
}

/// The executable a profile's main mapping names.
fn main_binary(p: &Profile) -> String {
    p.string(p.mapping[0].filename).unwrap().to_string()
}

#[test]
fn name_and_container_choose_exactly_the_matching_go_processes() {
    let s = Scratch::new("select");
    let mut cgroups = Cgroups::new();
    let id = container_id();
    let pod = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_0000_4000_8000_00000000abcd.slice";
    let dir = cgroups.make(&format!("{pod}/cri-containerd-{id}.scope"));

    // Other tests (and people) share the machine: every name starts with a tag of this run.
    let tag = format!(
        "{:04x}",
        XorShift(u64::from(std::process::id()) | 1).next_u64() & 0xffff
    );
    let (alpha, alpha_bin) = start_copy(&s, &format!("{tag}alpha-svc"), None);
    let (beta, beta_bin) = start_copy(&s, &format!("{tag}beta-svc"), None);
    let (gamma, gamma_bin) = start_copy(&s, &format!("{tag}gamma-job"), Some(&dir));
    let svc = format!("^{tag}.*svc$");
    // Not Go, and its name matches too: never chosen.
    let sleeper = s.path(&format!("{tag}delta-svc"));
    place(&Path::new("/bin/sleep").canonicalize().unwrap(), &sleeper);
    let notgo = Running {
        child: Command::new(&sleeper).arg("600").spawn().unwrap(),
        pid: 0,
    };
    let notgo_pid = notgo.child.id() as i32;
    let canon = |p: &Path| p.canonicalize().unwrap().display().to_string();

    // ps filters.
    assert_eq!(ps_pids(&["--name", &svc]), vec![alpha.pid, beta.pid]);
    assert_eq!(
        ps_pids(&["--name", &format!("^{tag}gamma")]),
        vec![gamma.pid]
    );
    assert_eq!(
        ps_pids(&["--name", &format!("^{}/{tag}beta", s.0.display())]),
        vec![beta.pid],
        "the executable path is matched too"
    );
    assert_eq!(ps_pids(&["--container", &id[..12]]), vec![gamma.pid]);
    assert_eq!(
        ps_pids(&["--container", &id.to_uppercase()[..6]]),
        vec![gamma.pid]
    );
    assert!(
        ps_pids(&["--container", &id[1..13]]).is_empty(),
        "a prefix, not a substring"
    );

    // profile --name: one file per process, each the right process's.
    let out_dir = s.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = goheap(&[
        "profile",
        "--name",
        &svc,
        "-q",
        "-o",
        &format!("{}/", out_dir.display()),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let files = profiles_in(&out_dir);
    assert_eq!(
        files.len(),
        2,
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, p), (running, bin, comm)) in files.iter().zip([
        (&alpha, &alpha_bin, format!("{tag}alpha-svc")),
        (&beta, &beta_bin, format!("{tag}beta-svc")),
    ]) {
        assert!(
            name.starts_with(&format!("goheap-{comm}-{}-", running.pid))
                && name.ends_with(".pb.gz"),
            "{name}"
        );
        assert_eq!(main_binary(p), canon(bin), "{name}");
        assert!(!p.sample.is_empty(), "{name}: steadyalloc has allocated");
    }
    assert!(
        !files
            .iter()
            .any(|(n, _)| n.contains(&notgo_pid.to_string())),
        "the non-Go process is never profiled"
    );

    // --container: the one process in that container; -o FILE is fine for one.
    let one = s.path("gamma.svg");
    let out = goheap(&[
        "profile",
        "--container",
        &id[..8],
        "--format",
        "svg",
        "-q",
        "-o",
        one.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let svg = std::fs::read_to_string(&one).unwrap();
    assert!(
        svg.contains(&format!("{tag}gamma-job (pid {})", gamma.pid)),
        "title names the process"
    );

    // Several matches and one file: refused, nothing written.
    let file = s.path("both.pb.gz");
    let out = goheap(&["profile", "--name", &svc, "-o", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE),
        "{}",
        stderr_of(&out)
    );
    let line = one_line(&out);
    assert!(
        line.contains(&format!("pids {}, {}", alpha.pid, beta.pid)) && line.contains("-o DIR/"),
        "{line}"
    );
    assert!(!file.exists());
    let out = goheap(&["record", "--name", &svc, "-d", "1s", "-o", "-"]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::USAGE),
        "{}",
        stderr_of(&out)
    );
    assert!(out.stdout.is_empty());

    // No match: its own code, one line; the non-Go process does not count.
    let delta = format!("^{tag}delta-svc$");
    for (flag, value) in [
        ("--name", delta.as_str()),
        ("--name", "no-such-program-xyz"),
        ("--container", &id[1..9]),
    ] {
        let out = goheap(&["profile", flag, value]);
        assert_eq!(
            out.status.code(),
            Some(exit_code::NO_MATCH),
            "{flag} {value}: {}",
            stderr_of(&out)
        );
        assert!(
            one_line(&out).starts_with(&format!("goheap: no Go process matches {flag}")),
            "{}",
            stderr_of(&out)
        );
    }
    // Malformed selectors, and two selectors at once: usage errors.
    for args in [
        &["profile", "--name", "svc("][..],
        &["profile", "--container", "not-hex"],
        &["record", "--name", "x", "--pid", "1"],
        &["profile"],
    ] {
        let out = goheap(args);
        assert_eq!(
            out.status.code(),
            Some(exit_code::USAGE),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }

    // record --name: every chosen process over the same window, one file each.
    let rec_dir = s.path("rec");
    let out = goheap(&[
        "record",
        "--name",
        &format!("^{tag}.*(svc|job)$"),
        "--duration",
        "3s",
        "-o",
        &format!("{}/", rec_dir.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit_code::OUTPUT),
        "a missing directory: {}",
        stderr_of(&out)
    );
    std::fs::create_dir(&rec_dir).unwrap();
    let out = goheap(&[
        "record",
        "--name",
        &format!("^{tag}.*(svc|job)$"),
        "--duration",
        "3s",
        "-o",
        &format!("{}/", rec_dir.display()),
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let files = profiles_in(&rec_dir);
    let mut seen: Vec<String> = files.iter().map(|(_, p)| main_binary(p)).collect();
    seen.sort();
    let mut want = vec![canon(&alpha_bin), canon(&beta_bin), canon(&gamma_bin)];
    want.sort();
    assert_eq!(seen, want);
    let ends: Vec<i64> = files.iter().map(|(_, p)| p.time_nanos).collect();
    for (name, p) in &files {
        assert!(name.starts_with("goheap-allocs-"), "{name}");
        assert_eq!(p.string(p.default_sample_type).unwrap(), "alloc_space");
        let d = Duration::from_nanos(p.duration_nanos as u64);
        assert!(
            d >= Duration::from_millis(2900) && d <= Duration::from_millis(4000),
            "{name}: window {d:?}"
        );
    }
    let spread = ends.iter().max().unwrap() - ends.iter().min().unwrap();
    assert!(
        spread < 1_000_000_000,
        "the windows end together (spread {spread} ns)"
    );
    drop(notgo);
}

/// Several chosen processes, one of which cannot be profiled (linker-disabled profiling): the
/// others are still written, the failing one is its one refusal line, and the exit code is its
/// (7); `--json` gives an array of the profiles written.
#[test]
fn a_failing_process_among_several_is_reported_and_the_others_written() {
    let s = Scratch::new("select-mix");
    let tag = run_tag(2);
    let (ok, ok_bin) = start_program(&s, "steadyalloc", &format!("{tag}ok-mix"), None);
    let (off, _) = start_program(&s, "noprofile", &format!("{tag}off-mix"), None);
    let name = format!("^{tag}.*-mix$");
    assert_eq!(ps_pids(&["--name", &name]), vec![ok.pid, off.pid]);

    for (cmd, dir) in [("profile", "p"), ("record", "r")] {
        let out_dir = s.path(dir);
        std::fs::create_dir(&out_dir).unwrap();
        let dir_arg = format!("{}/", out_dir.display());
        let mut args = vec![cmd, "--name", &name, "-q", "-o", &dir_arg];
        if cmd == "record" {
            args.extend(["-d", "1s"]);
        } else {
            args.push("--json");
        }
        let out = goheap(&args);
        assert_eq!(
            out.status.code(),
            Some(exit_code::PROFILING_DISABLED),
            "{cmd}: {}",
            stderr_of(&out)
        );
        let line = one_line(&out);
        assert!(
            line.starts_with(&format!(
                "goheap: heap profiling is disabled in process {}",
                off.pid
            )),
            "{cmd}: {line}"
        );
        let files = profiles_in(&out_dir);
        assert_eq!(
            files.len(),
            1,
            "{cmd}: {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert!(
            files[0].0.contains(&format!("-{}-", ok.pid)),
            "{}",
            files[0].0
        );
        assert_eq!(
            main_binary(&files[0].1),
            ok_bin.canonicalize().unwrap().display().to_string()
        );
        if cmd == "profile" {
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let arr = j.as_array().expect("an array for several processes");
            assert_eq!(arr.len(), 1);
            assert_eq!(arr[0]["pid"].as_i64(), Some(ok.pid as i64));
        }
    }
}

/// `top` shows one process: `--name` matching two is refused with both listed (exit 13); matching
/// one, it is the process `top --once` shows.
#[test]
fn top_takes_exactly_one_process() {
    let s = Scratch::new("select-top");
    let tag = run_tag(7);
    let (one, _b1) = start_copy(&s, &format!("{tag}one-svc"), None);
    let (two, _b2) = start_copy(&s, &format!("{tag}two-svc"), None);

    let both = goheap(&["top", "--name", &format!("^{tag}.*svc$"), "--once"]);
    assert_eq!(
        both.status.code(),
        Some(exit_code::SEVERAL_MATCH),
        "{both:?}"
    );
    let line = one_line(&both);
    assert!(
        line.contains(&one.pid.to_string()) && line.contains(&two.pid.to_string()),
        "{line}"
    );

    let out = goheap(&["top", "--name", &format!("^{tag}two"), "--once", "-i", "1s"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("pid {} ({tag}two-svc) ", two.pid)),
        "{text}"
    );
}
